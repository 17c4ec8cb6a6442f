//! Test helpers: tar streams with any names (hostile ones included), `docker save` directories, scratch dirs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::digest::sha256_of;

/// A fresh scratch directory, removed with what is in it when this is dropped (at the test's end, passed or not).
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh scratch directory.
pub fn scratch(what: &str) -> Scratch {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "airlock-image-test-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// One tar entry.
pub enum Item<'a> {
    Dir(&'a str, u32),
    File(&'a str, u32, &'a [u8]),
    Symlink(&'a str, &'a str),
    Link(&'a str, &'a str),
    Fifo(&'a str),
    /// A file with PAX extensions (xattrs, uid...).
    Pax(&'a str, Vec<(&'a str, &'a [u8])>, &'a [u8]),
}

fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    // The name is written raw, so `..` and absolute paths (which set_path refuses) go in as given.
    let field = &mut h.as_old_mut().name;
    field[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn with_link(mut h: tar::Header, target: &str) -> tar::Header {
    let field = &mut h.as_old_mut().linkname;
    field[..target.len()].copy_from_slice(target.as_bytes());
    h
}

/// An uncompressed tar of `items`.
pub fn tar_of(items: &[Item<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for item in items {
        match item {
            Item::Dir(n, m) => b.append(&cksum(header(n, tar::EntryType::Directory, *m, 0)), &[][..]).unwrap(),
            Item::File(n, m, d) => {
                b.append(&cksum(header(n, tar::EntryType::Regular, *m, d.len() as u64)), *d).unwrap()
            }
            Item::Symlink(n, t) => {
                b.append(&cksum(with_link(header(n, tar::EntryType::Symlink, 0o777, 0), t)), &[][..]).unwrap()
            }
            Item::Link(n, t) => {
                b.append(&cksum(with_link(header(n, tar::EntryType::Link, 0o644, 0), t)), &[][..]).unwrap()
            }
            Item::Fifo(n) => b.append(&cksum(header(n, tar::EntryType::Fifo, 0o644, 0)), &[][..]).unwrap(),
            Item::Pax(n, ext, d) => {
                b.append_pax_extensions(ext.iter().map(|(k, v)| (*k, *v))).unwrap();
                b.append(&cksum(header(n, tar::EntryType::Regular, 0o644, d.len() as u64)), *d).unwrap()
            }
        }
    }
    b.into_inner().unwrap()
}

fn cksum(mut h: tar::Header) -> tar::Header {
    h.set_cksum();
    h
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A `docker save` directory in `dir` with these layer blobs (tar or gzipped tar) whose diff_ids are `diff_ids`
/// (the real ones when `None`).
pub fn docker_save_dir(dir: &Path, layers: &[Vec<u8>], diff_ids: Option<Vec<String>>, tag: &str) {
    let uncompressed = |l: &Vec<u8>| {
        if l.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&l[..]), &mut out).unwrap();
            out
        } else {
            l.clone()
        }
    };
    let diff_ids = diff_ids.unwrap_or_else(|| layers.iter().map(|l| sha256_of(&uncompressed(l))).collect());
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin", "A=1"], "WorkingDir": "/w", "User": "1000:1000", "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", &sha256_of(&config)[7..]);
    std::fs::write(dir.join(&config_name), &config).unwrap();
    let mut names = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        std::fs::create_dir_all(dir.join(format!("l{i}"))).unwrap();
        std::fs::write(dir.join(format!("l{i}/layer.tar")), layer).unwrap();
        names.push(format!("l{i}/layer.tar"));
    }
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": [tag], "Layers": names}]);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
}
