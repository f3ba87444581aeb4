//! What lives in the state dir. Files holding secrets are mode 0600 and written atomically
//! (temporary file, fsync, rename, fsync of the directory), so a crash leaves either the old
//! or the new version, never a torn one.

pub mod agents;
pub mod approvals;
pub mod enrollments;
pub mod ledger;
pub mod listen;
pub mod trust;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Now, as the state files write times: RFC 3339 in UTC, to the second.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// RFC 3339 in UTC with exactly three fractional digits (`2026-12-05T08:10:11.123Z`), so
/// a reader sees the order of records within a second: the audit log's and the ledger's
/// times. Nothing parses them back (audit verification hashes each line's bytes), so
/// records written before with another precision stay valid.
pub fn rfc3339_millis(t: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

/// Opens (creating, mode 0600) and exclusively locks a lock file; the lock is held until
/// the returned file is dropped. Serializes changes between `serve` and the CLI.
pub fn lock_file(path: &Path) -> std::io::Result<fs::File> {
    let f = open_lock_file(path)?;
    f.lock()?;
    Ok(f)
}

/// [`lock_file`] without waiting: `None` when another holds the lock (another process, or
/// another open file of this one).
pub fn try_lock_file(path: &Path) -> std::io::Result<Option<fs::File>> {
    let f = open_lock_file(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

fn open_lock_file(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Why a JSON record could not be read.
pub(crate) enum ReadError {
    Missing,
    Io(std::io::Error),
    Corrupt(serde_json::Error),
}

/// Reads one JSON record.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReadError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    serde_json::from_slice(&bytes).map_err(ReadError::Corrupt)
}

/// Replaces `path` atomically with `contents`, mode 0600, and makes it durable.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    replace(path, contents, true)
}

/// Replaces `path` atomically with `contents`, mode 0600; `durable` also `fsync`s the file
/// and its directory (without it a crash may keep the old contents, never a torn file).
pub fn replace(path: &Path, contents: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durable {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
