use super::*;
use serde_json::Map;
use std::fs;
use std::path::PathBuf;

fn write(dir: &Path, n: usize) {
    for i in 0..n {
        let mut r = record("forwarded");
        r.insert("agent".into(), json!(format!("a{i}")));
        append_now(dir, r).unwrap();
    }
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    Paths::new(dir).segment(n)
}

/// Every record of every segment, oldest first.
fn lines(dir: &Path) -> Vec<String> {
    Paths::new(dir)
        .numbers()
        .unwrap()
        .into_iter()
        .flat_map(|n| {
            fs::read_to_string(segment(dir, n))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn put(path: &Path, lines: &[String]) {
    fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn small(segment_bytes: u64) -> Settings {
    Settings {
        segment_bytes,
        ..Settings::default()
    }
}

/// A record of about `size` bytes.
fn padded(i: usize, size: usize) -> Map<String, Value> {
    let mut r = record("forwarded");
    r.insert("agent".into(), json!(format!("a{i}")));
    r.insert("pad".into(), json!("x".repeat(size.saturating_sub(250))));
    r
}

/// Appends a record written at `time` (the CLI's path).
fn append_at(dir: &Path, time: &str) {
    let mut r = record("forwarded");
    r.insert("time".into(), json!(time));
    append_now(dir, r).unwrap();
}

/// A log with 4 KiB segments, started, and `n` records of about 500 bytes written.
fn rotating(n: usize) -> (tempfile::TempDir, AuditLog) {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &small(4096)).unwrap();
    for i in 0..n {
        assert!(log.write(padded(i, 500)));
    }
    (d, log)
}

#[test]
fn records_with_whole_seconds_and_with_milliseconds_verify_in_one_chain() {
    let d = tempfile::tempdir().unwrap();
    append_at(d.path(), "2026-01-01T00:00:00Z");
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
    let first = segment(d.path(), 1);

    let mut edited = orig.clone();
    edited[2] = edited[2].replace("\"agent\":\"a2\"", "\"agent\":\"zz\"");
    put(&first, &edited);
    let e = verify(d.path()).unwrap_err().to_string();
    assert!(e.contains("record 2 was edited"), "{e}");
    assert!(e.contains("segment 00000001.jsonl line 4"), "{e}");

    let mut removed = orig.clone();
    removed.remove(1);
    put(&first, &removed);
    assert!(verify(d.path())
        .unwrap_err()
        .to_string()
        .contains("record 1"));

    let mut swapped = orig.clone();
    swapped.swap(1, 2);
    put(&first, &swapped);
    assert!(verify(d.path()).is_err());

    put(&first, &orig[..3]);
    let e = verify(d.path()).unwrap_err().to_string();
    assert!(e.contains("cut off"), "{e}");

    put(&first, &orig);
    assert_eq!(verify(d.path()).unwrap(), 5);
}

#[test]
fn a_log_that_cannot_be_written_starts_but_says_so() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &Settings::default()).unwrap();
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
    Paths::new(d.path()).prepare().unwrap();
    std::os::unix::fs::symlink("/dev/full", segment(d.path(), 1)).unwrap();
    assert!(!AuditLog::start(d.path(), &Settings::default())
        .unwrap()
        .writable());
}

#[test]
fn records_are_written_before_write_returns_and_synced_with_the_head() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &Settings::default()).unwrap();
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
        serde_json::from_str(&fs::read_to_string(d.path().join("audit/head")).unwrap()).unwrap();
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
        .open(segment(d.path(), 1))
        .unwrap();
    f.write_all(b"{\"time\":\"2026").unwrap();
    drop(f);
    let e = verify(d.path()).unwrap_err().to_string();
    assert!(e.contains("segment 00000001.jsonl line 4"), "{e}");
    assert_eq!(recover(d.path()).unwrap(), 13);
    write(d.path(), 1);
    assert_eq!(verify(d.path()).unwrap(), 5);
    assert!(fs::read_to_string(d.path().join("audit/torn"))
        .unwrap()
        .contains("2026"));
}

#[test]
fn a_torn_tail_in_the_newest_segment_is_recovered_at_start() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &small(4096)).unwrap();
    for i in 0..12 {
        assert!(log.write(padded(i, 600)));
    }
    drop(log);
    let numbers = Paths::new(d.path()).numbers().unwrap();
    assert!(numbers.len() >= 2, "{numbers:?}");
    let newest = segment(d.path(), *numbers.last().unwrap());
    let mut f = OpenOptions::new().append(true).open(&newest).unwrap();
    f.write_all(b"{\"time\":\"2026-12-05T1").unwrap();
    drop(f);
    let log = AuditLog::start(d.path(), &small(4096)).unwrap();
    assert!(log.write(record("forwarded")));
    let v = verify_from(d.path(), None).unwrap();
    // 12 records, the recovery, two starts and the last record.
    assert_eq!(v.records, 16);
    assert!(lines(d.path())
        .iter()
        .any(|l| l.contains("torn_tail_recovered")));
}

#[test]
fn segments_close_at_their_size_and_the_chain_runs_across_them() {
    let (d, log) = rotating(40);
    let paths = Paths::new(d.path());
    let numbers = paths.numbers().unwrap();
    assert!(numbers.len() >= 5, "{numbers:?}");
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());
    for n in &numbers {
        let len = fs::metadata(segment(d.path(), *n)).unwrap().len();
        assert!(len <= 4096, "segment {n} is {len} bytes");
    }
    // Each segment's first record carries the previous segment's last hash.
    for pair in numbers.windows(2) {
        let last = fs::read_to_string(segment(d.path(), pair[0])).unwrap();
        let last = last.lines().last().unwrap();
        let first = segments::first_line(&segment(d.path(), pair[1]))
            .unwrap()
            .unwrap();
        let first: Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(
            first["prev"],
            json!(crate::sigv4::sha256_hex(last.as_bytes()))
        );
    }
    let v = verify_from(d.path(), None).unwrap();
    assert_eq!(
        v,
        Verified {
            records: 41,
            segments: numbers.len(),
            first_seq: 0
        }
    );
    // The CLI's appends go to the newest segment and continue the chain.
    append_now(d.path(), record("approved")).unwrap();
    assert_eq!(paths.numbers().unwrap(), numbers);
    assert!(log.write(padded(99, 500)));
    assert_eq!(verify(d.path()).unwrap(), 43);
}

#[test]
fn a_new_day_starts_a_new_segment() {
    let d = tempfile::tempdir().unwrap();
    append_at(d.path(), "2026-01-01T23:59:59.999Z");
    // A record of today by the CLI (which never rotates) does not make the segment today's.
    append_now(d.path(), record("approved")).unwrap();
    let log = AuditLog::start(d.path(), &Settings::default()).unwrap();
    assert!(log.write(record("forwarded")));
    assert_eq!(Paths::new(d.path()).numbers().unwrap(), vec![1, 2]);
    let second = fs::read_to_string(segment(d.path(), 2)).unwrap();
    assert!(
        second.starts_with("{\"event\":\"serve_started\""),
        "{second}"
    );
    assert_eq!(lines(d.path()).len(), 4);
    assert_eq!(verify(d.path()).unwrap(), 4);
}

#[test]
fn tampering_in_an_old_segment_is_found_with_its_segment_and_line() {
    let (d, log) = rotating(40);
    log.sync().unwrap();
    let second = segment(d.path(), 2);
    let text = fs::read_to_string(&second).unwrap();
    let mut ls: Vec<String> = text.lines().map(str::to_string).collect();
    let first: Value = serde_json::from_str(&ls[0]).unwrap();
    let seq = first["seq"].as_u64().unwrap();
    ls[1] = ls[1].replacen("\"agent\":\"a", "\"agent\":\"b", 1);
    put(&second, &ls);
    let e = verify(d.path()).unwrap_err();
    match &e {
        AuditError::Broken {
            segment,
            line,
            seq: s,
            ..
        } => {
            assert_eq!(
                (segment.as_str(), *line, *s),
                ("00000002.jsonl", 3, seq + 2),
                "{e}"
            )
        }
        other => panic!("{other}"),
    }
    assert!(
        e.to_string()
            .contains(&format!("record {} was edited", seq + 1)),
        "{e}"
    );
    // From the third segment on, the chain is whole.
    let v = verify_from(d.path(), Some(3)).unwrap();
    assert!(v.records > 0 && v.first_seq > seq + 1, "{v:?}");
    assert!(verify_from(d.path(), Some(2)).is_err());
}

#[test]
fn verify_from_a_segment_takes_its_first_prev_as_given() {
    let (d, _log) = rotating(30);
    let numbers = Paths::new(d.path()).numbers().unwrap();
    let total = verify(d.path()).unwrap();
    let from = numbers[2];
    let v = verify_from(d.path(), Some(from)).unwrap();
    assert_eq!(v.segments, numbers.len() - 2);
    assert_eq!(v.records + v.first_seq, total);
    // Without --from, a log whose first segments are gone (without a retention record)
    // does not verify.
    fs::remove_file(segment(d.path(), 1)).unwrap();
    let e = verify(d.path()).unwrap_err().to_string();
    assert!(e.contains("no retention record"), "{e}");
    assert!(verify_from(d.path(), Some(2)).is_ok());
    assert!(verify_from(d.path(), Some(99)).is_err());
}

#[test]
fn retention_removes_the_oldest_segments_and_records_where_the_chain_starts() {
    let d = tempfile::tempdir().unwrap();
    let settings = Settings {
        keep_segments: Some(3),
        ..small(4096)
    };
    let log = AuditLog::start(d.path(), &settings).unwrap();
    for i in 0..60 {
        assert!(log.write(padded(i, 500)));
    }
    let numbers = Paths::new(d.path()).numbers().unwrap();
    assert_eq!(numbers.len(), 3, "{numbers:?}");
    assert!(numbers[0] > 1);
    let all = lines(d.path());
    let retention: Vec<Value> = all
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == RETENTION_EVENT)
        .collect();
    let latest = retention.last().expect("a retention record");
    let first: Value = serde_json::from_str(&all[0]).unwrap();
    assert_eq!(latest["kept_from_segment"], json!(segment_name(numbers[0])));
    assert_eq!(latest["kept_from_seq"], first["seq"]);
    assert_eq!(latest["kept_from_hash"], first["prev"]);
    let v = verify_from(d.path(), None).unwrap();
    assert_eq!(v.first_seq, first["seq"].as_u64().unwrap());
    // Removing one more segment by hand is found: no record names the new start.
    fs::remove_file(segment(d.path(), numbers[0])).unwrap();
    let e = verify(d.path()).unwrap_err().to_string();
    assert!(e.contains("no retention record"), "{e}");
}

#[test]
fn retention_by_days_removes_segments_whose_last_record_is_old() {
    let d = tempfile::tempdir().unwrap();
    for day in ["2020-01-01", "2020-01-02"] {
        append_at(d.path(), &format!("{day}T12:00:00.000Z"));
        let log = AuditLog::start(
            d.path(),
            &Settings {
                segment_bytes: 4096,
                ..Settings::default()
            },
        )
        .unwrap();
        drop(log);
    }
    let settings = Settings {
        keep_days: Some(30),
        ..small(4096)
    };
    let before = Paths::new(d.path()).numbers().unwrap();
    assert!(before.len() >= 2, "{before:?}");
    let log = AuditLog::start(d.path(), &settings).unwrap();
    for i in 0..10 {
        assert!(log.write(padded(i, 500)));
    }
    let after = Paths::new(d.path()).numbers().unwrap();
    assert!(!after.contains(&1), "{after:?}");
    assert!(lines(d.path()).iter().all(|l| !l.contains("\"2020-01-01")));
    verify(d.path()).unwrap();
}

#[test]
fn a_single_audit_jsonl_is_taken_over_as_the_first_segment() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 3);
    // As an earlier version left it.
    fs::rename(segment(d.path(), 1), d.path().join("audit.jsonl")).unwrap();
    fs::rename(d.path().join("audit/head"), d.path().join("audit.head")).unwrap();
    fs::remove_dir_all(d.path().join("audit")).unwrap();
    let old = fs::read_to_string(d.path().join("audit.jsonl")).unwrap();
    let log = AuditLog::start(d.path(), &small(4096)).unwrap();
    assert!(log.write(record("forwarded")));
    assert!(!d.path().join("audit.jsonl").exists());
    assert!(!d.path().join("audit.head").exists());
    let taken = fs::read_to_string(segment(d.path(), 1)).unwrap();
    assert!(taken.starts_with(&old));
    // The head came along: cutting records off the taken-over segment is still found.
    assert_eq!(verify(d.path()).unwrap(), 5);
    put(
        &segment(d.path(), 1),
        &old.lines().take(2).map(str::to_string).collect::<Vec<_>>(),
    );
    assert!(verify(d.path()).is_err());
}

#[test]
fn concurrent_records_go_out_in_one_write() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &Settings::default()).unwrap();
    let writes_before = log.shared.writer.lock().unwrap().writes;
    const CALLERS: usize = 8;
    let handles = {
        // While the writer is busy, the first caller waits for it holding its own
        // record, and the others queue theirs.
        let busy = log.shared.writer.lock().unwrap();
        let handles: Vec<_> = (0..CALLERS)
            .map(|i| {
                let log = log.clone();
                std::thread::spawn(move || log.write(padded(i, 300)))
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.shared.queue.lock().unwrap().pending.len() < CALLERS - 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "callers did not queue"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(busy);
        handles
    };
    for h in handles {
        assert!(h.join().unwrap());
    }
    let writes = log.shared.writer.lock().unwrap().writes - writes_before;
    assert_eq!(
        writes, 2,
        "the first caller's record, then the queued seven"
    );
    assert_eq!(verify(d.path()).unwrap(), 1 + CALLERS as u64);
}

#[test]
fn many_threads_writing_keep_one_whole_chain() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &small(8192)).unwrap();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || (0..50).all(|i| log.write(padded(t * 100 + i, 300))))
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap());
    }
    let writes = log.shared.writer.lock().unwrap().writes;
    eprintln!("FIGURE 400 records from 8 threads in {writes} writes");
    assert_eq!(verify(d.path()).unwrap(), 401);
}

#[test]
fn tail_reads_the_last_records_across_segments() {
    let (d, log) = rotating(30);
    let all = lines(d.path());
    let (last, cursor) = last_records(d.path(), 12).unwrap();
    let last: Vec<String> = last
        .into_iter()
        .map(|l| String::from_utf8(l).unwrap())
        .collect();
    assert_eq!(last, all[all.len() - 12..]);
    let numbers = Paths::new(d.path()).numbers().unwrap();
    assert_eq!(cursor.segment, *numbers.last().unwrap());
    // Following picks up what comes next, into a new segment too.
    for i in 0..10 {
        assert!(log.write(padded(100 + i, 500)));
    }
    let mut seen = Vec::new();
    follow(d.path(), cursor, |l| {
        seen.push(String::from_utf8(l.to_vec()).unwrap());
        seen.len() < 10
    })
    .unwrap();
    let all = lines(d.path());
    assert_eq!(seen, all[all.len() - 10..]);
    // More than the log holds: all of it.
    assert_eq!(last_records(d.path(), 1000).unwrap().0.len(), all.len());
}

#[test]
fn settings_out_of_range_are_refused() {
    assert!(Settings::default().check().is_ok());
    assert!(small(100).check().is_err());
    let none_kept = Settings {
        keep_segments: Some(0),
        ..Settings::default()
    };
    assert_eq!(none_kept.check().unwrap_err().0, "[audit] keep_segments");
}

#[test]
fn the_last_lines_are_read_backwards_across_chunks() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("lines");
    // Lines of different lengths, so chunk edges fall anywhere in a line.
    let all: Vec<String> = (0..1000)
        .map(|i| format!("{i}:{}", "y".repeat(i * 37 % 700)))
        .collect();
    put(&path, &all);
    for n in [0, 1, 5, 250, 999, 1000, 2000] {
        let tail = segments::last_lines(&path, n).unwrap();
        let got: Vec<String> = tail
            .lines
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect();
        assert_eq!(got, all[all.len().saturating_sub(n)..], "n = {n}");
        assert_eq!(tail.torn, 0);
        assert_eq!(tail.len, fs::metadata(&path).unwrap().len());
    }
    // A torn record after the last newline is not a line, and its length is told.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[b'z'; 70_000]).unwrap();
    drop(f);
    let tail = segments::last_lines(&path, 2).unwrap();
    assert_eq!(tail.torn, 70_000);
    assert_eq!(
        tail.lines,
        all[998..]
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect::<Vec<_>>()
    );
    // Nothing but a torn record.
    fs::write(&path, b"{\"time\":").unwrap();
    let tail = segments::last_lines(&path, 3).unwrap();
    assert!(tail.lines.is_empty());
    assert_eq!(tail.torn, 8);
}

#[test]
fn serve_keeps_the_lock_across_batches_and_lets_go_of_an_idle_lease() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &Settings::default()).unwrap();
    let locked_before = log.shared.writer.lock().unwrap().times_locked;
    for i in 0..200 {
        assert!(log.write(padded(i, 300)));
    }
    let locked = log.shared.writer.lock().unwrap().times_locked - locked_before;
    eprintln!("FIGURE 200 records one after another took the log's lock {locked} times");
    assert!(
        locked < 100,
        "the lock was taken anew for most batches: {locked} times for 200"
    );
    // The head is written under the lease the writer holds, not by waiting for it to end.
    let locked = log.shared.writer.lock().unwrap().times_locked;
    let held = log
        .shared
        .writer
        .lock()
        .unwrap()
        .end_lease(writer::LEASE)
        .is_some();
    log.sync().unwrap();
    let head: Value =
        serde_json::from_str(&fs::read_to_string(Paths::new(d.path()).head).unwrap()).unwrap();
    assert_eq!(head["seq"], json!(200));
    if held {
        assert_eq!(log.shared.writer.lock().unwrap().times_locked, locked);
    }
    // Idle now: the lease thread lets go, so another process's append goes through, and
    // serve's next record continues the chain after it.
    let cli = {
        let dir = d.path().to_path_buf();
        std::thread::spawn(move || append_at(&dir, "2026-01-01T00:00:00Z"))
    };
    cli.join().unwrap();
    assert!(log.write(padded(999, 300)));
    let all = lines(d.path());
    assert!(
        all[all.len() - 2].contains("\"2026-01-01T00:00:00Z\""),
        "{all:?}"
    );
    assert!(all[all.len() - 1].contains("\"a999\""));
    assert_eq!(verify(d.path()).unwrap(), 203);
}

#[test]
fn a_cli_append_gets_its_turn_while_serve_writes_without_pause() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &Settings::default()).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serve = {
        let (log, done) = (log.clone(), Arc::clone(&done));
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst)
                && std::time::Instant::now() < deadline
            {
                assert!(log.write(padded(i, 200)));
                i += 1;
            }
            // A few more after the CLI's, which must follow it in the chain.
            for j in 0..5 {
                assert!(log.write(padded(100_000 + j, 200)));
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    let waited = std::time::Instant::now();
    append_at(d.path(), "2026-01-01T00:00:00Z");
    let waited = waited.elapsed();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    eprintln!("FIGURE a CLI append waited {waited:?} while serve wrote without pause");
    assert!(
        waited < std::time::Duration::from_secs(10),
        "the CLI waited {waited:?} for the lock: serve's leases starve it"
    );
    serve.join().unwrap();
    let all = lines(d.path());
    let cli = all
        .iter()
        .position(|l| l.contains("\"2026-01-01T00:00:00Z\""))
        .expect("the CLI's record is in the log");
    for j in 0..5 {
        let after = format!("\"a{}\"", 100_000 + j);
        assert!(
            all[cli + 1..].iter().any(|l| l.contains(&after)),
            "serve's record {after} is not after the CLI's in the chain"
        );
    }
    assert!(cli > 1, "serve wrote nothing before the CLI's record");
    assert_eq!(verify(d.path()).unwrap(), all.len() as u64);
}

#[test]
fn days_are_named_from_their_number() {
    assert_eq!(segments::day_named(0), "1970-01-01");
    assert_eq!(segments::day_named(20_000), "2024-10-04");
    let now = time::OffsetDateTime::now_utc().date();
    let named = segments::day_named(segments::unix_day());
    // Unless the day changed between the two reads.
    if segments::day_named(segments::unix_day()) == named {
        assert_eq!(
            named,
            format!(
                "{:04}-{:02}-{:02}",
                now.year(),
                u8::from(now.month()),
                now.day()
            )
        );
    }
}

#[test]
fn a_segment_moved_away_under_a_lease_is_noticed_when_it_ends_and_nothing_is_lost() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &Settings::default()).unwrap();
    assert!(log.write(padded(0, 200)));
    let aside = d.path().join("aside.jsonl");
    fs::rename(segment(d.path(), 1), &aside).unwrap();
    fs::create_dir(segment(d.path(), 1)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut written = 0;
    while log.write(padded(1 + written, 200)) {
        written += 1;
        assert!(std::time::Instant::now() < deadline, "never noticed");
    }
    assert!(!log.writable());
    eprintln!("FIGURE {written} records went on into the moved segment before serve noticed");
    // serve's start, the first record, and every record answered since are in the file.
    let moved = fs::read_to_string(&aside).unwrap();
    assert_eq!(moved.lines().count(), 2 + written);
    assert!(moved
        .lines()
        .last()
        .unwrap()
        .contains(&format!("\"a{written}\"")));
}

#[test]
fn an_old_versions_log_appearing_beside_the_segments_does_not_stop_serve() {
    let d = tempfile::tempdir().unwrap();
    let log = AuditLog::start(d.path(), &Settings::default()).unwrap();
    assert!(log.write(padded(0, 200)));
    // An earlier version's single file, left beside the segments; then another process
    // appends, so serve's next batch looks the log up again (under its own lock).
    fs::write(d.path().join("audit.jsonl"), "").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (dir, writer) = (d.path().to_path_buf(), log.clone());
    std::thread::spawn(move || {
        append_at(&dir, "2026-01-01T00:00:00Z");
        let _ = tx.send("the CLI's append");
        if writer.write(padded(1, 200)) {
            let _ = tx.send("serve's write");
        }
    });
    for step in ["the CLI's append", "serve's write"] {
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(step),
            "{step} hung or failed"
        );
    }
    assert_eq!(verify(d.path()).unwrap(), 4);
    assert!(
        d.path().join("audit.jsonl").exists(),
        "a log with segments leaves it alone"
    );
}
