//! The single-use ledger: how many times each receipt has been used.
//!
//! Append-only (`state/ledger.jsonl`), one line per event, each flushed to disk (`fsync`)
//! before the call it concerns is forwarded:
//!
//! - `reserve`: a call under this receipt is about to be forwarded;
//! - `commit`: the upstream answered with success or a final error: the use counts;
//! - `release`: the upstream was never reached or answered with an error SDKs retry: the
//!   use is given back, so the SDK's retry of the approved call still goes through.
//!
//! Replayed at start. A `reserve` with neither `commit` nor `release` after it (airlock
//! died mid-call) counts as used: the upstream may have acted, so fail closed.
//!
//! A write that fails (a full disk) refuses the call that needed it: `reserve` fails before
//! anything is forwarded. The next event then starts on a line of its own, so a fragment
//! left by the failed write never swallows it.
//!
//! What this does not guarantee: several airlock replicas sharing one state dir. The store
//! is one process's; replicas need a shared ledger in a database.

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Reserve,
    Commit,
    Release,
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    receipt: String,
    event: Event,
    at: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub committed: u32,
    pub reserved: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("the receipt has no uses left")]
    UsedUp,
    /// Every use is taken but not every one is committed: calls in flight elsewhere (another
    /// replica) hold the rest and may give them back. `idle`: how long since the receipt's
    /// uses last changed.
    #[error("the receipt's remaining uses are reserved by calls in flight")]
    InFlight { idle: std::time::Duration },
}

pub struct Ledger {
    path: PathBuf,
    file: Mutex<Appender>,
    usage: DashMap<String, Usage>,
}

struct Appender {
    file: File,
    /// The last write failed: the file may end in a fragment.
    torn: bool,
}

impl Ledger {
    /// Opens (creating) the ledger and replays it. A torn last line (a crash mid-write) is
    /// ignored: its event was never acknowledged.
    pub fn open(state_dir: &Path) -> Result<Ledger, LedgerError> {
        let path = state_dir.join("ledger.jsonl");
        let io = |e| LedgerError::Io(path.display().to_string(), e);
        let usage: DashMap<String, Usage> = DashMap::new();
        let mut ends_in_newline = true;
        match File::open(&path) {
            Ok(f) => {
                // What the file holds now and no more (a device such as /dev/full never ends).
                let len = f.metadata().map_err(io)?.len();
                let mut reader = BufReader::new(f.take(len));
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                        break;
                    }
                    ends_in_newline = line.last() == Some(&b'\n');
                    let Ok(l) = serde_json::from_slice::<Line>(&line) else {
                        continue;
                    };
                    let mut u = usage.entry(l.receipt).or_default();
                    match l.event {
                        Event::Reserve => u.reserved += 1,
                        Event::Commit => {
                            u.reserved = u.reserved.saturating_sub(1);
                            u.committed += 1;
                        }
                        Event::Release => u.reserved = u.reserved.saturating_sub(1),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        // Unresolved reservations from before a crash count as used.
        for mut u in usage.iter_mut() {
            u.committed += u.reserved;
            u.reserved = 0;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        Ok(Ledger {
            path,
            // After a torn last line (a crash mid-write), start the next event on a line of
            // its own.
            file: Mutex::new(Appender {
                file,
                torn: !ends_in_newline,
            }),
            usage,
        })
    }

    pub fn usage(&self, receipt: &str) -> Usage {
        self.usage.get(receipt).map(|u| *u).unwrap_or_default()
    }

    /// Every key with its usage (`airlock db import`).
    pub fn entries(&self) -> Vec<(String, Usage)> {
        self.usage
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }

    /// Writes a new ledger in `state_dir` with `committed` uses counted for each key
    /// (`airlock db export`), durably; refused if the state dir has a ledger already.
    pub fn write_new(
        state_dir: &Path,
        committed: impl IntoIterator<Item = (String, u32)>,
    ) -> Result<(), LedgerError> {
        let path = state_dir.join("ledger.jsonl");
        let io = |e| LedgerError::Io(path.display().to_string(), e);
        let at = super::rfc3339_millis(time::OffsetDateTime::now_utc());
        let mut text = Vec::new();
        for (receipt, uses) in committed {
            let mut line = serde_json::to_vec(&Line {
                receipt,
                event: Event::Commit,
                at: at.clone(),
            })
            .map_err(|e| io(e.into()))?;
            line.push(b'\n');
            for _ in 0..uses {
                text.extend_from_slice(&line);
            }
        }
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        f.write_all(&text).and_then(|()| f.sync_all()).map_err(io)
    }

    fn append(&self, receipt: &str, event: Event) -> Result<(), LedgerError> {
        let at = super::rfc3339_millis(time::OffsetDateTime::now_utc());
        let mut line = serde_json::to_vec(&Line {
            receipt: receipt.to_string(),
            event,
            at,
        })
        .map_err(|e| LedgerError::Io(self.path.display().to_string(), e.into()))?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if f.torn {
            line.insert(0, b'\n');
        }
        let written = f.file.write_all(&line).and_then(|()| f.file.sync_data());
        f.torn = written.is_err();
        written.map_err(|e| LedgerError::Io(self.path.display().to_string(), e))
    }

    /// Reserves one use, durably, if `allowed` uses are not all taken.
    pub fn reserve(&self, receipt: &str, allowed: u32) -> Result<(), LedgerError> {
        let mut u = self.usage.entry(receipt.to_string()).or_default();
        if u.committed + u.reserved >= allowed {
            return Err(LedgerError::UsedUp);
        }
        self.append(receipt, Event::Reserve)?;
        u.reserved += 1;
        Ok(())
    }

    pub fn commit(&self, receipt: &str) -> Result<(), LedgerError> {
        let mut u = self.usage.entry(receipt.to_string()).or_default();
        // Counted in memory first: if the disk write fails, the use still counts here.
        u.reserved = u.reserved.saturating_sub(1);
        u.committed += 1;
        self.append(receipt, Event::Commit)
    }

    pub fn release(&self, receipt: &str) -> Result<(), LedgerError> {
        self.append(receipt, Event::Release)?;
        let mut u = self.usage.entry(receipt.to_string()).or_default();
        u.reserved = u.reserved.saturating_sub(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_are_counted_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        l.reserve("r1", 1).unwrap();
        assert!(
            matches!(l.reserve("r1", 1), Err(LedgerError::UsedUp)),
            "two at once under one use"
        );
        l.release("r1").unwrap();
        l.reserve("r1", 1).unwrap();
        l.commit("r1").unwrap();
        assert!(matches!(l.reserve("r1", 1), Err(LedgerError::UsedUp)));
        l.reserve("r2", 2).unwrap();
        drop(l);
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(
            l.usage("r1"),
            Usage {
                committed: 1,
                reserved: 0
            }
        );
        // r2's reservation was never resolved: it counts as used after a restart.
        assert_eq!(
            l.usage("r2"),
            Usage {
                committed: 1,
                reserved: 0
            }
        );
        l.reserve("r2", 2).unwrap();
        assert!(l.reserve("r2", 2).is_err());
    }

    #[test]
    fn a_failed_write_refuses_the_reservation() {
        let dir = tempfile::tempdir().unwrap();
        // A device that is always full: opening works, every write fails with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", dir.path().join("ledger.jsonl")).unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let e = l.reserve("r", 1).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        assert_eq!(
            l.usage("r"),
            Usage::default(),
            "a failed reservation counted"
        );
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        l.reserve("r", 3).unwrap();
        l.commit("r").unwrap();
        drop(l);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("ledger.jsonl"))
            .unwrap();
        f.write_all(b"{\"receipt\":\"r\",\"ev").unwrap();
        drop(f);
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.usage("r").committed, 1);
        l.reserve("r", 3).unwrap();
        l.commit("r").unwrap();
        drop(l);
        assert_eq!(
            Ledger::open(dir.path()).unwrap().usage("r").committed,
            2,
            "events after a torn line were lost"
        );
    }
}
