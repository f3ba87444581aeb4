//! The audit log: one JSON line per terminal decision, each carrying the hash of the line
//! before it, so an edited, removed, reordered or truncated record is detected by
//! [`verify`] (`airlock audit verify`), which names it by segment and line.
//!
//! - The log is a directory, `state/audit/` (mode 0700), of numbered segments
//!   (`00000001.jsonl`, mode 0600). `serve` closes a segment at `[audit] segment_bytes`
//!   (default 64 MiB) or when the UTC day changes; the next segment's first record carries
//!   the previous one's last hash, so the chain runs across segments. `keep_segments` /
//!   `keep_days` remove the oldest segments, and the removal is itself a record naming the
//!   hash where the kept chain starts (what `verify` then accepts as its start). The single
//!   `state/audit.jsonl` of earlier versions is taken over as the first segment.
//! - Starting, appending and `audit tail` read only the end of the newest segment (seeking
//!   from the end), so their cost does not grow with the log; `audit verify` streams.
//! - Records hold no secret (see [`record`]).
//! - `serve` writes each record before the call is answered (a crash at any moment loses
//!   no record of an answered call). Concurrent calls' records are group-committed: one
//!   caller writes everything queued in one `write` while the others wait for it, and
//!   each returns once its own record is in the file. `fdatasync` follows within a
//!   second; calls that spend or grant a receipt wait for their record to be on disk. The
//!   CLI (approve, deny) appends under the same file lock, so the chain stays whole.
//! - When the log cannot be written (a full disk), calls that need a receipt are refused
//!   (fail closed: a receipt use must be on the record), while allowed calls are still
//!   served, their records lost, and the log says so loudly. Each start of `serve` is a
//!   record (`serve_started`), which also tells at once whether the log can be written.
//! - `state/audit/head` holds the last synced sequence number and hash, so cutting records
//!   off the end is detected too (all but the last second's). A torn last line (a crash
//!   mid-write) is moved aside to `state/audit/torn` at start and the chain continues with
//!   a record saying so.
//!
//! What this does not guarantee: someone who can rewrite the whole log and the head can
//! forge a consistent history; ship the log elsewhere to guard against that. A power cut
//! (not a crash of airlock) can lose the last second of records of allowed calls. And a
//! disk that fills while a receipt-gated call is at the upstream loses that call's record
//! (the use itself is in the ledger, and the loss is logged): the gate closes for the next.

mod record;
mod restore;
mod segments;
mod verify;
mod writer;

pub use record::{approver_change, decision, decision_record, record, render, Fields};
pub use restore::{Records, Restore};
pub use segments::{segment_name, segment_number, Paths, Position};
pub use verify::{check_link, verify_from, Linked, Verified};

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use writer::Writer;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Links `records` into the chain after `position`: each gets its `seq` and `prev` (the
/// SHA-256 of the line before) and is appended to `out` as one JSON line. Returns where the
/// chain stands after them. The one encoding of the chain, whatever stores it.
pub fn link(mut position: Position, records: &[Fields], out: &mut Vec<u8>) -> Position {
    for r in records {
        let start = out.len();
        r.chain_into(out, position.next_seq, &position.prev);
        position = Position {
            next_seq: position.next_seq + 1,
            prev: crate::sigv4::sha256_hex(&out[start..]),
        };
        out.push(b'\n');
    }
    position
}

/// The event of a retention record: which segments were removed, and where the kept chain
/// starts (`kept_from_segment`, `kept_from_seq`, `kept_from_hash`).
pub const RETENTION_EVENT: &str = "audit_segments_removed";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{}record {seq}: {reason}", located(segment, *line))]
    Broken {
        /// The segment's file name (empty where no one record is at fault).
        segment: String,
        line: usize,
        seq: u64,
        reason: String,
    },
}

fn located(segment: &str, line: usize) -> String {
    if segment.is_empty() {
        String::new()
    } else {
        format!("segment {segment} line {line}, ")
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |e| AuditError::Io(path.display().to_string(), e)
}

/// `[audit]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A segment is closed before a write would take it past this size.
    pub segment_bytes: u64,
    /// Keep only the newest this many segments (the current one included).
    pub keep_segments: Option<u64>,
    /// Remove closed segments whose last record is older than this many days.
    pub keep_days: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            segment_bytes: 64 << 20,
            keep_segments: None,
            keep_days: None,
        }
    }
}

/// The smallest `[audit] segment_bytes` (a few records).
pub const MIN_SEGMENT_BYTES: u64 = 4096;

impl Settings {
    /// The key at fault and why, for a value out of range.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err((
                "[audit] segment_bytes",
                format!("must be at least {MIN_SEGMENT_BYTES}"),
            ));
        }
        if self.keep_segments == Some(0) {
            return Err(("[audit] keep_segments", "must be at least 1".into()));
        }
        if self.keep_days.is_some_and(|d| d == 0 || d > 100 * 366) {
            return Err(("[audit] keep_days", "must be between 1 and 36600".into()));
        }
        Ok(())
    }
}

/// Appends records and makes them durable, the head included (the CLI's path, and the
/// record of a recovered torn tail): the same writer `serve` uses, synced at once.
fn append(paths: &Paths, records: Vec<Fields>) -> Result<(), AuditError> {
    let mut w = Writer::open(paths, None)?;
    w.append(paths, records)?;
    if let Some(f) = w.current_file(paths)? {
        f.sync_data().map_err(io_err(&paths.dir))?;
    }
    match w.last() {
        Some((seq, hash)) => write_head(paths, seq, &hash),
        None => Ok(()),
    }
}

/// Names the last durable record in the head, under the log's lock.
fn write_head(paths: &Paths, seq: u64, hash: &str) -> Result<(), AuditError> {
    let _lock = crate::state::lock_file(&paths.lock).map_err(io_err(&paths.lock))?;
    write_head_locked(paths, seq, hash)
}

/// [`write_head`] for a caller that holds the log's lock.
fn write_head_locked(paths: &Paths, seq: u64, hash: &str) -> Result<(), AuditError> {
    let head = json!({ "seq": seq, "hash": hash }).to_string();
    crate::state::write_atomic(&paths.head, head.as_bytes()).map_err(io_err(&paths.head))
}

/// The record each start of `serve` begins with, whatever keeps the chain.
pub fn serve_started() -> Map<String, Value> {
    let mut started = record("serve_started");
    started.insert("pid".into(), json!(std::process::id()));
    started.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    started
}

/// Appends one record now (the CLI's path).
pub fn append_now(state_dir: &Path, r: impl Into<Fields>) -> Result<(), AuditError> {
    append(&Paths::new(state_dir), vec![r.into()])
}

/// Moves a torn last line of the newest segment aside, so the chain can continue. Reads
/// only the torn bytes. Returns how many were moved.
pub fn recover(state_dir: &Path) -> Result<usize, AuditError> {
    let paths = Paths::new(state_dir);
    paths.prepare()?;
    let Some(newest) = paths.numbers()?.last().copied() else {
        return Ok(0);
    };
    let path = paths.segment(newest);
    let tail = segments::last_lines(&path, 0)?;
    if tail.torn == 0 {
        return Ok(0);
    }
    let keep = tail.len - tail.torn;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let mut torn = Vec::new();
    f.seek(SeekFrom::Start(keep)).map_err(io_err(&path))?;
    (&mut f)
        .take(tail.torn)
        .read_to_end(&mut torn)
        .map_err(io_err(&path))?;
    let mut t = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&paths.torn)
        .map_err(io_err(&paths.torn))?;
    t.write_all(&torn).map_err(io_err(&paths.torn))?;
    t.write_all(b"\n").map_err(io_err(&paths.torn))?;
    t.sync_all().map_err(io_err(&paths.torn))?;
    f.set_len(keep).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    let n = torn.len();
    let mut r = record("torn_tail_recovered");
    r.insert("bytes".into(), json!(n));
    r.insert("segment".into(), json!(segment_name(newest)));
    r.insert("moved_to".into(), json!(paths.torn.display().to_string()));
    append(&paths, vec![r.into()])?;
    Ok(n)
}

/// Checks the whole chain; returns the number of records.
pub fn verify(state_dir: &Path) -> Result<u64, AuditError> {
    verify_from(state_dir, None).map(|v| v.records)
}

/// Where `audit tail -f` goes on reading: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

/// The last `n` records (raw lines, oldest first), read backwards from the end of the
/// newest segment (and of older ones only while more are wanted), and where they end.
pub fn last_records(state_dir: &Path, n: usize) -> Result<(Vec<Vec<u8>>, Cursor), AuditError> {
    let paths = Paths::new(state_dir);
    paths.prepare()?;
    let numbers = paths.numbers()?;
    let mut cursor = Cursor {
        segment: numbers.last().copied().unwrap_or(1),
        offset: 0,
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    for (i, number) in numbers.iter().rev().enumerate() {
        let tail = segments::last_lines(&paths.segment(*number), n - out.len())?;
        if i == 0 {
            cursor.offset = tail.len - tail.torn;
        }
        let mut lines = tail.lines;
        lines.append(&mut out);
        out = lines;
        if out.len() >= n {
            break;
        }
    }
    Ok((out, cursor))
}

/// `audit tail -f`: hands each record written after `cursor` to `print`, across new
/// segments, until `print` says stop (it never does for the CLI).
pub fn follow(
    state_dir: &Path,
    mut cursor: Cursor,
    mut print: impl FnMut(&[u8]) -> bool,
) -> Result<(), AuditError> {
    let paths = Paths::new(state_dir);
    loop {
        let path = paths.segment(cursor.segment);
        let mut progressed = false;
        if let Ok(mut f) = std::fs::File::open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len > cursor.offset && f.seek(SeekFrom::Start(cursor.offset)).is_ok() {
                let mut reader = BufReader::new(f.take(len - cursor.offset));
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    if line.last() != Some(&b'\n') {
                        break;
                    }
                    cursor.offset += line.len() as u64;
                    progressed = true;
                    if !print(&line[..line.len() - 1]) {
                        return Ok(());
                    }
                    line.clear();
                }
            }
        }
        if !progressed {
            // The segment is done once a newer one exists (or it was removed).
            if let Some(next) = paths.numbers()?.into_iter().find(|n| *n > cursor.segment) {
                if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) <= cursor.offset {
                    cursor = Cursor {
                        segment: next,
                        offset: 0,
                    };
                    continue;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
    }
}

/// `serve`'s writer. Each record is written to the log (under the file lock the CLI also
/// takes) before its call is answered, so a crash of airlock at any moment loses no
/// record of an answered call; concurrent records share one `write`. `fdatasync` and the
/// head follow within a second ([`SYNC_INTERVAL`]), and at once for records that spend or
/// grant a receipt.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

/// Longest time a written record waits for `fdatasync` (and the head to include it).
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a queued record was written (set once, by whoever wrote its batch).
type Written = Arc<OnceLock<bool>>;

struct Shared {
    paths: Paths,
    /// The last write failed (a full disk, the file gone or replaced).
    failing: std::sync::atomic::AtomicBool,
    /// Records waiting for the next group write.
    queue: Mutex<Queue>,
    /// Signalled when a group write is done.
    committed: Condvar,
    writer: Mutex<Writer>,
    /// Serialises syncs (the periodic one and the durable writes'), not appends.
    syncing: Mutex<Synced>,
    /// The thread that ends the writer's idle leases on the log's lock, woken when one is
    /// taken.
    lease_keeper: OnceLock<std::thread::Thread>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<(Fields, Written)>,
    /// A caller is writing a batch; the others wait for it.
    leading: bool,
}

/// Said once when writing starts to fail, and the call path acts on it: see
/// [`AuditLog::writable`].
const UNWRITABLE: &str = "the audit log cannot be written: calls that need a receipt are refused (fail closed) until it can; allowed calls are still served, and their records are lost";

struct Synced {
    /// The last sequence number the head names.
    head_seq: Option<u64>,
}

/// The leader's batch: on drop (also if writing it panicked) every record in it has an
/// answer and the next caller may lead.
struct Leading<'a> {
    shared: &'a Shared,
    answers: Vec<Written>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        for a in &self.answers {
            let _ = a.set(false);
        }
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.leading = false;
        drop(q);
        self.shared.committed.notify_all();
    }
}

impl AuditLog {
    /// Takes over a single-file log, recovers a torn tail, checks the end of the chain
    /// against the head (a mismatch is reported, not repaired; `airlock audit verify`
    /// checks it all), opens the newest segment and starts the background sync. Reads a
    /// bounded amount, whatever the log's size.
    pub fn start(state_dir: &Path, settings: &Settings) -> Result<AuditLog, AuditError> {
        let paths = Paths::new(state_dir);
        paths.prepare()?;
        match recover(state_dir) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(bytes = n, "the audit log ended in a torn record (a crash mid-write); moved it to audit/torn and continued the chain"),
            Err(e) => return Err(e),
        }
        if let Err(e) = end_matches_head(&paths) {
            tracing::error!(error = %e, "the audit log's chain is broken; `airlock audit verify` names the record");
        }
        let writer = Writer::open(&paths, Some(settings.clone()))?.leasing();
        let shared = Arc::new(Shared {
            paths,
            failing: std::sync::atomic::AtomicBool::new(false),
            queue: Mutex::new(Queue::default()),
            committed: Condvar::new(),
            writer: Mutex::new(writer),
            syncing: Mutex::new(Synced { head_seq: None }),
            lease_keeper: OnceLock::new(),
        });
        let weak = Arc::downgrade(&shared);
        let keeper = std::thread::Builder::new()
            .name("airlock-audit-lease".into())
            .spawn(move || loop {
                let wait = {
                    let Some(shared) = weak.upgrade() else { return };
                    let mut w = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
                    w.end_lease(writer::LEASE)
                };
                match wait {
                    Some(left) => std::thread::sleep(left),
                    // Until the next lease (or a second, to notice the log is gone).
                    None => std::thread::park_timeout(std::time::Duration::from_secs(1)),
                }
            })
            .map_err(|e| AuditError::Io("audit lease thread".into(), e))?;
        let _ = shared.lease_keeper.set(keeper.thread().clone());
        let weak = Arc::downgrade(&shared);
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
        log.write(serve_started());
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
    /// Records of concurrent callers go out in one write: the first caller to find no
    /// write under way writes everything queued, the others wait for it. False, with a
    /// log line, if it could not be written.
    pub fn write(&self, r: impl Into<Fields>) -> bool {
        let started = std::time::Instant::now();
        let ok = self.write_queued(r.into());
        crate::metrics::audit_written(started.elapsed(), ok);
        ok
    }

    /// For `/healthz`: the last write succeeded, and the newest segment (or, before the
    /// first record, the log's directory) is there to append to. Nothing is written. The
    /// error says why not, without the path.
    pub fn check_writable(&self) -> Result<(), String> {
        if !self.writable() {
            return Err("the last audit record could not be written".into());
        }
        let paths = &self.shared.paths;
        let numbers = paths
            .numbers()
            .map_err(|_| "the audit log's directory cannot be read".to_string())?;
        match numbers.last() {
            None if paths.dir.is_dir() => Ok(()),
            None => Err("the audit log's directory is missing".into()),
            Some(n) => OpenOptions::new()
                .append(true)
                .open(paths.segment(*n))
                .map(|_| ())
                .map_err(|e| format!("the audit log cannot be opened for writing: {e}")),
        }
    }

    fn write_queued(&self, r: Fields) -> bool {
        let written: Written = Arc::new(OnceLock::new());
        let shared = &*self.shared;
        let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.pending.push((r, Arc::clone(&written)));
        loop {
            if let Some(ok) = written.get() {
                return *ok;
            }
            if q.leading {
                q = shared.committed.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            q.leading = true;
            let (records, answers): (Vec<_>, Vec<_>) =
                std::mem::take(&mut q.pending).into_iter().unzip();
            drop(q);
            let leading = Leading { shared, answers };
            let ok = shared.commit(records);
            for a in &leading.answers {
                let _ = a.set(ok);
            }
            drop(leading);
            q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Appends a record and waits until it is on disk; false if it could not be written.
    pub async fn write_durable(&self, r: impl Into<Fields>) -> bool {
        if !self.write(r) {
            return false;
        }
        let shared = Arc::clone(&self.shared);
        match tokio::task::spawn_blocking(move || shared.sync()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "could not sync the audit log");
                false
            }
            Err(_) => false,
        }
    }

    /// Syncs what was written and updates the head (also done every [`SYNC_INTERVAL`]).
    pub fn sync(&self) -> Result<(), AuditError> {
        self.shared.sync()
    }
}

/// The last record against the head: a head naming a record past the end means records
/// were cut off. Reads the newest segment's end only.
fn end_matches_head(paths: &Paths) -> Result<(), AuditError> {
    let Ok(text) = std::fs::read_to_string(&paths.head) else {
        return Ok(());
    };
    let head_seq = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|h| h.get("seq")?.as_u64());
    let end = segments::chain_end(paths, &paths.numbers()?)?;
    match head_seq {
        Some(s) if s >= end.next_seq => Err(AuditError::Broken {
            segment: String::new(),
            line: 0,
            seq: s,
            reason: format!(
                "the log ends at record {} but its head says {s} was written: records were cut off the end",
                end.next_seq.saturating_sub(1)
            ),
        }),
        _ => Ok(()),
    }
}

impl Shared {
    /// Writes a batch under the writer's lock; says when writing starts or stops failing.
    fn commit(&self, records: Vec<Fields>) -> bool {
        use std::sync::atomic::Ordering;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let leases = w.leases_taken;
        let appended = w.append(&self.paths, records);
        if w.leases_taken != leases {
            if let Some(keeper) = self.lease_keeper.get() {
                keeper.unpark();
            }
        }
        match appended {
            Ok(()) => {
                if self.failing.swap(false, Ordering::SeqCst) {
                    tracing::warn!("the audit log can be written again; calls that need a receipt are served again");
                }
                true
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::SeqCst) {
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

    fn sync(&self) -> Result<(), AuditError> {
        let mut synced = self.syncing.lock().unwrap_or_else(|p| p.into_inner());
        let (file, last) = {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            if !w.dirty {
                return Ok(());
            }
            w.dirty = false;
            match (w.current_file(&self.paths), w.last()) {
                (Ok(Some(file)), Some(last)) => (file, last),
                (Err(e), _) => {
                    w.dirty = true;
                    return Err(e);
                }
                _ => return Ok(()),
            }
        };
        let started = std::time::Instant::now();
        let synced_data = file.sync_data();
        crate::metrics::audit_synced(started.elapsed(), synced_data.is_ok());
        if let Err(e) = synced_data {
            // Try again next time.
            if let Ok(mut w) = self.writer.lock() {
                w.dirty = true;
            }
            return Err(AuditError::Io(self.paths.dir.display().to_string(), e));
        }
        let (seq, hash) = last;
        if synced.head_seq.is_some_and(|h| h >= seq) {
            return Ok(());
        }
        // Under the log's lock: the writer's own (its lease's, or taken for this alone), so
        // the head never waits for a lease of this process to end.
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .locked(&self.paths, || write_head_locked(&self.paths, seq, &hash))?;
        synced.head_seq = Some(seq);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
