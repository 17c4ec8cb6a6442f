//! Records: every decision of the gateway is one [`NetEvent`], handed to the embedder's sink.
//!
//! Denials (and DNS answers, which the sandbox can repeat at will) are rate limited per (protocol, decision,
//! name, address, port, reason): a sandbox that floods the gateway must not be able to fill the disk of whoever
//! stores the records. What was suppressed is
//! counted and reported in the next event of the same kind, or in a summary when the window ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// One decision of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetEvent {
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    pub sandbox: String,
    /// "dns" | "tcp" | "udp" | "icmp" | "ip" | "http" | "tls" | "proxy-connect" | "proxy-http"
    pub protocol: &'static str,
    /// The domain asked for / SNI / Host, when known.
    pub name: Option<String>,
    /// Destination IP (the real, pinned one for a synthetic address) when known.
    pub address: Option<String>,
    pub port: Option<u16>,
    /// "allowed" | "denied"
    pub decision: &'static str,
    pub reason: String,
    /// Bytes sandbox → destination (in the "closed" event of an allowed connection, else 0).
    pub bytes_out: u64,
    /// Bytes destination → sandbox.
    pub bytes_in: u64,
}

/// The embedder's sink for events.
pub type EventSink = Box<dyn FnMut(&NetEvent) + Send>;

/// Identical denials recorded per window; the rest are counted.
pub const DENIALS_PER_WINDOW: u32 = 10;
/// Length of the rate-limit window.
pub const DENIAL_WINDOW: Duration = Duration::from_secs(1);
/// Distinct denial kinds tracked per window; past this every denial in the window is counted under one key, so a
/// flood of distinct names cannot grow the table without bound.
const MAX_TRACKED_KINDS: usize = 1024;

type DenialKey = (&'static str, &'static str, Option<String>, Option<String>, Option<u16>, String);

struct DenialCount {
    recorded: u32,
    suppressed: u64,
    last: NetEvent,
}

struct RecorderState {
    sink: EventSink,
    window_start: Instant,
    denials: HashMap<DenialKey, DenialCount>,
}

/// Shared, cloneable handle the gateway's tasks record through.
#[derive(Clone)]
pub struct Recorder {
    sandbox: Arc<str>,
    state: Arc<Mutex<RecorderState>>,
}

/// The fields of an event that vary; time, sandbox and decision are filled in by the [`Recorder`].
#[derive(Debug, Clone, Default)]
pub struct Decision {
    pub protocol: &'static str,
    pub name: Option<String>,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub reason: String,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Recorder {
    pub fn new(sandbox: &str, sink: EventSink) -> Recorder {
        Recorder {
            sandbox: Arc::from(sandbox),
            state: Arc::new(Mutex::new(RecorderState { sink, window_start: Instant::now(), denials: HashMap::new() })),
        }
    }

    fn event(&self, decision: &'static str, d: Decision) -> NetEvent {
        NetEvent {
            time: now_rfc3339(),
            sandbox: self.sandbox.to_string(),
            protocol: d.protocol,
            name: d.name,
            address: d.address,
            port: d.port,
            decision,
            reason: d.reason,
            bytes_out: d.bytes_out,
            bytes_in: d.bytes_in,
        }
    }

    /// Records an allowed decision (never rate limited: allowed connections are bounded by the connection limit).
    pub fn allowed(&self, d: Decision) {
        let event = self.event("allowed", d);
        // A poisoned lock only means a sink panicked earlier; the state itself stays consistent.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.sink)(&event);
    }

    /// Records a denial, subject to the rate limit.
    pub fn denied(&self, d: Decision) {
        self.limited("denied", d);
    }

    /// Records an allowed decision that the sandbox can repeat at will without opening anything (a DNS answer
    /// from the table), subject to the same rate limit as denials.
    pub fn allowed_limited(&self, d: Decision) {
        self.limited("allowed", d);
    }

    fn limited(&self, decision: &'static str, d: Decision) {
        let mut event = self.event(decision, d);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(state.window_start) >= DENIAL_WINDOW {
            flush_suppressed(&mut state);
            state.window_start = now;
        }
        let key: DenialKey = if state.denials.len() >= MAX_TRACKED_KINDS {
            ("*", decision, None, None, None, "too many distinct records".to_owned())
        } else {
            (event.protocol, decision, event.name.clone(), event.address.clone(), event.port, event.reason.clone())
        };
        let count =
            state.denials.entry(key).or_insert_with(|| DenialCount { recorded: 0, suppressed: 0, last: event.clone() });
        if count.recorded < DENIALS_PER_WINDOW {
            count.recorded += 1;
            if count.suppressed > 0 {
                event.reason = format!("{} ({} similar records suppressed)", event.reason, count.suppressed);
                count.suppressed = 0;
            }
            (state.sink)(&event);
        } else {
            count.suppressed += 1;
            count.last = event;
        }
    }

    /// Writes the summaries of denials still suppressed (called at the end of a window and at shutdown).
    pub fn flush(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        flush_suppressed(&mut state);
    }
}

fn flush_suppressed(state: &mut RecorderState) {
    let denials = std::mem::take(&mut state.denials);
    for (_, count) in denials {
        if count.suppressed > 0 {
            let mut event = count.last;
            event.time = now_rfc3339();
            event.reason = format!("{} ({} similar records suppressed)", event.reason, count.suppressed);
            (state.sink)(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collecting() -> (Recorder, Arc<Mutex<Vec<NetEvent>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink_events = events.clone();
        let recorder = Recorder::new("sb", Box::new(move |e: &NetEvent| sink_events.lock().unwrap().push(e.clone())));
        (recorder, events)
    }

    fn denial() -> Decision {
        Decision {
            protocol: "dns",
            name: Some("evil.test".into()),
            reason: "name not on the allow-list".into(),
            ..Default::default()
        }
    }

    #[test]
    fn identical_denials_are_rate_limited_and_counted() {
        let (recorder, events) = collecting();
        for _ in 0..1000 {
            recorder.denied(denial());
        }
        assert_eq!(events.lock().unwrap().len(), DENIALS_PER_WINDOW as usize);
        recorder.flush();
        let events = events.lock().unwrap();
        assert_eq!(events.len(), DENIALS_PER_WINDOW as usize + 1);
        assert!(events.last().unwrap().reason.contains("990 similar records suppressed"), "{:?}", events.last());
    }

    #[test]
    fn allowed_events_are_not_limited_and_serialize() {
        let (recorder, events) = collecting();
        for _ in 0..50 {
            recorder.allowed(Decision { protocol: "tcp", port: Some(443), ..Default::default() });
        }
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 50);
        let json = serde_json::to_string(&events[0]).unwrap();
        assert!(json.contains("\"decision\":\"allowed\"") && json.contains("\"sandbox\":\"sb\""), "{json}");
        assert!(events[0].time.ends_with('Z') && events[0].time.contains('.'), "{}", events[0].time);
    }

    #[test]
    fn repeated_dns_answers_are_rate_limited_too() {
        let (recorder, events) = collecting();
        for _ in 0..100 {
            recorder.allowed_limited(Decision { protocol: "dns", name: Some("a.test".into()), ..Default::default() });
            recorder.denied(Decision { protocol: "dns", name: Some("a.test".into()), ..Default::default() });
        }
        let events = events.lock().unwrap();
        assert_eq!(events.iter().filter(|e| e.decision == "allowed").count(), DENIALS_PER_WINDOW as usize);
        assert_eq!(events.iter().filter(|e| e.decision == "denied").count(), DENIALS_PER_WINDOW as usize);
    }

    #[test]
    fn distinct_denial_kinds_are_bounded() {
        let (recorder, events) = collecting();
        for i in 0..5000 {
            recorder.denied(Decision { protocol: "dns", name: Some(format!("n{i}.test")), ..Default::default() });
        }
        assert!(events.lock().unwrap().len() <= MAX_TRACKED_KINDS + DENIALS_PER_WINDOW as usize);
    }
}
