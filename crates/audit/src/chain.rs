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
    out.push('{');
    let mut first = true;
    let mut member = |key: &String, value: &Value| {
        if skip.contains(&key.as_str()) {
            return;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_string(key, out);
        out.push(':');
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
        Value::String(s) => write_string(s, out),
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Numbers: serde_json's own form: integers as they are (Rust's and serde_json's digits agree), floats as
        // `Value`'s Display writes them (`1e+300`), as this function always has.
        Value::Number(n) => {
            use std::fmt::Write;
            let _ = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => write!(out, "{u}"),
                (None, Some(i)) => write!(out, "{i}"),
                (None, None) => out.write_str(&value.to_string()),
            };
        }
    }
}

/// A JSON string, escaped exactly as serde_json escapes it (the canonical form must not change: logs written
/// before stay verifiable): `"` as `\"`, the backslash as two, the control characters `\b \f \n \r \t` as
/// those escapes, the other control characters as `\u00xx`, everything else as it is. Written straight into
/// `out`: through `Value::to_string`, each key and string cost an allocation or two.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        let escape: &str = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 15)] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
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

    /// Strings are escaped byte for byte as serde_json escapes them (every ASCII character, and some beyond).
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é\u{2028}😀\u{7f}");
        for s in [all.as_str(), "", "plain", "a\"b\\c", "\u{1}\u{1f}"] {
            let mut ours = String::new();
            write_string(s, &mut ours);
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
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
