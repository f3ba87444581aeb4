//! The audit spool: where a replica keeps the audit records of the calls it answers while
//! PostgreSQL cannot take them, until it can.
//!
//! - A directory, `[state] dir/audit-spool/` (mode 0700), of append-only files (mode
//!   0600), one per outage, named `<nanoseconds>-<random>.jsonl`; the name is the spool's
//!   id in the database (`airlock_audit_spools`), so each replica's spools are told apart.
//!   A line is a record's fields exactly as they would have been appended ([`Fields`]),
//!   without `seq` and `prev`: the chain position is given when it reaches the database.
//! - Kept as the file audit log is: each record is written (`write(2)`) before its call is
//!   answered, so killing the process (SIGKILL) loses nothing answered; `fdatasync` at
//!   once for records that spend or grant a receipt, within a second for the rest.
//! - While any record waits here ([`Spool::waiting`]), newer records are spooled behind it
//!   rather than appended to the database, so the chain keeps this replica's order. The
//!   store's keeper drains the files oldest first; the file being appended to is closed
//!   when the keeper picks it ([`Spool::oldest`]: newer records start the next file), so
//!   a drain reads only files that no longer grow; a file is removed only once all of its
//!   lines are in the database and no line was added since it was read (checked under the
//!   spool's lock, which appenders take too).
//! - A torn last line (the process died in the middle of writing it) was never
//!   acknowledged: it is cut off when the spool is opened.
//! - One process uses a spool: the store takes [`lock`] (`flock` on `[state]
//!   dir/audit-spool.lock`) before opening it, so a second `serve` on the same state dir is
//!   refused rather than cutting the first's line being written or draining its files.
//!
//! Nothing here talks to the database; see [`super::PgStore`] for the draining.

use crate::audit::Fields;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The spool's directory under `[state] dir`.
pub const SPOOL_DIR: &str = "audit-spool";

/// The lock file under `[state] dir` whose lock (`flock`) the one store using the spool
/// holds ([`lock`]).
pub const SPOOL_LOCK: &str = "audit-spool.lock";

/// Takes the state dir's spool for this process (creating the state dir, mode 0700): the
/// lock is held until the file is dropped, and released by the kernel if the process dies.
/// One spool has one drainer: two `serve`s on one state dir would cut each other's lines
/// as torn and drain each other's files. A second one is refused, saying so.
pub fn lock(state_dir: &Path) -> Result<File, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(io(state_dir))?;
    let path = state_dir.join(SPOOL_LOCK);
    match crate::state::try_lock_file(&path) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(format!(
            "another `airlock serve` on this host uses the state dir {} (it holds {}): its audit spool can have one writer only; give each serve a [state] dir of its own",
            state_dir.display(),
            path.display()
        )),
        Err(e) => Err(io(&path)(e)),
    }
}

pub struct Spool {
    dir: PathBuf,
    inner: Mutex<Writing>,
    /// Some record waits in a file: newer records go behind it.
    waiting: AtomicBool,
}

/// The file records are appended to now.
#[derive(Default)]
struct Writing {
    current: Option<(PathBuf, File)>,
    /// Written since the last `fdatasync`.
    dirty: bool,
}

/// One spool file as read for draining: its id and its complete lines.
pub struct SpoolFile {
    pub id: String,
    pub path: PathBuf,
    pub lines: Vec<Vec<u8>>,
    /// The file's length when read (a fragment after the last line included): it was
    /// drained whole if it is still this long.
    len: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("the audit spool {}: {e}", path.display())
}

impl Spool {
    /// Opens (creating) the spool in `state_dir`; a torn last line is cut off. Records
    /// found in it wait for the database before any new one.
    pub fn open(state_dir: &Path) -> Result<Spool, String> {
        let dir = state_dir.join(SPOOL_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        let spool = Spool {
            dir,
            inner: Mutex::new(Writing::default()),
            waiting: AtomicBool::new(false),
        };
        let mut waiting = false;
        for path in spool.files()? {
            cut_torn_tail(&path)?;
            waiting |= fs::metadata(&path).map_err(io(&path))?.len() > 0;
        }
        spool.waiting.store(waiting, Ordering::SeqCst);
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Some record waits for the database.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The spool files, oldest first.
    fn files(&self) -> Result<Vec<PathBuf>, String> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        // The names start with the creation time in nanoseconds, zero-padded.
        files.sort();
        Ok(files)
    }

    /// Appends a record, written before this returns; `durable` also waits for
    /// `fdatasync`. Newer records from now on are spooled behind it.
    pub fn append(&self, record: &Fields, durable: bool) -> Result<(), String> {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if w.current.is_none() {
            w.current = Some(self.create()?);
        }
        let Some((path, file)) = w.current.as_mut() else {
            return Err("the audit spool has no file".into());
        };
        let mut line = Vec::with_capacity(record.as_bytes().len() + 1);
        line.extend_from_slice(record.as_bytes());
        line.push(b'\n');
        let written =
            file.write_all(&line)
                .and_then(|()| if durable { file.sync_data() } else { Ok(()) });
        if let Err(e) = written {
            // The file may end in a fragment now: the next record starts a file of its own
            // (the fragment, never acknowledged, is not a line and is not drained).
            let failed = io(path)(e);
            w.current = None;
            return Err(failed);
        }
        w.dirty = !durable;
        self.waiting.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// A new spool file, its directory entry durable.
    fn create(&self) -> Result<(PathBuf, File), String> {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        let name = format!("{nanos:020}-{:016x}.jsonl", rand::random::<u64>());
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok((path, file))
    }

    /// `fdatasync` of what was written since the last one (the keeper's, every second).
    pub fn sync(&self) -> Result<(), String> {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !w.dirty {
            return Ok(());
        }
        if let Some((path, file)) = &w.current {
            file.sync_data().map_err(io(path))?;
        }
        w.dirty = false;
        Ok(())
    }

    /// The oldest spool file with its complete lines, if any. When it is the file records
    /// are appended to now, it is closed first (synced), and newer records start the next
    /// file: what is read for draining no longer grows, so a drain under a steady stream of
    /// records finishes each file instead of reading a growing one again and again.
    pub fn oldest(&self) -> Result<Option<SpoolFile>, String> {
        let Some(path) = self.files()?.into_iter().next() else {
            return Ok(None);
        };
        {
            let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((current, file)) = &w.current {
                if *current == path {
                    if w.dirty {
                        file.sync_data().map_err(io(current))?;
                    }
                    w.current = None;
                    w.dirty = false;
                }
            }
        }
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io(&path))?;
        // Only complete lines: one being written now is read next time.
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let lines = bytes[..complete]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("the audit spool {}: not a spool file", path.display()))?
            .to_string();
        Ok(Some(SpoolFile {
            id,
            path,
            lines,
            len: bytes.len() as u64,
        }))
    }

    /// Removes a spool file whose lines are all in the database, unless a line was added
    /// since it was read (then false: drain it again). Once no file is left, new records
    /// go to the database again.
    pub fn remove_drained(&self, drained: &SpoolFile) -> Result<bool, String> {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let len = fs::metadata(&drained.path)
            .map_err(io(&drained.path))?
            .len();
        if len != drained.len {
            return Ok(false);
        }
        if w.current.as_ref().is_some_and(|(p, _)| *p == drained.path) {
            w.current = None;
            w.dirty = false;
        }
        fs::remove_file(&drained.path).map_err(io(&drained.path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        if self.files()?.is_empty() {
            self.waiting.store(false, Ordering::SeqCst);
        }
        Ok(true)
    }
}

/// Cuts a last line that has no newline (never acknowledged: the process died writing it).
fn cut_torn_tail(path: &Path) -> Result<(), String> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io(path))?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < bytes.len() {
        tracing::warn!(
            spool = %path.display(),
            bytes = bytes.len() - complete,
            "the audit spool ended in a torn record (the process died writing it; its call was never answered); cut it off"
        );
        f.set_len(complete as u64).map_err(io(path))?;
        f.seek(SeekFrom::End(0)).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(i: usize) -> Fields {
        let mut r = crate::audit::record("spooled");
        r.insert("i".into(), serde_json::json!(i));
        r.into()
    }

    #[test]
    fn records_wait_in_order_a_torn_line_is_cut_and_a_drained_file_goes() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::open(dir.path()).expect("open");
        assert!(!spool.waiting());
        assert!(spool.oldest().expect("oldest").is_none());
        for i in 0..3 {
            spool.append(&fields(i), i == 2).expect("append");
        }
        assert!(spool.waiting());
        spool.sync().expect("sync");
        // A process killed in the middle of a record: its line is torn.
        let file = spool.oldest().expect("oldest").expect("a file");
        OpenOptions::new()
            .append(true)
            .open(&file.path)
            .and_then(|mut f| f.write_all(b"{\"event\":\"tor"))
            .expect("tear");
        drop(spool);

        let spool = Spool::open(dir.path()).expect("reopen");
        assert!(
            spool.waiting(),
            "records found at start wait for the database"
        );
        let file = spool.oldest().expect("oldest").expect("a file");
        assert_eq!(file.lines.len(), 3);
        for (i, line) in file.lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(line).expect("json");
            assert_eq!(v["i"], i, "records out of order");
        }
        assert!(spool.remove_drained(&file).expect("remove"));
        assert!(!spool.waiting(), "an empty spool still holds records back");
        assert!(spool.oldest().expect("oldest").is_none());

        // The next outage starts a new file. Picked for draining, it is closed: a record
        // added meanwhile starts the next file, and the drained one goes.
        spool.append(&fields(3), false).expect("append");
        let file = spool.oldest().expect("oldest").expect("a file");
        assert_eq!(file.lines.len(), 1);
        spool.append(&fields(4), false).expect("append");
        assert!(spool.remove_drained(&file).expect("remove"));
        assert!(spool.waiting(), "the record added during the drain waits");
        let file = spool.oldest().expect("oldest").expect("a file");
        assert_eq!(file.lines.len(), 1);
        let v: serde_json::Value = serde_json::from_slice(&file.lines[0]).expect("json");
        assert_eq!(v["i"], 4);
        assert!(spool.remove_drained(&file).expect("remove"));
        assert!(!spool.waiting());
    }

    /// A steady stream of records while the keeper drains: each file it picks is finished
    /// and removed (none is read again and again as it grows), and every record is read
    /// exactly once, in order.
    #[test]
    fn a_drain_under_a_stream_of_records_finishes_each_file() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::open(dir.path()).expect("open");
        let mut next = 0;
        let mut read = Vec::new();
        for _round in 0..20 {
            for _ in 0..5 {
                spool.append(&fields(next), false).expect("append");
                next += 1;
            }
            let file = spool.oldest().expect("oldest").expect("a file");
            // Records keep coming while the file is drained.
            spool.append(&fields(next), false).expect("append");
            next += 1;
            for line in &file.lines {
                let v: serde_json::Value = serde_json::from_slice(line).expect("json");
                read.push(v["i"].as_u64().expect("i") as usize);
            }
            assert!(
                spool.remove_drained(&file).expect("remove"),
                "a drained file was kept because records were still being added to it"
            );
        }
        while let Some(file) = spool.oldest().expect("oldest") {
            for line in &file.lines {
                let v: serde_json::Value = serde_json::from_slice(line).expect("json");
                read.push(v["i"].as_u64().expect("i") as usize);
            }
            assert!(spool.remove_drained(&file).expect("remove"));
        }
        assert_eq!(read, (0..next).collect::<Vec<_>>());
        assert!(!spool.waiting());
    }
}
