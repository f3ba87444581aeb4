//! Submitted plans (`state/plans/<id>.json`, mode 0600) and their status. The plan receipt
//! that approves one is stored with every other receipt (`state/receipts/<receipt id>.json`).
//!
//! A record holds what `plan::mapping` derived (ids, ARNs, delete options) and the digest,
//! never the plan itself (its `before` values may hold secrets). Changes are made under an
//! exclusive lock (`state/plans.lock`) and written atomically.

use crate::state::approvals::{new_id, valid_id};
use crate::state::now_rfc3339;

use super::mapping::Destroyed;
use crate::receipt::PlanEntry;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    /// Submitted, waiting for a human.
    #[default]
    Pending,
    /// A plan receipt was signed; its entries cover calls while it is valid.
    Approved,
    /// A human said no.
    Denied,
    /// Every entry with a limited number of uses is used.
    Spent,
    /// The receipt's window ended.
    Expired,
}

impl PlanStatus {
    /// A status by the name [`Self::as_str`] gives it.
    pub fn parse(name: &str) -> Option<PlanStatus> {
        [
            PlanStatus::Pending,
            PlanStatus::Approved,
            PlanStatus::Denied,
            PlanStatus::Spent,
            PlanStatus::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Pending => "pending",
            PlanStatus::Approved => "approved",
            PlanStatus::Denied => "denied",
            PlanStatus::Spent => "spent",
            PlanStatus::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanRecord {
    pub id: String,
    pub status: PlanStatus,
    /// The agent whose calls the receipt will cover.
    pub agent: String,
    pub digest: String,
    /// What `digest` covers (a plan stored before this was recorded reads as
    /// `resource_changes`, the claim that binds the least).
    #[serde(default)]
    pub digest_scope: crate::receipt::DigestScope,
    /// The plan's own creation time.
    pub plan_created_at: Option<String>,
    pub terraform_version: Option<String>,
    pub submitted_at: String,
    /// Every environment an entry is in, sorted.
    pub environments: Vec<String>,
    pub destroyed: Vec<Destroyed>,
    /// The calls a receipt will cover, in plan order: what is signed.
    pub entries: Vec<PlanEntry>,
    pub receipt_id: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    /// When the approved receipt's window ends.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Each entry's quorum (same order as `entries`), worked out at submission by the rules
    /// the gate uses (`plan::quorum::entry_quorum`). Empty in a record from before quorums:
    /// one approver, anyone trusted.
    #[serde(default)]
    pub quorums: Vec<crate::receipt::Quorum>,
    /// The approvers who counted so far, in the order they signed; while pending, those of
    /// the quorum under way (its receipt is `receipt_id`, and it authorizes nothing).
    #[serde(default)]
    pub approved_by: Vec<String>,
}

impl PlanRecord {
    /// The status as of `now`: an approved plan past its receipt's window is expired even
    /// before a call finds it so (and records it).
    pub fn status_at(&self, now: time::OffsetDateTime) -> PlanStatus {
        let ended = self
            .expires_at
            .as_deref()
            .and_then(crate::receipt::Timestamp::parse)
            .is_some_and(|t| now >= t.as_datetime());
        if self.status == PlanStatus::Approved && ended {
            PlanStatus::Expired
        } else {
            self.status
        }
    }

    /// The environments as one label: `prod`, or `staging+prod`.
    pub fn environment_label(&self) -> String {
        self.environments.join("+")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanStoreError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: not a valid record: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("no plan {0:?}")]
    NotFound(String),
    #[error("plan {0} is {1}, not pending")]
    NotPending(String, &'static str),
    #[error("{0}")]
    Refused(String),
}

/// An approved plan with its stored receipt's bytes, or why they cannot be read.
pub type ApprovedRecord = (PlanRecord, Result<Vec<u8>, String>);

/// One approver's decision on a pending plan, as [`PlanStore::sign`] stores it.
pub struct PlanSigned {
    pub receipt_id: String,
    pub receipt_json: Vec<u8>,
    /// `Pending` while a quorum is incomplete; else `Approved` or `Denied`.
    pub status: PlanStatus,
    pub approved_by: Vec<String>,
    /// Who decided, as the page and the CLI show it.
    pub decided_by: String,
    /// An approved plan's receipt window end.
    pub expires_at: Option<String>,
}

pub struct PlanStore {
    dir: PathBuf,
    receipts: PathBuf,
    lock: PathBuf,
}

impl PlanStore {
    pub fn open(state_dir: &Path) -> Result<PlanStore, PlanStoreError> {
        let dir = state_dir.join("plans");
        let receipts = state_dir.join("receipts");
        for d in [&dir, &receipts] {
            fs::create_dir_all(d).map_err(|e| PlanStoreError::Io(d.display().to_string(), e))?;
        }
        Ok(PlanStore {
            dir,
            receipts,
            lock: state_dir.join("plans.lock"),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn receipt_path(&self, receipt_id: &str) -> PathBuf {
        self.receipts.join(format!("{receipt_id}.json"))
    }

    fn locked<T>(
        &self,
        f: impl FnOnce() -> Result<T, PlanStoreError>,
    ) -> Result<T, PlanStoreError> {
        let _lock = crate::state::lock_file(&self.lock)
            .map_err(|e| PlanStoreError::Io(self.lock.display().to_string(), e))?;
        f()
    }

    pub fn get(&self, id: &str) -> Result<PlanRecord, PlanStoreError> {
        if !valid_id(id) {
            return Err(PlanStoreError::NotFound(id.to_string()));
        }
        let path = self.path(id);
        crate::state::read_json(&path).map_err(|e| match e {
            crate::state::ReadError::Missing => PlanStoreError::NotFound(id.to_string()),
            crate::state::ReadError::Io(e) => PlanStoreError::Io(path.display().to_string(), e),
            crate::state::ReadError::Corrupt(e) => {
                PlanStoreError::Corrupt(path.display().to_string(), e)
            }
        })
    }

    fn put(&self, p: &PlanRecord) -> Result<(), PlanStoreError> {
        let path = self.path(&p.id);
        let json = serde_json::to_vec_pretty(p)
            .map_err(|e| PlanStoreError::Corrupt(path.display().to_string(), e))?;
        crate::state::write_atomic(&path, &json)
            .map_err(|e| PlanStoreError::Io(path.display().to_string(), e))
    }

    /// Every plan, newest first.
    pub fn list(&self) -> Result<Vec<PlanRecord>, PlanStoreError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| PlanStoreError::Io(self.dir.display().to_string(), e))?;
        let mut out: Vec<PlanRecord> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let id = name.to_str()?.strip_suffix(".json")?.to_owned();
                self.get(&id).ok()
            })
            .collect();
        out.sort_by(|a, b| b.submitted_at.cmp(&a.submitted_at));
        Ok(out)
    }

    /// Stores a newly submitted plan under a fresh id.
    pub fn submit(&self, record: PlanRecord) -> Result<PlanRecord, PlanStoreError> {
        self.locked(|| {
            let record = record.submitted_now();
            self.put(&record)?;
            Ok(record)
        })
    }

    /// Records one approver's decision on a pending plan, under the lock: `sign` is given
    /// the plan and the stored receipt of the quorum under way (`None` when there is none),
    /// and returns what to store (`plan::quorum::record`).
    pub fn sign(
        &self,
        id: &str,
        sign: impl FnOnce(&PlanRecord, Option<Vec<u8>>) -> Result<PlanSigned, PlanStoreError>,
    ) -> Result<PlanRecord, PlanStoreError> {
        self.locked(|| {
            let mut p = self.get(id)?;
            p.check_pending()?;
            let stored = match &p.receipt_id {
                Some(r) => Some(self.read_receipt(r)?),
                None => None,
            };
            let under_way = p.receipt_id.clone();
            let (receipt_id, receipt_json) = p.take_signed(sign(&p, stored)?);
            let path = self.receipt_path(&receipt_id);
            // Only the quorum's receipt under way is written over; any other stored receipt
            // is never replaced by a decision.
            if under_way.as_deref() != Some(receipt_id.as_str()) && path.exists() {
                return Err(PlanStoreError::Refused(format!(
                    "a receipt {receipt_id} is stored already; a decision does not replace it"
                )));
            }
            crate::state::write_atomic(&path, &receipt_json)
                .map_err(|e| PlanStoreError::Io(path.display().to_string(), e))?;
            self.put(&p)?;
            Ok(p)
        })
    }

    /// Ends an approved plan (spent or expired). False when it was no longer approved
    /// (another call ended it first), so it is recorded once.
    pub fn end(&self, id: &str, status: PlanStatus) -> Result<bool, PlanStoreError> {
        self.locked(|| {
            let mut p = self.get(id)?;
            if p.status != PlanStatus::Approved {
                return Ok(false);
            }
            p.status = status;
            self.put(&p)?;
            Ok(true)
        })
    }

    /// A stored receipt's bytes. `receipt_id` comes from a plan's record, which may have
    /// been edited by hand: one that is not a receipt id (`../…`) names no file.
    pub fn read_receipt(&self, receipt_id: &str) -> Result<Vec<u8>, PlanStoreError> {
        if crate::receipt::ReceiptId::parse(receipt_id).is_none() {
            return Err(PlanStoreError::Refused(format!(
                "{receipt_id:?} is not a receipt id"
            )));
        }
        let path = self.receipt_path(receipt_id);
        fs::read(&path).map_err(|e| PlanStoreError::Io(path.display().to_string(), e))
    }

    /// Every approved plan with its receipt's bytes (or why they cannot be read), newest
    /// first: what the plan index is made of.
    pub fn approved(&self) -> Result<Vec<ApprovedRecord>, PlanStoreError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|p| p.status == PlanStatus::Approved)
            .map(|p| {
                let receipt = match p.receipt_id.as_deref() {
                    None => Err("no receipt".to_owned()),
                    Some(r) => self.read_receipt(r).map_err(|e| e.to_string()),
                };
                (p, receipt)
            })
            .collect())
    }
}

impl PlanRecord {
    /// A submitted record as a store keeps it: a fresh id, pending, submitted now.
    pub fn submitted_now(mut self) -> PlanRecord {
        self.id = new_id();
        self.status = PlanStatus::Pending;
        self.submitted_at = now_rfc3339();
        self
    }

    /// Only a pending plan takes a decision.
    pub fn check_pending(&self) -> Result<(), PlanStoreError> {
        if self.status != PlanStatus::Pending {
            return Err(PlanStoreError::NotPending(
                self.id.clone(),
                self.status.as_str(),
            ));
        }
        Ok(())
    }

    /// Takes one approver's decision into the record; returns the receipt to store with it
    /// (its id and bytes).
    pub fn take_signed(&mut self, signed: PlanSigned) -> (String, Vec<u8>) {
        self.status = signed.status;
        self.receipt_id = Some(signed.receipt_id.clone());
        self.approved_by = signed.approved_by;
        self.decided_by = Some(signed.decided_by);
        if self.status != PlanStatus::Pending {
            self.decided_at = Some(now_rfc3339());
        }
        self.expires_at = signed.expires_at;
        (signed.receipt_id, signed.receipt_json)
    }
}
