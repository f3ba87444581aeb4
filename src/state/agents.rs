//! Agents and their proxy-only credentials (`state/agents.json`, mode 0600).
//!
//! The CLI changes the file under an exclusive lock (`state/agents.lock`); a running
//! `serve` watches it and reloads within [`RELOAD_INTERVAL`], so `airlock agent revoke`
//! takes effect without a restart. Revoked agents stay in the file, marked, so their key
//! ids are never issued again.

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

    /// Issues proxy-only credentials for a new agent.
    pub fn add(&self, name: &str) -> Result<AgentRecord, AgentError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(AgentError::BadName(name.to_string()));
        }
        self.update(|file| {
            if file
                .agents
                .iter()
                .any(|a| a.name == name && a.revoked_at.is_none())
            {
                return Err(AgentError::Exists(name.to_string()));
            }
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
                    };
                }
            };
            file.agents.push(record.clone());
            Ok(record)
        })
    }

    /// Revokes an agent's credentials; a running `serve` refuses them within a second.
    pub fn revoke(&self, name: &str) -> Result<(), AgentError> {
        self.update(|file| {
            let agent = file
                .agents
                .iter_mut()
                .find(|a| a.name == name && a.revoked_at.is_none())
                .ok_or_else(|| AgentError::NotFound(name.to_string()))?;
            agent.revoked_at = Some(super::now_rfc3339());
            Ok(())
        })
    }

    /// The active agent with this name.
    pub fn get(&self, name: &str) -> Result<AgentRecord, AgentError> {
        self.load()?
            .agents
            .into_iter()
            .find(|a| a.name == name && a.revoked_at.is_none())
            .ok_or_else(|| AgentError::NotFound(name.to_string()))
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
}

/// What identifies a version of the agents file: mtime (s, ns), inode, size.
type FileStamp = (i64, i64, u64, u64);

/// The proxy's in-memory index of active agents by access key id, kept in step with the file.
pub struct AgentRegistry {
    path: PathBuf,
    by_key: DashMap<String, Arc<Agent>>,
    /// The file stamp last loaded; `None` before the first load.
    seen: std::sync::Mutex<Option<Option<FileStamp>>>,
}

impl AgentRegistry {
    pub fn open(state_dir: &Path) -> Result<Arc<Self>, AgentError> {
        let reg = Arc::new(AgentRegistry {
            path: state_dir.join("agents.json"),
            by_key: DashMap::new(),
            seen: std::sync::Mutex::new(None),
        });
        reg.reload_if_changed()?;
        Ok(reg)
    }

    /// The active agent with this key id. On a miss the file is checked first (one `stat`),
    /// so an agent added a moment ago is known at once.
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
        let stamp = match fs::metadata(&self.path) {
            Ok(m) => Some((m.mtime(), m.mtime_nsec(), m.ino(), m.size())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(AgentError::Io(self.path.display().to_string(), e)),
        };
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == Some(stamp) {
            return Ok(false);
        }
        let file = read_file(&self.path)?;
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
                }),
            );
        }
        *seen = Some(stamp);
        Ok(true)
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
}
