//! The corpus of dangerous calls: every call `tests/policy_corpus/gen_corpus.py` names is
//! built and signed by botocore, read by `airlock::explain` exactly as `airlock explain`
//! reads a request file, and must get the decision and rule the corpus expects, with the
//! built-in catalogue and the example config's (empty) rules.
//!
//! Requests come from `AIRLOCK_POLICY_CORPUS_JSONL` when set, else the generator is run
//! with `python3` (botocore installed). Run with `--nocapture` for the counts per class.

// A test harness: a generator or fixture that cannot be read is a failed test.
#![allow(clippy::expect_used)]

use airlock::config::{Config, EXAMPLE};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Deserialize)]
struct Call {
    name: String,
    class: String,
    decision: String,
    rule: String,
    method: String,
    target: String,
    host: String,
    headers: BTreeMap<String, String>,
    body_b64: String,
}

impl Call {
    /// The request as raw HTTP/1.1, as a request file for `airlock explain` holds it.
    fn raw(&self) -> Vec<u8> {
        let body = base64::engine::general_purpose::STANDARD
            .decode(&self.body_b64)
            .expect("body_b64 is base64");
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            self.method, self.target, self.host
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !self
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-length"))
        {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&body);
        raw
    }
}

fn corpus() -> Vec<Call> {
    let path = match std::env::var_os("AIRLOCK_POLICY_CORPUS_JSONL") {
        Some(p) => PathBuf::from(p),
        None => {
            let out = std::env::temp_dir().join(format!(
                "airlock-policy-corpus-{}.jsonl",
                std::process::id()
            ));
            let status = Command::new("python3")
                .arg(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policy_corpus/gen_corpus.py"),
                )
                .arg("--out")
                .arg(&out)
                .status()
                .expect("python3 runs (botocore installed)");
            assert!(status.success(), "the corpus generator failed");
            out
        }
    };
    let text = std::fs::read_to_string(&path).expect("the corpus is readable");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a corpus line"))
        .collect()
}

#[test]
fn every_call_of_the_corpus_gets_its_decision_and_rule() {
    let config = Config::parse(Path::new("/nonexistent/config/airlock.toml"), EXAMPLE)
        .expect("the example config parses");
    let calls = corpus();
    let mut failures = Vec::new();
    let mut per_class: BTreeMap<&str, usize> = BTreeMap::new();
    let mut names = BTreeSet::new();
    for c in &calls {
        assert!(names.insert(c.name.as_str()), "{} is named twice", c.name);
        *per_class.entry(c.class.as_str()).or_default() += 1;
        match airlock::explain::explain_request(&config, &c.raw(), Some("111111111111")) {
            Ok(v) => {
                let got = (
                    v["decision"].as_str().unwrap_or("?"),
                    v["rule"].as_str().unwrap_or("?"),
                );
                if got != (c.decision.as_str(), c.rule.as_str()) {
                    failures.push(format!(
                        "{}: expected {} by {}, got {} by {} ({} {})",
                        c.name, c.decision, c.rule, got.0, got.1, v["action"], v["error"]
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: not a request: {e}", c.name)),
        }
    }
    println!("{} calls; per class: {per_class:?}", calls.len());
    assert!(
        failures.is_empty(),
        "{} of {} calls decided wrongly:\n{}",
        failures.len(),
        calls.len(),
        failures.join("\n")
    );
    assert!(calls.len() >= 150, "only {} calls", calls.len());
    for class in [
        "credential-vending",
        "privilege-escalation",
        "remote-execution",
        "destruction-behind-other-verbs",
        "allowed",
    ] {
        assert!(
            per_class.get(class).copied().unwrap_or(0) >= 10,
            "{class}: {per_class:?}"
        );
    }
    // Every method of Rhino Security Labs' list, 1 to 21.
    for n in 1..=21 {
        let prefix = format!("rhino-{n:02}-");
        assert!(
            names.iter().any(|name| name.starts_with(&prefix)),
            "no {prefix} call"
        );
    }
}
