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
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    into_text(out)
}

/// The canonical form of an object, leaving out the keys in `skip` (a record's `prev` and `hash`): the same
/// bytes as [`canonical_json`] of a copy without them, without copying the record.
fn write_canonical_object(map: &Map<String, Value>, skip: &[&str], out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    let mut member = |key: &String, value: &Value| {
        if skip.contains(&key.as_str()) {
            return;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(key, out);
        out.push(b':');
        write_canonical(value, out);
    };
    // serde_json's map is a BTreeMap (keys in order) unless its `preserve_order` feature is on somewhere in the
    // build: only then are they sorted here.
    if map.keys().is_sorted() {
        map.iter().for_each(|(k, v)| member(k, v));
    } else {
        let mut members: Vec<(&String, &Value)> = map.iter().collect();
        members.sort_by(|a, b| a.0.cmp(b.0));
        members.into_iter().for_each(|(k, v)| member(k, v));
    }
    out.push(b'}');
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_canonical_object(map, &[], out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        // Scalars: serde_json's own compact form (numbers in their shortest round-trip form, floats as `1e+300`).
        // Writing into a `Vec` cannot fail.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// A JSON string as serde_json escapes it (the canonical form must not change: logs written before stay
/// verifiable), written straight into `out`: through `Value::to_string`, each key and string cost an allocation
/// or two. Writing into a `Vec` cannot fail.
fn write_string(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, s);
}

/// The canonical bytes as text: they are JSON, which serde_json writes as UTF-8 only.
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// hex(sha256(prev || canonical(record without prev and hash))).
pub fn record_hash(prev: &str, record: &Map<String, Value>) -> String {
    canonical_and_hash(prev, record).1
}

/// The canonical form of `record` without `prev` and `hash`, and hex(sha256(prev || that form)).
fn canonical_and_hash(prev: &str, record: &Map<String, Value>) -> (Vec<u8>, String) {
    let mut canonical = Vec::new();
    write_canonical_object(record, &["prev", "hash"], &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(prev.as_bytes());
    hasher.update(&canonical);
    (canonical, hex(&hasher.finalize()))
}

/// Seals `record` (which has no `prev` or `hash`) after `prev`: returns the line to write (without its newline)
/// and its hash. The line is `{"hash":…,"prev":…,` followed by the rest of the canonical record: the canonical
/// form is computed once, and a reader re-computes it from the parsed line anyway.
pub fn seal(prev: &str, record: &Map<String, Value>) -> (String, String) {
    // Written from the record itself: copying a map of a few dozen strings only to serialise it cost as much as
    // the serialising (one exec record per exec, in the supervisor that answers the next one).
    let (canonical, hash) = canonical_and_hash(prev, record);
    let canonical = into_text(canonical);
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

    /// Strings are escaped byte for byte as serde_json escapes them (every ASCII character, and some beyond).
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é\u{2028}😀\u{7f}");
        for s in [all.as_str(), "", "plain", "a\"b\\c", "\u{1}\u{1f}"] {
            assert_eq!(canonical_json(&Value::from(s)), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        let v = json!({"k\n": ["\t", 1, -2, u64::MAX, i64::MIN, 1.5, 1e300, -0.0, null, true, {"\u{0}": "x"}], "": ""});
        assert_eq!(
            canonical_json(&v),
            r#"{"":"","k\n":["\t",1,-2,18446744073709551615,-9223372036854775808,1.5,1e+300,-0.0,null,true,{"\u0000":"x"}]}"#
        );
        let v = json!({"b": ["\u{7}", 1, {"z": null, "a": [true]}], "a\\": "\""});
        assert_eq!(canonical_json(&v), serde_json::to_string(&v).unwrap(), "keys are sorted already here");
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
