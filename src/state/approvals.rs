//! Pending approvals (`state/approvals/<id>.json`, mode 0600) and the receipts that answer
//! them (`state/receipts/<receipt id>.json`).
//!
//! `serve` records a call that needs a receipt and has none; identical retries (the same
//! binding) attach to the same open approval instead of making new ones. The CLI (and the
//! approval page) decide them. Changes are made under an exclusive lock
//! (`state/approvals.lock`) and written atomically.

/// The state dir's one clock format, also reachable here for the approval page.
pub use super::now_rfc3339;
use crate::identify::AwsCall;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for a human.
    Pending,
    /// A receipt was granted and still has uses.
    Approved,
    /// A human said no.
    Denied,
    /// Its receipt is used up or expired; a new identical call opens a new approval.
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub status: Status,
    /// SHA-256 of the canonical binding (agent, environment, account, region, service,
    /// operation, resources, parameter digest): what "identical call" means.
    pub binding_key: String,
    pub call: AwsCall,
    pub agent: String,
    pub environment: String,
    pub rule: String,
    pub reason: String,
    pub irreversible: bool,
    /// Why the call cannot be undone (empty when it can).
    #[serde(default)]
    pub irreversible_reasons: Vec<String>,
    pub created_at: String,
    pub last_seen_at: String,
    pub attempts: u64,
    /// The receipt that decided it; while pending, the receipt of an incomplete quorum.
    pub receipt_id: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    /// How many distinct approvers it needs, and who counts (one, anyone, before quorums).
    #[serde(default)]
    pub quorum: crate::receipt::Quorum,
    /// The approvers who counted so far, in the order they signed.
    #[serde(default)]
    pub approved_by: Vec<String>,
}

/// One approver's decision on a pending approval, as [`ApprovalStore::sign`] stores it.
pub struct Signed {
    pub receipt_id: String,
    pub receipt_json: Vec<u8>,
    /// `Pending` while a quorum is incomplete; else `Approved` or `Denied`.
    pub status: Status,
    pub approved_by: Vec<String>,
    /// Who decided, as the page and the CLI show it.
    pub decided_by: String,
}

impl Approval {
    /// A new pending approval for a blocked call, seen once now. The one shape of a new
    /// approval, whichever store keeps it.
    pub fn pending(
        binding_key: &str,
        call: &AwsCall,
        agent: &str,
        environment: &str,
        decision: &crate::policy::Decision,
    ) -> Approval {
        let now = now_rfc3339();
        Approval {
            id: new_id(),
            status: Status::Pending,
            binding_key: binding_key.to_string(),
            call: call.clone(),
            agent: agent.to_string(),
            environment: environment.to_string(),
            rule: decision.rule().to_string(),
            reason: decision.reason().to_string(),
            irreversible: decision.irreversible(),
            irreversible_reasons: decision.irreversible_reasons().to_vec(),
            created_at: now.clone(),
            last_seen_at: now,
            attempts: 1,
            receipt_id: None,
            decided_by: None,
            decided_at: None,
            quorum: decision.quorum().clone(),
            approved_by: Vec::new(),
        }
    }

    /// Takes one approver's decision, whose receipt the store has already written.
    /// The one rule for how a decision changes an approval.
    pub fn take_signed(&mut self, signed: Signed) {
        self.status = signed.status;
        self.receipt_id = Some(signed.receipt_id);
        self.approved_by = signed.approved_by;
        self.decided_by = Some(signed.decided_by);
        if self.status != Status::Pending {
            self.decided_at = Some(now_rfc3339());
        }
    }

    /// "1 of 2 approvals": how far a pending call is toward its quorum.
    pub fn progress(&self) -> String {
        format!(
            "{} of {} approvals",
            self.approved_by.len(),
            self.quorum.approvals.max(1)
        )
    }

    /// A one-line description: `rds:DeleteDBInstance on prod-db`.
    pub fn summary(&self) -> String {
        let targets: Vec<&str> = self
            .call
            .resources
            .iter()
            .map(|r| r.value.as_str())
            .collect();
        if targets.is_empty() {
            self.call.action()
        } else {
            format!("{} on {}", self.call.action(), targets.join(", "))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: not a valid record: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("no approval {0:?}")]
    NotFound(String),
    #[error("approval {0} is {1:?}, not pending")]
    NotPending(String, Status),
    #[error("{0}")]
    Refused(String),
}

impl ApprovalError {
    /// A decision whose receipt id is already a stored receipt's, which it may not replace.
    pub fn receipt_taken(receipt_id: &str) -> ApprovalError {
        ApprovalError::Refused(format!(
            "receipt {receipt_id} is already stored, for another decision: a decision never replaces an issued receipt"
        ))
    }
}

pub struct ApprovalStore {
    dir: PathBuf,
    receipts: PathBuf,
    lock: PathBuf,
    /// binding key → id of the latest approval for it (serve's own index).
    latest: Mutex<HashMap<String, String>>,
}

pub(crate) fn new_id() -> String {
    use rand::Rng;
    let n: u128 = rand::thread_rng().gen();
    // 26 base32 characters, lower case: short enough for a URL, unguessable.
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    (0..26)
        .map(|i| char::from(alphabet[((n >> (i * 5)) & 31) as usize]))
        .collect()
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl ApprovalStore {
    pub fn open(state_dir: &Path) -> Result<ApprovalStore, ApprovalError> {
        let dir = state_dir.join("approvals");
        let receipts = state_dir.join("receipts");
        for d in [&dir, &receipts] {
            fs::create_dir_all(d).map_err(|e| ApprovalError::Io(d.display().to_string(), e))?;
        }
        let store = ApprovalStore {
            dir,
            receipts,
            lock: state_dir.join("approvals.lock"),
            latest: Mutex::new(HashMap::new()),
        };
        let mut all = store.list()?;
        // The approval a binding answers to: an open one if there is any (at most one is
        // open at a time), else the newest. `created_at` has whole seconds, so it cannot
        // decide between approvals made in the same second; openness can.
        all.sort_by(|a, b| {
            ((a.status != Status::Closed), &a.created_at)
                .cmp(&((b.status != Status::Closed), &b.created_at))
        });
        let mut latest = store.latest.lock().unwrap_or_else(|p| p.into_inner());
        for a in all {
            latest.insert(a.binding_key.clone(), a.id.clone());
        }
        drop(latest);
        Ok(store)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn receipt_path(&self, receipt_id: &str) -> PathBuf {
        self.receipts.join(format!("{receipt_id}.json"))
    }

    fn locked<T>(&self, f: impl FnOnce() -> Result<T, ApprovalError>) -> Result<T, ApprovalError> {
        let io = |e| ApprovalError::Io(self.lock.display().to_string(), e);
        let _lock = super::lock_file(&self.lock).map_err(io)?;
        f()
    }

    pub fn get(&self, id: &str) -> Result<Approval, ApprovalError> {
        if !valid_id(id) {
            return Err(ApprovalError::NotFound(id.to_string()));
        }
        let path = self.path(id);
        super::read_json(&path).map_err(|e| match e {
            super::ReadError::Missing => ApprovalError::NotFound(id.to_string()),
            super::ReadError::Io(e) => ApprovalError::Io(path.display().to_string(), e),
            super::ReadError::Corrupt(e) => ApprovalError::Corrupt(path.display().to_string(), e),
        })
    }

    fn put(&self, a: &Approval) -> Result<(), ApprovalError> {
        self.write(a, true)
    }

    fn write(&self, a: &Approval, durable: bool) -> Result<(), ApprovalError> {
        let path = self.path(&a.id);
        let json = serde_json::to_vec_pretty(a)
            .map_err(|e| ApprovalError::Corrupt(path.display().to_string(), e))?;
        super::replace(&path, &json, durable)
            .map_err(|e| ApprovalError::Io(path.display().to_string(), e))
    }

    /// Every approval, newest first.
    pub fn list(&self) -> Result<Vec<Approval>, ApprovalError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| ApprovalError::Io(self.dir.display().to_string(), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Ok(a) = self.get(id) {
                out.push(a);
            }
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(out)
    }

    /// The open approval for this binding, if any (pending, approved or denied).
    pub fn current(&self, binding_key: &str) -> Result<Option<Approval>, ApprovalError> {
        let id = self
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(binding_key)
            .cloned();
        match id {
            None => Ok(None),
            Some(id) => match self.get(&id) {
                Ok(a) if a.status != Status::Closed => Ok(Some(a)),
                Ok(_) | Err(ApprovalError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Records a blocked call: attaches to the open pending approval for the same binding, or
    /// opens a new one. Returns it and whether it is new.
    pub fn record_blocked(
        &self,
        binding_key: &str,
        call: &AwsCall,
        agent: &str,
        environment: &str,
        decision: &crate::policy::Decision,
    ) -> Result<(Approval, bool), ApprovalError> {
        self.locked(|| {
            if let Some(mut a) = self.current(binding_key)? {
                if a.status == Status::Pending {
                    // A retry of a call already waiting: the count and time are shown, not
                    // decided on, so they are not fsynced (a flood of retries must not
                    // become a flood of fsyncs); a crash may lose the latest count.
                    a.attempts += 1;
                    a.last_seen_at = now_rfc3339();
                    self.write(&a, false)?;
                    return Ok((a, false));
                }
            }
            let a = Approval::pending(binding_key, call, agent, environment, decision);
            self.put(&a)?;
            self.latest
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(binding_key.to_string(), a.id.clone());
            Ok((a, true))
        })
    }

    /// Records one approver's decision on a pending approval, under the lock: `sign` gets the
    /// approval and the receipt already stored for it (an incomplete quorum's, else `None`)
    /// and says what to store. The receipt is written before the approval that names it.
    pub fn sign(
        &self,
        id: &str,
        sign: impl FnOnce(&Approval, Option<Vec<u8>>) -> Result<Signed, ApprovalError>,
    ) -> Result<Approval, ApprovalError> {
        self.locked(|| {
            let mut a = self.get(id)?;
            if a.status != Status::Pending {
                return Err(ApprovalError::NotPending(id.to_string(), a.status));
            }
            let stored = match &a.receipt_id {
                Some(r) => Some(self.read_receipt(r)?),
                None => None,
            };
            let signed = sign(&a, stored)?;
            let path = self.receipt_path(&signed.receipt_id);
            // Only the quorum's receipt under way is written over (as in PostgreSQL): any
            // other id must be new, never one already issued.
            let own = a.receipt_id.as_deref() == Some(signed.receipt_id.as_str());
            if !own && path.symlink_metadata().is_ok() {
                return Err(ApprovalError::receipt_taken(&signed.receipt_id));
            }
            super::write_atomic(&path, &signed.receipt_json)
                .map_err(|e| ApprovalError::Io(path.display().to_string(), e))?;
            a.take_signed(signed);
            self.put(&a)?;
            Ok(a)
        })
    }

    /// Closes an approval (receipt used up, expired, or denial delivered).
    pub fn close(&self, id: &str) -> Result<(), ApprovalError> {
        self.locked(|| {
            let mut a = self.get(id)?;
            a.status = Status::Closed;
            self.put(&a)
        })
    }

    /// Writes an approval as another store kept it (`airlock db export`), durably.
    pub fn restore(&self, a: &Approval) -> Result<(), ApprovalError> {
        if !valid_id(&a.id) {
            return Err(ApprovalError::Refused(format!(
                "{:?} is not an approval id",
                a.id
            )));
        }
        self.locked(|| self.put(a))
    }

    /// Writes a receipt as another store kept it (`airlock db export`), durably.
    pub fn restore_receipt(&self, receipt_id: &str, receipt: &[u8]) -> Result<(), ApprovalError> {
        if crate::receipt::ReceiptId::parse(receipt_id).is_none() {
            return Err(ApprovalError::Refused(format!(
                "{receipt_id:?} is not a receipt id"
            )));
        }
        let path = self.receipt_path(receipt_id);
        super::write_atomic(&path, receipt)
            .map_err(|e| ApprovalError::Io(path.display().to_string(), e))
    }

    pub fn read_receipt(&self, receipt_id: &str) -> Result<Vec<u8>, ApprovalError> {
        let path = self.receipt_path(receipt_id);
        fs::read(&path).map_err(|e| ApprovalError::Io(path.display().to_string(), e))
    }
}
