//! The receipt module's leaf: what its other files share (key ids, the error of key
//! handling, the plain-name and hex checks, and [`NamedKey`], the name and id of whatever
//! key an approver signs with). It imports nothing from its siblings, so `body`, `keys`
//! and `webauthn` can each use it without importing one another in a circle.

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: already exists; airlock never overwrites a key")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The reason is one of a few fixed phrases: it never quotes the file.
    #[error("{path}: not an airlock key file ({reason})")]
    Format { path: PathBuf, reason: &'static str },
    #[error("{path}: locked with a passphrase; this needs a plaintext key file")]
    Locked { path: PathBuf },
    #[error("{path}: not locked with a passphrase (made by `keygen --insecure-plaintext-key`); pass --insecure-plaintext-key to use it anyway, or make a locked key with `airlock keygen`")]
    Plaintext { path: PathBuf },
    #[error("{path}: wrong passphrase (or the file was changed)")]
    WrongPassphrase { path: PathBuf },
    #[error("{0}")]
    Passphrase(String),
    #[error("{path}: readable or writable by others (mode {mode:03o}); run `chmod 600` on it")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("approver name {0:?}: use 1 to 64 of the characters A-Z a-z 0-9 . _ - @ +")]
    Name(String),
    #[error("public key of {name:?}: {reason}")]
    PublicKey { name: String, reason: &'static str },
    #[error("key {0} is listed twice among the trusted keys")]
    DuplicateKey(KeyId),
    #[error("approver {0:?} is listed twice among the trusted keys")]
    DuplicateName(String),
}

/// First 16 hex characters (64 bits) of the SHA-256 of a raw public key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct KeyId(String);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(key.as_bytes());
        KeyId(hex::encode(&digest[..8]))
    }

    /// The id of a raw public key of another kind (a passkey's): same rule, over its bytes.
    pub(crate) fn of_raw(raw: &[u8]) -> KeyId {
        let digest = Sha256::digest(raw);
        KeyId(hex::encode(&digest[..8]))
    }

    /// A key id as written (16 lowercase hex characters).
    pub fn parse(s: &str) -> Option<KeyId> {
        is_lower_hex(s, 16).then(|| KeyId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyId::parse(&s)
            .ok_or_else(|| serde::de::Error::custom("a key id is 16 lowercase hex characters"))
    }
}

pub(crate) fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Approver names go into the config unescaped and onto the approval page: keep them plain.
pub fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Name(name.to_owned()))
    }
}

/// The key an approval is made with, as a receipt body names it: an approver's Ed25519 key
/// ([`super::ApproverPublic`]) or an enrolled passkey ([`super::PasskeyPublic`]).
pub trait NamedKey {
    fn name(&self) -> &str;
    fn key_id(&self) -> &KeyId;
}

/// An `Option` that must still be present (`null` for none): serde would otherwise take a
/// missing field for `None`.
pub(super) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}
