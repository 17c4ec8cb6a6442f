//! Pulls against a real registry on loopback (Debian's `docker-registry`, with a config of its own bound to
//! 127.0.0.1 on a free port) holding an image built offline with `umoci` from files the test writes and pushed
//! with `skopeo`; and against tiny HTTP servers on 127.0.0.1 that answer garbage, cut downloads short or fail
//! with 503. A test that cannot run prints `SKIP: reason` (under `CI=true` it fails instead).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use registry::{pull_to_oci_layout, Progress, PullOptions, PulledImage, RegistryError, REF_NAME_ANNOTATION};
use sha2::{Digest, Sha256};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

macro_rules! skip_or_fail {
    ($($arg:tt)*) => {{
        let reason = format!($($arg)*);
        if ci() {
            panic!("this CI machine should run this test (scripts/setup-debian installs what it needs), but: {reason}");
        }
        eprintln!("SKIP: {reason}");
        return;
    }};
}

/// Skips unless docker-registry, umoci and skopeo are installed.
macro_rules! require_tools {
    () => {
        for tool in ["docker-registry", "umoci", "skopeo"] {
            if which(tool).is_none() {
                skip_or_fail!("{tool} is not installed (scripts/setup-debian installs it)");
            }
        }
    };
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("airlock-registry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(command: &mut Command) -> String {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn options() -> PullOptions {
    PullOptions {
        // No credentials unless a test says so: not the ones of whoever runs the tests.
        docker_config_dir: Some(PathBuf::from("/nonexistent")),
        max_retries: 3,
        retry_delay: Duration::from_millis(10),
        ..PullOptions::default()
    }
}

/// Debian's docker-registry with a config of its own: 127.0.0.1 on a free port, storage in the test's
/// directory, optionally htpasswd authentication. Killed (by its pid) when dropped.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        let port = free_port();
        let storage = dir.join("registry-storage");
        let mut config = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            storage.display()
        );
        if let Some(file) = htpasswd {
            config.push_str(&format!("auth: {{htpasswd: {{realm: airlock-test, path: {}}}}}\n", file.display()));
        }
        let config_path = dir.join("registry.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut registry = Registry { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = registry.child.try_wait().unwrap() {
                panic!("docker-registry exited at start: {status}");
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = stream.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.0 401") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "docker-registry did not answer on 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        registry.port = port;
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds `dir/image:v1` with umoci from files written here: layer 1 adds etc/hello.txt, bin/gone.txt and a
/// 1 MiB data file; layer 2 deletes bin/gone.txt (a whiteout) and adds etc/second.txt. Answers the layout.
fn build_image(dir: &Path) -> PathBuf {
    let layout = dir.join("image");
    let bundle = dir.join("bundle");
    let image = format!("{}:v1", layout.display());
    run(Command::new("umoci").arg("init").arg("--layout").arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci").args(["unpack", "--rootless", "--image", &image]).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    for d in ["etc", "bin", "data"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::write(rootfs.join("etc/hello.txt"), "hello from layer one\n").unwrap();
    std::fs::write(rootfs.join("bin/gone.txt"), "deleted by layer two\n").unwrap();
    // Incompressible, so the layer is big enough to be cut in the middle.
    let mut data = Vec::with_capacity(1 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(rootfs.join("data/random.bin"), &data).unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    // A bundle records the manifest it was unpacked from: the second layer needs a fresh unpack.
    let bundle = dir.join("bundle2");
    run(Command::new("umoci").args(["unpack", "--rootless", "--image", &image]).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    std::fs::remove_file(rootfs.join("bin/gone.txt")).unwrap();
    std::fs::write(rootfs.join("etc/second.txt"), "added by layer two\n").unwrap();
    run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle));
    run(Command::new("umoci").args(["config", "--image", &image, "--config.cmd", "/bin/sh"]));
    layout
}

fn push(layout: &Path, target: &str, creds: Option<&str>) {
    let mut command = Command::new("skopeo");
    command.args(["copy", "--insecure-policy", "--dest-tls-verify=false"]);
    if let Some(creds) = creds {
        command.args(["--dest-creds", creds]);
    }
    command.arg(format!("oci:{}:v1", layout.display())).arg(format!("docker://{target}"));
    run(&mut command);
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))).unwrap()
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap())
}

/// The config and layer digests of `layout`'s image tagged v1.
fn source_image(layout: &Path) -> (String, Vec<String>) {
    let index = read_json(&layout.join("index.json"));
    let entry =
        index["manifests"].as_array().unwrap().iter().find(|m| m["annotations"][REF_NAME_ANNOTATION] == "v1").unwrap();
    let manifest = read_json(&blob(layout, entry["digest"].as_str().unwrap()));
    let layers = manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned());
    (manifest["config"]["digest"].as_str().unwrap().to_owned(), layers.collect())
}

/// Checks the layout a pull wrote: every blob's name is its digest, nothing partial, index.json names the
/// manifest under the reference, the manifest names the config and layers, the config is linux/amd64, the
/// second layer holds the whiteout.
fn check_layout(dest: &Path, pulled: &PulledImage, source: &(String, Vec<String>)) {
    assert_eq!(read_json(&dest.join("oci-layout"))["imageLayoutVersion"], "1.0.0");
    for entry in std::fs::read_dir(dest.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(!name.ends_with(".partial"), "a partial blob was left: {}", path.display());
        assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), name, "{}", path.display());
    }
    let index = read_json(&dest.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"][REF_NAME_ANNOTATION] == pulled.reference.as_str())
        .unwrap_or_else(|| panic!("index.json has no entry for {}: {index}", pulled.reference));
    assert_eq!(entry["digest"], pulled.manifest_digest.as_str());
    assert_eq!(entry["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let manifest = read_json(&blob(dest, &pulled.manifest_digest));
    assert_eq!(entry["size"], std::fs::metadata(blob(dest, &pulled.manifest_digest)).unwrap().len());
    assert_eq!(manifest["config"]["digest"], pulled.config_digest.as_str());
    let layers: Vec<&str> =
        manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap()).collect();
    assert_eq!(layers, pulled.layer_digests);
    assert_eq!(pulled.config_digest, source.0);
    assert_eq!(pulled.layer_digests, source.1);
    let config = read_json(&blob(dest, &pulled.config_digest));
    assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("linux"), Some("amd64")));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    let listing = |digest: &str| run(Command::new("tar").arg("-tzf").arg(blob(dest, digest)));
    assert!(listing(&pulled.layer_digests[0]).contains("etc/hello.txt"));
    let second = listing(&pulled.layer_digests[1]);
    assert!(second.contains("bin/.wh.gone.txt") && second.contains("etc/second.txt"), "{second}");
}

fn pull(reference: &str, dest: &Path, options: &PullOptions) -> (Result<PulledImage, RegistryError>, Vec<Progress>) {
    let mut events = Vec::new();
    let result = pull_to_oci_layout(reference, dest, options, &mut |p| events.push(p));
    (result, events)
}

#[test]
fn pulls_from_a_loopback_registry_reuses_blobs_and_resumes_a_partial_layer() {
    require_tools!();
    let dir = TempDir::new("pull");
    let registry = Registry::start(&dir.0, None);
    let layout = build_image(&dir.0);
    let source = source_image(&layout);
    assert_eq!(source.1.len(), 2);
    let reference = format!("{}/test/img:v1", registry.host());
    push(&layout, &reference, None);

    let dest = dir.0.join("cache");
    let (pulled, events) = pull(&reference, &dest, &options());
    let pulled = pulled.unwrap();
    assert_eq!(pulled.reference, reference);
    // skopeo pushes umoci's OCI manifest as it is: the registry's digest is the layout's.
    assert_eq!(pulled.registry_digest, pulled.manifest_digest);
    check_layout(&dest, &pulled, &source);
    for (index, digest) in source.1.iter().enumerate() {
        let size = std::fs::metadata(blob(&dest, digest)).unwrap().len();
        assert!(
            events.contains(&Progress::LayerStarted { index, digest: digest.clone(), size, from: 0 }),
            "{events:?}"
        );
        assert!(events.contains(&Progress::LayerDone { index, digest: digest.clone(), size, reused: false }));
        assert!(events
            .iter()
            .any(|e| matches!(e, Progress::LayerBytes { index: i, done, .. } if *i == index && *done == size)));
    }

    // A second pull fetches no blob again.
    let inode = |digest: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(blob(&dest, digest)).unwrap());
    let inodes: Vec<u64> = source.1.iter().map(|d| inode(d)).collect();
    let (again, events) = pull(&reference, &dest, &options());
    assert_eq!(again.unwrap(), pulled);
    assert!(!events.iter().any(|e| matches!(e, Progress::LayerStarted { .. })), "{events:?}");
    assert_eq!(events.iter().filter(|e| matches!(e, Progress::LayerDone { reused: true, .. })).count(), 2);
    assert_eq!(source.1.iter().map(|d| inode(d)).collect::<Vec<_>>(), inodes);
    check_layout(&dest, &pulled, &source);

    // By digest, into a fresh directory holding the first half of the big layer as a partial download: the
    // rest comes with a Range request.
    let resumed = dir.0.join("resumed");
    let big = &source.1[0];
    let content = std::fs::read(blob(&dest, big)).unwrap();
    std::fs::create_dir_all(resumed.join("blobs/sha256")).unwrap();
    let half = content.len() / 2;
    std::fs::write(
        resumed.join(format!("blobs/sha256/{}.partial", big.strip_prefix("sha256:").unwrap())),
        &content[..half],
    )
    .unwrap();
    let by_digest = format!("{}/test/img@{}", registry.host(), pulled.registry_digest);
    let (again, events) = pull(&by_digest, &resumed, &options());
    let again = again.unwrap();
    assert_eq!(again.reference, by_digest);
    assert!(
        events.contains(&Progress::LayerStarted {
            index: 0,
            digest: big.clone(),
            size: content.len() as u64,
            from: half as u64
        }),
        "{events:?}"
    );
    check_layout(&resumed, &again, &source);

    // Two pulls into one directory at once take turns on its lock; both succeed.
    let shared = dir.0.join("shared");
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (reference, shared) = (reference.clone(), shared.clone());
            std::thread::spawn(move || pull(&reference, &shared, &options()).0.unwrap())
        })
        .collect();
    for thread in threads {
        check_layout(&shared, &thread.join().unwrap(), &source);
    }

    // An image that is not there.
    let (missing, _) = pull(&format!("{}/test/nothing:v1", registry.host()), &dir.0.join("missing"), &options());
    let message = missing.unwrap_err().to_string();
    assert!(message.contains("HTTP 404") && message.contains("/v2/test/nothing/manifests/v1"), "{message}");
}

/// An htpasswd line for `user` with a bcrypt hash of `password`: python's bcrypt, else apache2-utils' htpasswd.
fn htpasswd_line(user: &str, password: &str) -> Option<String> {
    let python = Command::new("python3")
        .args(["-c", "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=5)).decode())", user, password])
        .stderr(Stdio::null())
        .output();
    if let Ok(output) = python {
        if output.status.success() {
            return Some(String::from_utf8_lossy(&output.stdout).trim().to_owned());
        }
    }
    let output =
        Command::new("htpasswd").args(["-nbB", "-C", "5", user, password]).stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

#[test]
fn basic_auth_from_a_docker_config() {
    require_tools!();
    let Some(line) = htpasswd_line("agent", "s3cret:pw") else {
        skip_or_fail!("neither python3's bcrypt nor htpasswd (apache2-utils) is installed to write an htpasswd file");
    };
    let dir = TempDir::new("auth");
    let htpasswd = dir.0.join("htpasswd");
    std::fs::write(&htpasswd, format!("{line}\n")).unwrap();
    let registry = Registry::start(&dir.0, Some(&htpasswd));
    let layout = build_image(&dir.0);
    let source = source_image(&layout);
    let reference = format!("{}/test/img:v1", registry.host());
    push(&layout, &reference, Some("agent:s3cret:pw"));

    // Without credentials: refused, and nothing was written.
    let dest = dir.0.join("cache");
    let (refused, _) = pull(&reference, &dest, &options());
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("unauthorized") && message.contains("no user and password"), "{message}");
    assert!(!dest.join("blobs").exists());

    // With the wrong password: refused, naming the user.
    let config_dir = dir.0.join("docker-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let write_config = |user_password: &str| {
        let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, user_password);
        let config = serde_json::json!({"auths": {registry.host(): {"auth": auth}}});
        std::fs::write(config_dir.join("config.json"), config.to_string()).unwrap();
    };
    write_config("agent:wrong");
    let with_config = PullOptions { docker_config_dir: Some(config_dir.clone()), ..options() };
    let message = pull(&reference, &dest, &with_config).0.unwrap_err().to_string();
    assert!(message.contains("\"agent\" were refused"), "{message}");

    write_config("agent:s3cret:pw");
    let pulled = pull(&reference, &dest, &with_config).0.unwrap();
    check_layout(&dest, &pulled, &source);
}

/// One answer of the fake registry.
#[derive(Clone, Default)]
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
    /// Send only this many bytes of the body (its Content-Length says all), then close.
    cut_at: Option<usize>,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status: 200, content_type: content_type.into(), body: body.into(), ..Reply::default() }
    }
    fn status(status: u16) -> Reply {
        Reply { status, content_type: "application/json".into(), body: b"{\"errors\":[]}".to_vec(), ..Reply::default() }
    }
}

/// A request the fake registry saw: its path and headers (lowercased names).
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1, one connection at a time, `Connection: close`; the handler gets the
/// request and how many times its path was asked for before. Stopped when dropped.
struct FakeRegistry {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeRegistry {
    fn start(handler: Box<Handler>) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let mut headers = HashMap::new();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = header.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let request = Seen { path: path.clone(), headers };
                let before = {
                    let mut seen = seen2.lock().unwrap();
                    let before = seen.iter().filter(|s| s.path == path).count();
                    seen.push(request.clone());
                    before
                };
                let reply = handler(&request, before);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    reply.status,
                    reply.content_type,
                    reply.body.len()
                );
                for (k, v) in &reply.headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let body = &reply.body[..reply.cut_at.unwrap_or(reply.body.len())];
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
                let _ = stream.flush();
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        FakeRegistry { port, seen, stop, thread: Some(thread) }
    }

    fn reference(&self, repository: &str) -> String {
        format!("127.0.0.1:{}/{repository}:v1", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A small image the fake registry serves: config, one layer (bytes, not unpacked by a pull), manifest.
struct FakeImage {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

impl FakeImage {
    fn new(architecture: &str) -> FakeImage {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": architecture, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}, "config": {}
        }))
        .unwrap();
        let layer: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}],
        }))
        .unwrap();
        FakeImage { config, layer, manifest }
    }

    /// Serves the image; `layer` answers the layer's requests.
    fn handler(self, layer: impl Fn(&Seen, usize, &[u8]) -> Reply + Send + Sync + 'static) -> Box<Handler> {
        Box::new(move |seen, before| {
            if seen.path == "/v2/" {
                Reply::ok("application/json", "{}")
            } else if seen.path.contains("/manifests/") {
                Reply::ok(OCI_MANIFEST, self.manifest.clone())
            } else if seen.path.ends_with(&digest(&self.config)) {
                Reply::ok("application/octet-stream", self.config.clone())
            } else if seen.path.ends_with(&digest(&self.layer)) {
                layer(seen, before, &self.layer)
            } else {
                Reply::status(404)
            }
        })
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Everything under `dest/blobs/sha256`, by name.
fn blob_names(dest: &Path) -> Vec<String> {
    match std::fs::read_dir(dest.join("blobs/sha256")) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_registry_that_answers_garbage_is_refused_and_nothing_partial_is_left() {
    let dir = TempDir::new("garbage");

    // A manifest that is not JSON, and one served with a content type that is not a manifest's.
    let server = FakeRegistry::start(Box::new(|seen, _| match seen.path.as_str() {
        "/v2/bad/json/manifests/v1" => Reply::ok(OCI_MANIFEST, "<html>not a manifest</html>"),
        "/v2/bad/type/manifests/v1" => Reply::ok("text/html", FakeImage::new("amd64").manifest),
        "/v2/bad/says/manifests/v1" => Reply::ok(OCI_INDEX, FakeImage::new("amd64").manifest),
        _ => Reply::status(404),
    }));
    let dest = dir.0.join("json");
    let message = pull(&server.reference("bad/json"), &dest, &options()).0.unwrap_err().to_string();
    assert!(
        message.contains("parse the manifest") && message.contains("not JSON") && message.contains("<html>"),
        "{message}"
    );
    assert!(blob_names(&dest).is_empty());
    let message = pull(&server.reference("bad/type"), &dest, &options()).0.unwrap_err().to_string();
    assert!(message.contains("content type \"text/html\" is not a manifest"), "{message}");
    let message = pull(&server.reference("bad/says"), &dest, &options()).0.unwrap_err().to_string();
    assert!(message.contains("its mediaType is \"application/vnd.oci.image.manifest.v1+json\" but it was served as \"application/vnd.oci.image.index.v1+json\""), "{message}");
    assert!(blob_names(&dest).is_empty());
    drop(server);

    // A layer whose content does not match its digest: refused, no partial file, no layer blob.
    let image = FakeImage::new("amd64");
    let (layer_digest, config_digest) = (digest(&image.layer), digest(&image.config));
    let server = FakeRegistry::start(image.handler(|_, _, layer| {
        let mut wrong = layer.to_vec();
        wrong[1000] ^= 1;
        Reply::ok("application/octet-stream", wrong)
    }));
    let dest = dir.0.join("digest");
    let message = pull(&server.reference("bad/blob"), &dest, &options()).0.unwrap_err().to_string();
    assert!(
        message.contains(&format!("verify the blob {layer_digest}"))
            && message.contains("its content has digest sha256:"),
        "{message}"
    );
    assert_eq!(blob_names(&dest), vec![config_digest.strip_prefix("sha256:").unwrap().to_owned()]);
    assert!(!dest.join("index.json").exists());
    drop(server);

    // A layer longer than the manifest says.
    let server = FakeRegistry::start(
        FakeImage::new("amd64").handler(|_, _, layer| Reply::ok("application/octet-stream", [layer, b"more"].concat())),
    );
    let dest = dir.0.join("long");
    let message = pull(&server.reference("bad/long"), &dest, &options()).0.unwrap_err().to_string();
    assert!(message.contains("sent more than the 200000 bytes"), "{message}");
    assert!(!blob_names(&dest).iter().any(|n| n.ends_with(".partial")));
}

#[test]
fn an_index_with_only_arm64_and_an_arm64_manifest_are_refused() {
    let dir = TempDir::new("platform");
    let arm = FakeImage::new("arm64");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest(&arm.manifest), "size": arm.manifest.len(),
                       "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}}],
    }))
    .unwrap();
    let arm_manifest = arm.manifest.clone();
    let server = FakeRegistry::start(Box::new(move |seen, _| match seen.path.as_str() {
        "/v2/multi/img/manifests/v1" => Reply::ok(OCI_INDEX, index.clone()),
        "/v2/single/img/manifests/v1" => Reply::ok(OCI_MANIFEST, arm_manifest.clone()),
        p if p.ends_with(&digest(&arm.config)) => Reply::ok("application/octet-stream", arm.config.clone()),
        _ => Reply::status(404),
    }));
    let dest = dir.0.join("cache");
    let message = pull(&server.reference("multi/img"), &dest, &options()).0.unwrap_err().to_string();
    assert!(message.contains("select linux/amd64") && message.contains("it has only linux/arm64/v8"), "{message}");
    assert!(blob_names(&dest).is_empty());
    // A plain manifest whose config says arm64: refused before any layer is fetched.
    let message = pull(&server.reference("single/img"), &dest, &options()).0.unwrap_err().to_string();
    assert!(message.contains("the image is for linux/arm64, not linux/amd64"), "{message}");
    assert!(!server
        .seen()
        .iter()
        .any(|s| s.path.contains("/blobs/") && !s.path.ends_with(&digest(&FakeImage::new("arm64").config))));
    assert!(!dest.join("index.json").exists());
}

#[test]
fn a_cut_download_resumes_with_range_or_starts_again_and_5xx_is_retried() {
    let dir = TempDir::new("resume");

    // Cut at 70000 bytes the first time; the second request asks for the rest with Range and gets 206.
    let server = FakeRegistry::start(FakeImage::new("amd64").handler(|seen, before, layer| {
        let range_from =
            seen.headers.get("range").and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse::<usize>().ok());
        match (before, range_from) {
            (0, None) => Reply { cut_at: Some(70_000), ..Reply::ok("application/octet-stream", layer.to_vec()) },
            (_, Some(from)) => Reply {
                status: 206,
                headers: vec![("Content-Range".into(), format!("bytes {from}-{}/{}", layer.len() - 1, layer.len()))],
                ..Reply::ok("application/octet-stream", layer[from..].to_vec())
            },
            (_, None) => Reply::ok("application/octet-stream", layer.to_vec()),
        }
    }));
    let dest = dir.0.join("range");
    let (pulled, events) = pull(&server.reference("cut/range"), &dest, &options());
    let pulled = pulled.unwrap();
    let layer = &pulled.layer_digests[0];
    let ranges: Vec<String> = server
        .seen()
        .iter()
        .filter(|s| s.path.ends_with(layer.as_str()))
        .filter_map(|s| s.headers.get("range").cloned())
        .collect();
    assert_eq!(ranges, vec!["bytes=70000-".to_owned()]);
    assert!(
        events.contains(&Progress::LayerStarted { index: 0, digest: layer.clone(), size: 200_000, from: 70_000 }),
        "{events:?}"
    );
    assert_eq!(sha256_hex(&std::fs::read(blob(&dest, layer)).unwrap()), layer.strip_prefix("sha256:").unwrap());
    assert!(!blob_names(&dest).iter().any(|n| n.ends_with(".partial")));
    drop(server);

    // A registry that ignores Range: the blob is fetched again from the start. The manifest first answers 503
    // twice, which is retried.
    let image = FakeImage::new("amd64");
    let manifest = image.manifest.clone();
    let serve = image.handler(|_, before, layer| {
        let reply = Reply::ok("application/octet-stream", layer.to_vec());
        if before == 0 {
            Reply { cut_at: Some(50_000), ..reply }
        } else {
            reply
        }
    });
    let server = FakeRegistry::start(Box::new(move |seen, before| {
        if seen.path.contains("/manifests/") && before < 2 {
            Reply::status(503)
        } else {
            serve(seen, before)
        }
    }));
    let dest = dir.0.join("norange");
    let pulled = pull(&server.reference("cut/norange"), &dest, &options()).0.unwrap();
    assert_eq!(pulled.manifest_digest, digest(&manifest));
    let layer = &pulled.layer_digests[0];
    assert_eq!(sha256_hex(&std::fs::read(blob(&dest, layer)).unwrap()), layer.strip_prefix("sha256:").unwrap());
    assert_eq!(server.seen().iter().filter(|s| s.path.contains("/manifests/")).count(), 3);

    // Always cut: the retries run out, the error says so, and the partial download stays for the next pull.
    let server =
        FakeRegistry::start(FakeImage::new("amd64").handler(|_, _, layer| Reply {
            cut_at: Some(10),
            ..Reply::ok("application/octet-stream", layer.to_vec())
        }));
    let dest = dir.0.join("always");
    let message = pull(&server.reference("cut/always"), &dest, &options()).0.unwrap_err().to_string();
    assert!(message.contains("request http://127.0.0.1:") && message.contains("/blobs/sha256:"), "{message}");
    assert!(blob_names(&dest).iter().any(|n| n.ends_with(".partial")));
    assert!(!dest.join("index.json").exists());
}
