//! The daemon's background work: keeping each warm pool at its size, and stopping sandboxes whose lifetime ran
//! out.

use std::time::Duration;

use crate::api::{create_sandbox, remove_sandbox, stop_at_end_of_lifetime, Shared};
use crate::store::{cli_record, live_init, now};

/// How often lifetimes are checked (and pools looked at without a wake-up).
const TICK: Duration = Duration::from_millis(500);

/// How long a refill waits after a sandbox was taken from a pool.
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// Refills pools until the daemon ends. One sandbox at a time: setting one up uses the whole of a small
/// machine's CPU for a moment, and a create from a client must not queue behind a burst of refills.
pub async fn keep_pools_filled(app: Shared) {
    // The last failure said per pool: a pool that cannot fill (at the sandbox limit, say) is said once per
    // change, not at every retry.
    let mut said: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    loop {
        let mut made_one = false;
        if let Ok(pools) = app.store.pools() {
            for pool in pools {
                if app.registry.pooled(&pool.name) >= pool.size {
                    continue;
                }
                match create_sandbox(&app, pool.sandbox.clone(), Some(&pool.name)).await {
                    Ok(record) => {
                        made_one = true;
                        said.remove(&pool.name);
                        // The pool was deleted while this one was being set up: it has no pool to wait in.
                        let still = app.store.pools().is_ok_and(|p| p.iter().any(|p| p.name == pool.name));
                        if !still {
                            let _ = remove_sandbox(&app, &record.name, false).await;
                        }
                    }
                    Err(e) => {
                        if said.get(&pool.name) != Some(&e.message) {
                            eprintln!("airlock: pool {}: cannot set up a sandbox: {}", pool.name, e.message);
                            said.insert(pool.name.clone(), e.message);
                        }
                    }
                }
            }
        }
        if !made_one {
            let woken = tokio::time::timeout(TICK * 4, app.pools_changed.notified()).await.is_ok();
            if woken {
                // A sandbox was just taken: its client's first commands run before the refill, which would take
                // the small machine's CPU for a moment right when they start.
                tokio::time::sleep(REFILL_DELAY).await;
            }
        }
    }
}

/// How long a create a dead daemon left in flight may take before the record is forgotten.
pub const IN_FLIGHT_CREATE: f64 = 120.0;

/// Settles the creates a daemon killed mid-way left in flight (adopted as creating): owned once `airlock create`
/// has made the sandbox, forgotten when it never does.
fn settle_adopted_creates(app: &Shared) {
    for entry in app.registry.all() {
        if !entry.creating || entry.record.requested >= app.started {
            continue;
        }
        if cli_record(&app.engine.state_dir, &entry.record.name).is_some() {
            app.registry.created(&entry.record.name);
        } else if now() - entry.record.requested > IN_FLIGHT_CREATE {
            let _ = app.store.remove_sandbox(&entry.record.name);
            app.registry.remove(&entry.record.name);
        }
    }
}

/// Stops each sandbox whose lifetime ran out. It is stopped, not removed: what it changed in its workspace stays
/// for `diff` and `commit` until a client deletes it.
pub async fn stop_expired(app: Shared) {
    loop {
        tokio::time::sleep(TICK).await;
        settle_adopted_creates(&app);
        let t = now();
        for entry in app.registry.all() {
            let Some(expires) = entry.record.expires_at else { continue };
            if expires > t || entry.creating {
                continue;
            }
            let running = cli_record(&app.engine.state_dir, &entry.record.name).as_ref().and_then(live_init).is_some();
            if running {
                let _ = stop_at_end_of_lifetime(&app, &entry.record.name).await;
            }
        }
    }
}
