//! The numbers a sandbox's cgroup reports: their stable JSON shape (`airlock stats --json`, the daemon's stats)
//! and the final numbers a named run keeps in its `stats.json`.

use runtime::cgroups::CgroupStats;
use serde_json::{json, Value};
use store::SandboxDir;

use crate::error::SessionError;

/// The stable JSON shape of `airlock stats --json` (documented in README).
pub fn stats_json(name: &str, state: &str, stats: &CgroupStats, exit_code: Option<i32>) -> Value {
    json!({
        "name": name,
        "state": state,
        "exit_code": exit_code,
        "memory": {
            "current_bytes": stats.memory_current,
            "peak_bytes": stats.memory_peak,
            "limit_bytes": stats.memory_limit,
            "oom_kills": stats.oom_kills,
        },
        "pids": {
            "current": stats.pids_current,
            "peak": stats.pids_peak,
            "limit": stats.pids_limit,
            "limit_hits": stats.pids_max_hits,
        },
        "cpu": { "usage_usec": stats.cpu_usage_usec },
    })
}

/// Records a named run's final numbers (called when the run ends).
pub fn keep_final_stats(dir: &SandboxDir, name: &str, stats: &CgroupStats, exit_code: i32) -> Result<(), SessionError> {
    let path = dir.stats_file();
    std::fs::create_dir_all(dir.path())
        .map_err(|source| SessionError::CreateDir { path: dir.path().to_path_buf(), source })?;
    let text = serde_json::to_string_pretty(&stats_json(name, "exited", stats, Some(exit_code)))
        .map_err(SessionError::Serialize)?;
    let staged = path.with_extension("json.tmp");
    std::fs::write(&staged, text + "\n").map_err(|source| SessionError::WriteFile { path: staged.clone(), source })?;
    std::fs::rename(&staged, &path).map_err(|source| SessionError::WriteFile { path, source })
}
