//! A chain moved between stores, line for line: [`Records`] reads every record of a file
//! log in order (`airlock db import`), [`Restore`] writes records another store kept into
//! an empty file log (`airlock db export`). Lines are never re-encoded, so every hash
//! stays what it was.

use super::segments::{segment_name, Paths, Position, MAX_RECORD};
use super::{check_link, io_err, write_head, AuditError};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};

/// Writes records, each continuing the chain from the one before, into segment 1 of a log
/// that has none, then makes them durable and names the last in the head.
pub struct Restore {
    paths: Paths,
    file: std::io::BufWriter<File>,
    expected: Option<Position>,
    last: Option<(u64, String)>,
    records: u64,
}

impl Restore {
    /// Refused if `state_dir` has an audit log already.
    pub fn start(state_dir: &std::path::Path) -> Result<Restore, AuditError> {
        let paths = Paths::new(state_dir);
        paths.prepare()?;
        if !paths.numbers()?.is_empty() {
            return Err(AuditError::Io(
                paths.dir.display().to_string(),
                std::io::Error::other("it holds an audit log already"),
            ));
        }
        let path = paths.segment(1);
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Restore {
            paths,
            file: std::io::BufWriter::new(file),
            expected: None,
            last: None,
            records: 0,
        })
    }

    /// Appends one record (without its newline); refused unless it continues the chain.
    pub fn push(&mut self, line: &[u8]) -> Result<(), AuditError> {
        let seq = self.expected.as_ref().map_or(0, |p| p.next_seq);
        let linked =
            check_link(self.expected.as_ref(), line).map_err(|reason| AuditError::Broken {
                segment: String::new(),
                line: 0,
                seq,
                reason,
            })?;
        let path = self.paths.segment(1);
        self.file
            .write_all(line)
            .and_then(|()| self.file.write_all(b"\n"))
            .map_err(io_err(&path))?;
        self.last = Some((linked.seq, linked.next.prev.clone()));
        self.expected = Some(linked.next);
        self.records += 1;
        Ok(())
    }

    /// Makes it all durable and writes the head; returns how many records were written.
    pub fn finish(self) -> Result<u64, AuditError> {
        let path = self.paths.segment(1);
        let file = self
            .file
            .into_inner()
            .map_err(|e| AuditError::Io(path.display().to_string(), e.into_error()))?;
        file.sync_all().map_err(io_err(&path))?;
        File::open(&self.paths.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.paths.dir))?;
        if let Some((seq, hash)) = &self.last {
            write_head(&self.paths, *seq, hash)?;
        }
        Ok(self.records)
    }
}

/// Every record of the file log in a state dir (without its newline), in order, segment
/// after segment. Check the chain first (`verify_from`): this only reads.
pub struct Records {
    paths: Paths,
    /// The segments still to read, newest last.
    numbers: std::vec::IntoIter<u64>,
    reading: Option<(u64, BufReader<File>)>,
}

impl Records {
    pub fn of(state_dir: &std::path::Path) -> Result<Records, AuditError> {
        let paths = Paths::new(state_dir);
        paths.prepare()?;
        let numbers = paths.numbers()?.into_iter();
        Ok(Records {
            paths,
            numbers,
            reading: None,
        })
    }

    fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            let (number, reader) = match &mut self.reading {
                Some(r) => (r.0, &mut r.1),
                None => {
                    let Some(number) = self.numbers.next() else {
                        return Ok(None);
                    };
                    let path = self.paths.segment(number);
                    let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    let r = self.reading.insert((number, BufReader::new(file)));
                    (r.0, &mut r.1)
                }
            };
            let mut line = Vec::new();
            let n = reader
                .take(MAX_RECORD as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("segment {}: {e}", segment_name(number)))?;
            if n == 0 {
                self.reading = None;
                continue;
            }
            if line.pop() != Some(b'\n') {
                return Err(format!(
                    "segment {} ends in a torn or oversized record; `airlock audit verify` names it",
                    segment_name(number)
                ));
            }
            return Ok(Some(line));
        }
    }
}

impl Iterator for Records {
    type Item = Result<Vec<u8>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_line().transpose()
    }
}
