//! `airlock audit verify`: the chain checked record by record across segments, streamed
//! (one record in memory at a time, whatever the log's size), the first bad record named
//! by its segment and line.
//!
//! The chain starts at the genesis hash, or, once old segments were removed by retention,
//! at the hash a retention record names (`audit_segments_removed`, `kept_from_seq` and
//! `kept_from_hash`): segments removed without such a record are found. Verifying from a
//! given segment on (`--from`) takes that segment's first record's `prev` as given.

use super::segments::{segment_name, Paths, Position, MAX_RECORD};
use super::{io_err, AuditError, RETENTION_EVENT};
use serde_json::Value;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// What a verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// Segments read.
    pub segments: usize,
    /// The sequence number of the first record checked.
    pub first_seq: u64,
}

/// Checks the chain from segment `from` on (all segments when `None`).
pub fn verify_from(state_dir: &Path, from: Option<u64>) -> Result<Verified, AuditError> {
    let paths = Paths::new(state_dir);
    paths.prepare()?;
    // The head is read before the segments are listed: whatever it names was written
    // before, so it is in what is read next.
    let head: Option<(u64, String)> = fs::read_to_string(&paths.head).ok().and_then(|text| {
        let h: Value = serde_json::from_str(&text).ok()?;
        Some((
            h.get("seq")?.as_u64()?,
            h.get("hash")?.as_str()?.to_string(),
        ))
    });
    let all = paths.numbers()?;
    let numbers: Vec<u64> = match from {
        None => all,
        Some(f) => {
            if !all.contains(&f) {
                return Err(AuditError::Io(
                    paths.segment(f).display().to_string(),
                    std::io::ErrorKind::NotFound.into(),
                ));
            }
            all.into_iter().filter(|n| *n >= f).collect()
        }
    };
    let mut chain = Chain {
        expected: None,
        start: None,
        start_named: false,
        head: head.clone(),
        head_matched: false,
        records: 0,
        last: (String::new(), 0),
    };
    for n in &numbers {
        chain.segment(&paths, *n)?;
    }
    let Some((start_seq, start_prev)) = chain.start.clone() else {
        return match head {
            Some((s, _)) => Err(AuditError::Broken {
                segment: String::new(),
                line: 0,
                seq: s,
                reason: format!("the log holds no record but its head says {s} was written: records were cut off the end"),
            }),
            None => Ok(Verified { records: 0, segments: numbers.len(), first_seq: 0 }),
        };
    };
    let (segment, line) = chain.last.clone();
    let next_seq = chain.expected.as_ref().map_or(0, |p| p.next_seq);
    let genesis = Position::genesis();
    if from.is_none()
        && (start_seq, &start_prev) != (genesis.next_seq, &genesis.prev)
        && !chain.start_named
    {
        return Err(AuditError::Broken {
            segment: segment_name(numbers[0]),
            line: 1,
            seq: start_seq,
            reason: format!("the log starts at record {start_seq}, and no retention record names where the kept chain starts: earlier segments were removed"),
        });
    }
    if let Some((s, _)) = &head {
        if *s >= next_seq {
            return Err(AuditError::Broken { segment, line, seq: next_seq, reason: format!("the log ends at record {} but its head says {s} was written: records were cut off the end", next_seq.saturating_sub(1)) });
        }
        if *s >= start_seq && !chain.head_matched {
            return Err(AuditError::Broken {
                segment: String::new(),
                line: 0,
                seq: *s,
                reason: "record does not match the head: it was edited".into(),
            });
        }
    }
    Ok(Verified {
        records: chain.records,
        segments: numbers.len(),
        first_seq: start_seq,
    })
}

/// The state of a verification between records.
struct Chain {
    /// Where the next record must continue the chain (none before the first).
    expected: Option<Position>,
    /// The first record's sequence number and `prev`.
    start: Option<(u64, String)>,
    /// A retention record names the start.
    start_named: bool,
    head: Option<(u64, String)>,
    head_matched: bool,
    records: u64,
    /// Segment and line of the last record read.
    last: (String, usize),
}

impl Chain {
    fn segment(&mut self, paths: &Paths, number: u64) -> Result<(), AuditError> {
        let path = paths.segment(number);
        let name = segment_name(number);
        let f = File::open(&path).map_err(io_err(&path))?;
        let len = f.metadata().map_err(io_err(&path))?.len();
        let mut reader = BufReader::new(f.take(len));
        let mut raw = Vec::new();
        let mut line_no = 0usize;
        loop {
            raw.clear();
            let n = (&mut reader)
                .take(MAX_RECORD as u64 + 1)
                .read_until(b'\n', &mut raw)
                .map_err(io_err(&path))?;
            if n == 0 {
                return Ok(());
            }
            line_no += 1;
            self.last = (name.clone(), line_no);
            let seq_now = self.expected.as_ref().map_or(0, |p| p.next_seq);
            let broken = |reason: String| AuditError::Broken {
                segment: name.clone(),
                line: line_no,
                seq: seq_now,
                reason,
            };
            if raw.last() != Some(&b'\n') {
                return Err(broken(if n > MAX_RECORD {
                    format!("longer than {MAX_RECORD} bytes: not a record")
                } else {
                    "the record is torn (no end of line)".into()
                }));
            }
            let line = &raw[..raw.len() - 1];
            let linked = check_link(self.expected.as_ref(), line).map_err(broken)?;
            let (v, seq) = (linked.record, linked.seq);
            if self.expected.is_none() {
                self.start = Some((seq, linked.prev));
            }
            let hash = linked.next.prev.clone();
            if let Some((s, h)) = &self.head {
                if *s == seq {
                    if *h != hash {
                        return Err(broken(
                            "record does not match the head: it was edited".into(),
                        ));
                    }
                    self.head_matched = true;
                }
            }
            if v.get("event").and_then(Value::as_str) == Some(RETENTION_EVENT) {
                let named = (
                    v.get("kept_from_seq").and_then(Value::as_u64),
                    v.get("kept_from_hash").and_then(Value::as_str),
                );
                if let Some((start_seq, start_prev)) = &self.start {
                    if named == (Some(*start_seq), Some(start_prev.as_str())) {
                        self.start_named = true;
                    }
                }
            }
            self.records += 1;
            self.expected = Some(linked.next);
        }
    }
}

/// One record read back and checked against the chain.
pub struct Linked {
    pub record: Value,
    pub seq: u64,
    /// The hash of the record before, as this one states it.
    pub prev: String,
    /// Where the next record must continue the chain.
    pub next: Position,
}

/// Checks that `line` (a record without its newline) continues the chain at `expected`:
/// its `seq` is the next one and its `prev` the hash of the record before. With no
/// `expected` (the first record read), any start is taken. The one check the file log's
/// verification and the database's share; the error is the reason, without the place.
pub fn check_link(expected: Option<&Position>, line: &[u8]) -> Result<Linked, String> {
    let record: Value =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON record: {e}"))?;
    let seq = record.get("seq").and_then(Value::as_u64).ok_or("no seq")?;
    let prev = record
        .get("prev")
        .and_then(Value::as_str)
        .ok_or("no prev")?
        .to_string();
    if let Some(p) = expected {
        if seq != p.next_seq {
            return Err(format!(
                "has seq {seq}, expected {}: a record was removed or reordered",
                p.next_seq
            ));
        }
        if prev != p.prev {
            return Err(format!(
                "its prev hash does not match: record {} was edited, or records around it were removed or reordered",
                p.next_seq.saturating_sub(1)
            ));
        }
    }
    let next = Position {
        next_seq: seq + 1,
        prev: crate::sigv4::sha256_hex(line),
    };
    Ok(Linked {
        record,
        seq,
        prev,
        next,
    })
}
