//! Enrollment links and the passkeys waiting for confirmation, as airlock's state keeps them
//! (`state/enrollments.json`, mode 0600, or PostgreSQL through `store::identities`): only a
//! link token's SHA-256 is kept, with the name, an expiry and whether it was used. What a link
//! is for, and who may make one, is `approvals::enroll`'s.
//!
//! The changes and lookups are functions on the set as loaded ([`open_link`],
//! [`consume_link`], [`settle_pending`], [`end_links_of`], …): the same code for the file and
//! for the database, each change run under that store's lock and followed by [`prune`].

use crate::state::trust::PasskeyRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fresh random token (256 bits, base64url): an enrollment link's, a ceremony's id.
pub fn random_token() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

const FORMAT: &str = "airlock-enrollments/1";

/// Used or expired entries are dropped this long after they expire (longer than any wait
/// for a confirmation).
const KEEP_AFTER_EXPIRY_SECS: i64 = 24 * 3600;

/// A passkey registered through a link while others are enrolled: it waits for one of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingPasskey {
    /// Random id of this confirmation (the page's `/enrollments/ID`).
    pub id: String,
    /// The passkey as it will be stored once confirmed.
    pub passkey: PasskeyRecord,
    pub registered_at: String,
    /// Where the registration came from: the peer address and the browser's `User-Agent`.
    pub remote_addr: String,
    pub user_agent: String,
    /// Unix seconds; after this it can no longer be confirmed.
    pub until: i64,
}

/// How a pending passkey ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settled {
    pub confirmed: bool,
    /// The approver who confirmed or rejected it, or `revoked` (`airlock approver revoke`).
    pub by: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// SHA-256 (hex) of the link's token.
    pub token_sha256: String,
    pub name: String,
    pub created_at: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub used_at: Option<String>,
    /// Set when the link registered a passkey that needs an enrolled approver's confirmation.
    #[serde(default)]
    pub pending: Option<PendingPasskey>,
    #[serde(default)]
    pub settled: Option<Settled>,
}

impl Enrollment {
    fn usable(&self, now: i64) -> bool {
        self.used_at.is_none() && self.settled.is_none() && now < self.expires_at
    }

    /// The passkey waiting for confirmation, if it still may be confirmed.
    pub fn waiting(&self, now: i64) -> Option<&PendingPasskey> {
        self.pending
            .as_ref()
            .filter(|p| self.settled.is_none() && now < p.until)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollmentFile {
    format: String,
    enrollments: Vec<Enrollment>,
}

/// The SHA-256 of a token as the state keeps it; `None` for what cannot be a token.
pub fn token_hash(token: &str) -> Option<String> {
    let well_formed = token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| hex::encode(Sha256::digest(token.as_bytes())))
}

pub(crate) fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// `state/enrollments.json`, changed under an exclusive lock (`state/enrollments.lock`).
pub struct EnrollmentStore {
    path: PathBuf,
    lock: PathBuf,
}

impl EnrollmentStore {
    pub fn new(state_dir: &Path) -> EnrollmentStore {
        EnrollmentStore {
            path: state_dir.join("enrollments.json"),
            lock: state_dir.join("enrollments.lock"),
        }
    }

    /// Every enrollment kept, or why they cannot be read.
    pub fn load(&self) -> Result<Vec<Enrollment>, String> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let file: EnrollmentFile =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", self.path.display()))?;
        if file.format != FORMAT {
            return Err(format!("{}: unknown format", self.path.display()));
        }
        Ok(file.enrollments)
    }

    fn update<T>(
        &self,
        f: impl FnOnce(&mut Vec<Enrollment>) -> Result<T, String>,
    ) -> Result<T, String> {
        let io = |e: std::io::Error| format!("{}: {e}", self.lock.display());
        let _lock = crate::state::lock_file(&self.lock).map_err(io)?;
        let mut all = self.load()?;
        let out = f(&mut all)?;
        prune(&mut all);
        let json = serde_json::to_vec_pretty(&EnrollmentFile {
            format: FORMAT.into(),
            enrollments: all,
        })
        .map_err(|e| e.to_string())?;
        crate::state::write_atomic(&self.path, &json)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(out)
    }

    /// A new enrollment for `name`; returns the token for the link (shown once, never stored).
    pub fn create(&self, name: &str, ttl: Duration) -> Result<String, String> {
        self.update(|all| open_link(all, name, ttl))
    }

    /// Replaces every enrollment with `enrollments` (`airlock db export` writing a state).
    pub fn restore(&self, enrollments: Vec<Enrollment>) -> Result<(), String> {
        self.update(|all| {
            *all = enrollments;
            Ok(())
        })
    }

    /// Every enrollment kept (a read error counts as none: no link works then).
    pub fn all(&self) -> Vec<Enrollment> {
        self.load().unwrap_or_default()
    }

    /// The enrollment a token opens, if it is known, unused and unexpired.
    pub fn find(&self, token: &str) -> Option<Enrollment> {
        find_link(&self.all(), token)
    }

    /// Uses up the enrollment with this token hash ([`consume_link`]).
    pub fn consume(&self, hash: &str, pending: Option<PendingPasskey>) -> Result<String, String> {
        self.update(|all| consume_link(all, hash, pending))
    }

    /// Passkeys waiting for confirmation now.
    pub fn waiting(&self) -> Vec<Enrollment> {
        waiting_in(self.all())
    }

    /// The enrollment whose pending passkey has this id, while it may still be confirmed.
    pub fn find_waiting(&self, id: &str) -> Option<Enrollment> {
        find_waiting_in(self.all(), id)
    }

    /// Settles a pending passkey ([`settle_pending`]).
    pub fn settle(
        &self,
        settlement: Settlement<'_>,
    ) -> Result<(Enrollment, Option<PasskeyRecord>), String> {
        self.update(|all| settle_pending(all, settlement))
    }

    /// Ends every open link and pending passkey of `name`; how many.
    pub fn revoke(&self, name: &str) -> Result<usize, String> {
        self.update(|all| Ok(end_links_of(all, name)))
    }
}

// The enrollments' changes and lookups, on the set as loaded: the same code whether it is kept
// in `enrollments.json` or in PostgreSQL (`store::identities`), each change run under that
// store's lock and followed by [`prune`].

/// Drops used or expired entries [`KEEP_AFTER_EXPIRY_SECS`] after they expire.
pub fn prune(all: &mut Vec<Enrollment>) {
    let now = unix_now();
    all.retain(|e| e.expires_at + KEEP_AFTER_EXPIRY_SECS > now);
}

/// Adds a new enrollment for `name`; returns the token for the link (shown once, never
/// stored: only its SHA-256 is).
pub fn open_link(all: &mut Vec<Enrollment>, name: &str, ttl: Duration) -> Result<String, String> {
    crate::receipt::keys::check_name(name).map_err(|e| e.to_string())?;
    let token = random_token();
    let hash = token_hash(&token).ok_or("internal: a token of the wrong shape")?;
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    all.push(Enrollment {
        token_sha256: hash,
        name: name.to_owned(),
        created_at: crate::state::now_rfc3339(),
        expires_at: unix_now().saturating_add(ttl),
        used_at: None,
        pending: None,
        settled: None,
    });
    Ok(token)
}

/// The enrollment a token opens, if it is known, unused and unexpired.
pub fn find_link(all: &[Enrollment], token: &str) -> Option<Enrollment> {
    let hash = token_hash(token)?;
    let now = unix_now();
    all.iter()
        .find(|e| e.token_sha256 == hash && e.usable(now))
        .cloned()
}

/// Uses up the enrollment with this token hash, keeping `pending` (a passkey waiting for
/// confirmation) with it; its name, or why not.
pub fn consume_link(
    all: &mut [Enrollment],
    hash: &str,
    pending: Option<PendingPasskey>,
) -> Result<String, String> {
    let now = unix_now();
    let e = all
        .iter_mut()
        .find(|e| e.token_sha256 == hash)
        .ok_or("unknown enrollment link")?;
    if !e.usable(now) {
        return Err("this enrollment link was already used or has expired".into());
    }
    e.used_at = Some(crate::state::now_rfc3339());
    e.pending = pending;
    Ok(e.name.clone())
}

/// Passkeys waiting for confirmation now.
pub fn waiting_in(mut all: Vec<Enrollment>) -> Vec<Enrollment> {
    let now = unix_now();
    all.retain(|e| e.waiting(now).is_some());
    all
}

/// The enrollment whose pending passkey has this id, while it may still be confirmed.
pub fn find_waiting_in(all: Vec<Enrollment>, id: &str) -> Option<Enrollment> {
    let now = unix_now();
    all.into_iter()
        .find(|e| e.waiting(now).is_some_and(|p| p.id == id))
}

/// An enrolled approver's decision on a pending passkey.
#[derive(Debug, Clone, Copy)]
pub struct Settlement<'a> {
    /// The pending passkey's id (the page's `/enrollments/ID`).
    pub id: &'a str,
    /// The key it must still be (the one the approver was shown).
    pub key_id: &'a str,
    pub confirmed: bool,
    /// The approver who decided.
    pub by: &'a str,
}

/// Settles the pending passkey `settlement.id`, which must still be the one with its
/// `key_id`; on confirmation, its record (for the passkey store).
pub fn settle_pending(
    all: &mut [Enrollment],
    settlement: Settlement<'_>,
) -> Result<(Enrollment, Option<PasskeyRecord>), String> {
    let Settlement {
        id,
        key_id,
        confirmed,
        by,
    } = settlement;
    let now = unix_now();
    let e = all
        .iter_mut()
        .find(|e| e.pending.as_ref().is_some_and(|p| p.id == id))
        .ok_or("no such pending passkey")?;
    let Some(p) = e.waiting(now) else {
        return Err(
            "this passkey is no longer waiting for confirmation (settled, revoked or expired)"
                .into(),
        );
    };
    if p.passkey.key_id != key_id {
        return Err("the pending passkey changed".into());
    }
    let record = confirmed.then(|| p.passkey.clone());
    e.settled = Some(Settled {
        confirmed,
        by: by.to_owned(),
        at: crate::state::now_rfc3339(),
    });
    Ok((e.clone(), record))
}

/// Ends every open link and pending passkey of `name`; how many.
pub fn end_links_of(all: &mut [Enrollment], name: &str) -> usize {
    let now = unix_now();
    let at = crate::state::now_rfc3339();
    let mut n = 0;
    for e in all.iter_mut().filter(|e| e.name == name) {
        if e.usable(now) || e.waiting(now).is_some() {
            e.used_at.get_or_insert_with(|| at.clone());
            e.settled = Some(Settled {
                confirmed: false,
                by: "revoked".into(),
                at: at.clone(),
            });
            n += 1;
        }
    }
    n
}

/// Held while an approver's passkeys change in two steps (a confirmation settles a pending
/// passkey, then adds it; a revocation ends pending ones, then removes enrolled ones), so
/// neither can fall between the other's steps: otherwise a revocation could land after a
/// confirmation settled but before it added the passkey, and the revoked approver would
/// end up enrolled. `serve` and the CLI both take it (`state/approvers.lock`).
pub fn approvers_lock(state_dir: &Path) -> Result<fs::File, String> {
    let path = state_dir.join("approvers.lock");
    crate::state::lock_file(&path).map_err(|e| format!("{}: {e}", path.display()))
}
