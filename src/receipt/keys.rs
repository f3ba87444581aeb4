//! Keys that sign receipts, and the set of keys airlock trusts.
//!
//! - [`ApproverKey`]: a private Ed25519 key (an approver's, or airlock's own). It never prints
//!   its secret, and its file is created with mode 0600 and never overwritten. An approver's
//!   file is locked with a passphrase ([`LOCKED_KEY_FILE_FORMAT`]): scrypt derives a key from
//!   the passphrase, XChaCha20-Poly1305 seals the seed, and the public half stays readable.
//!   Whoever can read the file but not type the passphrase cannot sign. airlock's own key
//!   (`state/airlock.key`, read by `serve` unattended) is the plaintext kind.
//! - [`ApproverPublic`]: the public half with its name, as the config's `[[approver]]` holds it.
//! - [`TrustedKeys`]: the only place verification looks keys up. It is built from the config
//!   (and airlock's own key); nothing in a receipt or a request can add to it.
//!
//! A key's id is the first 16 hex characters of the SHA-256 of its raw 32-byte public key.

use super::ids::NamedKey;
pub use super::ids::{check_name, KeyError, KeyId};
use super::webauthn::PasskeyPublic;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use zeroize::{Zeroize, Zeroizing};

/// The `format` of a plaintext private key file.
pub const KEY_FILE_FORMAT: &str = "airlock-ed25519-key/1";

/// The `format` of a private key file locked with a passphrase.
pub const LOCKED_KEY_FILE_FORMAT: &str = "airlock-ed25519-key-locked/1";

/// scrypt's cost as written: N = 2^17, r = 8, p = 1 (128 MiB, a fraction of a second).
const SCRYPT_LOG_N: u8 = 17;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// A locked file's scrypt cost is accepted in this range only: weaker is not a lock, and
/// larger would let a crafted file take gigabytes of memory.
const SCRYPT_LOG_N_ACCEPTED: std::ops::RangeInclusive<u8> = 15..=20;

/// The shortest passphrase `keygen` accepts.
pub const MIN_PASSPHRASE_CHARS: usize = 8;

/// How a public key is written in the config: `ed25519:BASE64`.
const PUBLIC_KEY_PREFIX: &str = "ed25519:";

/// A key file is a few hundred bytes; anything much larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A private signing key with the name of whoever holds it. `Debug` shows the name and key id
/// only; the secret is wiped from memory on drop (`ed25519-dalek`'s `zeroize`).
pub struct ApproverKey {
    name: String,
    signing: SigningKey,
}

impl fmt::Debug for ApproverKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApproverKey")
            .field("name", &self.name)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

/// The private key file (JSON). `seed` is the 32-byte Ed25519 secret, base64; the public key
/// and key id are repeated so a damaged or hand-edited file is caught at load.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: String,
    algorithm: String,
    name: String,
    key_id: String,
    public_key: String,
    seed: String,
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

/// The locked private key file (JSON): the public facts in the clear, the seed sealed with
/// XChaCha20-Poly1305 under a key scrypt derives from the passphrase and `salt`. The public
/// facts and the scrypt cost are the cipher's associated data, so none of them can be
/// changed without the passphrase no longer opening the file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockedKeyFile {
    format: String,
    algorithm: String,
    name: String,
    key_id: String,
    public_key: String,
    kdf: String,
    scrypt_log_n: u8,
    scrypt_r: u32,
    scrypt_p: u32,
    /// 16 random bytes, base64.
    salt: String,
    cipher: String,
    /// 24 random bytes, base64.
    nonce: String,
    /// The 32-byte seed and the 16-byte tag, base64.
    sealed_seed: String,
}

impl LockedKeyFile {
    fn associated_data(&self) -> Vec<u8> {
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{} {} {}\n{}\n",
            self.format,
            self.algorithm,
            self.name,
            self.key_id,
            self.public_key,
            self.kdf,
            self.scrypt_log_n,
            self.scrypt_r,
            self.scrypt_p,
            self.cipher
        )
        .into_bytes()
    }
}

/// The 32-byte cipher key scrypt derives from a passphrase.
fn derive_lock_key(
    passphrase: &str,
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Option<Zeroizing<[u8; 32]>> {
    let params = scrypt::Params::new(log_n, r, p, 32).ok()?;
    let mut out = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(passphrase.as_bytes(), salt, &params, out.as_mut()).ok()?;
    Some(out)
}

/// Asks for the passphrase of a locked key (its holder's name and key id shown).
pub type AskPassphrase<'a> = dyn FnMut(&str, &KeyId) -> Result<Zeroizing<String>, String> + 'a;

/// How [`ApproverKey::load_approver`] treats the two kinds of key file.
pub struct Unlock<'a> {
    /// Accept a plaintext file (the caller warns about it).
    pub allow_plaintext: bool,
    /// Asked for the passphrase of a locked file, with the key's name and id to show.
    pub passphrase: &'a mut AskPassphrase<'a>,
}

/// A key loaded for signing, and whether its file was plaintext.
#[derive(Debug)]
pub struct LoadedKey {
    pub key: ApproverKey,
    pub plaintext: bool,
}

impl ApproverKey {
    /// A fresh key from the operating system's random source.
    pub fn generate(name: &str) -> Result<ApproverKey, KeyError> {
        check_name(name)?;
        Ok(ApproverKey {
            name: name.to_owned(),
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> KeyId {
        KeyId::of(&self.signing.verifying_key())
    }

    pub fn public(&self) -> ApproverPublic {
        ApproverPublic {
            name: self.name.clone(),
            key_id: self.key_id(),
            key: self.signing.verifying_key(),
        }
    }

    pub(crate) fn sign_bytes(&self, message: &[u8]) -> ed25519_dalek::Signature {
        self.signing.sign(message)
    }

    /// Writes the key to a new plaintext file, mode 0600. Refuses if `path` exists (even as a
    /// dangling symlink); a partly written file is removed.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let file = KeyFile {
            format: KEY_FILE_FORMAT.into(),
            algorithm: "ed25519".into(),
            name: self.name.clone(),
            key_id: self.key_id().as_str().to_owned(),
            public_key: BASE64.encode(self.signing.verifying_key().as_bytes()),
            seed: BASE64.encode(self.signing.as_bytes()),
        };
        write_key_json(path, &file)
    }

    /// Writes the key to a new file locked with `passphrase` (same rules as [`Self::write_new`]).
    pub fn write_new_locked(&self, path: &Path, passphrase: &str) -> Result<(), KeyError> {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let salt = rand::random::<[u8; 16]>();
        let nonce = rand::random::<[u8; 24]>();
        let mut file = LockedKeyFile {
            format: LOCKED_KEY_FILE_FORMAT.into(),
            algorithm: "ed25519".into(),
            name: self.name.clone(),
            key_id: self.key_id().as_str().to_owned(),
            public_key: BASE64.encode(self.signing.verifying_key().as_bytes()),
            kdf: "scrypt".into(),
            scrypt_log_n: SCRYPT_LOG_N,
            scrypt_r: SCRYPT_R,
            scrypt_p: SCRYPT_P,
            salt: BASE64.encode(salt),
            cipher: "xchacha20poly1305".into(),
            nonce: BASE64.encode(nonce),
            sealed_seed: String::new(),
        };
        let encoding = |_| KeyError::Format {
            path: path.to_owned(),
            reason: "could not be encoded",
        };
        let lock_key = derive_lock_key(passphrase, &salt, SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
            .ok_or(())
            .map_err(encoding)?;
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(
            &lock_key[..],
        ));
        let aad = file.associated_data();
        let sealed = cipher
            .encrypt(
                chacha20poly1305::XNonce::from_slice(&nonce),
                Payload {
                    msg: self.signing.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| ())
            .map_err(encoding)?;
        file.sealed_seed = BASE64.encode(sealed);
        write_key_json(path, &file)
    }

    /// Reads a plaintext key file (airlock's own). Refuses one that others can read or write,
    /// as ssh does, and a locked one.
    pub fn load(path: &Path) -> Result<ApproverKey, KeyError> {
        let bytes = read_key_file(path)?;
        match file_format(path, &bytes)?.as_str() {
            LOCKED_KEY_FILE_FORMAT => Err(KeyError::Locked {
                path: path.to_owned(),
            }),
            _ => parse_plaintext(path, &bytes),
        }
    }

    /// Reads an approver's key file to sign with: a locked file is opened with the passphrase
    /// `unlock` asks for; a plaintext one only when `unlock.allow_plaintext`.
    pub fn load_approver(path: &Path, unlock: Unlock<'_>) -> Result<LoadedKey, KeyError> {
        let bytes = read_key_file(path)?;
        if file_format(path, &bytes)? != LOCKED_KEY_FILE_FORMAT {
            if !unlock.allow_plaintext {
                // Parsed anyway, so a damaged file says so rather than "plaintext".
                parse_plaintext(path, &bytes)?;
                return Err(KeyError::Plaintext {
                    path: path.to_owned(),
                });
            }
            return parse_plaintext(path, &bytes).map(|key| LoadedKey {
                key,
                plaintext: true,
            });
        }
        let bad = |reason| KeyError::Format {
            path: path.to_owned(),
            reason,
        };
        let file: LockedKeyFile =
            serde_json::from_slice(&bytes).map_err(|_| bad("not JSON of the expected shape"))?;
        if file.algorithm != "ed25519" || file.kdf != "scrypt" || file.cipher != "xchacha20poly1305"
        {
            return Err(bad("unknown algorithm"));
        }
        if !SCRYPT_LOG_N_ACCEPTED.contains(&file.scrypt_log_n)
            || file.scrypt_r != SCRYPT_R
            || file.scrypt_p != SCRYPT_P
        {
            return Err(bad("scrypt cost out of range"));
        }
        check_name(&file.name).map_err(|_| bad("invalid name"))?;
        let key_id = KeyId::parse(&file.key_id).ok_or_else(|| bad("invalid key id"))?;
        let salt = BASE64
            .decode(file.salt.as_bytes())
            .map_err(|_| bad("salt is not base64"))?;
        let nonce: [u8; 24] = BASE64
            .decode(file.nonce.as_bytes())
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| bad("nonce is not 24 bytes of base64"))?;
        let sealed = BASE64
            .decode(file.sealed_seed.as_bytes())
            .map_err(|_| bad("sealed_seed is not base64"))?;
        if salt.len() < 16 {
            return Err(bad("salt is too short"));
        }
        let passphrase = (unlock.passphrase)(&file.name, &key_id).map_err(KeyError::Passphrase)?;
        let wrong = || KeyError::WrongPassphrase {
            path: path.to_owned(),
        };
        let lock_key = derive_lock_key(
            &passphrase,
            &salt,
            file.scrypt_log_n,
            file.scrypt_r,
            file.scrypt_p,
        )
        .ok_or_else(|| bad("scrypt cost out of range"))?;
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(
            &lock_key[..],
        ));
        let aad = file.associated_data();
        let seed = Zeroizing::new(
            cipher
                .decrypt(
                    chacha20poly1305::XNonce::from_slice(&nonce),
                    Payload {
                        msg: &sealed,
                        aad: &aad,
                    },
                )
                .map_err(|_| wrong())?,
        );
        let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| wrong())?;
        let key = ApproverKey {
            name: file.name.clone(),
            signing: SigningKey::from_bytes(seed),
        };
        let public = key.public();
        if public.public_key() != file.public_key || public.key_id != key_id {
            return Err(bad("public key or key id does not match the seed"));
        }
        Ok(LoadedKey {
            key,
            plaintext: false,
        })
    }
}

/// Writes a key file's JSON to a new file, mode 0600 (never over an existing path); a partly
/// written file is removed.
fn write_key_json(path: &Path, file: &impl Serialize) -> Result<(), KeyError> {
    let mut text =
        Zeroizing::new(
            serde_json::to_string_pretty(file).map_err(|_| KeyError::Format {
                path: path.to_owned(),
                reason: "could not be encoded",
            })?,
        );
    text.push('\n');
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_owned(),
            },
            _ => io(e),
        })?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| sync_parent(path));
    if let Err(e) = written {
        drop(f);
        // Ours (create_new), so removing it cannot destroy anyone else's file.
        let _ = fs::remove_file(path);
        return Err(io(e));
    }
    Ok(())
}

/// A key file's bytes: a regular file, not readable or writable by others, not too large.
fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let bad = |reason| KeyError::Format {
        path: path.to_owned(),
        reason,
    };
    let f = fs::File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(bad("not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    f.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(bad("too large"));
    }
    Ok(bytes)
}

/// The `format` of a key file, one of the two known.
fn file_format(path: &Path, bytes: &[u8]) -> Result<String, KeyError> {
    #[derive(Deserialize)]
    struct Head {
        format: String,
    }
    // serde's messages can quote the input, which here may be the secret: not shown.
    let head: Head = serde_json::from_slice(bytes).map_err(|_| KeyError::Format {
        path: path.to_owned(),
        reason: "not JSON of the expected shape",
    })?;
    if head.format != KEY_FILE_FORMAT && head.format != LOCKED_KEY_FILE_FORMAT {
        return Err(KeyError::Format {
            path: path.to_owned(),
            reason: "unknown format",
        });
    }
    Ok(head.format)
}

fn parse_plaintext(path: &Path, bytes: &[u8]) -> Result<ApproverKey, KeyError> {
    let bad = |reason| KeyError::Format {
        path: path.to_owned(),
        reason,
    };
    let file: KeyFile =
        serde_json::from_slice(bytes).map_err(|_| bad("not JSON of the expected shape"))?;
    if file.format != KEY_FILE_FORMAT {
        return Err(bad("unknown format"));
    }
    if file.algorithm != "ed25519" {
        return Err(bad("unknown algorithm"));
    }
    check_name(&file.name).map_err(|_| bad("invalid name"))?;
    let seed = Zeroizing::new(
        BASE64
            .decode(file.seed.as_bytes())
            .map_err(|_| bad("seed is not base64"))?,
    );
    let seed: &[u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| bad("seed is not 32 bytes"))?;
    let key = ApproverKey {
        name: file.name.clone(),
        signing: SigningKey::from_bytes(seed),
    };
    let public = key.public();
    if public.public_key() != file.public_key || public.key_id.as_str() != file.key_id {
        return Err(bad("public key or key id does not match the seed"));
    }
    Ok(key)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

/// Makes a plaintext key at `out` (mode 0600, never overwriting) and returns its public half.
pub fn keygen(out: &Path, name: &str) -> Result<ApproverPublic, KeyError> {
    let key = ApproverKey::generate(name)?;
    key.write_new(out)?;
    Ok(key.public())
}

/// Makes an approver key at `out` locked with `passphrase` and returns its public half.
pub fn keygen_locked(out: &Path, name: &str, passphrase: &str) -> Result<ApproverPublic, KeyError> {
    let key = ApproverKey::generate(name)?;
    key.write_new_locked(out, passphrase)?;
    Ok(key.public())
}

/// A public key with its holder's name.
#[derive(Clone, PartialEq, Eq)]
pub struct ApproverPublic {
    name: String,
    key_id: KeyId,
    key: VerifyingKey,
}

impl ApproverPublic {
    /// From an `[[approver]]` entry: `public_key = "ed25519:BASE64"` (32 bytes). Refuses
    /// encodings that are not canonical, bytes that are not a curve point, and weak keys.
    pub fn from_config(name: &str, public_key: &str) -> Result<ApproverPublic, KeyError> {
        check_name(name)?;
        let bad = |reason| KeyError::PublicKey {
            name: name.to_owned(),
            reason,
        };
        let b64 = public_key
            .strip_prefix(PUBLIC_KEY_PREFIX)
            .ok_or_else(|| bad("must start with ed25519:"))?;
        let raw = BASE64
            .decode(b64.as_bytes())
            .map_err(|_| bad("not canonical base64"))?;
        let raw: [u8; 32] = raw.as_slice().try_into().map_err(|_| bad("not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| bad("not an Ed25519 public key"))?;
        if key.is_weak() {
            return Err(bad("a weak (small-order) key"));
        }
        Ok(ApproverPublic {
            name: name.to_owned(),
            key_id: KeyId::of(&key),
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The raw 32-byte public key, base64.
    pub fn public_key(&self) -> String {
        BASE64.encode(self.key.as_bytes())
    }

    /// `ed25519:BASE64`, the config's form.
    pub fn config_value(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", self.public_key())
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl NamedKey for ApproverPublic {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }
}

impl fmt::Debug for ApproverPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApproverPublic")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key())
            .finish()
    }
}

/// `{"name", "key_id", "public_key"}` (for `--json` output).
impl Serialize for ApproverPublic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ApproverPublic", 3)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("key_id", &self.key_id)?;
        st.serialize_field("public_key", &self.public_key())?;
        st.end()
    }
}

/// The `[[approver]]` block to paste into the config, newline-terminated.
pub fn config_block(public: &ApproverPublic) -> String {
    format!(
        "[[approver]]\nname = \"{}\"\npublic_key = \"{}\"\n",
        public.name,
        public.config_value()
    )
}

/// What a trusted key is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An `[[approver]]` from the config: its signature is an approval (or a denial).
    Approver,
    /// airlock's own key: it countersigns (passkey approvals); on its own it approves nothing.
    Airlock,
    /// An enrolled passkey: its WebAuthn assertion (inside the body) is the approval.
    Passkey,
}

#[derive(Debug, Clone)]
pub(crate) struct Trusted {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) key: VerifyingKey,
}

/// The keys verification accepts, by key id. Built from airlock's config and state only.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, Trusted>,
    passkeys: BTreeMap<KeyId, PasskeyPublic>,
}

impl TrustedKeys {
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Adds an `[[approver]]`. A key or a name may appear once.
    pub fn add_approver(&mut self, approver: &ApproverPublic) -> Result<(), KeyError> {
        if self
            .keys
            .values()
            .any(|t| t.role == Role::Approver && t.name == approver.name)
        {
            return Err(KeyError::DuplicateName(approver.name.clone()));
        }
        self.insert(approver, Role::Approver)
    }

    /// Adds airlock's own key (its public half).
    pub fn add_airlock(&mut self, airlock: &ApproverPublic) -> Result<(), KeyError> {
        self.insert(airlock, Role::Airlock)
    }

    /// Adds an enrolled passkey. One approver may have several (one per device).
    pub fn add_passkey(&mut self, passkey: &PasskeyPublic) -> Result<(), KeyError> {
        let id = passkey.key_id();
        if self.keys.contains_key(id) || self.passkeys.contains_key(id) {
            return Err(KeyError::DuplicateKey(id.clone()));
        }
        self.passkeys.insert(id.clone(), passkey.clone());
        Ok(())
    }

    pub(crate) fn passkey(&self, key_id: &KeyId) -> Option<&PasskeyPublic> {
        self.passkeys.get(key_id)
    }

    /// The enrolled passkeys, by key id.
    pub fn passkeys(&self) -> impl Iterator<Item = &PasskeyPublic> {
        self.passkeys.values()
    }

    fn insert(&mut self, public: &ApproverPublic, role: Role) -> Result<(), KeyError> {
        if self.keys.contains_key(&public.key_id) || self.passkeys.contains_key(&public.key_id) {
            return Err(KeyError::DuplicateKey(public.key_id.clone()));
        }
        self.keys.insert(
            public.key_id.clone(),
            Trusted {
                name: public.name.clone(),
                role,
                key: public.key,
            },
        );
        Ok(())
    }

    pub(crate) fn get(&self, key_id: &KeyId) -> Option<&Trusted> {
        self.keys.get(key_id)
    }

    pub fn len(&self) -> usize {
        self.keys.len() + self.passkeys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.passkeys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn keygen_writes_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alice.key");
        let public = keygen(&path, "alice").expect("keygen");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let before = fs::read(&path).expect("read");

        let again = keygen(&path, "alice");
        assert!(matches!(again, Err(KeyError::Exists { .. })), "{again:?}");
        assert_eq!(fs::read(&path).expect("read"), before, "file changed");

        let key = ApproverKey::load(&path).expect("load");
        assert_eq!(key.public(), public);
        assert_eq!(key.name(), "alice");
    }

    /// `load_approver` with `answer` as what the terminal gives (`None`: no terminal).
    fn open(
        path: &Path,
        allow_plaintext: bool,
        answer: Option<&str>,
    ) -> Result<LoadedKey, KeyError> {
        let mut ask = |_: &str, _: &KeyId| match answer {
            Some(a) => Ok(Zeroizing::new(a.to_owned())),
            None => Err("no terminal".to_owned()),
        };
        ApproverKey::load_approver(
            path,
            Unlock {
                allow_plaintext,
                passphrase: &mut ask,
            },
        )
    }

    #[test]
    fn a_locked_key_opens_only_with_its_passphrase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alice.key");
        let public = keygen_locked(&path, "alice", "correct horse").expect("keygen");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(
            fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        assert!(text.contains(LOCKED_KEY_FILE_FORMAT) && text.contains(&public.public_key()));
        assert!(!text.contains("\"seed\""));

        let loaded = open(&path, false, Some("correct horse")).expect("opens");
        assert!(!loaded.plaintext);
        assert_eq!(loaded.key.public(), public);
        let seed = BASE64.encode(loaded.key.signing.to_bytes());
        assert!(
            !text.contains(&seed),
            "the seed is in the file in the clear"
        );

        let err = open(&path, true, Some("correct horsf")).expect_err("wrong passphrase");
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
        let err = open(&path, true, None).expect_err("no passphrase");
        assert!(matches!(err, KeyError::Passphrase(_)), "{err}");
        // airlock's own loader takes plaintext keys only.
        assert!(matches!(
            ApproverKey::load(&path),
            Err(KeyError::Locked { .. })
        ));

        // The public facts are bound to the sealed seed: another name does not open.
        let renamed = dir.path().join("renamed.key");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&renamed)
            .and_then(|mut f| f.write_all(text.replace("\"alice\"", "\"bob\"").as_bytes()))
            .expect("write");
        let err = open(&renamed, false, Some("correct horse")).expect_err("renamed");
        assert!(matches!(err, KeyError::WrongPassphrase { .. }), "{err}");
    }

    #[test]
    fn a_plaintext_key_signs_only_when_allowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alice.key");
        keygen(&path, "alice").expect("keygen");
        // No passphrase is asked for (None would fail if it were).
        let err = open(&path, false, None).expect_err("plaintext refused");
        assert!(matches!(err, KeyError::Plaintext { .. }), "{err}");
        assert!(open(&path, true, None).expect("allowed").plaintext);
    }

    #[test]
    fn dangling_symlink_is_not_followed_to_create_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(dir.path().join("target.key"), &link).expect("symlink");
        assert!(matches!(
            keygen(&link, "alice"),
            Err(KeyError::Exists { .. })
        ));
        assert!(!dir.path().join("target.key").exists());
    }

    #[test]
    fn load_refuses_a_file_others_can_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        keygen(&path, "alice").expect("keygen");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = ApproverKey::load(&path).expect_err("0644 refused");
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
    }

    #[test]
    fn load_catches_damage_without_quoting_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        keygen(&path, "alice").expect("keygen");
        let text = fs::read_to_string(&path).expect("read");
        let file: serde_json::Value = serde_json::from_str(&text).expect("json");
        let seed = file["seed"].as_str().expect("seed").to_owned();

        let cases = [
            text.replace(&seed, &BASE64.encode([7u8; 32])),
            text.replace(&seed, "not base64!"),
            text.replace("\"seed\"", "\"seed\": 1, \"x\""),
            text.replace("airlock-ed25519-key/1", "other/1"),
            text.replacen('{', &format!("{{\"seed\": \"{seed}\","), 1),
        ];
        for (i, damaged) in cases.iter().enumerate() {
            let p = dir.path().join(format!("bad{i}"));
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .and_then(|mut f| f.write_all(damaged.as_bytes()))
                .expect("write");
            let err = ApproverKey::load(&p).expect_err("damaged key refused");
            assert!(matches!(err, KeyError::Format { .. }), "case {i}: {err}");
            assert!(!err.to_string().contains(&seed), "case {i} quotes the seed");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = ApproverKey::generate("alice").expect("key");
        let seed = key.signing.to_bytes();
        let shown = format!("{key:?} {:?}", key.public());
        assert!(shown.contains("alice") && shown.contains(key.key_id().as_str()));
        assert!(!shown.contains(&BASE64.encode(seed)));
        assert!(!shown.contains(&hex::encode(seed)));
        assert!(!shown.contains(&format!("{seed:?}")));
    }

    #[test]
    fn config_block_is_exactly_the_approver_entry() {
        let key = ApproverKey::generate("alice").expect("key");
        let public = key.public();
        let block = config_block(&public);
        assert_eq!(
            block,
            format!(
                "[[approver]]\nname = \"alice\"\npublic_key = \"ed25519:{}\"\n",
                public.public_key()
            )
        );
        // What the config parses back is the same key.
        #[derive(Deserialize)]
        struct Cfg {
            approver: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            name: String,
            public_key: String,
        }
        let cfg: Cfg = toml::from_str(&block).expect("toml");
        let back = ApproverPublic::from_config(&cfg.approver[0].name, &cfg.approver[0].public_key)
            .expect("parses");
        assert_eq!(back, public);
        assert_eq!(public.key_id().as_str().len(), 16);
        let digest = Sha256::digest(public.verifying_key().as_bytes());
        assert_eq!(public.key_id().as_str(), &hex::encode(digest)[..16]);
    }

    #[test]
    fn config_public_keys_are_checked() {
        let good = ApproverKey::generate("a")
            .expect("key")
            .public()
            .public_key();
        assert!(ApproverPublic::from_config("a", &format!("ed25519:{good}")).is_ok());
        for bad in [
            good.clone(),
            format!("rsa:{good}"),
            format!("ed25519:{}", &good[..good.len() - 1]),
            format!("ed25519:{}", BASE64.encode([1u8; 31])),
            // The identity point: a weak key every signature could verify against.
            format!(
                "ed25519:{}",
                BASE64.encode({
                    let mut b = [0u8; 32];
                    b[0] = 1;
                    b
                })
            ),
        ] {
            assert!(ApproverPublic::from_config("a", &bad).is_err(), "{bad}");
        }
        for name in ["", "a b", "a\"b", "x\n", &"n".repeat(65)] {
            assert!(matches!(
                ApproverPublic::from_config(name, &format!("ed25519:{good}")),
                Err(KeyError::Name(_))
            ));
        }
    }

    #[test]
    fn trusted_keys_refuse_duplicates() {
        let a = ApproverKey::generate("alice").expect("key").public();
        let b = ApproverKey::generate("alice").expect("key").public();
        let mut t = TrustedKeys::new();
        t.add_approver(&a).expect("first");
        assert!(matches!(
            t.add_approver(&b),
            Err(KeyError::DuplicateName(_))
        ));
        assert!(matches!(t.add_airlock(&a), Err(KeyError::DuplicateKey(_))));
        assert_eq!(t.len(), 1);
    }
}
