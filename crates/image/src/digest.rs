//! Digests: `sha256:<64 hex>` strings, checked before one is ever used as a file name, and a reader that hashes
//! what passes through it.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::error::ImageError;

/// The hex part of a `sha256:` digest, validated: exactly 64 lowercase hex digits (so it is safe as a file
/// name). Other algorithms are refused.
pub fn sha256_hex(digest: &str) -> Result<&str, ImageError> {
    let hex = digest.strip_prefix("sha256:").ok_or_else(|| ImageError::ParseDigest {
        digest: digest.to_string(),
        why: "only sha256 digests are supported",
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ImageError::ParseDigest { digest: digest.to_string(), why: "not 64 lowercase hex digits" });
    }
    Ok(hex)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A reader that hashes (sha256) and counts every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Reads what is left to the end (a tar's trailing padding, say), so the digest covers the whole stream.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(drop)
    }

    /// The digest (`sha256:<hex>`) and the size of everything read.
    pub fn finish(self) -> (String, u64) {
        (format!("sha256:{}", hex(&self.hasher.finalize())), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = buf.get(..n).unwrap_or(&[]);
        self.hasher.update(read);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_validated_before_use_as_names() {
        let good = sha256_of(b"x");
        assert_eq!(sha256_hex(&good).unwrap().len(), 64);
        assert!(sha256_hex("sha512:00").is_err());
        assert!(sha256_hex(&format!("sha256:../{}", &good[10..])).is_err());
        assert!(sha256_hex(&good.to_uppercase().replace("SHA256", "sha256")).is_err());
    }

    #[test]
    fn hashing_reader_hashes_what_it_reads() {
        let mut r = HashingReader::new(&b"hello"[..]);
        r.drain().unwrap();
        assert_eq!(r.finish(), (sha256_of(b"hello"), 5));
    }
}
