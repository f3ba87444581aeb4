//! Where the audit log lives on disk: `state/audit/` holds numbered segment files
//! (`00000001.jsonl`, `00000002.jsonl`, ...), the head, the lock and the torn tails.
//!
//! Everything here reads a bounded amount: the last lines of a segment are read backwards
//! from its end, the first line from its start, so that starting `serve`, appending and
//! `audit tail` cost the same for a log of any age. Only `audit verify` reads it all, and
//! that streams.

use super::{io_err, AuditError, GENESIS};
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The longest record a reader accepts (records are a few hundred bytes; anything near
/// this is not one of ours, and reading it whole would let a file set the memory used).
pub const MAX_RECORD: usize = 1 << 20;

/// How much is read at a time when reading a segment backwards.
const BACKWARDS_CHUNK: u64 = 64 * 1024;

/// The files of one state directory's audit log.
pub struct Paths {
    pub dir: PathBuf,
    pub head: PathBuf,
    pub lock: PathBuf,
    pub torn: PathBuf,
    /// The single file of earlier versions, taken over as the first segment.
    legacy_log: PathBuf,
    legacy_head: PathBuf,
    legacy_torn: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path) -> Paths {
        let dir = state_dir.join("audit");
        Paths {
            head: dir.join("head"),
            lock: dir.join("lock"),
            torn: dir.join("torn"),
            dir,
            legacy_log: state_dir.join("audit.jsonl"),
            legacy_head: state_dir.join("audit.head"),
            legacy_torn: state_dir.join("audit.torn"),
        }
    }

    /// The file of segment `number`.
    pub fn segment(&self, number: u64) -> PathBuf {
        self.dir.join(segment_name(number))
    }

    /// Creates `state/audit/` (mode 0700) and takes over a single `audit.jsonl` of an
    /// earlier version as the first segment (with its head and torn tails), once, under
    /// the log's lock. A log with segments already leaves an `audit.jsonl` alone.
    pub fn prepare(&self) -> Result<(), AuditError> {
        self.make_dir()?;
        if fs::symlink_metadata(&self.legacy_log).is_err() {
            return Ok(());
        }
        let _lock = crate::state::lock_file(&self.lock).map_err(io_err(&self.lock))?;
        self.take_over()
    }

    /// [`Paths::prepare`] for a caller that holds the log's lock (a second lock of the same
    /// file in the same process would wait for itself).
    pub fn prepare_locked(&self) -> Result<(), AuditError> {
        self.make_dir()?;
        self.take_over()
    }

    fn make_dir(&self) -> Result<(), AuditError> {
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && self.dir.is_dir() => Ok(()),
            Err(e) => Err(AuditError::Io(self.dir.display().to_string(), e)),
        }
    }

    /// Under the log's lock: `audit.jsonl` becomes the first segment, unless there are
    /// segments already.
    fn take_over(&self) -> Result<(), AuditError> {
        if fs::symlink_metadata(&self.legacy_log).is_err() || !self.numbers()?.is_empty() {
            return Ok(());
        }
        for (from, to) in [
            (&self.legacy_torn, self.torn.clone()),
            (&self.legacy_head, self.head.clone()),
            (&self.legacy_log, self.segment(1)),
        ] {
            match fs::rename(from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(AuditError::Io(from.display().to_string(), e)),
            }
        }
        tracing::info!(from = %self.legacy_log.display(), to = %self.segment(1).display(), "took over the audit log as its first segment");
        Ok(())
    }

    /// The segment numbers present, oldest first.
    pub fn numbers(&self) -> Result<Vec<u64>, AuditError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AuditError::Io(self.dir.display().to_string(), e)),
        };
        let mut numbers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&self.dir))?;
            if let Some(n) = entry.file_name().to_str().and_then(segment_number) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        Ok(numbers)
    }
}

/// `00000042.jsonl`.
pub fn segment_name(number: u64) -> String {
    format!("{number:08}.jsonl")
}

/// The number of a segment's file name (`00000042.jsonl`), or of what a user typed for
/// one (`42`, `00000042`, `00000042.jsonl`).
pub fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".jsonl").unwrap_or(name);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment opened for appending (created, mode 0600, if it does not exist).
pub fn open_for_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))
}

/// Where the chain stands after a record: the next sequence number and the record's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub next_seq: u64,
    pub prev: String,
}

impl Position {
    pub fn genesis() -> Position {
        Position {
            next_seq: 0,
            prev: GENESIS.to_string(),
        }
    }

    /// The position after `line` (a record without its newline).
    pub fn after(line: &[u8]) -> Result<Position, AuditError> {
        let v = parse(line)?;
        Ok(Position {
            next_seq: v.get("seq").and_then(Value::as_u64).unwrap_or(0) + 1,
            prev: crate::sigv4::sha256_hex(line),
        })
    }
}

fn parse(line: &[u8]) -> Result<Value, AuditError> {
    serde_json::from_slice(line).map_err(|e| AuditError::Broken {
        segment: String::new(),
        line: 0,
        seq: 0,
        reason: format!("last record unreadable: {e}"),
    })
}

/// The file's length; a device (such as /dev/full) is read as empty, never forever.
fn length(f: &File, path: &Path) -> Result<u64, AuditError> {
    let m = f.metadata().map_err(io_err(path))?;
    Ok(if m.is_file() { m.len() } else { 0 })
}

/// The end of a segment, as [`last_lines`] read it.
pub struct Tail {
    /// The last complete lines (without their newlines), oldest first.
    pub lines: Vec<Vec<u8>>,
    /// The length of what follows the last newline (a torn record, when not 0).
    pub torn: u64,
    /// The file's length when it was read.
    pub len: u64,
}

/// The last `n` complete lines of `path`, read backwards from the end, only as far as
/// needed.
pub fn last_lines(path: &Path, n: usize) -> Result<Tail, AuditError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Tail {
                lines: Vec::new(),
                torn: 0,
                len: 0,
            })
        }
        Err(e) => return Err(AuditError::Io(path.display().to_string(), e)),
    };
    let len = length(&f, path)?;
    // The file from `start` to `len`, in chunks read backwards (newest last once reversed).
    let mut start = len;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let (mut read, mut newlines) = (0u64, 0usize);
    // Lines are complete once a newline precedes them (or the file starts there): more
    // than `n` newlines read means the last `n` lines are whole.
    while newlines <= n && start > 0 {
        if read
            > (n as u64)
                .saturating_add(1)
                .saturating_mul(MAX_RECORD as u64)
        {
            return Err(AuditError::Broken {
                segment: path.display().to_string(),
                line: 0,
                seq: 0,
                reason: format!("fewer than {n} records in the last {read} bytes"),
            });
        }
        let from = start.saturating_sub(BACKWARDS_CHUNK);
        let mut chunk = Vec::with_capacity((start - from) as usize);
        f.seek(SeekFrom::Start(from)).map_err(io_err(path))?;
        (&mut f)
            .take(start - from)
            .read_to_end(&mut chunk)
            .map_err(io_err(path))?;
        newlines += chunk.iter().filter(|b| **b == b'\n').count();
        read += chunk.len() as u64;
        chunks.push(chunk);
        start = from;
    }
    chunks.reverse();
    let buf = chunks.concat();
    let torn = match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => (buf.len() - i - 1) as u64,
        None => buf.len() as u64,
    };
    let whole = &buf[..buf.len() - torn as usize];
    let mut lines: Vec<Vec<u8>> = whole.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    // `whole` ends with a newline: the last piece is empty. The first piece is only whole
    // if the file starts there.
    lines.pop();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let keep = lines.len().saturating_sub(n);
    Ok(Tail {
        lines: lines.split_off(keep),
        torn,
        len,
    })
}

/// The first line of `path` (without its newline), if it has a complete one.
pub fn first_line(path: &Path) -> Result<Option<Vec<u8>>, AuditError> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::Io(path.display().to_string(), e)),
    };
    let len = length(&f, path)?;
    let mut line = Vec::new();
    BufReader::new(f.take(len.min(MAX_RECORD as u64 + 1)))
        .read_until(b'\n', &mut line)
        .map_err(io_err(path))?;
    if line.pop() != Some(b'\n') {
        return Ok(None);
    }
    Ok(Some(line))
}

/// The chain position after the last complete record of the log: looks at the newest
/// segment's end, and at older segments only while the newer ones hold no record (a
/// segment created just before a crash).
pub fn chain_end(paths: &Paths, numbers: &[u64]) -> Result<Position, AuditError> {
    for n in numbers.iter().rev() {
        if let Some(line) = last_lines(&paths.segment(*n), 1)?.lines.last() {
            return Position::after(line);
        }
    }
    Ok(Position::genesis())
}

/// The UTC day (`2026-12-05`) of a record's time, if it has one.
pub fn day_of(line: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let time = v.get("time")?.as_str()?;
    time.get(..10).map(str::to_string)
}

/// Today (UTC), as records write it.
pub fn today() -> String {
    day_named(unix_day())
}

/// Days since 1970-01-01, UTC.
pub fn unix_day() -> i64 {
    time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .div_euclid(86_400)
}

/// The UTC day `unix_day` days after 1970-01-01, as `YYYY-MM-DD`.
pub fn day_named(unix_day: i64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(unix_day.saturating_mul(86_400))
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The UTC day `days` days before today.
pub fn days_ago(days: u64) -> String {
    let d = time::OffsetDateTime::now_utc().date();
    let back = time::Duration::days(i64::try_from(days).unwrap_or(i64::MAX / 86_400 / 2));
    let then = d.checked_sub(back).unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        then.year(),
        u8::from(then.month()),
        then.day()
    )
}
