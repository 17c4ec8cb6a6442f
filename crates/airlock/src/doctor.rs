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
    let mut report = probe::probe_host(store::layer::disk::probe);
    let container = container_check(&report, &ContainerSigns::read());
    report.checks.push(container);
    report.checks.push(crate::doctor_vm::vm_check());
    report.checks.push(exec_records_check());
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

/// What shows that airlock runs inside a container (each a phrase for the report).
#[derive(Debug, Default)]
struct ContainerSigns {
    signs: Vec<String>,
    /// As root: whether a full id range can be mapped (`runtime::userns::root_mapping`).
    root_maps_range: bool,
}

/// `/proc` entries container runtimes mount over (Docker's, containerd's and runc's default masked and read-only
/// paths): the kernel then refuses the sandbox a fresh `/proc`.
const MASKED_PROC_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

impl ContainerSigns {
    fn read() -> ContainerSigns {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        ContainerSigns::from_parts(
            std::path::Path::new("/.dockerenv").exists(),
            std::path::Path::new("/run/.containerenv").exists(),
            std::env::var("container").ok(),
            &mountinfo,
            &status,
        )
    }

    fn from_parts(
        dockerenv: bool,
        containerenv: bool,
        container_var: Option<String>,
        mountinfo: &str,
        status: &str,
    ) -> ContainerSigns {
        let mut signs = Vec::new();
        if dockerenv {
            signs.push("/.dockerenv exists (Docker)".to_string());
        }
        if containerenv {
            signs.push("/run/.containerenv exists (Podman)".to_string());
        }
        if let Some(name) = container_var.filter(|v| !v.is_empty()) {
            signs.push(format!("$container is {name}"));
        }
        // Field 5 of a mountinfo line is the mount point.
        let masked: Vec<&str> = mountinfo
            .lines()
            .filter_map(|line| line.split_whitespace().nth(4))
            .filter(|point| MASKED_PROC_PATHS.contains(point))
            .collect();
        if !masked.is_empty() {
            signs.push(format!("/proc has mounts over {} (a container runtime's masked paths)", masked.join(", ")));
        }
        let seccomp = status.lines().any(|l| l.split_whitespace().eq(["Seccomp:", "2"]));
        if seccomp && !signs.is_empty() {
            signs.push("a seccomp filter is on this process".to_string());
        }
        let root_maps_range = runtime::userns::root_mapping() == runtime::userns::RootMapping::FullRange;
        ContainerSigns { signs, root_maps_range }
    }
}

/// Where an audited run's exec records would come from here: the kernel's exec tracepoints when this user can
/// load the BPF program (loaded, then dropped: ~7 ms), else seccomp notification; and whether runs load it once
/// (pinned) or each. Information only.
fn exec_records_check() -> Check {
    const ID: &str = "exec_records";
    const NAME: &str = "audit exec records (--audit)";
    // A program of this check's own (never the pinned one: a check changes nothing on the host).
    match runtime::exec_tracepoints::KernelExecSource::load(None) {
        Ok(_) => Check {
            id: ID,
            name: NAME,
            status: probe::Status::Ok,
            detail: match session::recorder::exec_tracer_pins_from_env() {
                Some(dir) if runtime::exec_tracepoints::pinned_program_usable(&dir) => format!(
                    "from the kernel's exec tracepoints (BPF): an audited exec waits for nobody; the program is \
                     loaded once and pinned in {}, and each audited run attaches it",
                    dir.display()
                ),
                _ => "from the kernel's exec tracepoints (BPF): an audited exec waits for nobody; each audited run \
                      loads the program (~7 ms; loaded once instead with Linux 6.10 or later and \
                      AIRLOCK_BPF_PIN_DIR naming a bpffs directory that is root's alone, or not set)"
                    .into(),
            },
            fix: None,
        },
        Err(errno) => Check {
            id: ID,
            name: NAME,
            status: probe::Status::Warn,
            detail: format!(
                "from seccomp user notification (a round trip to the supervisor per exec): the kernel's exec \
                 tracepoints cannot be used ({})",
                std::io::Error::from_raw_os_error(errno)
            ),
            fix: Some(runtime::exec_tracepoints::load_failure_hint(errno).into()),
        },
    }
}

/// `container`: whether airlock runs inside a container, and each fix the container needs for `airlock run` (the
/// blocking checks that a container setting explains: seccomp, capabilities, the masked /proc).
fn container_check(report: &HostReport, found: &ContainerSigns) -> Check {
    const ID: &str = "container";
    const NAME: &str = "inside a container";
    let missing = |id: &str| report.check(id).is_some_and(|c| c.status == probe::Status::Missing);
    let signs = &found.signs;
    if signs.is_empty() {
        let detail = "no sign of a container (information)".to_string();
        return Check { id: ID, name: NAME, status: probe::Status::Ok, detail, fix: None };
    }
    let mut fixes = Vec::new();
    let seccomp_blocks = signs.iter().any(|s| s.starts_with("a seccomp filter"));
    if missing("userns") && seccomp_blocks {
        fixes.push(format!("seccomp: {}", probe::SECCOMP_CONTAINER_FIX));
    }
    if report.user.root && !found.root_maps_range {
        fixes.push(format!("capabilities: {}", probe::ROOT_CAPS_CONTAINER_FIX));
    }
    // A masked /proc refuses the sandbox's fresh one whether or not the probe got that far.
    if missing("proc") && signs.iter().any(|s| s.starts_with("/proc has mounts")) {
        fixes.push(format!("/proc: {}", probe::PROC_CONTAINER_FIX));
    }
    let detail = format!("{}; see README \"Inside containers\"", signs.join("; "));
    let (status, fix) = match fixes.is_empty() {
        true => (probe::Status::Ok, None),
        false => (probe::Status::Warn, Some(fixes.join("\n"))),
    };
    Check { id: ID, name: NAME, status, detail, fix }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_signs_come_from_markers_and_masked_proc() {
        let mountinfo = "77 76 0:41 / /proc rw - proc proc rw\n55 77 0:42 /null /proc/keys rw - tmpfs tmpfs rw\n\
                         53 77 0:41 /sys /proc/sys ro - proc proc rw\n";
        let found = ContainerSigns::from_parts(false, false, None, mountinfo, "Seccomp:\t2\n");
        assert_eq!(found.signs.len(), 2, "{:?}", found.signs);
        assert!(found.signs[0].contains("/proc/keys, /proc/sys"));
        let host = ContainerSigns::from_parts(false, false, None, "77 76 0:41 / /proc rw - proc proc rw\n", "");
        assert!(host.signs.is_empty());
        let docker = ContainerSigns::from_parts(true, false, Some("docker".into()), "", "Seccomp:\t0\n");
        assert_eq!(docker.signs.len(), 2);
    }

    #[test]
    fn container_check_names_the_fix_of_each_blocker() {
        let report = probe::probe_host(store::layer::disk::probe);
        let none = container_check(&report, &ContainerSigns::default());
        assert_eq!((none.id, none.status), ("container", probe::Status::Ok));
        // This host: the fixes named are those of its own blockers; a host whose userns is not blocked by a
        // container setting gets no seccomp fix.
        let signs = ContainerSigns { signs: vec!["a seccomp filter is on this process".into()], root_maps_range: true };
        let checked = container_check(&report, &signs);
        let seccomp_fix = checked.fix.as_deref().is_some_and(|f| f.contains("airlock-seccomp.json"));
        assert_eq!(seccomp_fix, report.check("userns").unwrap().status == probe::Status::Missing);
    }

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
