//! The hash chain. Each record carries `prev`, the previous record's `hash` (64 zeros for the first), and
//! `hash` = hex(sha256(prev || canonical record)), where the canonical record is the record without `prev` and
//! `hash`, serialised as compact JSON with object keys sorted (recursively). The line in the file is itself that
//! canonical form of the record with `hash` and `prev` first, so a reader needs nothing but the line to check it.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev` of the first record of a log.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Compact JSON with every object's keys sorted: the same value always gives the same bytes, whatever order
/// the keys were inserted in (and whether or not serde_json preserves insertion order).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

/// The canonical form of an object, leaving out the keys in `skip` (a record's `prev` and `hash`): the same
/// bytes as [`canonical_json`] of a copy without them, without copying the record.
fn write_canonical_object(map: &Map<String, Value>, skip: &[&str], out: &mut String) {
    let mut keys: Vec<&String> = map.keys().filter(|k| !skip.contains(&k.as_str())).collect();
    keys.sort();
    out.push('{');
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        if let Some(v) = map.get(key) {
            write_canonical(v, out);
        }
    }
    out.push('}');
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => write_canonical_object(map, &[], out),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own compact form (strings escaped, numbers in their shortest round-trip form).
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// hex(sha256(prev || canonical(record without prev and hash))).
pub fn record_hash(prev: &str, record: &Map<String, Value>) -> String {
    let mut canonical = String::new();
    write_canonical_object(record, &["prev", "hash"], &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(canonical.as_bytes());
    hex(&hasher.finalize())
}

/// Seals `record` (which has no `prev` or `hash`) after `prev`: returns the line to write (without its newline)
/// and its hash. The line is `{"hash":…,"prev":…,` followed by the rest of the canonical record: the canonical
/// form is computed once, and a reader re-computes it from the parsed line anyway.
pub fn seal(prev: &str, record: &Map<String, Value>) -> (String, String) {
    // Written from the record itself: copying a map of a few dozen strings only to serialise it cost as much as
    // the serialising (one exec record per exec, in the supervisor that answers the next one).
    let mut canonical = String::new();
    write_canonical_object(record, &["prev", "hash"], &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(canonical.as_bytes());
    let hash = hex(&hasher.finalize());
    let rest = &canonical[1..];
    let separator = if rest == "}" { "" } else { "," };
    (format!("{{\"hash\":\"{hash}\",\"prev\":\"{prev}\"{separator}{rest}"), hash)
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// hex(sha256(bytes)): for the policy's fingerprint in `started` records.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": "x", "c": null}], "m": true}});
        assert_eq!(canonical_json(&v), r#"{"a":{"m":true,"z":[3,{"c":null,"y":"x"}]},"b":1}"#);
    }

    #[test]
    fn sealed_line_reproduces_its_hash() {
        let Value::Object(record) = json!({"kind": "exec", "time": "t", "n": 1.5}) else { unreachable!() };
        let (line, hash) = seal(GENESIS, &record);
        let Value::Object(parsed) = serde_json::from_str::<Value>(&line).unwrap() else { unreachable!() };
        assert_eq!(record_hash(GENESIS, &parsed), hash);
        assert_eq!(parsed["hash"], hash);
        assert_ne!(record_hash(&hash, &parsed), hash);
        let (empty, _) = seal(GENESIS, &Map::new());
        assert!(serde_json::from_str::<Value>(&empty).unwrap().is_object());
    }

    /// The hash is of `prev` and the canonical record without `prev` and `hash` (written without copying the
    /// record): pinned to a fixed value, so logs written before stay verifiable.
    #[test]
    fn hash_leaves_out_prev_and_hash_and_is_stable() {
        let Value::Object(record) = json!({"kind": "exec", "process": {"argv": ["/bin/true"], "pid": 2}, "time": "t"})
        else {
            unreachable!()
        };
        let expected = sha256_hex(
            format!("{GENESIS}{}", r#"{"kind":"exec","process":{"argv":["/bin/true"],"pid":2},"time":"t"}"#).as_bytes(),
        );
        assert_eq!(record_hash(GENESIS, &record), expected);
        let mut with_chain = record.clone();
        with_chain.insert("prev".into(), Value::String(GENESIS.into()));
        with_chain.insert("hash".into(), Value::String("x".into()));
        assert_eq!(record_hash(GENESIS, &with_chain), expected);
        assert_eq!(seal(GENESIS, &record).1, expected);
        assert_eq!(seal(GENESIS, &with_chain).1, expected);
    }
}
