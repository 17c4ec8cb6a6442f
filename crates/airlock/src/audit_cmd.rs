//! `airlock logs`: a sandbox's audit log, as a timeline, as JSON lines, or verified. What is recorded, and
//! when, is the session layer's (`session::recorder`).

use std::io::{BufRead, Seek, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::state;

/// `airlock logs NAME [-f] [--json] [--verify]`.
pub fn logs(name: &str, follow: bool, json_out: bool, verify: bool) -> Result<i32> {
    policy::names::validate_sandbox_name(name).map_err(|e| anyhow!("{e}"))?;
    let dir = state::sandbox_dir(name);
    if !dir.exists() {
        bail!("no sandbox named {name} (see `airlock ls`)");
    }
    let path = dir.audit_log();
    if !path.exists() {
        bail!("sandbox {name} has no audit log (it was run with --rm, or before audit logs existed)");
    }
    if verify {
        let report = audit::verify(&path)?;
        if report.ok() {
            println!("{}: {} records, hash chain intact", path.display(), report.records);
            return Ok(0);
        }
        for p in &report.problems {
            crate::say(&format!("{}: line {}: {}", path.display(), p.line, p.what));
        }
        return Ok(1);
    }
    let mut file = std::fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let stdout = std::io::stdout();
    let mut pending = Vec::new();
    // -f ends on SIGINT by its default action; otherwise once the sandbox has ended and the log is drained.
    loop {
        let mut reader = std::io::BufReader::new(&mut file);
        let mut got_any = false;
        loop {
            let mut buf = Vec::new();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf);
            if pending.last() != Some(&b'\n') {
                // A line still being written: wait for its end.
                break;
            }
            got_any = true;
            let line = std::mem::take(&mut pending);
            let mut out = stdout.lock();
            if json_out {
                out.write_all(&line)?;
            } else {
                writeln!(out, "{}", human_line(&line))?;
            }
        }
        let pos = reader.stream_position()?;
        drop(reader);
        file.seek(std::io::SeekFrom::Start(pos))?;
        std::io::stdout().flush()?;
        if !follow {
            return Ok(0);
        }
        if !got_any && !state::is_running(&dir) {
            return Ok(0);
        }
        if !got_any {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One record as a timeline line: `12:00:01 exec /usr/bin/git status (pid 7)`. Control characters are escaped
/// (the content comes from inside the sandbox).
pub fn human_line(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let v: Value = match serde_json::from_str(text.trim_end()) {
        Ok(v) => v,
        Err(_) => return escape(&format!("(unreadable record) {}", text.trim_end())),
    };
    let time = v["time"].as_str().and_then(|t| t.get(11..19)).unwrap_or("--:--:--").to_string();
    let s = |k: &Value| k.as_str().unwrap_or("").to_string();
    let kind = s(&v["kind"]);
    let body = match kind.as_str() {
        "exec" => {
            let p = &v["process"];
            let path = s(&p["file"]["path"]);
            let args: Vec<String> =
                p["argv"].as_array().map(|a| a.iter().skip(1).map(&s).collect()).unwrap_or_default();
            let mut line = format!("exec {path}");
            if !args.is_empty() {
                line.push(' ');
                line.push_str(&args.join(" "));
            }
            line.push_str(&format!(" (pid {})", p["pid"]));
            if let Some(markers) = v["markers"].as_array().filter(|m| !m.is_empty()) {
                let names: Vec<String> = markers.iter().map(&s).collect();
                line.push_str(&format!(" [{}]", names.join(", ")));
            }
            line
        }
        "denied" => format!(
            "denied {} -> {} (pid {}, rule {})",
            s(&v["syscall"]),
            s(&v["errno_name"]),
            v["process"]["pid"],
            v["rule"]
        ),
        "created" => created_line(&v),
        "started" => format!("started (policy sha256 {})", s(&v["policy_sha256"]).get(..16).unwrap_or("")),
        "attached" => format!(
            "exec into sandbox: {}",
            v["command"].as_array().map(|a| a.iter().map(&s).collect::<Vec<_>>().join(" ")).unwrap_or_default()
        ),
        "exited" => format!("exited: {} status {} after {} ms", s(&v["reason"]), v["status"], v["duration_ms"]),
        "resource" => format!("resource: {} ({})", s(&v["resource"]), s(&v["message"])),
        "workspace" => {
            let n = v["total"].as_u64().unwrap_or(0);
            match v["action"].as_str().unwrap_or("") {
                "rollback" => format!("workspace rolled back to checkpoint {}", s(&v["label"])),
                "commit_refused" => format!("workspace commit refused: {n} conflict(s)"),
                action => format!("workspace {action}: {n} change(s)"),
            }
        }
        "files" => {
            let label = v["label"].as_str().map(|l| format!(" {l}")).unwrap_or_default();
            let total = match v["total"].as_u64() {
                Some(n) => n.to_string(),
                None => format!("{}+", v["files"].as_array().map_or(0, Vec::len)),
            };
            format!("files at {}{label}: {total} change(s)", s(&v["trigger"]))
        }
        "file_write" => {
            format!("write refused? {} {} (pid {})", s(&v["syscall"]), s(&v["file"]["path"]), v["process"]["pid"])
        }
        "network" => {
            // `name (address):port`, each part only when the record has it (a refused DNS query has no port).
            let mut destination = match (v["name"].as_str(), v["address"].as_str()) {
                (Some(name), Some(address)) if name != address => format!("{name} ({address})"),
                (Some(name), _) => name.to_string(),
                (None, Some(address)) => address.to_string(),
                (None, None) => "?".to_string(),
            };
            if let Some(port) = v["port"].as_u64() {
                destination.push_str(&format!(":{port}"));
            }
            let bytes = match (v["bytes_out"].as_u64(), v["bytes_in"].as_u64()) {
                (Some(out), Some(inn)) if out + inn > 0 => format!(" ({out} bytes out, {inn} in)"),
                _ => String::new(),
            };
            format!("network {} {} {destination} {}{bytes}", s(&v["decision"]), s(&v["protocol"]), s(&v["reason"]))
        }
        other => format!("{other} {}", text.trim_end()),
    };
    escape(&format!("{time} {body}"))
}

/// `created: CMD (rootfs host, workspace /w, net none)`; a long-lived sandbox has no command:
/// `created: long-lived sandbox (...)`.
fn created_line(v: &Value) -> String {
    let what = match v["command"].as_array() {
        Some(argv) => argv.iter().map(|a| a.as_str().unwrap_or("")).collect::<Vec<_>>().join(" "),
        None if v["long_lived"] == true => "long-lived sandbox".to_string(),
        None => "sandbox".to_string(),
    };
    let mut parts = Vec::new();
    match v["rootfs"]["type"].as_str() {
        Some("dir") => parts.push(format!("rootfs {}", v["rootfs"]["path"].as_str().unwrap_or("?"))),
        Some("layers") => parts.push("rootfs image".to_string()),
        Some(other) => parts.push(format!("rootfs {other}")),
        None => {}
    }
    if let Some(w) = v["workspace"].as_str() {
        parts.push(format!("workspace {w}"));
    }
    if let Some(mode) = v["network"]["mode"].as_str() {
        let allowed: Vec<String> = v["network"]["allow"]
            .as_array()
            .map(|rules| {
                rules
                    .iter()
                    .map(|r| match r["port"].as_u64() {
                        Some(port) => format!("{}:{port}", r["domain"].as_str().unwrap_or("?")),
                        None => r["domain"].as_str().unwrap_or("?").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if allowed.is_empty() {
            parts.push(format!("net {mode}"));
        } else {
            parts.push(format!("net {mode} {}", allowed.join(",")));
        }
    }
    if parts.is_empty() {
        format!("created: {what}")
    } else {
        format!("created: {what} ({})", parts.join(", "))
    }
}

/// Control characters shown escaped, as `say` does.
fn escape(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn network_records_read_as_a_timeline() {
        let line = |v: Value| human_line(v.to_string().as_bytes());
        let dns = json!({"time": "2026-11-29T12:00:01.000Z", "kind": "network", "protocol": "dns",
            "name": "example.com", "address": null, "port": null, "decision": "denied",
            "reason": "name not on the allow-list", "bytes_out": 0, "bytes_in": 0});
        assert_eq!(line(dns), "12:00:01 network denied dns example.com name not on the allow-list");
        let tls = json!({"time": "2026-11-29T12:00:02.000Z", "kind": "network", "protocol": "tls",
            "name": "pypi.org", "address": "151.101.0.223", "port": 443, "decision": "allowed",
            "reason": "allowed by pypi.org; closed", "bytes_out": 10, "bytes_in": 20});
        assert_eq!(
            line(tls),
            "12:00:02 network allowed tls pypi.org (151.101.0.223):443 allowed by pypi.org; closed (10 bytes out, 20 in)"
        );
        let literal = json!({"time": "2026-11-29T12:00:03.000Z", "kind": "network", "protocol": "tcp",
            "address": "192.0.2.1\u{1b}[2J", "port": 80, "decision": "denied", "reason": "not allowed"});
        assert_eq!(line(literal), "12:00:03 network denied tcp 192.0.2.1\\u{1b}[2J:80 not allowed");
    }
}
