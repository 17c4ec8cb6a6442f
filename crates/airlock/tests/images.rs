//! `airlock image import | ls | inspect | rm | prune`, driving the real binary: an OCI layout that umoci builds
//! from files the test writes (a layer with a whiteout, one with an opaque directory), the same layout as a tar,
//! a `docker save` tarball written by hand, and hostile input (tar-slip, wrong digests, a truncated gzip, another
//! architecture), each refused with one clear line and nothing left in the store or written outside.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/daemon.rs"]
mod daemon_client;

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-images-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `airlock ARGS...` with the state directory `state`.
fn airlock(state: &Path, args: &[&str]) -> Output {
    Command::new(common::airlock_path())
        .args(args)
        .env("AIRLOCK_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .expect("spawn airlock")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "airlock failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one `airlock:` line of a refused command (exit 1).
fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "should be refused: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("airlock: "), "{stderr}");
    stderr
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Nothing in the store: no record, reference, blob, layer or temporary file.
fn assert_store_empty(state: &Path) {
    let images = state.join("images");
    for dir in ["records", "layers", "blobs/sha256", "tmp"] {
        assert_eq!(count(&images.join(dir)), 0, "{dir} should be empty");
    }
    let refs = std::fs::read_to_string(images.join("refs.json")).unwrap_or_else(|_| "{}".to_string());
    assert_eq!(serde_json::from_str::<Value>(&refs).unwrap(), json!({}));
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let file = std::fs::File::open(path).unwrap();
    let mut buf = [0u8; 64];
    sys::xattr::fgetxattr(file.as_fd(), &CString::new(name).unwrap(), &mut buf).ok().map(|n| buf[..n].to_vec())
}

/// One tar entry, written with a raw header so hostile names (`..`, absolute) go in as given.
enum Item<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

fn tar_of(items: &[Item<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], &str) = match item {
            Item::Dir(n) => (n, tar::EntryType::Directory, b"", ""),
            Item::File(n, d) => (n, tar::EntryType::Regular, d, ""),
            Item::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", t),
        };
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A tar (uncompressed) of the files under `dir`, with their relative names.
fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// A `docker save` tarball: the config (with `diff_ids`, the real ones unless given), one tar per layer (as
/// given: plain or gzipped), `manifest.json` naming `tag`, and `repositories`.
fn docker_save(path: &Path, layers: &[(Vec<u8>, Vec<u8>)], diff_ids: Option<Vec<String>>, tag: &str) {
    let config = json!({"Env": ["PATH=/usr/bin:/bin", "GREETING=hi"], "WorkingDir": "/srv", "User": "65534", "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"]});
    docker_save_with_config(path, layers, diff_ids, tag, config);
}

/// [`docker_save`] with the image config's `config` object given.
fn docker_save_with_config(
    path: &Path,
    layers: &[(Vec<u8>, Vec<u8>)],
    diff_ids: Option<Vec<String>>,
    tag: &str,
    config: Value,
) {
    let diff_ids = diff_ids.unwrap_or_else(|| layers.iter().map(|(tar, _)| sha256(tar)).collect());
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add(&config_name, &config);
    let mut names = Vec::new();
    for (i, (_, blob)) in layers.iter().enumerate() {
        names.push(format!("layer{i}/layer.tar"));
        add(&format!("layer{i}/layer.tar"), blob);
    }
    let (repo, t) = tag.rsplit_once(':').unwrap();
    add(
        "manifest.json",
        &serde_json::to_vec(&json!([{"Config": config_name, "RepoTags": [tag], "Layers": names}])).unwrap(),
    );
    add("repositories", &serde_json::to_vec(&json!({ repo: { t: "0" } })).unwrap());
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// An OCI layout written by hand: one manifest per `(architecture, layer blobs)`, in an image index when there
/// are several; `layer_digest` overrides the digest the manifest gives the first layer.
fn oci_layout(dir: &Path, images: &[(&str, Vec<Vec<u8>>)], layer_digest: Option<&str>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        std::fs::write(blobs.join(&d[7..]), bytes).unwrap();
        json!({"digest": d, "size": bytes.len()})
    };
    let mut manifests = Vec::new();
    for (arch, layers) in images {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let config = put(&serde_json::to_vec(&json!({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/true"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids}})).unwrap());
        let mut layer_descs = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let mut desc = put(layer);
            if let (0, Some(d)) = (i, layer_digest) {
                desc["digest"] = json!(d);
            }
            desc["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar");
            layer_descs.push(desc);
        }
        let mut config = config;
        config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
        let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": config, "layers": layer_descs})).unwrap();
        let mut desc = put(&manifest);
        desc["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
        desc["platform"] = json!({"architecture": arch, "os": "linux"});
        manifests.push(desc);
    }
    let top = if manifests.len() == 1 {
        manifests
    } else {
        let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})).unwrap();
        let mut desc = put(&index);
        desc["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
        vec![desc]
    };
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": top})).unwrap())
        .unwrap();
}

#[test]
fn umoci_layout_imports_with_whiteouts_opaque_dirs_links_and_modes() {
    if !common::is_root() {
        skip_or_fail!("needs root (umoci unpack keeps owners only as root)");
    }
    if Command::new("umoci").arg("--version").output().is_err() {
        skip_or_fail!("umoci is not installed (apt-get install umoci; scripts/setup-debian installs it)");
    }
    let t = scratch("umoci");
    let state = t.join("state");
    let layout = t.join("img");
    let image = format!("{}:latest", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    // Layer 1: files, a symlink, a hard link, modes and owners.
    let b1 = t.join("b1");
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&b1));
    let r = b1.join("rootfs");
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("data/sub")).unwrap();
    std::fs::write(r.join("etc/greeting"), "hello\n").unwrap();
    std::fs::set_permissions(r.join("etc/greeting"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(r.join("etc/greeting"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::symlink("greeting", r.join("etc/link")).unwrap();
    std::fs::hard_link(r.join("etc/greeting"), r.join("etc/hard")).unwrap();
    std::fs::write(r.join("etc/deleteme"), "bye\n").unwrap();
    std::fs::write(r.join("data/sub/old"), "old\n").unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&b1));
    // Layer 2: deletes a file (a whiteout).
    let b2 = t.join("b2");
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&b2));
    std::fs::remove_file(b2.join("rootfs/etc/deleteme")).unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&b2));
    // Layer 3: makes data/sub opaque (a tar the test writes, added as it is).
    let opaque = t.join("opaque.tar");
    std::fs::write(
        &opaque,
        tar_of(&[
            Item::Dir("data/sub/"),
            Item::File("data/sub/.wh..wh..opq", b""),
            Item::File("data/sub/new", b"new\n"),
        ]),
    )
    .unwrap();
    run(Command::new("umoci").args(["raw", "add-layer", "--image", &image]).arg(&opaque));
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.env",
        "FOO=bar",
        "--config.workingdir",
        "/data",
        "--config.cmd",
        "/bin/sh",
    ]));

    let out =
        ok(&airlock(&state, &["image", "import", layout.to_str().unwrap(), "--tag", "localhost:5055/test/img:1"]));
    assert!(out.contains("imported localhost:5055/test/img:1"), "{out}");
    let ls = ok(&airlock(&state, &["image", "ls"]));
    assert!(ls.contains("localhost:5055/test/img:1"), "{ls}");
    let doc: Value =
        serde_json::from_str(&ok(&airlock(&state, &["image", "inspect", "localhost:5055/test/img:1"]))).unwrap();
    assert_eq!(doc["config"]["env"], json!(["FOO=bar"]));
    assert_eq!(doc["config"]["working_dir"], json!("/data"));
    assert_eq!(doc["config"]["cmd"], json!(["/bin/sh"]));
    let dirs: Vec<PathBuf> =
        doc["layer_dirs"].as_array().unwrap().iter().map(|d| PathBuf::from(d.as_str().unwrap())).collect();
    assert_eq!(dirs.len(), 3, "{doc}");

    let greeting = std::fs::symlink_metadata(dirs[0].join("etc/greeting")).unwrap();
    assert_eq!(greeting.mode() & 0o7777, 0o750);
    assert_eq!((greeting.uid(), greeting.gid()), (1234, 5678));
    assert_eq!(std::fs::symlink_metadata(dirs[0].join("etc/hard")).unwrap().ino(), greeting.ino());
    assert_eq!(std::fs::read_link(dirs[0].join("etc/link")).unwrap(), PathBuf::from("greeting"));
    let whiteout = std::fs::symlink_metadata(dirs[1].join("etc/deleteme")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0, "a 0/0 whiteout");
    assert_eq!(xattr(&dirs[2].join("data/sub"), "user.overlay.opaque"), Some(b"y".to_vec()));
    assert!(!dirs[2].join("data/sub/.wh..wh..opq").exists());
    assert_eq!(std::fs::read(dirs[2].join("data/sub/new")).unwrap(), b"new\n");

    // The same layout as a tar, under another name: the same image, its layers shared.
    let tarball = t.join("img.tar");
    std::fs::write(&tarball, tar_dir(&layout)).unwrap();
    ok(&airlock(&state, &["image", "import", tarball.to_str().unwrap(), "--tag", "again"]));
    let listed: Value = serde_json::from_str(&ok(&airlock(&state, &["image", "ls", "--json"]))).unwrap();
    let images = listed["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{listed}");
    assert_eq!(images[0]["references"], json!(["docker.io/library/again:latest", "localhost:5055/test/img:1"]));
    assert_eq!(count(&state.join("images/layers")), 3);

    // rm both names, prune: the store is empty again.
    let id = images[0]["id"].as_str().unwrap().to_string();
    ok(&airlock(&state, &["image", "rm", "again"]));
    ok(&airlock(&state, &["image", "rm", &id[7..19]]));
    assert!(refused(&airlock(&state, &["image", "inspect", "again"])).contains("no image again"));
    let pruned = ok(&airlock(&state, &["image", "prune"]));
    assert!(pruned.contains("freed 3 layer(s)"), "{pruned}");
    assert_store_empty(&state);
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn docker_save_tarball_imports_and_prunes() {
    let t = scratch("docker");
    let state = t.join("state");
    let base = tar_of(&[Item::Dir("bin/"), Item::File("bin/tool", b"#!/bin/sh\n"), Item::File("etc/old", b"x")]);
    let top = tar_of(&[Item::File("etc/.wh.old", b""), Item::File("etc/new", b"y")]);
    let archive = t.join("save.tar");
    docker_save(&archive, &[(base.clone(), base), (top.clone(), gzip(&top))], None, "example/tool:2.0");
    let out = ok(&airlock(&state, &["image", "import", archive.to_str().unwrap()]));
    assert!(out.contains("imported docker.io/example/tool:2.0"), "{out}");
    let doc: Value = serde_json::from_str(&ok(&airlock(&state, &["image", "inspect", "example/tool:2.0"]))).unwrap();
    assert_eq!(doc["source"], json!("docker-archive"));
    assert_eq!(doc["config"]["user"], json!("65534"));
    assert_eq!(doc["config"]["entrypoint"], json!(["/bin/sh", "-c"]));
    let id = doc["id"].as_str().unwrap();
    // By id prefix too.
    let by_id: Value = serde_json::from_str(&ok(&airlock(&state, &["image", "inspect", &id[..15]]))).unwrap();
    assert_eq!(by_id["id"], doc["id"]);
    let top_dir = PathBuf::from(doc["layer_dirs"][1].as_str().unwrap());
    assert!(std::fs::symlink_metadata(top_dir.join("etc/old")).unwrap().file_type().is_char_device());
    ok(&airlock(&state, &["image", "rm", "example/tool:2.0"]));
    ok(&airlock(&state, &["image", "prune"]));
    assert_store_empty(&state);
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn an_image_index_yields_this_platform_and_another_architecture_is_refused() {
    let t = scratch("platform");
    let state = t.join("state");
    let multi = t.join("multi");
    oci_layout(
        &multi,
        &[("arm64", vec![tar_of(&[Item::File("arm", b"a")])]), ("amd64", vec![tar_of(&[Item::File("amd", b"b")])])],
        None,
    );
    ok(&airlock(&state, &["image", "import", multi.to_str().unwrap(), "--tag", "multi"]));
    let inspect: Value = serde_json::from_str(&ok(&airlock(&state, &["image", "inspect", "multi"]))).unwrap();
    assert!(PathBuf::from(inspect["layer_dirs"][0].as_str().unwrap()).join("amd").exists());
    let arm = t.join("arm");
    oci_layout(&arm, &[("arm64", vec![tar_of(&[Item::File("arm", b"a")])])], None);
    let err = refused(&airlock(&state, &["image", "import", arm.to_str().unwrap(), "--tag", "arm"]));
    assert!(err.contains("no image for linux/amd64") && err.contains("linux/arm64"), "{err}");
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn hostile_layers_are_refused_leaving_nothing() {
    let t = scratch("hostile");
    let outside = t.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let abs = format!("/tmp/airlock-images-abs-{}", std::process::id());
    let good = tar_of(&[Item::File("f", b"x")]);
    let truncated = {
        let g = gzip(&tar_of(&[Item::File("big", &[7u8; 100_000])]));
        g[..g.len() / 2].to_vec()
    };
    let big_tar = tar_of(&[Item::File("big", &[7u8; 100_000])]);
    /// A case: its name, the layers (diff tar, blob as shipped), the diff_ids to claim, what the error says.
    type Case<'a> = (&'a str, Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<String>>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "dotdot",
            vec![{
                let l = tar_of(&[Item::File("../escape", b"x")]);
                (l.clone(), l)
            }],
            None,
            "refused tar entry \"../escape\": a `..` component",
        ),
        (
            "absolute",
            vec![{
                let l = tar_of(&[Item::File(&abs, b"x")]);
                (l.clone(), l)
            }],
            None,
            "an absolute path",
        ),
        (
            "symlink",
            vec![{
                let l = tar_of(&[Item::Symlink("evil", outside.to_str().unwrap()), Item::File("evil/x", b"x")]);
                (l.clone(), l)
            }],
            None,
            "refused tar entry \"evil/x\": a path through a symlink",
        ),
        (
            "diff-id",
            vec![(good.clone(), good.clone())],
            Some(vec![sha256(b"something else")]),
            "does not match its digest",
        ),
        ("truncated", vec![(big_tar.clone(), truncated)], None, "reading the layer's tar stream"),
    ];
    for (name, layers, diff_ids, why) in cases {
        let state = t.join(format!("state-{name}"));
        let archive = t.join(format!("{name}.tar"));
        docker_save(&archive, &layers, diff_ids, "hostile:1");
        let err = refused(&airlock(&state, &["image", "import", archive.to_str().unwrap()]));
        assert!(err.contains(why), "{name}: {err} should say {why}");
        assert_store_empty(&state);
        assert!(!state.join("images/escape").exists() && !state.join("escape").exists());
    }
    // An OCI layout whose manifest gives a layer a digest its blob does not have.
    let state = t.join("state-digest");
    let layout = t.join("baddigest");
    let wrong = sha256(b"not the layer");
    oci_layout(&layout, &[("amd64", vec![good.clone()])], Some(&wrong));
    std::fs::copy(layout.join("blobs/sha256").join(&sha256(&good)[7..]), layout.join("blobs/sha256").join(&wrong[7..]))
        .unwrap();
    let err = refused(&airlock(&state, &["image", "import", layout.to_str().unwrap(), "--tag", "bad"]));
    assert!(err.contains("does not match its digest"), "{err}");
    assert_store_empty(&state);

    assert!(!Path::new(&abs).exists(), "nothing at the absolute path");
    assert_eq!(count(&outside), 0, "nothing written through the symlink");
    assert!(!t.join("escape").exists());
    let _ = std::fs::remove_dir_all(&t);
}

/// Debian's docker-registry with a config of its own: 127.0.0.1 on a free port, storage in `dir`. Killed when
/// dropped.
struct LoopbackRegistry {
    child: std::process::Child,
    port: u16,
}

impl LoopbackRegistry {
    fn start(dir: &Path) -> LoopbackRegistry {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
                dir.join("registry-storage").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = LoopbackRegistry { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "docker-registry did not listen on 127.0.0.1:{port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        registry
    }
}

impl Drop for LoopbackRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An image umoci builds in `t/layout` (tag `v1`) from files written here: busybox as /bin/sh and friends, an
/// `/etc/passwd` with root and `u` (1000), `/home/u` owned by 1000, `/etc/motd`; its config has Env GREETING and
/// PATH, WorkingDir /etc and Cmd `cat motd`; `user` becomes its User. Answers `layout:v1`.
fn build_busybox_image(t: &Path, user: Option<&str>) -> String {
    let layout = t.join("layout");
    let image = format!("{}:v1", layout.display());
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    let bundle = t.join("bundle");
    run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle));
    let root = bundle.join("rootfs");
    for dir in ["bin", "etc", "home/u"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in ["sh", "cat", "echo", "id", "pwd", "env", "ls", "touch", "chown", "grep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n").unwrap();
    std::os::unix::fs::chown(root.join("home/u"), Some(1000), Some(1000)).unwrap();
    std::fs::write(root.join("etc/motd"), "from the image\n").unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    let mut config = Command::new("umoci");
    config.args([
        "config",
        "--image",
        &image,
        "--config.env=GREETING=hello",
        "--config.env=PATH=/bin",
        "--config.workingdir=/etc",
        "--config.cmd=/bin/cat",
        "--config.cmd=motd",
    ]);
    if let Some(user) = user {
        config.arg(format!("--config.user={user}"));
    }
    run(&mut config);
    image
}

/// [`build_busybox_image`], pushed with skopeo to `registry` as `test/bb:v1`.
fn push_busybox_image(t: &Path, registry: &LoopbackRegistry) -> String {
    let image = build_busybox_image(t, None);
    let reference = format!("127.0.0.1:{}/test/bb:v1", registry.port);
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci:{image}"),
        &format!("docker://{reference}"),
    ]));
    reference
}

#[test]
fn pull_from_a_loopback_registry_imports_reuses_and_prunes_its_cache() {
    if !common::is_root() {
        skip_or_fail!("needs root (umoci unpack keeps owners only as root)");
    }
    for tool in ["docker-registry", "umoci", "skopeo"] {
        if Command::new(tool).arg("--version").output().is_err() {
            skip_or_fail!("{tool} is not installed (scripts/setup-debian installs it)");
        }
    }
    let t = scratch("pull");
    let state = t.join("state");
    let registry = LoopbackRegistry::start(&t);
    let reference = push_busybox_image(&t, &registry);

    // Pulled, imported under the whole reference; progress on stderr as plain lines (no terminal here).
    let out = airlock(&state, &["image", "pull", &reference]);
    assert!(ok(&out).starts_with(&format!("pulled {reference} (")), "{}", String::from_utf8_lossy(&out.stdout));
    let progress = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(progress.contains("layer 1/1") && progress.contains(" done ("), "{progress}");
    assert!(ok(&airlock(&state, &["image", "ls"])).contains(&reference));
    let doc: Value = serde_json::from_str(&ok(&airlock(&state, &["image", "inspect", &reference]))).unwrap();
    assert!(doc.to_string().contains("GREETING=hello"), "{doc}");

    // Again: nothing fetched, the same image.
    let again = airlock(&state, &["image", "pull", &reference]);
    ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already here"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // A reference the registry does not have: one line, exit 1, nothing new in the store.
    let missing = format!("127.0.0.1:{}/test/none:v1", registry.port);
    let line = refused(&airlock(&state, &["image", "pull", &missing]));
    assert!(line.contains("404"), "{line}");

    // rm and prune: the store and the pull cache are empty again.
    ok(&airlock(&state, &["image", "rm", &reference]));
    ok(&airlock(&state, &["image", "prune"]));
    assert_store_empty(&state);
    assert_eq!(count(&state.join("images/pull-cache/blobs/sha256")), 0);
    drop(registry);
    let _ = std::fs::remove_dir_all(&t);
}

/// `airlock ARGS...` with the state directory `state`, its stdout (asserting exit 0).
fn sh_out(state: &Path, args: &[&str]) -> String {
    ok(&airlock(state, args))
}

#[test]
fn run_and_create_from_an_image_with_its_config_and_a_writable_root() {
    if !common::is_root() {
        skip_or_fail!("needs root (umoci unpack keeps owners only as root)");
    }
    if Command::new("umoci").arg("--version").output().is_err() {
        skip_or_fail!("umoci is not installed (scripts/setup-debian installs it)");
    }
    require_sandbox!();
    let t = scratch("run-image");
    let state = t.join("state");
    let layout = t.join("layout");
    let _ = build_busybox_image(&t, None);
    ok(&airlock(&state, &["image", "import", layout.to_str().unwrap(), "--tag", "test/bb:v1"]));

    // No command: the image's Cmd, in its WorkingDir.
    assert_eq!(sh_out(&state, &["run", "--image", "test/bb:v1"]), "from the image\n");
    // A command: the image's Env and WorkingDir; `/` is writable, and what was written is gone after the run.
    let out = sh_out(
        &state,
        &["run", "--image", "test/bb:v1", "--", "sh", "-c", "echo $GREETING; pwd; id -u; touch /new && echo wrote"],
    );
    assert_eq!(out, "hello\n/etc\n0\nwrote\n");
    assert_eq!(
        sh_out(&state, &["run", "--image", "test/bb:v1", "--", "sh", "-c", "ls /new 2>/dev/null || echo gone"]),
        "gone\n"
    );
    // The flags win over the image: --env, --user.
    let out = sh_out(
        &state,
        &[
            "run",
            "--image",
            "test/bb:v1",
            "--env",
            "GREETING=hi",
            "--user",
            "1000",
            "--",
            "sh",
            "-c",
            "echo $GREETING; id -u",
        ],
    );
    assert_eq!(out, "hi\n1000\n");
    // The image's own files keep their owners inside (as root the image's ids are the sandbox's).
    let out = sh_out(&state, &["run", "--image", "test/bb:v1", "--", "sh", "-c", "ls -ln /home | tail -1"]);
    assert!(out.contains(" 1000 ") && out.contains(" 1000 "), "{out}");
    // An image that does not exist: one line, exit 125, nothing made.
    let missing = airlock(&state, &["run", "--image", "no/such:1", "--", "true"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no image"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // create: the image's config for every exec, its root layer kept until rm, the image kept while it exists.
    let _cleanup = common::StopOnDrop::new("imgbox", |args: &[&str]| airlock(&state, args));
    ok(&airlock(&state, &["create", "--image", "test/bb:v1", "imgbox"]));
    let out = sh_out(&state, &["exec", "imgbox", "--", "sh", "-c", "echo $GREETING; pwd; echo kept > /etc/kept"]);
    assert_eq!(out, "hello\n/etc\n");
    assert_eq!(sh_out(&state, &["exec", "imgbox", "--", "cat", "/etc/kept"]), "kept\n");
    let refused_rm = airlock(&state, &["image", "rm", "test/bb:v1"]);
    assert!(!refused_rm.status.success());
    assert!(String::from_utf8_lossy(&refused_rm.stderr).contains("in use by sandbox imgbox"));
    ok(&airlock(&state, &["stop", "imgbox"]));
    ok(&airlock(&state, &["rm", "imgbox"]));
    ok(&airlock(&state, &["image", "rm", "test/bb:v1"]));
    ok(&airlock(&state, &["image", "prune"]));
    assert_store_empty(&state);
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn an_images_user_is_looked_up_in_its_own_passwd() {
    if !common::is_root() {
        skip_or_fail!("needs root (umoci unpack keeps owners only as root)");
    }
    if Command::new("umoci").arg("--version").output().is_err() {
        skip_or_fail!("umoci is not installed (scripts/setup-debian installs it)");
    }
    require_sandbox!();
    let t = scratch("image-user");
    let state = t.join("state");
    let layout = t.join("layout");
    let _ = build_busybox_image(&t, Some("u"));
    ok(&airlock(&state, &["image", "import", layout.to_str().unwrap(), "--tag", "test/user:v1"]));
    let out = sh_out(
        &state,
        &["run", "--image", "test/user:v1", "--", "sh", "-c", "id -u; id -g; touch /home/u/mine && echo wrote"],
    );
    assert_eq!(out, "1000\n1000\nwrote\n");
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn the_daemon_creates_from_an_image() {
    if !common::is_root() {
        skip_or_fail!("needs root (umoci unpack keeps owners only as root)");
    }
    if Command::new("umoci").arg("--version").output().is_err() {
        skip_or_fail!("umoci is not installed (scripts/setup-debian installs it)");
    }
    require_sandbox!();
    let d = daemon_client::Daemon::start("api-image", &[]);
    let t = scratch("daemon-image");
    let layout = t.join("layout");
    let _ = build_busybox_image(&t, None);
    ok(&airlock(&d.state, &["image", "import", layout.to_str().unwrap(), "--tag", "test/bb:v1"]));
    let c = d.client();
    let name = c.create(&json!({ "image": "test/bb:v1" }));
    let v = c.exec(&name, &json!({ "cmd": ["sh", "-c", "echo $GREETING; pwd; touch /etc/z && echo wrote"] }));
    assert_eq!(v["stdout"], "hello\n/etc\nwrote\n", "{v}");
    let missing = c.post("/v1/sandboxes", &json!({ "image": "no/such:1" }));
    assert_eq!(missing.status, 422, "{}", missing.text());
    let both = c.post("/v1/sandboxes", &json!({ "image": "test/bb:v1", "rootfs": "/srv" }));
    assert_eq!(both.status, 400, "{}", both.text());
    assert_eq!(c.delete(&format!("/v1/sandboxes/{name}")).status, 204);
    let _ = std::fs::remove_dir_all(&t);
}

/// Debian's root filesystem (mmdebstrap's `apt` variant, as a tar) that `scripts/setup-debian` makes, since a test
/// may not reach a mirror; `AIRLOCK_TEST_DEBIAN_TAR` names another.
fn debian_rootfs_tar() -> Option<PathBuf> {
    let path = std::env::var_os("AIRLOCK_TEST_DEBIAN_TAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/airlock-test/debian-apt.tar"));
    path.is_file().then_some(path)
}

/// A one-package apt repository: `airlock-hello`, whose postinst adds a system user and gives it a directory
/// (so dpkg needs root's chown and a second id), indexed by `apt-ftparchive`.
fn local_apt_repository(dir: &Path) {
    let pkg = dir.join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/bin")).unwrap();
    std::fs::write(pkg.join("usr/bin/airlock-hello"), "#!/bin/sh\necho hello from a package\n").unwrap();
    std::fs::set_permissions(pkg.join("usr/bin/airlock-hello"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: airlock-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: airlock tests <t@example.invalid>\n\
         Description: a package the tests install\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("DEBIAN/postinst"),
        "#!/bin/sh\nset -e\nuseradd --system hello-svc\ninstall -d -o hello-svc -m 700 /var/lib/airlock-hello\n",
    )
    .unwrap();
    std::fs::set_permissions(pkg.join("DEBIAN/postinst"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&pkg)
        .arg(repo.join("airlock-hello_1.0_all.deb")));
    let packages = Command::new("apt-ftparchive").args(["packages", "."]).current_dir(&repo).output().unwrap();
    assert!(packages.status.success(), "{}", String::from_utf8_lossy(&packages.stderr));
    std::fs::write(repo.join("Packages"), packages.stdout).unwrap();
}

/// In a sandbox of the Debian image: the repository served on the sandbox's own loopback (busybox httpd from the
/// host), the image's own sources dropped, then `apt-get update && apt-get install`; the package's command runs
/// and its postinst's user owns its directory.
const APT_SCRIPT: &str =
    "busybox httpd -p 127.0.0.1:8080 -h /repo && rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* && \
    echo 'deb [trusted=yes] http://127.0.0.1:8080/ ./' > /etc/apt/sources.list.d/local.list && \
    apt-get update -q && apt-get install -q -y airlock-hello && airlock-hello && stat -c %U /var/lib/airlock-hello";

/// apt's own sandbox (downloads as `_apt`, the postinst's `useradd`, dpkg's chowns) needs a second user and
/// root's file capabilities inside: as root the sandbox's 65536-id range gives the users; rootless the test
/// user's `/etc/subuid` range through `newuidmap`. Nothing of either run stays on the host.
#[test]
fn apt_get_installs_a_package_in_a_debian_image_as_root_and_rootless() {
    if !common::is_root() {
        skip_or_fail!("needs root (the image's owners; the rootless half needs a test user with subordinate ids)");
    }
    let Some(debian) = debian_rootfs_tar() else {
        skip_or_fail!(
            "no Debian root filesystem tar (scripts/setup-debian makes /var/cache/airlock-test/debian-apt.tar)"
        );
    };
    for tool in ["dpkg-deb", "apt-ftparchive", "newuidmap", "busybox"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success())
        {
            skip_or_fail!("{tool} is not installed (scripts/setup-debian installs it)");
        }
    }
    require_sandbox!();
    let user = require_test_user!();
    let t = common::TempDir::new("apt");
    local_apt_repository(t.path());
    let rootfs = std::fs::read(&debian).unwrap();
    let config = json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"]});
    let save = t.path().join("debian.tar");
    docker_save_with_config(&save, &[(rootfs.clone(), rootfs)], None, "test/debian:apt", config);
    std::fs::set_permissions(&save, std::fs::Permissions::from_mode(0o644)).unwrap();
    let busybox = std::fs::canonicalize(common::stdout(&common::sh("command -v busybox")).trim()).unwrap();
    let (repo, busybox) =
        (format!("{}:/repo", t.path().join("repo").display()), format!("{}:/usr/local/bin/busybox", busybox.display()));
    let args =
        ["run", "--image", "test/debian:apt", "--ro-bind", &repo, "--ro-bind", &busybox, "--", "sh", "-c", APT_SCRIPT];
    let check = |who: &str, out: &Output| {
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{who}: {stdout}\n{stderr}");
        assert!(stdout.contains("hello from a package\nhello-svc\n"), "{who}: {stdout}");
        // apt could drop to _apt: no fallback to downloading as root.
        assert!(!stderr.contains("unsandboxed") && !stderr.contains("setgroups"), "{who}: {stderr}");
    };

    // As root.
    let state = t.path().join("root-state");
    ok(&airlock(&state, &["image", "import", save.to_str().unwrap()]));
    check("root", &airlock(&state, &args));

    // Rootless: the test user's subordinate ids (added once; useradd --system gives none).
    common::ensure_subordinate_ids(user);
    let home = common::TempDir::new("apt-user");
    home.chown_to_test_user();
    let state = home.path().join("state");
    let as_user = |args: &[&str]| common::airlock_as_user_in(&state, &[], args);
    ok(&as_user(&["image", "import", save.to_str().unwrap()]));
    let out = as_user(&args);
    check("rootless", &out);
    // A kept sandbox: its layer on disk holds files of subordinate ids (_apt's, bob's) until rm, which removes
    // them (from a user namespace with those ids mapped).
    let _cleanup = common::StopOnDrop::new("aptbox", as_user);
    ok(&as_user(&["create", "--image", "test/debian:apt", "aptbox"]));
    let out = as_user(&[
        "exec",
        "aptbox",
        "--",
        "sh",
        "-c",
        "useradd -m bob && install -d -o bob -m 700 /srv/b && stat -c %U /srv/b",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bob\n", "{}", String::from_utf8_lossy(&out.stderr));
    ok(&as_user(&["stop", "aptbox"]));
    ok(&as_user(&["rm", "aptbox"]));
    assert!(!state.join("sandboxes/aptbox").exists());
}

/// Root in an image keeps what a package manager needs (chown, dac_override, fowner, kill, setuid,
/// setgid) in the sandbox's user namespace, and nothing over the host's files: a root-owned 0600 file shared
/// into the sandbox stays unreadable. `--root-capabilities none` and a non-root `--user` keep none.
#[test]
fn root_in_an_image_keeps_the_package_manager_capabilities_and_no_more() {
    if !common::is_root() {
        skip_or_fail!("needs root (umoci unpack keeps owners only as root)");
    }
    if Command::new("umoci").arg("--version").output().is_err() {
        skip_or_fail!("umoci is not installed (scripts/setup-debian installs it)");
    }
    require_sandbox!();
    let t = scratch("root-caps");
    let state = t.join("state");
    let _ = build_busybox_image(&t, None);
    ok(&airlock(&state, &["image", "import", t.join("layout").to_str().unwrap(), "--tag", "test/bb:v1"]));
    let secret = t.join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("s"), "host secret\n").unwrap();
    std::fs::set_permissions(secret.join("s"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let bind = format!("{}:/mnt", secret.display());
    let script = "grep -E '^Cap(Eff|Bnd|Amb)' /proc/self/status; chown 5 /etc/motd && echo chowned; \
                  cat /mnt/s 2>/dev/null || echo unreadable";
    let run_with = |extra: &[&str]| {
        let mut args = vec!["run", "--image", "test/bb:v1", "--ro-bind", &bind];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh", "-c", script]);
        sh_out(&state, &args)
    };
    let kept = run_with(&[]);
    for set in ["CapEff", "CapBnd", "CapAmb"] {
        assert!(kept.contains(&format!("{set}:\t00000000000000eb")), "{kept}");
    }
    assert!(kept.contains("chowned\nunreadable\n"), "{kept}");
    for extra in [&["--root-capabilities", "none"][..], &["--user", "1000"][..]] {
        let none = run_with(extra);
        assert!(none.contains("CapEff:\t0000000000000000") && none.contains("CapBnd:\t0000000000000000"), "{none}");
        assert!(!none.contains("chowned") && none.contains("unreadable"), "{extra:?}: {none}");
    }
    // The same through `create` and `exec` (the exec agent, and `airlock exec` with a user).
    let _cleanup = common::StopOnDrop::new("capbox", |args: &[&str]| airlock(&state, args));
    ok(&airlock(&state, &["create", "--image", "test/bb:v1", "capbox"]));
    let out = sh_out(&state, &["exec", "capbox", "--", "grep", "CapEff", "/proc/self/status"]);
    assert_eq!(out, "CapEff:\t00000000000000eb\n");
    let out = sh_out(&state, &["exec", "--user", "1000", "capbox", "--", "grep", "CapEff", "/proc/self/status"]);
    assert_eq!(out, "CapEff:\t0000000000000000\n");
    ok(&airlock(&state, &["stop", "capbox"]));
    ok(&airlock(&state, &["rm", "capbox"]));
    let _ = std::fs::remove_dir_all(&t);
}
