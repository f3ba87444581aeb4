//! Appending to the log: the chain position, the current segment, rotation and retention.
//!
//! Every append happens under the log's file lock (`serve` and the CLI both append), and
//! looks at the current segment by its name first when the lock was just taken: a file
//! replaced, grown by another process, or followed by a newer segment is looked up again (a
//! bounded read of the newest segment's end), so records always go where `audit verify`
//! looks.
//!
//! `serve`'s writer keeps the lock across batches for up to [`LEASE`] (a thread of
//! [`super::AuditLog`] lets go of an idle one). No other writer can append or start a
//! segment while it is held, so those batches skip the lock's two syscalls and the two
//! `stat`s, about a sixth of a call's CPU under load (BENCHMARKS.md). What the lock does
//! not stop, the segment moved, replaced or deleted under its name by hand, is then noticed
//! when the lease ends, within `LEASE`: the records of that window went to the file the
//! name had, so they are in it if it was moved, and gone with it if it was deleted or
//! renamed over (a head synced meanwhile names them, and the next start reports them cut
//! off). A lease is taken only by a batch that starts at least [`GAP`] after the last
//! lease ended; in that gap the lock is taken and let go per batch, so a CLI waiting for
//! it can get its turn.
//!
//! `serve`'s writer closes a segment when the next write would take it past
//! `[audit] segment_bytes` or when the UTC day changed, and then removes the oldest
//! segments past `keep_segments` / `keep_days`, recording first (durably) which were
//! removed and the hash where the kept chain starts. The CLI's few appends never rotate.

use super::segments::{
    chain_end, day_named, day_of, days_ago, first_line, last_lines, open_for_append, segment_name,
    today, unix_day, Paths, Position,
};
use super::{io_err, AuditError, Fields, Settings, RETENTION_EVENT};
use serde_json::{json, Value};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::time::{Duration, Instant};

/// Longest time `serve`'s writer holds the log's lock across batches.
pub(super) const LEASE: Duration = Duration::from_millis(20);
/// After a lease, how long the lock is taken and let go per batch before the next lease.
const GAP: Duration = Duration::from_millis(1);

pub(super) struct Writer {
    lock: File,
    /// `serve`'s settings; `None` for the CLI, which never rotates.
    rotation: Option<Settings>,
    /// The segment appended to; `None` until the first append or after a failure.
    current: Option<Current>,
    /// Written since the last sync.
    pub(super) dirty: bool,
    /// When a failure was last logged (failures are logged at most every 10 s).
    pub(super) complained: Option<std::time::Instant>,
    /// `write` calls made, one per batch (what group commit saves, for the tests).
    pub(super) writes: u64,
    /// Whether batches may keep the lock ([`Writer::leasing`]: `serve`'s, whose thread lets
    /// go of an idle lease).
    leases: bool,
    /// Since when the lock has been held across batches; `None`: not held.
    held: Option<Instant>,
    /// When the last lease ended.
    released: Option<Instant>,
    /// Leases taken, for the thread that ends idle ones.
    pub(super) leases_taken: u64,
    /// Times the lock was taken (what leases save, for the tests).
    pub(super) times_locked: u64,
    /// Today's UTC day as a number and as `YYYY-MM-DD`, named once a day, not per batch.
    today: (i64, String),
}

struct Current {
    number: u64,
    file: File,
    /// (device, inode) of `file`, to notice the file replaced under its name.
    identity: (u64, u64),
    /// The file's length after our last write: anything else means another process
    /// appended, and the end is read again.
    end: u64,
    position: Position,
    /// The UTC day of the segment's first record; a later day starts a new segment.
    day: String,
}

impl Writer {
    /// The lock opened; where the chain stands is read on first append.
    pub(super) fn open(paths: &Paths, rotation: Option<Settings>) -> Result<Writer, AuditError> {
        paths.prepare()?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&paths.lock)
            .map_err(io_err(&paths.lock))?;
        Ok(Writer {
            lock,
            rotation,
            current: None,
            dirty: false,
            complained: None,
            writes: 0,
            leases: false,
            held: None,
            released: None,
            leases_taken: 0,
            times_locked: 0,
            today: (i64::MIN, String::new()),
        })
    }

    /// Lets batches keep the lock for up to [`LEASE`]; the caller must end idle leases
    /// ([`Writer::end_lease`]).
    pub(super) fn leasing(mut self) -> Writer {
        self.leases = true;
        self
    }

    /// Runs `f` under the log's lock: the lease's when one holds it, else taken for `f`.
    pub(super) fn locked<T>(
        &mut self,
        paths: &Paths,
        f: impl FnOnce() -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        if self.held.is_some() {
            return f();
        }
        self.lock.lock().map_err(io_err(&paths.lock))?;
        self.times_locked += 1;
        let result = f();
        let _ = self.lock.unlock();
        result
    }

    /// Lets go of the lock if a lease holds it and is at least `older_than` old; else says
    /// how long until it is.
    pub(super) fn end_lease(&mut self, older_than: Duration) -> Option<Duration> {
        let since = self.held?;
        let age = since.elapsed();
        if age < older_than {
            return Some(older_than - age);
        }
        self.held = None;
        self.released = Some(Instant::now());
        let _ = self.lock.unlock();
        None
    }

    /// Appends `records` in one write (after a rotation, the retention record follows in
    /// a second). Either all are in the log or none.
    pub(super) fn append(&mut self, paths: &Paths, records: Vec<Fields>) -> Result<(), AuditError> {
        let started = Instant::now();
        let leased = self.held.is_some();
        if !leased {
            self.lock.lock().map_err(io_err(&paths.lock))?;
            self.times_locked += 1;
        }
        let result = self.append_locked(paths, records, leased);
        let now = Instant::now();
        let lease_on = result.is_ok()
            && self.leases
            && match self.held {
                Some(since) => now.duration_since(since) < LEASE,
                None => self
                    .released
                    .is_none_or(|t| started.saturating_duration_since(t) >= GAP),
            };
        if lease_on {
            if self.held.is_none() {
                self.held = Some(now);
                self.leases_taken += 1;
            }
        } else {
            if self.held.take().is_some() {
                self.released = Some(now);
            }
            let _ = self.lock.unlock();
        }
        result
    }

    /// The last record's sequence number and hash, as far as this writer knows.
    pub(super) fn last(&self) -> Option<(u64, String)> {
        let p = &self.current.as_ref()?.position;
        Some((p.next_seq.checked_sub(1)?, p.prev.clone()))
    }

    /// A handle on the current segment, to sync it outside the writer's mutex.
    pub(super) fn current_file(&self, paths: &Paths) -> Result<Option<File>, AuditError> {
        match &self.current {
            None => Ok(None),
            Some(c) => Ok(Some(
                c.file
                    .try_clone()
                    .map_err(io_err(&paths.segment(c.number)))?,
            )),
        }
    }

    fn append_locked(
        &mut self,
        paths: &Paths,
        records: Vec<Fields>,
        leased: bool,
    ) -> Result<(), AuditError> {
        self.refresh(paths, leased)?;
        let Some(current) = &self.current else {
            return Ok(());
        };
        let (lines, after) = encode(current.position.clone(), &records);
        let day = unix_day();
        if self.today.0 != day {
            self.today = (day, day_named(day));
        }
        let rotate = self.rotation.as_ref().is_some_and(|s| {
            current.end > 0
                && (current.end + lines.len() as u64 > s.segment_bytes
                    || self.today.1 > current.day)
        });
        if rotate {
            self.rotate(paths, self.today.1.clone())?;
        }
        self.put(paths, &lines, after)?;
        if rotate {
            if let Err(e) = self.retain(paths) {
                tracing::error!(error = %e, "could not remove old audit segments");
            }
        }
        Ok(())
    }

    /// Looks the current segment up again unless it is still ours, unchanged. `leased`: the
    /// lock was held since the last batch, so no other writer has touched the log.
    fn refresh(&mut self, paths: &Paths, leased: bool) -> Result<(), AuditError> {
        if let Some(c) = &self.current {
            if leased {
                return Ok(());
            }
            let same = fs::metadata(paths.segment(c.number))
                .is_ok_and(|m| m.is_file() && (m.dev(), m.ino()) == c.identity && m.len() == c.end);
            if same && fs::symlink_metadata(paths.segment(c.number + 1)).is_err() {
                return Ok(());
            }
        }
        self.current = None;
        paths.prepare_locked()?;
        let numbers = paths.numbers()?;
        let number = numbers.last().copied().unwrap_or(1);
        let path = paths.segment(number);
        let file = open_for_append(&path)?;
        let m = file.metadata().map_err(io_err(&path))?;
        let position = chain_end(paths, &numbers)?;
        // The day of the segment's first record: a later record of another process (the
        // CLI's) does not make an old segment today's.
        let day = first_line(&path)?
            .and_then(|l| day_of(&l))
            .unwrap_or_else(today);
        self.current = Some(Current {
            number,
            file,
            identity: (m.dev(), m.ino()),
            end: if m.is_file() { m.len() } else { 0 },
            position,
            day,
        });
        Ok(())
    }

    /// Closes the current segment (synced, so it is whole on disk before anything lands
    /// in the next) and opens the next one.
    fn rotate(&mut self, paths: &Paths, day: String) -> Result<(), AuditError> {
        let Some(c) = self.current.take() else {
            return Ok(());
        };
        let old = paths.segment(c.number);
        c.file.sync_data().map_err(io_err(&old))?;
        let path = paths.segment(c.number + 1);
        let file = open_for_append(&path)?;
        sync_dir(paths)?;
        let m = file.metadata().map_err(io_err(&path))?;
        tracing::info!(closed = %segment_name(c.number), opened = %segment_name(c.number + 1), "audit segment closed");
        self.current = Some(Current {
            number: c.number + 1,
            file,
            identity: (m.dev(), m.ino()),
            end: m.len(),
            position: c.position,
            day,
        });
        Ok(())
    }

    /// Writes encoded records (one `write`); a partial write is cut off again.
    fn put(&mut self, paths: &Paths, lines: &[u8], after: Position) -> Result<(), AuditError> {
        let Some(c) = self.current.as_mut() else {
            return Ok(());
        };
        self.writes += 1;
        if let Err(e) = c.file.write_all(lines) {
            // A partial line (disk full mid-write) would break the chain for everything
            // after it.
            let _ = c.file.set_len(c.end);
            let path = paths.segment(c.number);
            self.current = None;
            return Err(AuditError::Io(path.display().to_string(), e));
        }
        c.end += lines.len() as u64;
        c.position = after;
        self.dirty = true;
        Ok(())
    }

    /// Removes the oldest segments past `keep_segments` / `keep_days`: first a record
    /// (synced) naming them and the hash where the kept chain starts, then the files.
    fn retain(&mut self, paths: &Paths) -> Result<(), AuditError> {
        let Some(settings) = &self.rotation else {
            return Ok(());
        };
        let Some(current) = self.current.as_ref().map(|c| c.number) else {
            return Ok(());
        };
        let numbers: Vec<u64> = paths
            .numbers()?
            .into_iter()
            .filter(|n| *n <= current)
            .collect();
        let mut remove = 0usize;
        if let Some(keep) = settings.keep_segments {
            remove = numbers.len().saturating_sub(keep as usize);
        }
        if let Some(days) = settings.keep_days {
            let cutoff = days_ago(days);
            let old = numbers
                .iter()
                .take_while(|n| **n != current)
                .take_while(|n| {
                    last_lines(&paths.segment(**n), 1)
                        .ok()
                        .and_then(|t| t.lines.last().and_then(|l| day_of(l)))
                        .is_some_and(|d| d < cutoff)
                })
                .count();
            remove = remove.max(old);
        }
        let Some(kept) = numbers.get(remove).copied() else {
            return Ok(());
        };
        if remove == 0 {
            return Ok(());
        }
        let Some(first) = first_line(&paths.segment(kept))? else {
            return Ok(());
        };
        let first: Value = serde_json::from_slice(&first).map_err(|e| AuditError::Broken {
            segment: segment_name(kept),
            line: 1,
            seq: 0,
            reason: format!("not a JSON record: {e}"),
        })?;
        let removed: Vec<String> = numbers[..remove].iter().map(|n| segment_name(*n)).collect();
        let mut r = super::record(RETENTION_EVENT);
        r.insert("removed".into(), json!(removed));
        r.insert("kept_from_segment".into(), json!(segment_name(kept)));
        r.insert(
            "kept_from_seq".into(),
            first.get("seq").cloned().unwrap_or(Value::Null),
        );
        r.insert(
            "kept_from_hash".into(),
            first.get("prev").cloned().unwrap_or(Value::Null),
        );
        r.insert(
            "reason".into(),
            json!(format!(
                "{} segment(s) removed by retention; the kept chain starts at {}",
                removed.len(),
                segment_name(kept)
            )),
        );
        let Some(c) = &self.current else {
            return Ok(());
        };
        let (line, after) = encode(c.position.clone(), &[r.into()]);
        self.put(paths, &line, after)?;
        if let Some(c) = &self.current {
            c.file
                .sync_data()
                .map_err(io_err(&paths.segment(c.number)))?;
        }
        for n in &numbers[..remove] {
            let path = paths.segment(*n);
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        sync_dir(paths)?;
        tracing::info!(removed = ?removed, kept_from = %segment_name(kept), "old audit segments removed");
        Ok(())
    }
}

/// The records as lines of the chain starting at `position`, and where it stands after.
fn encode(position: Position, records: &[Fields]) -> (Vec<u8>, Position) {
    let size: usize = records.iter().map(|r| r.as_bytes().len() + 100).sum();
    let mut out = Vec::with_capacity(size);
    let after = super::link(position, records, &mut out);
    (out, after)
}

/// Makes the directory's entries (a segment created or removed) durable.
fn sync_dir(paths: &Paths) -> Result<(), AuditError> {
    File::open(&paths.dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&paths.dir))
}
