//! `airlock oci` as a Docker runtime: Debian's dockerd 20.10, started by each test with its own data root, exec
//! root, socket and containerd (no iptables, no bridge; containers get `--network none`), airlock registered with
//! `--add-runtime airlock=WRAPPER` (the two lines `exec airlock oci "$@"`), a busybox image from `docker import`.
//! Each lifecycle runs under runc too, the reference: the same commands must give the same answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/docker.rs"]
mod docker_support;

use std::time::{Duration, Instant};

use common::*;
use docker_support::*;

macro_rules! require_docker {
    () => {
        require_sandbox!();
        if let Some(reason) = docker_missing() {
            skip_or_fail!("{reason}");
        }
    };
}

fn text(o: &std::process::Output) -> String {
    format!("status {:?}\nstdout: {}\nstderr: {}", o.status.code(), stdout(o), stderr(o))
}

/// A container name unique to this test run.
fn name(tag: &str, runtime: &str) -> String {
    format!("{tag}-{runtime}-{}", std::process::id())
}

/// The full id of container `name`.
fn container_id(d: &Dockerd, name: &str) -> String {
    let o = d.docker(&["inspect", "-f", "{{.Id}}", name]);
    assert!(o.status.success(), "docker inspect {name}: {}", text(&o));
    stdout(&o).trim().to_string()
}

fn assert_clean(d: &Dockerd, id: &str) {
    let left = d.leftovers(id);
    assert!(left.is_empty(), "container {id} left behind:\n{}\n{}", left.join("\n"), d.log());
}

/// `docker run` prints the command's output on the right streams and exits with its status; under airlock the
/// container is airlock's sandbox (root inside is not host root), and `--rm` leaves nothing behind.
#[test]
fn docker_run_output_and_status() {
    require_docker!();
    run_output_and_status(&Dockerd::start("run"));
}

/// The same with the vfs storage driver: the container's root is a plain directory, not an overlayfs mount.
#[test]
fn docker_run_on_vfs_storage() {
    require_docker!();
    run_output_and_status(&Dockerd::start_with_driver("vfs", "vfs"));
}

fn run_output_and_status(d: &Dockerd) {
    for runtime in ["runc", "airlock"] {
        let cidfile = d.dir.path().join(format!("{runtime}.cid"));
        let o = d.docker(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "--network",
            "none",
            "--cidfile",
            cidfile.to_str().unwrap(),
            IMAGE,
            "sh",
            "-c",
            "echo out; echo err >&2; cat /proc/self/uid_map; exit 3",
        ]);
        assert_eq!(o.status.code(), Some(3), "{runtime}: {}\n{}", text(&o), d.log());
        let out = stdout(&o);
        assert!(out.starts_with("out\n"), "{runtime}: {}", text(&o));
        assert_eq!(stderr(&o).trim(), "err", "{runtime}: {}", text(&o));
        let identity =
            out.lines().nth(1).unwrap_or("").split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        assert_eq!(identity, runtime == "runc", "{runtime}: the uid map inside: {out}");
        let id = std::fs::read_to_string(&cidfile).unwrap();
        assert_clean(d, id.trim());
    }
    // An image of two layers, the second (made with runc, `docker commit`) deleting a file of the first (a
    // whiteout) and adding one: airlock's container sees the image as runc's does, and writes to its root.
    let o = d.docker(&[
        "run",
        "--name",
        "layer-maker",
        "--runtime",
        "runc",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "rm /bin/false && echo second-layer > /etc/layer2",
    ]);
    assert!(o.status.success(), "making the second layer: {}", text(&o));
    let o = d.docker(&["commit", "layer-maker", "airlock-test-layered:latest"]);
    assert!(o.status.success(), "docker commit: {}", text(&o));
    let _ = d.docker(&["rm", "layer-maker"]);
    let o = d.docker(&[
        "run",
        "--rm",
        "--runtime",
        "airlock",
        "--network",
        "none",
        "airlock-test-layered:latest",
        "sh",
        "-c",
        "test ! -e /bin/false && cat /etc/layer2 && echo written > /etc/new && cat /etc/new",
    ]);
    assert_eq!(o.status.code(), Some(0), "the layered image under airlock: {}\n{}", text(&o), d.log());
    assert_eq!(stdout(&o), "second-layer\nwritten\n");
    // A missing command is the runtime's error, and docker's 127, under both.
    for runtime in ["runc", "airlock"] {
        let o = d.docker(&["run", "--rm", "--runtime", runtime, "--network", "none", IMAGE, "/bin/no-such-command"]);
        assert!(matches!(o.status.code(), Some(126 | 127)), "{runtime}: {}", text(&o));
    }
}

/// `docker exec` (output, status), `docker top` (the runtime's `ps`), `docker pause`/`unpause`, then `docker stop`
/// (SIGTERM: the container's status is the signal's) and `docker rm`; nothing left behind.
#[test]
fn docker_exec_top_pause_stop_rm() {
    require_docker!();
    let d = Dockerd::start("exec");
    for runtime in ["runc", "airlock"] {
        let name = name("exec", runtime);
        let o =
            d.docker(&["run", "-d", "--name", &name, "--runtime", runtime, "--network", "none", IMAGE, "sleep", "300"]);
        assert!(o.status.success(), "{runtime}: {}\n{}", text(&o), d.log());
        let id = container_id(&d, &name);

        let o = d.docker(&["exec", &name, "sh", "-c", "echo in-exec; echo exec-err >&2; exit 4"]);
        assert_eq!(o.status.code(), Some(4), "{runtime}: {}", text(&o));
        assert_eq!(stdout(&o), "in-exec\n", "{runtime}");
        assert_eq!(stderr(&o).trim(), "exec-err", "{runtime}");
        let o = d.docker(&["exec", "-e", "GREETING=hello", "-w", "/tmp", &name, "sh", "-c", "echo $GREETING $PWD"]);
        assert_eq!(stdout(&o), "hello /tmp\n", "{runtime}: {}", text(&o));

        let o = d.docker(&["top", &name]);
        assert!(o.status.success() && stdout(&o).contains("sleep 300"), "{runtime}: docker top: {}", text(&o));

        let o = d.docker(&["pause", &name]);
        assert!(o.status.success(), "{runtime}: docker pause: {}", text(&o));
        let o = d.docker(&["inspect", "-f", "{{.State.Status}}", &name]);
        assert_eq!(stdout(&o).trim(), "paused", "{runtime}");
        let o = d.docker(&["unpause", &name]);
        assert!(o.status.success(), "{runtime}: docker unpause: {}", text(&o));
        let o = d.docker(&["exec", &name, "echo", "after-unpause"]);
        assert_eq!(stdout(&o), "after-unpause\n", "{runtime}: {}", text(&o));

        // runc's sleep is the container's pid 1 and ignores SIGTERM (137 after the grace time); airlock's is not
        // pid 1 and dies of it (143). Either way the container stops.
        let o = d.docker(&["stop", "-t", "2", &name]);
        assert!(o.status.success(), "{runtime}: docker stop: {}", text(&o));
        let o = d.docker(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &name]);
        let state = stdout(&o);
        assert!(state.trim() == "exited 143" || state.trim() == "exited 137", "{runtime}: after docker stop: {state}");
        let o = d.docker(&["rm", &name]);
        assert!(o.status.success(), "{runtime}: docker rm: {}", text(&o));
        assert_clean(&d, &id);
    }
}

/// `docker stop` of a container that ignores SIGTERM: after the grace time the runtime's `kill ID 9` ends it, 137;
/// `docker rm -f` of a running one; nothing left behind.
#[test]
fn docker_stop_kills_what_ignores_sigterm() {
    require_docker!();
    let d = Dockerd::start("stop");
    let name = name("stop", "airlock");
    let o = d.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--runtime",
        "airlock",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    ]);
    assert!(o.status.success(), "{}\n{}", text(&o), d.log());
    let id = container_id(&d, &name);
    let started = Instant::now();
    while !stdout(&d.docker(&["logs", &name])).contains("ready") {
        assert!(started.elapsed() < Duration::from_secs(20), "the container did not start: {}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let o = d.docker(&["stop", "-t", "1", &name]);
    assert!(o.status.success(), "docker stop: {}", text(&o));
    assert!(started.elapsed() < Duration::from_secs(15), "docker stop took {:?}", started.elapsed());
    let o = d.docker(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(stdout(&o).trim(), "137", "{}", text(&o));
    let o = d.docker(&["rm", &name]);
    assert!(o.status.success(), "docker rm: {}", text(&o));
    assert_clean(&d, &id);

    let name = self::name("rmf", "airlock");
    let o =
        d.docker(&["run", "-d", "--name", &name, "--runtime", "airlock", "--network", "none", IMAGE, "sleep", "300"]);
    assert!(o.status.success(), "{}", text(&o));
    let id = container_id(&d, &name);
    let o = d.docker(&["rm", "-f", &name]);
    assert!(o.status.success(), "docker rm -f: {}", text(&o));
    assert_clean(&d, &id);
}

/// `docker run -t`: the command gets a terminal (the pty whose master airlock sends to the shim's console socket),
/// under runc and airlock alike; `docker run` needs a terminal of its own for `-t`, which `script` gives it.
#[test]
fn docker_run_t_gets_a_terminal() {
    require_docker!();
    if !std::path::Path::new("/usr/bin/script").exists() {
        skip_or_fail!("/usr/bin/script is missing (util-linux)");
    }
    let d = Dockerd::start("tty");
    for runtime in ["runc", "airlock"] {
        let inner = format!(
            "{DOCKER} run -t --rm --runtime {runtime} --network none {IMAGE} sh -c 'tty; test -t 1 && echo is-a-tty'"
        );
        let o = std::process::Command::new("timeout")
            .args(["60", "script", "-qec", &inner, "/dev/null"])
            .env("DOCKER_HOST", &d.host)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let out = stdout(&o);
        assert!(o.status.success(), "{runtime}: {}\n{}", text(&o), d.log());
        assert!(out.contains("/dev/pts/") && out.contains("is-a-tty"), "{runtime}: {}", text(&o));
    }
}
