//! The audit log: one JSON line per terminal decision (`state/audit.jsonl`, mode 0600),
//! each carrying the hash of the line before it, so an edited, removed, reordered or
//! truncated record is detected by [`verify`] (`airlock audit verify`), which names it.
//!
//! - Records hold no secret: no key, signature, credential or body; parameters are the
//!   call's canonical parameters, which the approval page shows too.
//! - `serve` writes each record before the call is answered (a crash at any moment loses
//!   no record of an answered call) and `fdatasync`s within a second; calls that spend or
//!   grant a receipt wait for their record to be on disk. The CLI (approve, deny) appends
//!   under the same file lock, so the chain stays whole.
//! - When the log cannot be written (a full disk), calls that need a receipt are refused
//!   (fail closed: a receipt use must be on the record), while allowed calls are still
//!   served, their records lost, and the log says so loudly. Each start of `serve` is a
//!   record (`serve_started`), which also tells at once whether the log can be written.
//! - `state/audit.head` holds the last synced sequence number and hash, so cutting records
//!   off the end is detected too (all but the last second's). A torn last line (a crash mid-write) is moved aside to
//!   `audit.torn` at start and the chain continues with a record saying so.
//!
//! What this does not guarantee: someone who can rewrite the whole file and the head can
//! forge a consistent history; ship the log elsewhere to guard against that. A power cut
//! (not a crash of airlock) can lose the last second of records of allowed calls. And a
//! disk that fills while a receipt-gated call is at the upstream loses that call's record
//! (the use itself is in the ledger, and the loss is logged): the gate closes for the next.

use crate::state::rfc3339_millis;
use serde_json::{json, Map, Value};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("record {seq} (line {line}): {reason}")]
    Broken {
        line: usize,
        seq: u64,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |e| AuditError::Io(path.display().to_string(), e)
}

pub struct Paths {
    pub log: PathBuf,
    pub head: PathBuf,
    pub lock: PathBuf,
    pub torn: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path) -> Paths {
        Paths {
            log: state_dir.join("audit.jsonl"),
            head: state_dir.join("audit.head"),
            lock: state_dir.join("audit.lock"),
            torn: state_dir.join("audit.torn"),
        }
    }
}

/// The chain position after the last complete record: (next sequence number, its hash).
/// Reads only the end of the file (records are small).
fn tail_of(path: &Path) -> Result<(u64, String), AuditError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS.to_string())),
        Err(e) => return Err(AuditError::Io(path.display().to_string(), e)),
    };
    let len = f.metadata().map_err(io_err(path))?.len();
    let start = len.saturating_sub(256 * 1024);
    f.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
    let mut tail = Vec::new();
    // Never past the length: a device (such as /dev/full) never ends.
    f.take(len - start)
        .read_to_end(&mut tail)
        .map_err(io_err(path))?;
    // Only whole lines count; a torn fragment after the last newline is not a record.
    let end = match tail.iter().rposition(|b| *b == b'\n') {
        Some(i) => i,
        None => return Ok((0, GENESIS.to_string())),
    };
    let begin = tail[..end]
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let line = &tail[begin..end];
    let v: Value = serde_json::from_slice(line).map_err(|e| AuditError::Broken {
        line: 0,
        seq: 0,
        reason: format!("last record unreadable: {e}"),
    })?;
    let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
    Ok((seq + 1, crate::sigv4::sha256_hex(line)))
}

/// Appends records and makes them durable, `audit.head` included (the CLI's path, and
/// the record of a recovered torn tail): the same writer `serve` uses, synced at once.
fn append(paths: &Paths, records: &[Map<String, Value>]) -> Result<(), AuditError> {
    let mut w = Writer::open(paths)?;
    for r in records {
        w.append(paths, r.clone())?;
    }
    w.log.sync_data().map_err(io_err(&paths.log))?;
    write_head(paths, w.next_seq.saturating_sub(1), &w.prev)
}

/// Names the last durable record in `audit.head`, under the log's lock.
fn write_head(paths: &Paths, seq: u64, hash: &str) -> Result<(), AuditError> {
    let head = json!({ "seq": seq, "hash": hash }).to_string();
    let _lock = crate::state::lock_file(&paths.lock).map_err(io_err(&paths.lock))?;
    crate::state::write_atomic(&paths.head, head.as_bytes()).map_err(io_err(&paths.head))
}

/// A record with the time set.
pub fn record(event: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "time".into(),
        json!(rfc3339_millis(time::OffsetDateTime::now_utc())),
    );
    m.insert("event".into(), json!(event));
    m
}

/// The record of a human's decision on a pending call, made with the CLI (`via` "cli")
/// or on the approval page with a passkey (`via` "passkey").
pub fn decision(
    approve: bool,
    a: &crate::state::approvals::Approval,
    receipt_id: &str,
    approver: &str,
    via: &str,
) -> Map<String, Value> {
    let binding = crate::receipt::Binding::of(&a.call, &a.agent, &a.environment);
    let mut r = record(if approve { "approved" } else { "denied" });
    r.insert("approval".into(), json!(a.id));
    r.insert("agent".into(), json!(a.agent));
    r.insert("environment".into(), json!(a.environment));
    r.insert("action".into(), json!(a.call.action()));
    r.insert("resources".into(), json!(binding.resources));
    r.insert("rule".into(), json!(a.rule));
    r.insert("receipt".into(), json!(receipt_id));
    r.insert("approver".into(), json!(approver));
    r.insert("via".into(), json!(via));
    r
}

/// The record of a change to who may approve: a passkey enrolled, waiting, confirmed or
/// rejected, an approver revoked. `by` is who confirmed, rejected or revoked it.
pub fn approver_change(event: &str, approver: &str, key_id: &str, by: &str) -> Map<String, Value> {
    let mut r = record(event);
    r.insert("approver".into(), json!(approver));
    r.insert("key_id".into(), json!(key_id));
    r.insert("by".into(), json!(by));
    r.insert(
        "reason".into(),
        json!(format!("approver {approver} key {key_id} by {by}")),
    );
    r
}

/// Appends one record now (the CLI's path).
pub fn append_now(state_dir: &Path, r: Map<String, Value>) -> Result<(), AuditError> {
    append(&Paths::new(state_dir), &[r])
}

/// Moves a torn last line aside, so the chain can continue. Returns the bytes moved.
pub fn recover(state_dir: &Path) -> Result<usize, AuditError> {
    let paths = Paths::new(state_dir);
    let mut f = match OpenOptions::new().read(true).write(true).open(&paths.log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AuditError::Io(paths.log.display().to_string(), e)),
    };
    let len = f.metadata().map_err(io_err(&paths.log))?.len();
    let mut bytes = Vec::new();
    (&mut f)
        .take(len)
        .read_to_end(&mut bytes)
        .map_err(io_err(&paths.log))?;
    let keep = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    if keep == bytes.len() {
        return Ok(0);
    }
    let torn = &bytes[keep..];
    let mut t = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&paths.torn)
        .map_err(io_err(&paths.torn))?;
    t.write_all(torn).map_err(io_err(&paths.torn))?;
    t.write_all(b"\n").map_err(io_err(&paths.torn))?;
    t.sync_all().map_err(io_err(&paths.torn))?;
    f.set_len(keep as u64).map_err(io_err(&paths.log))?;
    f.seek(SeekFrom::End(0)).map_err(io_err(&paths.log))?;
    f.sync_all().map_err(io_err(&paths.log))?;
    let n = torn.len();
    let mut r = record("torn_tail_recovered");
    r.insert("bytes".into(), json!(n));
    r.insert("moved_to".into(), json!(paths.torn.display().to_string()));
    append(&paths, &[r])?;
    Ok(n)
}

/// Checks the whole chain; returns the number of records.
pub fn verify(state_dir: &Path) -> Result<u64, AuditError> {
    let paths = Paths::new(state_dir);
    let f = match File::open(&paths.log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(AuditError::Io(paths.log.display().to_string(), e)),
    };
    // audit.head names a record (the last synced one) and its hash.
    let head: Option<(u64, String)> = fs::read_to_string(&paths.head).ok().and_then(|text| {
        let h: Value = serde_json::from_str(&text).ok()?;
        Some((
            h.get("seq")?.as_u64()?,
            h.get("hash")?.as_str()?.to_string(),
        ))
    });
    let (mut head_hash_seen, mut head_line) = (None::<String>, 0usize);
    let mut prev = GENESIS.to_string();
    let mut expect_seq = 0u64;
    let len = f.metadata().map_err(io_err(&paths.log))?.len();
    let mut reader = BufReader::new(f.take(len));
    let mut raw = Vec::new();
    let mut line_no = 0usize;
    loop {
        raw.clear();
        let n = reader
            .read_until(b'\n', &mut raw)
            .map_err(io_err(&paths.log))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let broken = |reason: String| AuditError::Broken {
            line: line_no,
            seq: expect_seq,
            reason,
        };
        if raw.last() != Some(&b'\n') {
            return Err(broken("the last record is torn (no end of line)".into()));
        }
        let line =
            std::str::from_utf8(&raw[..raw.len() - 1]).map_err(|_| broken("not UTF-8".into()))?;
        let v: Value =
            serde_json::from_str(line).map_err(|e| broken(format!("not a JSON record: {e}")))?;
        let seq = v
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or_else(|| broken("no seq".into()))?;
        if seq != expect_seq {
            return Err(broken(format!(
                "has seq {seq}, expected {expect_seq}: a record was removed or reordered"
            )));
        }
        if v.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(AuditError::Broken {
                line: line_no,
                seq: expect_seq,
                reason: format!(
                    "its prev hash does not match: record {} was edited, or records around it were removed or reordered",
                    expect_seq.saturating_sub(1)
                ),
            });
        }
        prev = crate::sigv4::sha256_hex(line.as_bytes());
        if head.as_ref().is_some_and(|(s, _)| *s == seq) {
            (head_hash_seen, head_line) = (Some(prev.clone()), line_no);
        }
        expect_seq += 1;
    }
    if let Some((s, hash)) = head {
        if s + 1 > expect_seq {
            return Err(AuditError::Broken { line: line_no, seq: expect_seq, reason: format!("the log ends at record {} but audit.head says {s} was written: records were cut off the end", expect_seq.saturating_sub(1)) });
        }
        if head_hash_seen.as_deref() != Some(hash.as_str()) {
            return Err(AuditError::Broken {
                line: head_line,
                seq: s,
                reason: "record does not match audit.head: it was edited".into(),
            });
        }
    }
    Ok(expect_seq)
}

/// `serve`'s writer. Each record is written to the log (one `write`, under the file lock the
/// CLI also takes) before its call is answered, so a crash of airlock at any moment loses
/// no record of an answered call. `fdatasync` and the head file follow within a second
/// ([`SYNC_INTERVAL`]), and at once for records that spend or grant a receipt.
#[derive(Clone)]
pub struct AuditLog {
    shared: std::sync::Arc<Shared>,
}

/// Longest time a written record waits for `fdatasync` (and `audit.head` to include it).
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

struct Shared {
    paths: Paths,
    /// The last write failed (a full disk, the file gone or replaced).
    failing: std::sync::atomic::AtomicBool,
    writer: std::sync::Mutex<Writer>,
    /// Serialises syncs (the periodic one and the durable writes'), not appends.
    syncing: std::sync::Mutex<Synced>,
}

struct Writer {
    log: File,
    /// (device, inode) of `log`, to notice the file replaced under its name.
    identity: (u64, u64),
    lock: File,
    /// The chain position after our last record, valid while the file is `end` bytes long
    /// (anything else means another process appended, and the tail is read again).
    next_seq: u64,
    prev: String,
    end: u64,
    /// Written since the last sync.
    dirty: bool,
    /// When a failure was last logged (failures are logged at most every 10 s).
    complained: Option<std::time::Instant>,
}

/// Said once when writing starts to fail, and the call path acts on it: see
/// [`AuditLog::writable`].
const UNWRITABLE: &str = "the audit log cannot be written: calls that need a receipt are refused (fail closed) until it can; allowed calls are still served, and their records are lost";

struct Synced {
    /// The last sequence number `audit.head` names.
    head_seq: Option<u64>,
}

impl AuditLog {
    /// Recovers a torn tail, checks the chain (a broken one is reported, not repaired),
    /// opens the log and starts the background sync.
    pub fn start(state_dir: &Path) -> Result<AuditLog, AuditError> {
        match recover(state_dir) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(bytes = n, "the audit log ended in a torn record (a crash mid-write); moved it to audit.torn and continued the chain"),
            Err(e) => return Err(e),
        }
        if let Err(e) = verify(state_dir) {
            tracing::error!(error = %e, "the audit log's chain is broken; `airlock audit verify` names the record");
        }
        let paths = Paths::new(state_dir);
        let writer = Writer::open(&paths)?;
        let shared = std::sync::Arc::new(Shared {
            paths,
            failing: std::sync::atomic::AtomicBool::new(false),
            writer: std::sync::Mutex::new(writer),
            syncing: std::sync::Mutex::new(Synced { head_seq: None }),
        });
        let weak = std::sync::Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("airlock-audit-sync".into())
            .spawn(move || loop {
                std::thread::sleep(SYNC_INTERVAL);
                let Some(shared) = weak.upgrade() else { return };
                if let Err(e) = shared.sync() {
                    tracing::error!(error = %e, "could not sync the audit log");
                }
            })
            .map_err(|e| AuditError::Io("audit sync thread".into(), e))?;
        let log = AuditLog { shared };
        let mut started = record("serve_started");
        started.insert("pid".into(), json!(std::process::id()));
        started.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        log.write(started);
        Ok(log)
    }

    /// False while the last write failed. A call that needs a receipt is refused then: a
    /// receipt use must be on the record. The next write tells whether the log has
    /// recovered.
    pub fn writable(&self) -> bool {
        !self
            .shared
            .failing
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Appends a record (written before this returns; synced within [`SYNC_INTERVAL`]).
    /// False, with a log line, if it could not be written.
    pub fn write(&self, r: Map<String, Value>) -> bool {
        let mut w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        use std::sync::atomic::Ordering;
        match w.append(&self.shared.paths, r) {
            Ok(()) => {
                if self.shared.failing.swap(false, Ordering::SeqCst) {
                    tracing::warn!("the audit log can be written again; calls that need a receipt are served again");
                }
                true
            }
            Err(e) => {
                if !self.shared.failing.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, "{UNWRITABLE}");
                }
                let now = std::time::Instant::now();
                if w.complained
                    .is_none_or(|t| now.duration_since(t).as_secs() >= 10)
                {
                    w.complained = Some(now);
                    tracing::error!(error = %e, "could not write an audit record (repeats are logged every 10 s)");
                }
                false
            }
        }
    }

    /// Appends a record and waits until it is on disk; false if it could not be written.
    pub async fn write_durable(&self, r: Map<String, Value>) -> bool {
        if !self.write(r) {
            return false;
        }
        let shared = std::sync::Arc::clone(&self.shared);
        match tokio::task::spawn_blocking(move || shared.sync()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not sync the audit log");
                false
            }
            Err(_) => false,
        }
    }

    /// Syncs what was written and updates `audit.head` (also done every [`SYNC_INTERVAL`]).
    pub fn sync(&self) -> Result<(), AuditError> {
        self.shared.sync()
    }
}

fn open_log(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))
}

impl Writer {
    /// The log and its lock file opened; where the chain stands is read on first append.
    fn open(paths: &Paths) -> Result<Writer, AuditError> {
        Ok(Writer {
            log: open_log(&paths.log)?,
            lock: OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&paths.lock)
                .map_err(io_err(&paths.lock))?,
            // Never a real file: the first append looks the file up by its name.
            identity: (u64::MAX, u64::MAX),
            next_seq: 0,
            prev: GENESIS.to_string(),
            // Never a real length: the first append reads the tail.
            end: u64::MAX,
            dirty: false,
            complained: None,
        })
    }

    fn append(&mut self, paths: &Paths, mut r: Map<String, Value>) -> Result<(), AuditError> {
        self.lock.lock().map_err(io_err(&paths.lock))?;
        let result = self.append_locked(paths, &mut r);
        let _ = self.lock.unlock();
        result
    }

    fn append_locked(
        &mut self,
        paths: &Paths,
        r: &mut Map<String, Value>,
    ) -> Result<(), AuditError> {
        use std::os::unix::fs::MetadataExt;
        // The file by its name: replaced or removed, it is opened again (records must go
        // where `audit verify` looks, never into an unlinked file).
        let len = match fs::metadata(&paths.log) {
            Ok(m) if m.is_file() && (m.dev(), m.ino()) == self.identity => m.len(),
            _ => {
                self.log = open_log(&paths.log)?;
                let m = self.log.metadata().map_err(io_err(&paths.log))?;
                self.identity = (m.dev(), m.ino());
                self.end = u64::MAX;
                m.len()
            }
        };
        if len != self.end {
            (self.next_seq, self.prev) = tail_of(&paths.log)?;
        }
        r.insert("seq".into(), json!(self.next_seq));
        r.insert("prev".into(), json!(self.prev));
        let mut line = serde_json::to_vec(&*r)
            .map_err(|e| AuditError::Io(paths.log.display().to_string(), e.into()))?;
        let hash = crate::sigv4::sha256_hex(&line);
        line.push(b'\n');
        if let Err(e) = self.log.write_all(&line) {
            // A partial line (disk full mid-write) would break the chain for everything
            // after it: cut it off again.
            let _ = self.log.set_len(len);
            self.end = u64::MAX;
            return Err(AuditError::Io(paths.log.display().to_string(), e));
        }
        self.next_seq += 1;
        self.prev = hash;
        self.end = len + line.len() as u64;
        self.dirty = true;
        Ok(())
    }
}

impl Shared {
    fn sync(&self) -> Result<(), AuditError> {
        let mut synced = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let (file, seq, hash) = {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            if !w.dirty {
                return Ok(());
            }
            w.dirty = false;
            let file = w.log.try_clone().map_err(io_err(&self.paths.log))?;
            (file, w.next_seq.saturating_sub(1), w.prev.clone())
        };
        let failed = |e| {
            // Try again next time.
            if let Ok(mut w) = self.writer.lock() {
                w.dirty = true;
            }
            AuditError::Io(self.paths.log.display().to_string(), e)
        };
        file.sync_data().map_err(failed)?;
        if synced.head_seq.is_some_and(|h| h >= seq) {
            return Ok(());
        }
        write_head(&self.paths, seq, &hash)?;
        synced.head_seq = Some(seq);
        Ok(())
    }
}

/// `airlock audit tail`: records as readable lines.
pub fn render(v: &Value) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let n = |k: &str| {
        v.get(k)
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into())
    };
    let resources = v
        .get("resources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    format!(
        "{} #{} {:<10} agent={} env={} {} {} status={} rule={} receipt={} {}",
        s("time"),
        n("seq"),
        s("event"),
        s("agent"),
        s("environment"),
        s("action"),
        resources,
        n("upstream_status"),
        s("rule"),
        s("receipt"),
        v.get("reason").and_then(Value::as_str).unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, n: usize) {
        for i in 0..n {
            let mut r = record("forwarded");
            r.insert("agent".into(), json!(format!("a{i}")));
            append_now(dir, r).unwrap();
        }
    }

    fn lines(dir: &Path) -> Vec<String> {
        fs::read_to_string(dir.join("audit.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn put(dir: &Path, lines: &[String]) {
        fs::write(
            dir.join("audit.jsonl"),
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
    }

    #[test]
    fn times_carry_milliseconds() {
        use time::format_description::well_known::Rfc3339;
        let t = time::macros::datetime!(2026-12-05 08:10:11.120 UTC);
        assert_eq!(rfc3339_millis(t), "2026-12-05T08:10:11.120Z");
        let whole = time::macros::datetime!(2026-12-05 08:10:11 +01:00);
        assert_eq!(rfc3339_millis(whole), "2026-12-05T07:10:11.000Z");
        let now = record("forwarded")["time"].as_str().unwrap().to_string();
        let parsed = time::OffsetDateTime::parse(&now, &Rfc3339).unwrap();
        assert_eq!(now, rfc3339_millis(parsed));
    }

    #[test]
    fn records_with_whole_seconds_and_with_milliseconds_verify_in_one_chain() {
        let d = tempfile::tempdir().unwrap();
        let mut old = record("forwarded");
        old.insert("time".into(), json!("2026-01-01T00:00:00Z"));
        append_now(d.path(), old).unwrap();
        write(d.path(), 2);
        assert!(lines(d.path())[0].contains("\"2026-01-01T00:00:00Z\""));
        assert_eq!(verify(d.path()).unwrap(), 3);
    }

    #[test]
    fn an_intact_chain_verifies() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), 5);
        assert_eq!(verify(d.path()).unwrap(), 5);
    }

    #[test]
    fn edits_removals_reorders_and_truncation_are_named() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), 5);
        let orig = lines(d.path());

        let mut edited = orig.clone();
        edited[2] = edited[2].replace("\"agent\":\"a2\"", "\"agent\":\"zz\"");
        put(d.path(), &edited);
        let e = verify(d.path()).unwrap_err().to_string();
        assert!(e.contains("record 2 was edited"), "{e}");

        let mut removed = orig.clone();
        removed.remove(1);
        put(d.path(), &removed);
        assert!(verify(d.path())
            .unwrap_err()
            .to_string()
            .contains("record 1"));

        let mut swapped = orig.clone();
        swapped.swap(1, 2);
        put(d.path(), &swapped);
        assert!(verify(d.path()).is_err());

        put(d.path(), &orig[..3]);
        let e = verify(d.path()).unwrap_err().to_string();
        assert!(e.contains("cut off"), "{e}");

        put(d.path(), &orig);
        assert_eq!(verify(d.path()).unwrap(), 5);
    }

    #[test]
    fn a_log_that_cannot_be_written_starts_but_says_so() {
        let d = tempfile::tempdir().unwrap();
        let log = AuditLog::start(d.path()).unwrap();
        assert!(log.writable());
        let started = lines(d.path());
        assert_eq!(started.len(), 1);
        assert!(
            started[0].contains("\"event\":\"serve_started\""),
            "{started:?}"
        );
        drop(log);
        // A device that is always full: read as empty (never forever), written never.
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", d.path().join("audit.jsonl")).unwrap();
        assert!(!AuditLog::start(d.path()).unwrap().writable());
    }

    #[test]
    fn records_are_written_before_write_returns_and_synced_with_the_head() {
        let d = tempfile::tempdir().unwrap();
        let log = AuditLog::start(d.path()).unwrap();
        for i in 0..3 {
            let mut r = record("forwarded");
            r.insert("agent".into(), json!(format!("a{i}")));
            assert!(log.write(r));
            // In the file at once (a crash of airlock now loses nothing)...
            assert_eq!(lines(d.path()).len(), i + 2);
        }
        // ...and the head names the last record once synced.
        log.sync().unwrap();
        let head: Value =
            serde_json::from_str(&fs::read_to_string(d.path().join("audit.head")).unwrap())
                .unwrap();
        assert_eq!(head["seq"], json!(3));
        assert_eq!(verify(d.path()).unwrap(), 4);
        // The CLI appending in between is picked up: the chain stays whole.
        append_now(d.path(), record("approved")).unwrap();
        assert!(log.write(record("forwarded")));
        assert_eq!(verify(d.path()).unwrap(), 6);
    }

    #[test]
    fn a_torn_tail_is_moved_aside_and_the_chain_continues() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), 3);
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.path().join("audit.jsonl"))
            .unwrap();
        f.write_all(b"{\"time\":\"2026").unwrap();
        drop(f);
        assert!(verify(d.path()).is_err());
        assert!(recover(d.path()).unwrap() > 0);
        write(d.path(), 1);
        assert_eq!(verify(d.path()).unwrap(), 5);
        assert!(fs::read_to_string(d.path().join("audit.torn"))
            .unwrap()
            .contains("2026"));
    }
}
