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
//! The records and their changes are `state::enrollments` (re-exported here); with a
//! `database_url` they are kept in PostgreSQL (`store::identities`), where the two-step
//! changes are one transaction instead of [`approvers_lock`].

use crate::config::Config;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::Path;
use std::time::Duration;

pub use crate::state::enrollments::*;

/// How long an enrollment link works.
pub const ENROLLMENT_TTL: Duration = Duration::from_secs(10 * 60);

/// How long a registered passkey waits for an enrolled approver's confirmation.
pub const PENDING_TTL: Duration = Duration::from_secs(60 * 60);

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

pub fn cmd_list(config_path: &Path, json: bool) -> Result<(), String> {
    let config = Config::load_existing(config_path)?;
    let (passkeys, links) = crate::store::identities::run_blocking(&config, async |ids| {
        Ok((ids.passkeys().await?, ids.enrollments().await))
    })?;
    let waiting = waiting_in(links);
    let rows: Vec<serde_json::Value> = config
        .approvers
        .iter()
        .map(|a| serde_json::json!({"name": a.name(), "kind": "key", "key_id": a.key_id().as_str()}))
        .chain(passkeys.iter().map(|p| {
            serde_json::json!({"name": p.name, "kind": "passkey", "key_id": p.key_id, "created_at": p.created_at})
        }))
        .chain(waiting.iter().filter_map(|e| e.pending.as_ref().map(|p| (e, p))).map(|(e, p)| {
            serde_json::json!({"name": e.name, "kind": "pending passkey", "key_id": p.passkey.key_id, "created_at": p.registered_at})
        }))
        .collect();
    if json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no approvers yet: `airlock approver enroll NAME`, or an [[approver]] key in the config");
    }
    for row in &rows {
        let text = |k: &str| row[k].as_str().unwrap_or("").to_owned();
        println!(
            "{:<24} {:<16} {:<16} {}",
            text("name"),
            text("kind"),
            text("key_id"),
            text("created_at")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::enrollments::unix_now;
    use crate::state::trust::PasskeyRecord;

    /// alice confirms the pending passkey `id`, shown as `key_id`.
    fn settle<'a>(id: &'a str, key_id: &'a str) -> Settlement<'a> {
        Settlement {
            id,
            key_id,
            confirmed: true,
            by: "alice",
        }
    }

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

        assert!(store.settle(settle("p1", "00000000000000bb")).is_err());
        let (_, record) = store
            .settle(settle("p1", "00000000000000aa"))
            .expect("settled");
        assert_eq!(record.expect("confirmed").key_id, "00000000000000aa");
        assert!(store.settle(settle("p1", "00000000000000aa")).is_err());
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
        assert!(store.settle(settle("p2", "00000000000000cc")).is_err());
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
