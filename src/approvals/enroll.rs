//! `airlock approver enroll NAME`: a one-time link that registers a passkey for NAME.
//!
//! The link carries a random token (256 bits). The state dir keeps only its SHA-256
//! (`state/enrollments.json`, mode 0600), with the name, an expiry ([`ENROLLMENT_TTL`]) and
//! whether it was used: reading the state dir does not give a working link, a link works
//! once, and not after it expires. The page on the approvals listener checks the token when
//! it is opened and again, consuming it, when the passkey is registered.
//!
//! # Enrollment is an approval too
//!
//! - Only the owner of the state dir (airlock's own user) may make a link
//!   ([`require_state_owner`]): an agent running as another user cannot, even if it can run
//!   the binary.
//! - The first passkey of a fresh install counts at once. Once any passkey is enrolled, a
//!   newly registered one is only *pending* ([`PendingPasskey`]: who asked, when, from which
//!   address and browser) until an enrolled approver confirms it on the approval page with a
//!   user-verified passkey assertion whose challenge binds that pending passkey
//!   ([`confirm_challenge`]); a rejection or [`PENDING_TTL`] ends it. A pending passkey is not
//!   among the trusted keys, so it approves nothing, and cannot confirm itself.
//! - `airlock approver revoke NAME` removes NAME's passkeys and ends NAME's open links and
//!   pending passkeys; `serve` reads the passkeys on every use, so it refuses them at once.
//!
//! With a `database_url` the links are kept in PostgreSQL (`store::identities`); the changes
//! and lookups below are the same functions, and the two-step changes are one transaction
//! there instead of [`approvers_lock`].

use super::ceremony::random_token;
use crate::config::Config;
use crate::state::trust::PasskeyRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an enrollment link works.
pub const ENROLLMENT_TTL: Duration = Duration::from_secs(10 * 60);

const FORMAT: &str = "airlock-enrollments/1";

/// How long a registered passkey waits for an enrolled approver's confirmation.
pub const PENDING_TTL: Duration = Duration::from_secs(60 * 60);

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

/// The WebAuthn challenge an enrolled approver signs to confirm (or reject) a pending
/// passkey: it names the decision, the link, the approver-to-be and the exact new key, so an
/// assertion for one pending passkey settles no other.
pub fn confirm_challenge(e: &Enrollment, pending: &PendingPasskey, confirm: bool) -> [u8; 32] {
    let decision = if confirm { "confirm" } else { "reject" };
    let text = format!(
        "airlock-enrollment-confirmation/1\n{decision}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        pending.id,
        e.token_sha256,
        e.name,
        pending.passkey.key_id,
        pending.passkey.credential_id,
        pending.passkey.public_key
    );
    Sha256::digest(text.as_bytes()).into()
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

fn unix_now() -> i64 {
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

    fn load(&self) -> Result<Vec<Enrollment>, String> {
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

    /// Settles the pending passkey `id` ([`settle_pending`]).
    pub fn settle(
        &self,
        id: &str,
        key_id: &str,
        confirmed: bool,
        by: &str,
    ) -> Result<(Enrollment, Option<PasskeyRecord>), String> {
        self.update(|all| settle_pending(all, id, key_id, confirmed, by))
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

/// Settles the pending passkey `id`, which must still be the one with `key_id`; on
/// confirmation, its record (for the passkey store).
pub fn settle_pending(
    all: &mut [Enrollment],
    id: &str,
    key_id: &str,
    confirmed: bool,
    by: &str,
) -> Result<(Enrollment, Option<PasskeyRecord>), String> {
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

/// Refuses unless this process's effective user owns the state dir: enrollment and
/// revocation change airlock's own state, so only airlock's own user makes them (root too,
/// only where root owns the state).
pub fn require_state_owner(state_dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata(state_dir).map_err(|e| {
        format!(
            "{}: {e}; run `airlock init` (as airlock's own user) first",
            state_dir.display()
        )
    })?;
    let me = crate::access::host::current_principal().uid;
    if meta.uid() != me {
        return Err(format!(
            "only the owner of {} (uid {}) may do this, and this process runs as uid {me}: \
             run it as airlock's own user (for example `sudo -u airlock airlock …`)",
            state_dir.display(),
            meta.uid()
        ));
    }
    Ok(())
}

pub fn cmd_enroll(config_path: &Path, name: &str) -> Result<(), String> {
    let config = Config::load_existing(config_path)?;
    require_state_owner(&config.state_dir)?;
    let (gated, token) = crate::store::identities::run_blocking(&config, async |ids| {
        let gated = !ids.passkeys().await?.is_empty();
        Ok((gated, ids.open_enrollment(name, ENROLLMENT_TTL).await?))
    })?;
    let port = config.listening().approvals.port();
    let link = format!("{}/enroll/{token}", config.approval_page(port).base());
    println!(
        "# open this link in your browser within {} minutes to register a passkey for {name:?}; it works once:",
        ENROLLMENT_TTL.as_secs() / 60
    );
    println!("{link}");
    if gated {
        println!("# passkeys are enrolled already: the new one counts only after an enrolled approver confirms it on the approval page");
    }
    Ok(())
}

pub fn cmd_revoke(config_path: &Path, name: &str) -> Result<(), String> {
    let config = Config::load_existing(config_path)?;
    require_state_owner(&config.state_dir)?;
    crate::receipt::keys::check_name(name).map_err(|e| e.to_string())?;
    // One step, so a confirmation on the page cannot settle a pending passkey before this
    // and add it after (see `approvers_lock`).
    let (removed, ended) = crate::store::identities::run_blocking(&config, async |ids| {
        ids.revoke_approver(name).await
    })?;
    if removed + ended > 0 {
        let record = crate::audit::approver_change("approver_revoked", name, "*", "cli");
        crate::store::commands::append_audit_now(&config, record).map_err(|e| {
            format!("{name}'s passkeys are removed, but the audit log could not be written: {e}")
        })?;
    }
    println!(
        "revoked {name}: {removed} passkey(s) removed, {ended} open link(s) or pending passkey(s) ended; a running airlock refuses them within a second"
    );
    if config.approvers.iter().any(|a| a.name() == name) {
        println!(
            "# {name:?} also has an Ed25519 key in the [[approver]] list of {}: remove that block and restart `airlock serve` to revoke it too",
            config.path.display()
        );
    }
    if removed == 0 && ended == 0 && !config.approvers.iter().any(|a| a.name() == name) {
        return Err(format!("no approver named {name:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once_and_only_as_issued() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EnrollmentStore::new(dir.path());
        let token = store.create("alice", ENROLLMENT_TTL).expect("created");
        let text = fs::read_to_string(dir.path().join("enrollments.json")).expect("file");
        assert!(!text.contains(&token), "the token itself is never stored");

        let e = store.find(&token).expect("usable");
        assert_eq!(e.name, "alice");
        let mut forged = token.clone();
        forged.replace_range(0..1, if token.starts_with('A') { "B" } else { "A" });
        assert!(store.find(&forged).is_none());
        assert!(store.find("short").is_none());

        let hash = token_hash(&token).expect("hash");
        assert_eq!(store.consume(&hash, None).expect("consumed"), "alice");
        assert!(store.consume(&hash, None).is_err(), "used twice");
        assert!(store.find(&token).is_none());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EnrollmentStore::new(dir.path());
        let token = store.create("alice", Duration::ZERO).expect("created");
        assert!(store.find(&token).is_none());
        assert!(store
            .consume(&token_hash(&token).expect("hash"), None)
            .is_err());
    }

    fn pending_record(id: &str, key_id: &str) -> PendingPasskey {
        PendingPasskey {
            id: id.into(),
            passkey: PasskeyRecord {
                name: "bob".into(),
                key_id: key_id.into(),
                credential_id: "Y3JlZA".into(),
                public_key: "es256:x".into(),
                rp_id: "localhost".into(),
                origin: "http://localhost:1".into(),
                sign_count: 0,
                created_at: "2026-01-01T00:00:00Z".into(),
            },
            registered_at: "2026-01-01T00:00:00Z".into(),
            remote_addr: "127.0.0.1:5".into(),
            user_agent: "test".into(),
            until: unix_now() + 60,
        }
    }

    #[test]
    fn a_pending_passkey_is_settled_once_and_revocation_ends_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EnrollmentStore::new(dir.path());
        let token = store.create("bob", ENROLLMENT_TTL).expect("created");
        let hash = token_hash(&token).expect("hash");
        store
            .consume(&hash, Some(pending_record("p1", "00000000000000aa")))
            .expect("consumed");
        assert!(store.find(&token).is_none(), "the link is used");
        let waiting = store.find_waiting("p1").expect("waiting");
        let p = waiting.pending.as_ref().expect("pending");
        // The challenge binds the decision and the exact key.
        let confirm = confirm_challenge(&waiting, p, true);
        assert_ne!(confirm, confirm_challenge(&waiting, p, false));
        let mut other = p.clone();
        other.passkey.key_id = "00000000000000bb".into();
        assert_ne!(confirm, confirm_challenge(&waiting, &other, true));

        assert!(store
            .settle("p1", "00000000000000bb", true, "alice")
            .is_err());
        let (_, record) = store
            .settle("p1", "00000000000000aa", true, "alice")
            .expect("settled");
        assert_eq!(record.expect("confirmed").key_id, "00000000000000aa");
        assert!(store
            .settle("p1", "00000000000000aa", true, "alice")
            .is_err());
        assert!(store.waiting().is_empty());

        // Revocation ends an open link and a waiting passkey of the name.
        let open = store.create("bob", ENROLLMENT_TTL).expect("created");
        let second = store.create("bob", ENROLLMENT_TTL).expect("created");
        store
            .consume(
                &token_hash(&second).expect("hash"),
                Some(pending_record("p2", "00000000000000cc")),
            )
            .expect("consumed");
        assert_eq!(store.revoke("bob").expect("revoked"), 2);
        assert!(store.find(&open).is_none());
        assert!(store.find_waiting("p2").is_none());
        assert!(store
            .settle("p2", "00000000000000cc", true, "alice")
            .is_err());
    }

    #[test]
    fn only_the_state_dirs_owner_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        require_state_owner(dir.path()).expect("ours");
        assert!(require_state_owner(&dir.path().join("missing")).is_err());
        if rustix::process::geteuid().is_root() {
            // A dir owned by someone else (root can make one).
            std::os::unix::fs::chown(dir.path(), Some(65534), None).expect("chown");
            let err = require_state_owner(dir.path()).expect_err("not the owner");
            assert!(err.contains("uid 65534"), "{err}");
        }
    }

    #[test]
    fn names_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EnrollmentStore::new(dir.path());
        assert!(store.create("a b<script>", ENROLLMENT_TTL).is_err());
    }
}
