//! The bytes that are signed, and the strict reader for what comes back.
//!
//! Canonical form: JSON with the keys of every object sorted (by their UTF-8 bytes), no
//! whitespace, integers only, strings escaped minimally (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
//! `\t`, other control characters as `\u00xx`, everything else as raw UTF-8). For documents
//! whose keys are ASCII and whose numbers are integers, as receipts are, this is byte for byte
//! RFC 8785 (JCS), so a verifier in another language can reproduce it.
//!
//! The reader refuses what `serde_json` would otherwise let through silently: duplicate keys
//! (it keeps the last one), floats (`1.0`, `1e0`), integers beyond 64 bits (it rounds them to
//! a float) and trailing data. Two readers of one receipt can then never see two different
//! receipts.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// The canonical bytes of `value`; refuses a float, the only value with no canonical form here.
pub(crate) fn to_canonical(value: &Value) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(1024);
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), &'static str> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return Err("a number that is not an integer");
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted here rather than relying on `Map`'s order, which a crate feature
            // (`preserve_order`) elsewhere in the build could silently change.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x00..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
            // Bytes of a `&str` are valid UTF-8: multi-byte sequences are copied as they are.
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Reads one JSON document strictly (see the module docs). The error says what was wrong and
/// where, and quotes at most a key name from the input.
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value.0)
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicate keys or non-integer numbers")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Strict, E> {
        Err(E::custom(
            "numbers must be integers (no fraction, exponent or more than 64 bits)",
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(item) = map.next_value()?;
            object.insert(key, item);
        }
        Ok(Strict(Value::Object(object)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        let v = parse_strict(text.as_bytes()).expect("parses");
        String::from_utf8(to_canonical(&v).expect("canonical")).expect("utf-8")
    }

    #[test]
    fn sorts_every_level_and_drops_whitespace() {
        assert_eq!(
            canon(r#" { "b": [ {"z": 1, "a": null} ], "a": { "y": true, "x": "s" } } "#),
            r#"{"a":{"x":"s","y":true},"b":[{"a":null,"z":1}]}"#
        );
    }

    #[test]
    fn escapes_minimally_like_jcs() {
        assert_eq!(
            canon(
                r#"{"s":"q\" b\\ \u0008\u000c\n\r\t \u0001 \u001f / \u00e9 \u2028 \ud83d\ude00"}"#
            ),
            "{\"s\":\"q\\\" b\\\\ \\b\\f\\n\\r\\t \\u0001 \\u001f / \u{e9} \u{2028} \u{1f600}\"}"
        );
    }

    #[test]
    fn refuses_duplicates_at_any_depth() {
        for text in [
            r#"{"a":1,"a":1}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"{"a":[{"b":1,"c":2,"b":1}]}"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let err = parse_strict(text.as_bytes()).expect_err(text);
            assert!(err.contains("duplicate key"), "{text}: {err}");
        }
    }

    #[test]
    fn refuses_floats_huge_integers_and_trailing_data() {
        for text in [
            r#"{"a":1.0}"#,
            r#"{"a":1e0}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":1} {}"#,
            r#"{"a":1}x"#,
        ] {
            assert!(parse_strict(text.as_bytes()).is_err(), "{text}");
        }
        assert_eq!(
            canon(r#"{"a":-5,"b":18446744073709551615}"#),
            r#"{"a":-5,"b":18446744073709551615}"#
        );
    }
}
