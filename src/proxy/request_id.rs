//! Request ids (`AIRLOCK` and 16 upper-case hex digits of a random number), made on the
//! stack: every call has one (its audit record names it; a refusal's answer carries it), so
//! it is neither allocated nor formatted.

use std::fmt;

const PREFIX: &[u8; 7] = b"AIRLOCK";
const LEN: usize = PREFIX.len() + 16;

/// One request's id.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; LEN]);

impl RequestId {
    /// A new random id.
    pub fn new() -> RequestId {
        use rand::Rng;
        RequestId::from_number(rand::thread_rng().gen())
    }

    /// The id of `n`: `AIRLOCK` and `n` in 16 hex digits.
    pub(crate) fn from_number(n: u64) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut bytes = [0u8; LEN];
        bytes[..PREFIX.len()].copy_from_slice(PREFIX);
        for (i, b) in bytes[PREFIX.len()..].iter_mut().enumerate() {
            *b = HEX[((n >> (60 - 4 * i)) & 0xF) as usize];
        }
        RequestId(bytes)
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII: the prefix and hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[test]
    fn ids_are_the_prefix_and_sixteen_hex_digits() {
        assert_eq!(
            RequestId::from_number(1).as_str(),
            "AIRLOCK0000000000000001"
        );
        assert_eq!(
            RequestId::from_number(0xDEAD_BEEF_0123_4567).to_string(),
            "AIRLOCKDEADBEEF01234567"
        );
        assert_eq!(
            RequestId::from_number(u64::MAX).as_str(),
            format!("AIRLOCK{:016X}", u64::MAX)
        );
        let (a, b) = (RequestId::new(), RequestId::new());
        assert_ne!(a, b);
        assert_eq!(
            serde_json::to_string(&a).ok(),
            Some(format!("\"{}\"", a.as_str()))
        );
    }
}
