//! `airlock approver enroll NAME`: a one-time link that registers a passkey for NAME.
//!
//! The link carries a random token (256 bits). The state dir keeps only its SHA-256
//! (`state/enrollments.json`, mode 0600), with the name, an expiry ([`ENROLLMENT_TTL`]) and
//! whether it was used: reading the state dir does not give a working link, a link works
//! once, and not after it expires. The page on the approvals listener checks the token when
//! it is opened and again, consuming it, when the passkey is registered.

use super::ceremony::random_token;
use crate::config::Config;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an enrollment link works.
pub const ENROLLMENT_TTL: Duration = Duration::from_secs(10 * 60);

const FORMAT: &str = "airlock-enrollments/1";

/// Used or expired entries are dropped this long after they expire.
const KEEP_AFTER_EXPIRY_SECS: i64 = 24 * 3600;

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
}

impl Enrollment {
    fn usable(&self, now: i64) -> bool {
        self.used_at.is_none() && now < self.expires_at
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
        let now = unix_now();
        all.retain(|e| e.expires_at + KEEP_AFTER_EXPIRY_SECS > now);
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
        crate::receipt::keys::check_name(name).map_err(|e| e.to_string())?;
        let token = random_token();
        let hash = token_hash(&token).ok_or("internal: a token of the wrong shape")?;
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        self.update(|all| {
            all.push(Enrollment {
                token_sha256: hash,
                name: name.to_owned(),
                created_at: crate::state::approvals::now_rfc3339(),
                expires_at: unix_now().saturating_add(ttl),
                used_at: None,
            });
            Ok(())
        })?;
        Ok(token)
    }

    /// The enrollment a token opens, if it is known, unused and unexpired.
    pub fn find(&self, token: &str) -> Option<Enrollment> {
        let hash = token_hash(token)?;
        let now = unix_now();
        self.load()
            .ok()?
            .into_iter()
            .find(|e| e.token_sha256 == hash && e.usable(now))
    }

    /// Uses up the enrollment with this token hash; its name, or why not.
    pub fn consume(&self, hash: &str) -> Result<String, String> {
        self.update(|all| {
            let now = unix_now();
            let e = all
                .iter_mut()
                .find(|e| e.token_sha256 == hash)
                .ok_or("unknown enrollment link")?;
            if !e.usable(now) {
                return Err("this enrollment link was already used or has expired".into());
            }
            e.used_at = Some(crate::state::approvals::now_rfc3339());
            Ok(e.name.clone())
        })
    }
}

/// The approval page's base URL: `[approval] public_url`, else `http://localhost:<port>` —
/// `localhost`, not `127.0.0.1`, because WebAuthn needs a host name as its relying party.
pub fn page_base(config: &Config, port: u16) -> String {
    config
        .approval
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://localhost:{port}"))
        .trim_end_matches('/')
        .to_owned()
}

pub fn cmd_enroll(config_path: &Path, name: &str) -> Result<(), String> {
    if !config_path.exists() {
        return Err(format!(
            "{} does not exist; run `airlock init` first",
            config_path.display()
        ));
    }
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let store = EnrollmentStore::new(&config.state_dir);
    let token = store.create(name, ENROLLMENT_TTL)?;
    let port =
        crate::cli::recorded_port(&config, "approvals").unwrap_or(config.approvals_addr.port());
    let link = format!("{}/enroll/{token}", page_base(&config, port));
    println!(
        "# open this link in your browser within {} minutes to register a passkey for {name:?}; it works once:",
        ENROLLMENT_TTL.as_secs() / 60
    );
    println!("{link}");
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
        assert_eq!(store.consume(&hash).expect("consumed"), "alice");
        assert!(store.consume(&hash).is_err(), "used twice");
        assert!(store.find(&token).is_none());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EnrollmentStore::new(dir.path());
        let token = store.create("alice", Duration::ZERO).expect("created");
        assert!(store.find(&token).is_none());
        assert!(store.consume(&token_hash(&token).expect("hash")).is_err());
    }

    #[test]
    fn names_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EnrollmentStore::new(dir.path());
        assert!(store.create("a b<script>", ENROLLMENT_TTL).is_err());
    }
}
