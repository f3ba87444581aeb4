//! Agents and their proxy-only credentials (`state/agents.json`, mode 0600).
//!
//! The CLI changes the file under an exclusive lock (`state/agents.lock`); a running
//! `serve` watches it and reloads within [`RELOAD_INTERVAL`], so `airlock agent revoke`
//! takes effect without a restart. Revoked agents stay in the file, marked, so their key
//! ids are never issued again.
//!
//! With a `database_url` the same records are kept in PostgreSQL (`store::identities`): the
//! changes are [`AgentsFile`]'s methods either way, and the registry is fed from the
//! database ([`AgentRegistry::detached`], [`AgentRegistry::replace`]).

use crate::secret::Secret;
use dashmap::DashMap;
use rand::rngs::OsRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Every agent key id starts with this; AWS's own start with `AKIA`/`ASIA`.
pub const KEY_PREFIX: &str = "AIRLOCK";

/// How often `serve` checks the agents file for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub created_at: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
    /// The `[[account]]` this key acts in; none: airlock's own account (no `[[account]]`).
    /// An agent bound to several accounts has one record, and one key, per account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The id the `[[account]]` had when the key was issued: a key is never carried to
    /// another account by a rename in the config. Absent in records written before it was
    /// kept (those are bound by name alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    pub agents: Vec<AgentRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: not a valid agents file: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("an agent named {0:?} already exists (revoke it first, or choose another name)")]
    Exists(String),
    #[error("no active agent named {0:?}")]
    NotFound(String),
    #[error("agent names are 1 to 64 letters, digits, '.', '_' or '-': {0:?}")]
    BadName(String),
    #[error("{0}")]
    Binding(String),
}

pub struct AgentStore {
    path: PathBuf,
    lock: PathBuf,
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = OsRng;
    (0..len)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}

fn check_name(name: &str) -> Result<(), AgentError> {
    if crate::accounts::valid_name(name) {
        Ok(())
    } else {
        Err(AgentError::BadName(name.to_string()))
    }
}

/// A fresh key for `name` (in `account`: its name and id), never one issued before, added to
/// `file`.
fn issue(file: &mut AgentsFile, name: &str, account: Option<(String, String)>) -> AgentRecord {
    let (account, account_id) = account.unzip();
    let record = loop {
        let id = format!(
            "{KEY_PREFIX}{}",
            random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 13)
        );
        if file.agents.iter().all(|a| a.access_key_id != id) {
            break AgentRecord {
                name: name.to_string(),
                access_key_id: id,
                secret_access_key: Secret::new(random_string(
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                    40,
                )),
                created_at: super::now_rfc3339(),
                revoked_at: None,
                account: account.clone(),
                account_id: account_id.clone(),
            };
        }
    };
    file.agents.push(record.clone());
    record
}

/// The changes the CLI makes, on the agents as loaded: the same code whether they are kept in
/// `agents.json` or in PostgreSQL (`store::identities`), each run under that store's lock.
impl AgentsFile {
    /// Issues proxy-only credentials for a new agent that acts in airlock's own account.
    pub fn add(&mut self, name: &str) -> Result<AgentRecord, AgentError> {
        check_name(name)?;
        if self
            .agents
            .iter()
            .any(|a| a.name == name && a.revoked_at.is_none())
        {
            return Err(AgentError::Exists(name.to_string()));
        }
        Ok(issue(self, name, None))
    }

    /// Binds an agent to `accounts`, issuing one key per account it is not bound to yet (a
    /// new agent, or one already bound to other accounts). Returns every active key of the
    /// agent, in the order its accounts were bound. `accounts` are (name, id).
    pub fn add_bound(
        &mut self,
        name: &str,
        accounts: &[(String, String)],
    ) -> Result<Vec<AgentRecord>, AgentError> {
        check_name(name)?;
        let existing = self.active_of(name);
        if existing.iter().any(|a| a.account.is_none()) {
            return Err(AgentError::Binding(format!(
                "agent {name:?} acts in airlock's own account; revoke it and add it again with --account to bind it to accounts"
            )));
        }
        let new: Vec<&(String, String)> = accounts
            .iter()
            .enumerate()
            .filter(|(i, acc)| {
                !accounts[..*i].iter().any(|(n, _)| n == &acc.0)
                    && !existing.iter().any(|a| a.account.as_ref() == Some(&acc.0))
            })
            .map(|(_, acc)| acc)
            .collect();
        if new.is_empty() {
            return Err(AgentError::Exists(name.to_string()));
        }
        for account in new {
            issue(self, name, Some(account.clone()));
        }
        Ok(self.active_of(name))
    }

    /// Marks every active key of `name` revoked (kept, so its key ids are never issued again).
    pub fn revoke(&mut self, name: &str) -> Result<(), AgentError> {
        let now = super::now_rfc3339();
        let mut found = false;
        for agent in self
            .agents
            .iter_mut()
            .filter(|a| a.name == name && a.revoked_at.is_none())
        {
            agent.revoked_at = Some(now.clone());
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(AgentError::NotFound(name.to_string()))
        }
    }

    fn active_of(&self, name: &str) -> Vec<AgentRecord> {
        self.agents
            .iter()
            .filter(|a| a.name == name && a.revoked_at.is_none())
            .cloned()
            .collect()
    }

    /// Every active key of the agent with this name: one, or one per bound account.
    pub fn active_keys_of(&self, name: &str) -> Result<Vec<AgentRecord>, AgentError> {
        let all = self.active_of(name);
        if all.is_empty() {
            return Err(AgentError::NotFound(name.to_string()));
        }
        Ok(all)
    }

    /// Whether `access_key_id` is an active key (an unknown key is not).
    pub fn is_active(&self, access_key_id: &str) -> bool {
        self.agents
            .iter()
            .any(|a| a.access_key_id == access_key_id && a.revoked_at.is_none())
    }
}

impl AgentStore {
    pub fn new(state_dir: &Path) -> Self {
        AgentStore {
            path: state_dir.join("agents.json"),
            lock: state_dir.join("agents.lock"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<AgentsFile, AgentError> {
        read_file(&self.path)
    }

    /// Runs `change` on the file under the exclusive lock and writes the result.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut AgentsFile) -> Result<T, AgentError>,
    ) -> Result<T, AgentError> {
        let io = |p: &Path| {
            let shown = p.display().to_string();
            move |e| AgentError::Io(shown, e)
        };
        let _lock = super::lock_file(&self.lock).map_err(io(&self.lock))?;
        let mut file = self.load()?;
        let out = change(&mut file)?;
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|e| AgentError::Corrupt(self.path.display().to_string(), e))?;
        super::write_atomic(&self.path, &json).map_err(io(&self.path))?;
        Ok(out)
    }

    /// Issues proxy-only credentials for a new agent that acts in airlock's own account.
    pub fn add(&self, name: &str) -> Result<AgentRecord, AgentError> {
        self.update(|file| file.add(name))
    }

    /// Binds an agent to `accounts` ([`AgentsFile::add_bound`]).
    pub fn add_bound(
        &self,
        name: &str,
        accounts: &[(String, String)],
    ) -> Result<Vec<AgentRecord>, AgentError> {
        self.update(|file| file.add_bound(name, accounts))
    }

    /// Replaces every agent with `agents` (`airlock db export` writing a state).
    pub fn restore(&self, agents: AgentsFile) -> Result<(), AgentError> {
        self.update(|file| {
            *file = agents;
            Ok(())
        })
    }

    /// Revokes an agent's credentials (every account's); a running `serve` refuses them
    /// within a second.
    pub fn revoke(&self, name: &str) -> Result<(), AgentError> {
        self.update(|file| file.revoke(name))
    }

    /// The active agent with this name (its first key, when it is bound to accounts).
    pub fn get(&self, name: &str) -> Result<AgentRecord, AgentError> {
        self.get_all(name)?
            .into_iter()
            .next()
            .ok_or_else(|| AgentError::NotFound(name.to_string()))
    }

    /// Every active key of the agent with this name: one, or one per bound account.
    pub fn get_all(&self, name: &str) -> Result<Vec<AgentRecord>, AgentError> {
        self.load()?.active_keys_of(name)
    }
}

fn read_file(path: &Path) -> Result<AgentsFile, AgentError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::Corrupt(path.display().to_string(), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentsFile::default()),
        Err(e) => Err(AgentError::Io(path.display().to_string(), e)),
    }
}

/// An agent as the proxy knows it.
#[derive(Debug)]
pub struct Agent {
    pub name: String,
    pub access_key_id: String,
    pub secret: Secret,
    /// The `[[account]]` the key acts in (none: airlock's own account).
    pub account: Option<String>,
    /// That account's id when the key was issued (none in older records).
    pub account_id: Option<String>,
}

/// What identifies a version of the agents file: mtime (s, ns), inode, size.
type FileStamp = (i64, i64, u64, u64);

/// The proxy's in-memory index of active agents by access key id, kept in step with the file
/// (or, with a database, with PostgreSQL by `store::postgres::identities::follow_agents`).
pub struct AgentRegistry {
    /// The agents file; `None` when the agents are kept in a database.
    path: Option<PathBuf>,
    by_key: DashMap<String, Arc<Agent>>,
    /// The file stamp last loaded; `None` before the first load.
    seen: std::sync::Mutex<Option<Option<FileStamp>>>,
}

impl AgentRegistry {
    pub fn open(state_dir: &Path) -> Result<Arc<Self>, AgentError> {
        let reg = Arc::new(AgentRegistry {
            path: Some(state_dir.join("agents.json")),
            by_key: DashMap::new(),
            seen: std::sync::Mutex::new(None),
        });
        reg.reload_if_changed()?;
        Ok(reg)
    }

    /// A registry kept in step by its owner through [`Self::replace`] (the agents are in a
    /// database), holding `agents` to begin with.
    pub fn detached(agents: AgentsFile) -> Arc<Self> {
        let reg = Arc::new(AgentRegistry {
            path: None,
            by_key: DashMap::new(),
            seen: std::sync::Mutex::new(None),
        });
        reg.replace(agents);
        reg
    }

    /// The active agent with this key id. On a miss the file is checked first (one `stat`),
    /// so an agent added a moment ago is known at once; a registry fed from a database is
    /// only what its follower last loaded (no query per unknown key an agent sends).
    pub fn get(&self, access_key_id: &str) -> Option<Arc<Agent>> {
        if let Some(a) = self.by_key.get(access_key_id) {
            return Some(Arc::clone(&a));
        }
        if let Err(e) = self.reload_if_changed() {
            tracing::warn!(error = %e, "could not reload agents");
        }
        self.by_key.get(access_key_id).map(|a| Arc::clone(&a))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Reloads when the file's identity, size or modification time changed. On a read error
    /// the previous set stays (the file is replaced atomically, so that is transient).
    pub fn reload_if_changed(&self) -> Result<bool, AgentError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let stamp = match fs::metadata(path) {
            Ok(m) => Some((m.mtime(), m.mtime_nsec(), m.ino(), m.size())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(AgentError::Io(path.display().to_string(), e)),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == Some(stamp) {
            return Ok(false);
        }
        self.replace(read_file(path)?);
        *seen = Some(stamp);
        Ok(true)
    }

    /// Makes the active agents of `file` the ones known, dropping every other key.
    pub fn replace(&self, file: AgentsFile) {
        let active: Vec<_> = file
            .agents
            .into_iter()
            .filter(|a| a.revoked_at.is_none())
            .collect();
        self.by_key
            .retain(|k, _| active.iter().any(|a| &a.access_key_id == k));
        for a in active {
            self.by_key.insert(
                a.access_key_id.clone(),
                Arc::new(Agent {
                    name: a.name,
                    access_key_id: a.access_key_id,
                    secret: a.secret_access_key,
                    account: a.account,
                    account_id: a.account_id,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_revoke_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = AgentStore::new(dir.path());
        let a = store.add("claude").unwrap();
        assert!(a.access_key_id.starts_with(KEY_PREFIX) && a.access_key_id.len() == 20);
        assert_eq!(a.secret_access_key.expose().len(), 40);
        assert!(matches!(store.add("claude"), Err(AgentError::Exists(_))));
        assert!(matches!(store.add("bad name"), Err(AgentError::BadName(_))));
        let reg = AgentRegistry::open(dir.path()).unwrap();
        assert_eq!(reg.get(&a.access_key_id).unwrap().name, "claude");
        store.revoke("claude").unwrap();
        assert!(reg.reload_if_changed().unwrap());
        assert!(reg.get(&a.access_key_id).is_none());
        assert!(matches!(
            store.revoke("claude"),
            Err(AgentError::NotFound(_))
        ));
        // A new agent of the same name gets a new key.
        let b = store.add("claude").unwrap();
        assert_ne!(a.access_key_id, b.access_key_id);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(store.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn one_key_per_bound_account_and_rebinding_adds_only_new_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let store = AgentStore::new(dir.path());
        let first = store
            .add_bound("claude", &[("staging".into(), "111111111111".into())])
            .unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].account.as_deref(), Some("staging"));
        assert_eq!(first[0].account_id.as_deref(), Some("111111111111"));
        let both = store
            .add_bound(
                "claude",
                &[
                    ("staging".into(), "111111111111".into()),
                    ("prod".into(), "222222222222".into()),
                    ("prod".into(), "222222222222".into()),
                ],
            )
            .unwrap();
        assert_eq!(both.len(), 2, "prod is bound once");
        assert_eq!(both[0].access_key_id, first[0].access_key_id);
        assert_eq!(both[1].account.as_deref(), Some("prod"));
        assert!(matches!(
            store.add_bound("claude", &[("prod".into(), "222222222222".into())]),
            Err(AgentError::Exists(_))
        ));
        let reg = AgentRegistry::open(dir.path()).unwrap();
        let prod = reg.get(&both[1].access_key_id).unwrap();
        assert_eq!(
            (prod.name.as_str(), prod.account.as_deref()),
            ("claude", Some("prod"))
        );
        // An agent of airlock's own account is not silently turned into a bound one.
        store.add("codex").unwrap();
        assert!(matches!(
            store.add_bound("codex", &[("prod".into(), "222222222222".into())]),
            Err(AgentError::Binding(_))
        ));
        // Revoking the agent revokes every account's key.
        store.revoke("claude").unwrap();
        assert!(reg.reload_if_changed().unwrap());
        assert!(
            reg.get(&both[0].access_key_id).is_none() && reg.get(&both[1].access_key_id).is_none()
        );
    }
}
