//! What lives in the state dir. Files holding secrets are mode 0600 and written atomically
//! (temporary file, fsync, rename, fsync of the directory), so a crash leaves either the old
//! or the new version, never a torn one.

pub mod agents;
pub mod approvals;
pub mod ledger;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens (creating, mode 0600) and exclusively locks a lock file; the lock is held until
/// the returned file is dropped. Serializes changes between `serve` and the CLI.
pub fn lock_file(path: &Path) -> std::io::Result<fs::File> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.lock()?;
    Ok(f)
}

/// Replaces `path` atomically with `contents`, mode 0600.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
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
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}
