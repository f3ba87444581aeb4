//! The receipt keys airlock keeps in its state dir (the config's `[[approver]]` keys are the
//! third kind; [`crate::signing::trusted_keys`] puts the three together):
//!
//! - airlock's own Ed25519 key (`state/airlock.key`, mode 0600, made at `serve` start when
//!   missing), which countersigns passkey approvals;
//! - the enrolled passkeys (`state/passkeys.json`, mode 0600), written by the enrollment page.
//!
//! Both are read afresh each time they are asked for, so a passkey enrolled while `serve`
//! runs counts at once and `airlock receipt verify` sees the same set offline.
//!
//! With a `database_url` the passkeys are kept in PostgreSQL, changed by the same functions
//! ([`add_passkey`], [`remove_passkeys_of`], [`advance_counter`]), and each replica's own
//! key stays here while its public half is registered there (`store::identities`).

use crate::receipt::{ApproverKey, ApproverPublic, KeyId, PasskeyKey, PasskeyPublic};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// airlock's own key's holder name, as receipts and `receipt verify` show it.
pub const AIRLOCK_KEY_NAME: &str = "airlock";

const PASSKEYS_FORMAT: &str = "airlock-passkeys/1";

pub fn airlock_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("airlock.key")
}

/// airlock's public key as `ed25519:BASE64`, readable by anyone who verifies receipts
/// offline (the private key stays 0600).
pub fn airlock_public_path(state_dir: &Path) -> PathBuf {
    state_dir.join("airlock.pub")
}

/// airlock's own key: loaded, or made (mode 0600) when missing; `airlock.pub` is written
/// beside it whenever it is missing or does not match.
pub fn ensure_airlock_key(state_dir: &Path) -> Result<ApproverKey, String> {
    let path = airlock_key_path(state_dir);
    if !path.exists() {
        match crate::receipt::keygen(&path, AIRLOCK_KEY_NAME) {
            Ok(_) => tracing::info!(path = %path.display(), "made airlock's own receipt key"),
            // Another process made it first: use theirs.
            Err(crate::receipt::KeyError::Exists { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let key = ApproverKey::load(&path).map_err(|e| e.to_string())?;
    let public = format!("{}\n", key.public().config_value());
    let pub_path = airlock_public_path(state_dir);
    if fs::read_to_string(&pub_path).ok().as_deref() != Some(public.as_str()) {
        use std::os::unix::fs::PermissionsExt;
        crate::state::write_atomic(&pub_path, public.as_bytes())
            .and_then(|()| fs::set_permissions(&pub_path, fs::Permissions::from_mode(0o644)))
            .map_err(|e| format!("{}: {e}", pub_path.display()))?;
    }
    Ok(key)
}

/// One enrolled passkey as `state/passkeys.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyRecord {
    /// The approver's name.
    pub name: String,
    /// The key id receipts name it by (derived from the key; checked at load).
    pub key_id: String,
    /// base64url, as WebAuthn hands it out.
    pub credential_id: String,
    /// `es256:…` or `ed25519:…` ([`PasskeyKey::encode`]).
    pub public_key: String,
    /// The WebAuthn relying party id it was made for (`localhost`).
    pub rp_id: String,
    /// The origin it was enrolled on.
    pub origin: String,
    /// The authenticator's last signature counter (0: it keeps none).
    pub sign_count: u32,
    pub created_at: String,
}

impl PasskeyRecord {
    pub fn public(&self) -> Result<PasskeyPublic, String> {
        use base64::Engine as _;
        let key = PasskeyKey::decode(&self.public_key).map_err(|e| e.to_string())?;
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(self.credential_id.as_bytes())
            .map_err(|_| "credential_id is not base64url".to_string())?;
        let p = PasskeyPublic::new(&self.name, id, key, &self.rp_id).map_err(|e| e.to_string())?;
        if p.key_id().as_str() != self.key_id {
            return Err(format!(
                "passkey of {:?}: key_id does not match its key",
                self.name
            ));
        }
        Ok(p)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasskeysFile {
    format: String,
    passkeys: Vec<PasskeyRecord>,
}

/// `state/passkeys.json`, changed under an exclusive lock (`state/passkeys.lock`).
pub struct PasskeyStore {
    path: PathBuf,
    lock: PathBuf,
}

impl PasskeyStore {
    pub fn new(state_dir: &Path) -> PasskeyStore {
        PasskeyStore {
            path: state_dir.join("passkeys.json"),
            lock: state_dir.join("passkeys.lock"),
        }
    }

    pub fn load(&self) -> Result<Vec<PasskeyRecord>, String> {
        let shown = || self.path.display().to_string();
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", shown())),
        };
        let file: PasskeysFile =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", shown()))?;
        if file.format != PASSKEYS_FORMAT {
            return Err(format!("{}: unknown format {:?}", shown(), file.format));
        }
        Ok(file.passkeys)
    }

    fn save(&self, passkeys: Vec<PasskeyRecord>) -> Result<(), String> {
        let file = PasskeysFile {
            format: PASSKEYS_FORMAT.into(),
            passkeys,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| e.to_string())?;
        crate::state::write_atomic(&self.path, &json)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Runs `f` on the records under the lock and saves what it returns.
    fn update<T>(
        &self,
        f: impl FnOnce(&mut Vec<PasskeyRecord>) -> Result<T, String>,
    ) -> Result<T, String> {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| format!("{}: {e}", self.lock.display()))?;
        lock.lock()
            .map_err(|e| format!("{}: {e}", self.lock.display()))?;
        let mut all = self.load()?;
        let out = f(&mut all)?;
        self.save(all)?;
        Ok(out)
    }

    /// Adds a passkey ([`add_passkey`]).
    pub fn add(&self, record: PasskeyRecord) -> Result<(), String> {
        self.update(|all| add_passkey(all, record))
    }

    /// Replaces every passkey with `passkeys` (`airlock db export` writing a state).
    pub fn restore(&self, passkeys: Vec<PasskeyRecord>) -> Result<(), String> {
        self.update(|all| {
            *all = passkeys;
            Ok(())
        })
    }

    /// Removes every passkey of `name`; how many there were.
    pub fn remove_name(&self, name: &str) -> Result<usize, String> {
        self.update(|all| Ok(remove_passkeys_of(all, name)))
    }

    /// Records an assertion's signature counter ([`advance_counter`]).
    pub fn advance_counter(&self, key_id: &KeyId, count: u32) -> Result<(), String> {
        self.update(|all| advance_counter(all, key_id, count))
    }
}

// The changes to the enrolled passkeys, on the set as loaded: the same code whether it is kept
// in `passkeys.json` or in PostgreSQL (`store::identities`), each run under that store's lock.

/// Adds a passkey; refuses one that does not check, or a credential or key already enrolled.
pub fn add_passkey(all: &mut Vec<PasskeyRecord>, record: PasskeyRecord) -> Result<(), String> {
    record.public()?;
    if all
        .iter()
        .any(|p| p.credential_id == record.credential_id || p.key_id == record.key_id)
    {
        return Err("this passkey is already enrolled".into());
    }
    all.push(record);
    Ok(())
}

/// Removes every passkey of `name`; how many there were.
pub fn remove_passkeys_of(all: &mut Vec<PasskeyRecord>, name: &str) -> usize {
    let before = all.len();
    all.retain(|p| p.name != name);
    before - all.len()
}

/// Records an assertion's signature counter. An authenticator that keeps a counter must show a
/// larger one each time (a smaller or equal one means a cloned authenticator or a replay):
/// refused.
pub fn advance_counter(
    all: &mut [PasskeyRecord],
    key_id: &KeyId,
    count: u32,
) -> Result<(), String> {
    let p = all
        .iter_mut()
        .find(|p| p.key_id == key_id.as_str())
        .ok_or_else(|| "the passkey is no longer enrolled".to_string())?;
    if (count != 0 || p.sign_count != 0) && count <= p.sign_count {
        return Err(format!(
            "the passkey's signature counter went from {} to {count}: a replayed assertion or a cloned authenticator",
            p.sign_count
        ));
    }
    p.sign_count = count;
    Ok(())
}

/// airlock's own public key: from `airlock.pub`, else from the private key; `None` before
/// `serve` first made it.
pub fn airlock_public(state_dir: &Path) -> Result<Option<ApproverPublic>, String> {
    let pub_path = airlock_public_path(state_dir);
    match fs::read_to_string(&pub_path) {
        Ok(text) => {
            return ApproverPublic::from_config(AIRLOCK_KEY_NAME, text.trim())
                .map(Some)
                .map_err(|e| format!("{}: {e}", pub_path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", pub_path.display())),
    }
    let path = airlock_key_path(state_dir);
    if !path.exists() {
        return Ok(None);
    }
    ApproverKey::load(&path)
        .map(|k| Some(k.public()))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn airlock_key_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ensure_airlock_key(dir.path()).expect("made");
        let b = ensure_airlock_key(dir.path()).expect("loaded");
        assert_eq!(a.public(), b.public());
        let mode = fs::metadata(airlock_key_path(dir.path()))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(airlock_public(dir.path()).expect("read"), Some(a.public()));
    }

    fn record(auth: &crate::receipt::webauthn::soft::Authenticator) -> PasskeyRecord {
        enrolled(auth, "carol")
    }

    /// `auth`'s passkey as the enrollment page stores it for `name`.
    pub(crate) fn enrolled(
        auth: &crate::receipt::webauthn::soft::Authenticator,
        name: &str,
    ) -> PasskeyRecord {
        use base64::Engine as _;
        let p = auth.passkey(name);
        PasskeyRecord {
            name: name.into(),
            key_id: p.key_id().as_str().into(),
            credential_id: base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(p.credential_id()),
            public_key: p.key().encode(),
            rp_id: "localhost".into(),
            origin: "http://localhost:8444".into(),
            sign_count: 0,
            created_at: "2026-02-26T12:00:00Z".into(),
        }
    }

    #[test]
    fn passkeys_are_stored_0600_once_and_counters_only_go_up() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PasskeyStore::new(dir.path());
        assert!(store.load().expect("empty").is_empty());
        let auth = crate::receipt::webauthn::soft::Authenticator::new("localhost");
        let r = record(&auth);
        store.add(r.clone()).expect("added");
        assert!(store.add(r.clone()).is_err(), "enrolled twice");
        let mode = fs::metadata(dir.path().join("passkeys.json"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key_id = KeyId::parse(&r.key_id).expect("key id");
        store.advance_counter(&key_id, 3).expect("up");
        assert!(store.advance_counter(&key_id, 3).is_err(), "same counter");
        assert!(store.advance_counter(&key_id, 2).is_err(), "counter down");
        store.advance_counter(&key_id, 4).expect("up again");

        let mut forged = record(&auth);
        forged.key_id = "0000000000000000".into();
        assert!(forged.public().is_err());
    }
}
