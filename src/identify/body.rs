//! Strict readers for request bodies: JSON, CBOR and XML, each refusing what two parsers
//! could read differently. serde_json keeps the last of two equal keys and another reader
//! may keep the first, so a duplicate key anywhere is an error; XML with a DOCTYPE (entity
//! definitions) or unknown entities is an error. Pure code.

use super::IdentifyError;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

// ---------------------------------------------------------------------------------------
// JSON

/// Parses a JSON document, refusing duplicate object keys at any depth and trailing data.
pub fn strict_json(bytes: &[u8]) -> Result<Value, IdentifyError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictJson
        .deserialize(&mut de)
        .map_err(|e| IdentifyError::new("SerializationException", format!("the JSON body: {e}")))?;
    de.end()
        .map_err(|e| IdentifyError::new("SerializationException", format!("the JSON body: {e}")))?;
    Ok(value)
}

/// The top-level members of a JSON object body: an empty body is `{}`, anything but an
/// object is an error.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, IdentifyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match strict_json(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(IdentifyError::new(
            "SerializationException",
            "the JSON body must be an object",
        )),
    }
}

struct StrictJson;

impl<'de> DeserializeSeed<'de> for StrictJson {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictJson {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(number(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictJson)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(StrictJson)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A number as one canonical value: `1.0`, `1e0` and `1` are all `1`, so the parameters do
/// not depend on how a client spelled the number.
fn number(v: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
    if v.fract() == 0.0 && v.abs() < EXACT {
        return Value::from(v as i64);
    }
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// A parameter value: strings as they are, other scalars as their JSON text, lists and
/// objects as compact JSON (object keys sorted). `None` for null, which AWS reads as absent.
pub fn param_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// CBOR

/// The top-level members of a CBOR map body (`smithy-rpc-v2-cbor`), as JSON values: byte
/// strings become base64, tags (timestamps) their content. Duplicate keys at any depth,
/// non-text keys and trailing bytes are errors; an empty body is an empty map.
pub fn cbor_object(bytes: &[u8]) -> Result<Map<String, Value>, IdentifyError> {
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    let mut reader = bytes;
    let value: ciborium::Value = ciborium::from_reader(&mut reader)
        .map_err(|e| IdentifyError::new("SerializationException", format!("the CBOR body: {e}")))?;
    if !reader.is_empty() {
        return Err(IdentifyError::new(
            "SerializationException",
            "the CBOR body has data after its first item",
        ));
    }
    match cbor_to_json(value)? {
        Value::Object(map) => Ok(map),
        _ => Err(IdentifyError::new(
            "SerializationException",
            "the CBOR body must be a map",
        )),
    }
}

fn cbor_to_json(value: ciborium::Value) -> Result<Value, IdentifyError> {
    use base64::Engine as _;
    use ciborium::Value as C;
    let bad = |m: &str| IdentifyError::new("SerializationException", format!("the CBOR body: {m}"));
    Ok(match value {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => {
            let i = i128::from(i);
            if let Ok(u) = u64::try_from(i) {
                Value::from(u)
            } else if let Ok(s) = i64::try_from(i) {
                Value::from(s)
            } else {
                Value::String(i.to_string())
            }
        }
        C::Float(f) => number(f),
        C::Text(s) => Value::String(s),
        C::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        C::Tag(_, inner) => cbor_to_json(*inner)?,
        C::Array(items) => Value::Array(
            items
                .into_iter()
                .map(cbor_to_json)
                .collect::<Result<_, _>>()?,
        ),
        C::Map(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let C::Text(key) = k else {
                    return Err(bad("a map key is not a text string"));
                };
                if out.contains_key(&key) {
                    return Err(bad(&format!("duplicate key {key:?}")));
                }
                out.insert(key, cbor_to_json(v)?);
            }
            Value::Object(out)
        }
        _ => return Err(bad("an unsupported item")),
    })
}

// ---------------------------------------------------------------------------------------
// XML

/// An XML element: its name, text, and child elements in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub name: String,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The children with this name.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

const XML_MAX_DEPTH: usize = 32;

/// Parses an XML document into its root element. Refused: a DOCTYPE, processing
/// instructions, prefixed (namespaced) element names, entities other than the five
/// predefined ones and character references, text mixed with elements, more than one root.
/// CDATA is text. Attributes (`xmlns`) are ignored.
pub fn strict_xml(bytes: &[u8]) -> Result<Element, IdentifyError> {
    use quick_xml::events::Event;
    let bad = |m: String| IdentifyError::new("MalformedXML", m);
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| bad(format!("the XML body: {e}")))?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let empty = matches!(event, Event::Empty(_));
                let name = std::str::from_utf8(start.name().as_ref())
                    .map_err(|_| bad("an element name is not UTF-8".into()))?
                    .to_string();
                if name.contains(':') {
                    return Err(bad(format!("prefixed element <{name}> is not accepted")));
                }
                if root.is_some() {
                    return Err(bad("the XML body has more than one root element".into()));
                }
                if stack.len() >= XML_MAX_DEPTH {
                    return Err(bad("the XML body is nested too deeply".into()));
                }
                let element = Element {
                    name,
                    ..Element::default()
                };
                if empty {
                    close(&mut stack, &mut root, element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| bad("an end tag without a start".into()))?;
                if !element.children.is_empty() && !element.text.trim().is_empty() {
                    return Err(bad(format!("<{}> mixes text and elements", element.name)));
                }
                close(&mut stack, &mut root, element);
            }
            Event::Text(text) => {
                let s = text
                    .decode()
                    .map_err(|e| bad(format!("the XML body: {e}")))?;
                push_text(&mut stack, &s)?;
            }
            Event::CData(data) => {
                let s = std::str::from_utf8(data.as_ref())
                    .map_err(|_| bad("CDATA is not UTF-8".into()))?
                    .to_string();
                if stack.is_empty() {
                    return Err(bad("CDATA outside the root element".into()));
                }
                push_text(&mut stack, &s)?;
            }
            Event::GeneralRef(reference) => {
                let name = std::str::from_utf8(reference.as_ref())
                    .map_err(|_| bad("an entity name is not UTF-8".into()))?;
                let ch = entity(name)
                    .ok_or_else(|| bad(format!("the entity &{name}; is not accepted")))?;
                if stack.is_empty() {
                    return Err(bad("an entity outside the root element".into()));
                }
                push_text(&mut stack, &ch.to_string())?;
            }
            Event::DocType(_) => return Err(bad("a DOCTYPE is not accepted".into())),
            Event::PI(_) => return Err(bad("processing instructions are not accepted".into())),
            Event::Decl(decl) => {
                // Bytes are read as UTF-8; a body that declares another encoding would be
                // read differently by S3.
                if let Some(encoding) = decl.encoding() {
                    let encoding =
                        encoding.map_err(|e| bad(format!("the XML declaration: {e}")))?;
                    if !encoding.eq_ignore_ascii_case(b"utf-8") {
                        return Err(bad("only UTF-8 XML bodies are read".into()));
                    }
                }
            }
            Event::Comment(_) => {}
            Event::Eof => break,
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(bad("the XML body ends inside an element".into()));
    }
    root.ok_or_else(|| bad("the XML body has no root element".into()))
}

fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn push_text(stack: &mut [Element], s: &str) -> Result<(), IdentifyError> {
    match stack.last_mut() {
        Some(top) => top.text.push_str(s),
        None if s.trim().is_empty() => {}
        None => {
            return Err(IdentifyError::new(
                "MalformedXML",
                "text outside the root element",
            ))
        }
    }
    Ok(())
}

/// The five predefined entities and character references (`&#38;`, `&#x26;`).
fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x") {
                u32::from_str_radix(hex, 16).ok()?
            } else {
                name.strip_prefix('#')?.parse().ok()?
            };
            char::from_u32(code)
        }
    }
}

/// The parameters of an XML body: each leaf's text under its dotted path below the root
/// (`Rule.1.Expiration.Days`). A name that repeats among its siblings is numbered from 1.
pub fn flatten_xml(root: &Element, out: &mut BTreeMap<String, String>) {
    flatten_children(root, "", out);
}

fn flatten_children(element: &Element, prefix: &str, out: &mut BTreeMap<String, String>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for child in &element.children {
        let repeats = element.all(&child.name).nth(1).is_some();
        let index = seen.entry(child.name.as_str()).or_insert(0);
        *index += 1;
        let mut key = if prefix.is_empty() {
            child.name.clone()
        } else {
            format!("{prefix}.{}", child.name)
        };
        if repeats {
            key = format!("{key}.{index}");
        }
        if child.children.is_empty() {
            out.insert(key, child.text.clone());
        } else {
            flatten_children(child, &key, out);
        }
    }
}
