//! Builds the BPF exec source (bpf/exec_tracer.bpf.c) into a light skeleton and the C shim around it, on
//! x86-64 Linux: clang compiles the program for the BPF target, `bpftool gen skeleton -L` embeds it with the
//! loader that has the kernel load and relocate it, and cc compiles that with the shim into a static library.
//! Needs clang, bpftool and libbpf's headers (Debian: clang, bpftool, libbpf-dev; scripts/setup-debian installs
//! them). Elsewhere, or with AIRLOCK_BUILD_WITHOUT_BPF=1, nothing is built and the audit log's exec records come
//! from seccomp notifications alone (`AIRLOCK_EXEC_RECORDS=kernel` then fails, naming the cause).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(airlock_exec_bpf)");
    println!("cargo::rerun-if-changed=bpf");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rerun-if-env-changed=BPFTOOL");
    println!("cargo::rerun-if-env-changed=AIRLOCK_BUILD_WITHOUT_BPF");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch != "x86_64" || os != "linux" || std::env::var_os("AIRLOCK_BUILD_WITHOUT_BPF").is_some_and(|v| v == "1") {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| fail("OUT_DIR is not set")));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let bpftool = std::env::var("BPFTOOL").unwrap_or_else(|_| {
        // Debian puts it in /usr/sbin, which is not on every user's PATH.
        if std::path::Path::new("/usr/sbin/bpftool").exists() {
            "/usr/sbin/bpftool".into()
        } else {
            "bpftool".into()
        }
    });
    // Two variants of one program: `exec_tracer`, loaded by each run, and `exec_tracer_shared`, loaded once and
    // pinned (see src/bpf.rs). The shared one's pin directory is named after a hash of its skeleton, so that a
    // different build never attaches a program whose records or maps it does not know.
    let mut shared_hash = 0xcbf2_9ce4_8422_2325_u64;
    for (name, define) in [("exec_tracer", None), ("exec_tracer_shared", Some("-DAIRLOCK_SHARED_TRACER"))] {
        let object = out.join(format!("{name}.bpf.o"));
        run(
            Command::new(&clang)
                .args([
                    "-g",
                    "-O2",
                    "-target",
                    "bpf",
                    "-D__TARGET_ARCH_x86",
                    "-Wall",
                    "-Werror",
                    "-Ibpf",
                    "-I/usr/include/x86_64-linux-gnu",
                ])
                .args(define)
                .args(["-c", "bpf/exec_tracer.bpf.c", "-o"])
                .arg(&object),
            "clang (Debian: apt-get install clang libbpf-dev)",
        );
        let skeleton = run(
            Command::new(&bpftool).args(["gen", "skeleton", "-L"]).arg(&object).args(["name", name]),
            "bpftool (Debian: apt-get install bpftool)",
        );
        if define.is_some() {
            // FNV-1a: a name for the build's program, not a defence (the pin directory is root's alone).
            for byte in &skeleton {
                shared_hash = (shared_hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let header = out.join(format!("{name}.lskel.h"));
        std::fs::write(&header, skeleton).unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", header.display())));
    }
    println!("cargo::rustc-env=AIRLOCK_EXEC_TRACER_SHARED_HASH={shared_hash:016x}");
    cc::Build::new()
        .file("bpf/exec_tracer_shim.c")
        .include(&out)
        .include("bpf")
        .warnings(true)
        .compile("airlock_exec_tracer");
    println!("cargo::rustc-cfg=airlock_exec_bpf");
}

/// Runs `command`, returning its standard output; on failure stops the build saying what to install.
fn run(command: &mut Command, tool: &str) -> Vec<u8> {
    match command.output() {
        Ok(out) if out.status.success() => out.stdout,
        Ok(out) => fail(&format!("{command:?} failed:\n{}", String::from_utf8_lossy(&out.stderr))),
        Err(e) => fail(&format!("cannot run {tool}: {e}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("airlock-sys build: {message}");
    std::process::exit(1)
}
