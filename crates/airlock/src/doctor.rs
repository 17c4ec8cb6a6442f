//! `airlock doctor [--json]`: what this host supports for the current user, what blocks a protection, and how to
//! fix it. The probing is the `probe` crate (`crates/probe`); this file only decides what "can run" means and prints.

use std::io::Write;

use policy::sandbox::{Limits, Requirement};
use probe::{Check, HostReport};
use serde::Serialize;

/// Version of the `--json` document. Raise it when a field changes meaning or goes away; adding fields is fine.
const JSON_VERSION: u32 = 1;

/// What the built-in `default` profile needs from the host: Landlock is required (a missing layer fails closed)
/// and no resource limit is set. Keep in step with the `default` profile in `policy::profile`.
const DEFAULT_LANDLOCK: Requirement = Requirement::Required;

fn default_limits() -> Limits {
    Limits::default()
}

/// Probe the host, print the report, and return the exit status: 0 when `airlock run` with the default profile
/// can work here as this user, 1 otherwise.
pub fn run_doctor(json: bool) -> anyhow::Result<i32> {
    let report = probe::probe_host(store::layer::disk::probe);
    let limits = default_limits();
    let blockers = report.blockers(DEFAULT_LANDLOCK, &limits);
    let can_run = blockers.is_empty();
    let summary = report.summary(DEFAULT_LANDLOCK, &limits);

    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &to_json(&report, &blockers, &summary))?;
        writeln!(out)?;
    } else {
        out.write_all(render_text(&report, &summary).as_bytes())?;
    }
    out.flush()?;
    Ok(if can_run { 0 } else { 1 })
}

/// The `--json` document. Field names are a stable contract (documented in README); fields are printed in
/// this order.
#[derive(Debug, Serialize)]
struct DoctorJson<'a> {
    version: u32,
    user: UserJson,
    kernel: &'a str,
    checks: Vec<CheckJson<'a>>,
    /// `airlock run` with the default profile can work here, as this user.
    can_run: bool,
    /// Ids of the checks that stop it (empty when `can_run`).
    blockers: Vec<&'a str>,
    summary: &'a str,
}

#[derive(Debug, Serialize)]
struct UserJson {
    uid: u32,
    gid: u32,
    root: bool,
}

#[derive(Debug, Serialize)]
struct CheckJson<'a> {
    id: &'a str,
    name: &'a str,
    /// `ok`, `warn` or `missing`.
    status: &'a str,
    detail: &'a str,
    fix: Option<&'a str>,
}

fn to_json<'a>(report: &'a HostReport, blockers: &[&'a Check], summary: &'a str) -> DoctorJson<'a> {
    DoctorJson {
        version: JSON_VERSION,
        user: UserJson { uid: report.user.uid, gid: report.user.gid, root: report.user.root },
        kernel: &report.kernel.release,
        checks: report
            .checks
            .iter()
            .map(|c| CheckJson {
                id: c.id,
                name: c.name,
                status: c.status.as_str(),
                detail: &c.detail,
                fix: c.fix.as_deref(),
            })
            .collect(),
        can_run: blockers.is_empty(),
        blockers: blockers.iter().map(|c| c.id).collect(),
        summary,
    }
}

/// One line per check (`ok`/`warn`/`missing`, name, detail), its fix indented below, then the summary.
fn render_text(report: &HostReport, summary: &str) -> String {
    let who = if report.user.root { "root".to_string() } else { format!("uid {}", report.user.uid) };
    let mut text = format!("airlock doctor: Linux {}, as {who}\n\n", report.kernel.release);
    for c in &report.checks {
        text.push_str(&format!("{:<8}{}: {}\n", c.status.as_str(), c.name, c.detail));
        if let Some(fix) = &c.fix {
            for line in fix.lines() {
                text.push_str(&format!("  fix: {line}\n"));
            }
        }
    }
    text.push('\n');
    text.push_str(summary);
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_documented_fields() {
        let report = probe::probe_host(store::layer::disk::probe);
        let doc = serde_json::to_value(to_json(&report, &[], "summary")).unwrap();
        assert_eq!(doc["version"], 1);
        assert!(doc["user"]["uid"].is_u64());
        assert!(doc["user"]["root"].is_boolean());
        assert!(doc["kernel"].is_string());
        assert_eq!(doc["can_run"], true);
        assert_eq!(doc["blockers"], serde_json::json!([]));
        let checks = doc["checks"].as_array().unwrap();
        assert_eq!(checks.len(), report.checks.len());
        for c in checks {
            assert!(c["id"].is_string());
            assert!(["ok", "warn", "missing"].contains(&c["status"].as_str().unwrap()));
            assert!(c["detail"].is_string());
            assert!(c["fix"].is_null() || c["fix"].is_string());
        }
        assert!(checks.iter().any(|c| c["id"] == "userns"));
    }

    #[test]
    fn text_has_one_line_per_check_and_the_summary() {
        let report = probe::probe_host(store::layer::disk::probe);
        let text = render_text(&report, "the summary");
        let status_lines = text
            .lines()
            .filter(|l| l.starts_with("ok ") || l.starts_with("warn ") || l.starts_with("missing "))
            .count();
        assert_eq!(status_lines, report.checks.len());
        assert!(text.ends_with("the summary\n"));
        let fixes = report.checks.iter().filter_map(|c| c.fix.as_ref()).map(|f| f.lines().count()).sum::<usize>();
        assert_eq!(text.lines().filter(|l| l.starts_with("  fix: ")).count(), fixes);
    }
}
