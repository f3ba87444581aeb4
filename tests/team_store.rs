//! The PostgreSQL store against a real PostgreSQL: a private cluster made with `initdb` in
//! a temporary directory, started with `pg_ctl` on a free loopback port, stopped and
//! removed at the end (as the `postgres` OS user when the tests run as root: PostgreSQL
//! refuses to run as root). Without PostgreSQL's binaries the test says so and passes,
//! unless `CI` is set: then it fails.
//!
//! What it proves: single use is the database's (concurrent reservers over two pools, as
//! two replicas would be, get exactly `uses` successes); the audit chain stays one chain
//! when two pools append at once, `airlock audit verify` checks it and names the first
//! bad record; a schema newer than airlock knows is refused by `migrate`, by
//! `airlock db migrate` and by `audit verify`; a database that goes down fails the ledger
//! and the audit closed, and both work again once it is back; `serve` refuses a
//! `database_url` while the page's approvals are not in the database; a URL that requires
//! TLS is never served in plaintext; pending approvals are shared (one approval for the
//! same blocked call from two replicas, a decision through one wakes a call held on the
//! other within a second).

#![allow(clippy::expect_used)]

use airlock::approvals::enroll;
use airlock::identify::AwsCall;
use airlock::policy::{Decision, Effect, Policy};
use airlock::receipt::{KeyId, PasskeyKey, PasskeyPublic};
use airlock::secret::Secret;
use airlock::state::approvals::{ApprovalError, Signed, Status};
use airlock::state::ledger::LedgerError;
use airlock::state::trust::PasskeyRecord;
use airlock::store::identities::Identities;
use airlock::store::postgres::identities::follow_agents;
use airlock::store::postgres::{self, PgStore, SCHEMA_VERSION};
use airlock::store::{BlockedCall, Store};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where PostgreSQL's server binaries are: `PATH`, `/usr/local/bin`, then Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest first).
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/local/bin"));
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .collect();
        versions.sort();
        versions.reverse();
        candidates.extend(versions);
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A private PostgreSQL cluster, stopped and removed on drop.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    /// None (with a note) when PostgreSQL is not installed and `CI` is not set.
    fn start() -> Option<Cluster> {
        let Some(bin) = postgres_bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql)"
            );
            eprintln!("SKIPPED: PostgreSQL's initdb/pg_ctl are not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let out = run_as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                path_str(&data),
                "-U",
                "airlock",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        let port = free_port();
        let cluster = Cluster { bin, dir, port };
        cluster.pg_ctl_start();
        Some(cluster)
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            path_str(self.dir.path())
        );
        let log = self.dir.path().join("postgres.log");
        let out = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.dir.path().join("data")),
                "-l",
                path_str(&log),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `pg_ctl stop` in `mode` (`fast`, or `immediate` at the end).
    fn pg_ctl_stop(&self, mode: &str) -> Output {
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.dir.path().join("data")),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://airlock@127.0.0.1:{}/{database}", self.port)
    }

    /// A fresh database in the cluster.
    async fn database(&self, name: &str) -> String {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the cluster");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        self.url(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort: the directory is removed after, whatever happened.
        let _ = self.pg_ctl_stop("immediate");
    }
}

fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id");
        assert!(
            out.status.success(),
            "no `postgres` OS user (scripts/test creates it): {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root.
fn run_as_postgres(program: &Path, args: &[&str]) -> Output {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args).current_dir("/");
    command.output().expect("run a PostgreSQL binary")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A migrated store over its own pool: one replica's view of the database.
async fn replica(url: &str) -> Arc<PgStore> {
    let pool = postgres::pool(&Secret::new(url)).expect("pool");
    postgres::migrate(&pool).await.expect("migrate");
    Arc::new(PgStore::new(pool))
}

/// An airlock config (from `airlock init`) whose `[state] database_url` is `url`.
fn config_with_database(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("config/airlock.toml");
    airlock::init::init(&path).expect("init");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replacen(
        "[state]\n",
        &format!("[state]\ndatabase_url = \"{url}\"\n"),
        1,
    );
    assert!(
        text.contains("database_url"),
        "no [state] section in the config"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn airlock(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("AIRLOCK_DATABASE_URL")
        .output()
        .expect("run airlock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_store_holds_across_replicas() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    single_use_is_the_databases(&cluster).await;
    one_audit_chain_from_two_writers(&cluster).await;
    a_newer_schema_is_refused(&cluster).await;
    a_database_that_is_down_fails_closed(&cluster).await;
    serve_refuses_a_database_that_holds_only_part_of_the_state(&cluster).await;
    a_url_that_requires_tls_never_falls_back_to_plaintext(&cluster).await;
    one_approval_per_blocked_call_across_replicas(&cluster).await;
}

/// A replica that also listens for approvals decided on the others.
async fn listening_replica(url: &str) -> Arc<PgStore> {
    let pool = postgres::pool(&Secret::new(url)).expect("pool");
    postgres::migrate(&pool).await.expect("migrate");
    Arc::new(
        PgStore::new(pool)
            .listen(&Secret::new(url))
            .expect("listen"),
    )
}

/// A call the built-in rules hold for a human (DynamoDB DeleteTable), as a replica's
/// policy decides it.
fn blocked_delete_table() -> (AwsCall, Decision) {
    let call = AwsCall {
        service: "dynamodb".into(),
        signing_name: "dynamodb".into(),
        operation: "DeleteTable".into(),
        region: "us-east-1".into(),
        account: Some("123456789012".into()),
        resources: Vec::new(),
        params: [("TableName".to_owned(), "orders".to_owned())].into(),
    };
    let policy = Policy {
        builtin: true,
        ..Policy::default()
    };
    let decision = policy.decide(&call, "ci-agent", "prod");
    assert_eq!(
        decision.effect(),
        Effect::RequireReceipt,
        "the built-in rules no longer hold DeleteTable"
    );
    (call, decision)
}

/// The call as redeem hands it to the store.
fn blocked<'a>(binding_key: &'a str, call: &'a AwsCall, decision: &'a Decision) -> BlockedCall<'a> {
    BlockedCall {
        binding_key,
        call,
        agent: "ci-agent",
        environment: "prod",
        decision,
    }
}

/// Pending approvals are the database's: the same blocked call from two replicas at once
/// attaches to one approval (one is opened, every other attempt counted on it); an
/// approval decided through replica A wakes a call held on replica B within a second (by
/// NOTIFY: B's poll comes only every two seconds); B then reads the decision and its
/// receipt, a second decision is refused, and once closed the next blocked call opens a
/// new approval.
async fn one_approval_per_blocked_call_across_replicas(cluster: &Cluster) {
    let url = cluster.database("approvals").await;
    let (a, b) = (listening_replica(&url).await, listening_replica(&url).await);
    let (call, decision) = blocked_delete_table();
    let call = Arc::new(call);
    let decision = Arc::new(decision);
    let binding_key = "9f2c0a7e5b1d4c3a8e6f0b2d4a6c8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d";
    const ATTEMPTS: usize = 20;
    let mut tasks = Vec::new();
    for i in 0..ATTEMPTS {
        let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let (call, decision) = (Arc::clone(&call), Arc::clone(&decision));
        tasks.push(tokio::spawn(async move {
            store
                .find_or_open_pending(blocked(binding_key, &call, &decision))
                .await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut opened = 0;
    for t in tasks {
        let (approval, is_new) = t.await.expect("task").expect("find or open");
        assert_eq!(approval.status, Status::Pending);
        ids.insert(approval.id);
        opened += usize::from(is_new);
    }
    assert_eq!(
        ids.len(),
        1,
        "identical blocked calls opened several approvals: {ids:?}"
    );
    assert_eq!(opened, 1, "approvals reported as newly opened");
    let id = ids.into_iter().next().expect("one id");
    let seen = b
        .current_approval(binding_key)
        .await
        .expect("current")
        .expect("an open approval");
    assert_eq!(seen.id, id);
    assert_eq!(
        seen.attempts, ATTEMPTS as u64,
        "attempts counted on the approval"
    );
    assert_eq!(seen.call, *call);

    // A call held on B; the decision is made through A.
    let held = {
        let b = Arc::clone(&b);
        let id = id.clone();
        tokio::spawn(async move {
            let woke = b
                .wait_resolved(&id, tokio::time::Instant::now() + Duration::from_secs(10))
                .await;
            (woke, Instant::now())
        })
    };
    // Long enough for both listeners to be listening and the held call to be waiting.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !held.is_finished(),
        "the held call went on before any decision"
    );
    let receipt = br#"{"receipt":"stand-in bytes"}"#.to_vec();
    let decided_at = Instant::now();
    let decided = a
        .decide(
            &id,
            Box::new(|pending, stored| {
                assert!(stored.is_none(), "a receipt was stored before any decision");
                assert_eq!(pending.status, Status::Pending);
                Ok(Signed {
                    receipt_id: "rcpt-one".into(),
                    receipt_json: receipt.clone(),
                    status: Status::Approved,
                    approved_by: vec!["alice".into()],
                    decided_by: "alice".into(),
                })
            }),
        )
        .await
        .expect("sign");
    assert_eq!(decided.status, Status::Approved);
    let (woke, at) = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held call was not woken within 5 s")
        .expect("task");
    assert!(woke, "the held call did not see the decision");
    let waited = at.saturating_duration_since(decided_at);
    println!("a call held on replica B went on {waited:?} after the decision through A");
    assert!(
        waited < Duration::from_secs(1),
        "the held call on B went on {waited:?} after A's decision (NOTIFY did not wake it)"
    );
    let seen = b
        .current_approval(binding_key)
        .await
        .expect("current")
        .expect("the decided approval");
    assert_eq!(seen.status, Status::Approved);
    assert_eq!(seen.receipt_id.as_deref(), Some("rcpt-one"));
    assert_eq!(seen.approved_by, vec!["alice".to_string()]);
    assert_eq!(b.read_receipt("rcpt-one").await.expect("receipt"), receipt);
    let again = b
        .decide(
            &id,
            Box::new(|_, _| panic!("a decided approval was offered for signing")),
        )
        .await;
    assert!(
        matches!(again, Err(ApprovalError::NotPending(_, Status::Approved))),
        "a second decision was not refused"
    );

    // Closed (its receipt used up): the next identical blocked call opens a new one.
    b.close_approval(&id).await.expect("close");
    assert!(a
        .current_approval(binding_key)
        .await
        .expect("current")
        .is_none());
    let (next, is_new) = a
        .find_or_open_pending(blocked(binding_key, &call, &decision))
        .await
        .expect("find or open");
    assert!(is_new && next.id != id, "a closed approval was reused");
    // A denial through B is what A then finds for the call.
    b.decide(
        &next.id,
        Box::new(|_, _| {
            Ok(Signed {
                receipt_id: "rcpt-denial".into(),
                receipt_json: b"{}".to_vec(),
                status: Status::Denied,
                approved_by: Vec::new(),
                decided_by: "bob".into(),
            })
        }),
    )
    .await
    .expect("deny");
    let denied = a
        .current_approval(binding_key)
        .await
        .expect("current")
        .expect("the denied approval");
    assert_eq!(
        (denied.id.as_str(), denied.status),
        (next.id.as_str(), Status::Denied)
    );
    assert_eq!(denied.decided_by.as_deref(), Some("bob"));
    assert!(matches!(
        a.close_approval("no-such-approval").await,
        Err(ApprovalError::NotFound(_))
    ));
}

/// `sslmode=require` against a server without TLS: no connection, never a plaintext one.
async fn a_url_that_requires_tls_never_falls_back_to_plaintext(cluster: &Cluster) {
    let url = cluster.database("tls").await;
    let pool = postgres::pool(&Secret::new(format!("{url}?sslmode=require"))).expect("pool");
    let e = postgres::migrate(&pool)
        .await
        .expect_err("a plaintext connection was made although the URL requires TLS");
    assert!(e.to_lowercase().contains("tls"), "{e}");
    // The same database without the requirement is reached (so TLS was the only reason).
    let pool = postgres::pool(&Secret::new(url.as_str())).expect("pool");
    postgres::migrate(&pool).await.expect("migrate without TLS");
}

/// 60 reservers of a receipt, half through each replica's pool, at once: exactly `uses`
/// succeed; a release gives one back, commits count.
async fn single_use_is_the_databases(cluster: &Cluster) {
    let url = cluster.database("ledger").await;
    let replicas = [replica(&url).await, replica(&url).await];
    for (receipt, uses) in [("r-one-use", 1u32), ("r-three-uses", 3)] {
        let mut tasks = Vec::new();
        for i in 0..60 {
            let store = Arc::clone(&replicas[i % 2]);
            tasks.push(tokio::spawn(
                async move { store.reserve(receipt, uses).await },
            ));
        }
        let mut reserved = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(()) => reserved += 1,
                Err(LedgerError::UsedUp) => {}
                Err(e) => panic!("a reservation failed for another reason: {e}"),
            }
        }
        assert_eq!(reserved, uses, "{receipt}: reservations that succeeded");
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    // The one use of r-one-use is reserved: nothing more, until it is released.
    assert!(matches!(
        b.reserve("r-one-use", 1).await,
        Err(LedgerError::UsedUp)
    ));
    a.release("r-one-use").await.expect("release");
    b.reserve("r-one-use", 1)
        .await
        .expect("reserve after release");
    b.commit("r-one-use").await.expect("commit");
    assert_eq!(a.committed("r-one-use").await.expect("committed"), 1);
    assert!(matches!(
        a.reserve("r-one-use", 1).await,
        Err(LedgerError::UsedUp)
    ));
    // Every event is on record, in the same transaction as the count.
    let client = a.pool().get().await.expect("client");
    let events: i64 = client
        .query_one(
            "SELECT count(*) FROM airlock_ledger_events WHERE key = 'r-one-use'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(events, 4, "reserve, release, reserve, commit");
}

/// Two pools append 2×40 records at once: one chain, which `airlock audit verify` checks;
/// an edited record is then named.
async fn one_audit_chain_from_two_writers(cluster: &Cluster) {
    let url = cluster.database("audit").await;
    let replicas = [replica(&url).await, replica(&url).await];
    let mut tasks = Vec::new();
    for (n, store) in replicas.iter().enumerate() {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            let mut written = 0;
            for i in 0..40 {
                let mut r = airlock::audit::record("test_record");
                r.insert("replica".into(), serde_json::json!(n));
                r.insert("i".into(), serde_json::json!(i));
                if store.audit_append(r.into()).await {
                    written += 1;
                }
            }
            written
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 40, "records written by one replica");
    }
    let verified = postgres::verify_audit(replicas[0].pool())
        .await
        .expect("the chain verifies");
    assert_eq!(verified.records, 80);

    let dir = tempfile::tempdir().expect("dir");
    let config = config_with_database(dir.path(), &url);
    let out = airlock(&config, &["audit", "verify"]);
    assert!(out.status.success(), "audit verify: {}", text(&out));
    assert!(
        text(&out).contains("80 records in PostgreSQL"),
        "{}",
        text(&out)
    );

    // Record 37 edited (its replica number changed): record 38 no longer links to it.
    let client = replicas[0].pool().get().await.expect("client");
    client
        .execute(
            "UPDATE airlock_audit SET record = replace(record, '\"replica\":', '\"replica\": ') WHERE seq = 37",
            &[],
        )
        .await
        .expect("edit");
    let out = airlock(&config, &["audit", "verify"]);
    assert!(
        !out.status.success(),
        "an edited chain verified: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("record 38") && text(&out).contains("record 37 was edited"),
        "{}",
        text(&out)
    );
}

/// A schema a newer airlock made is refused, by the library and by the commands.
async fn a_newer_schema_is_refused(cluster: &Cluster) {
    let url = cluster.database("newer").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = config_with_database(dir.path(), &url);
    let out = airlock(&config, &["db", "migrate"]);
    assert!(out.status.success(), "db migrate: {}", text(&out));
    assert!(
        text(&out).contains(&format!("from version 0 to {SCHEMA_VERSION}")),
        "{}",
        text(&out)
    );
    let out = airlock(&config, &["db", "migrate"]);
    assert!(
        text(&out).contains(&format!("already at version {SCHEMA_VERSION}")),
        "{}",
        text(&out)
    );

    let pool = postgres::pool(&Secret::new(url.as_str())).expect("pool");
    let newer = SCHEMA_VERSION + 1;
    pool.get()
        .await
        .expect("client")
        .execute("UPDATE airlock_schema SET version = $1", &[&newer])
        .await
        .expect("pretend a newer airlock migrated");
    let e = postgres::migrate(&pool).await.expect_err("a newer schema");
    assert!(e.contains("newer than this airlock knows"), "{e}");
    let version: i32 = pool
        .get()
        .await
        .expect("client")
        .query_one("SELECT version FROM airlock_schema", &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, newer, "a refused migration changed the schema");
    for args in [&["db", "migrate"][..], &["audit", "verify"][..]] {
        let out = airlock(&config, args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("newer than this airlock knows"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

/// The database stopped: a reservation fails (not "used up": the gate answers 503) and
/// the audit chain is not writable, each within the pool's bounded wait; started again,
/// both work and the chain still verifies.
async fn a_database_that_is_down_fails_closed(cluster: &Cluster) {
    let url = cluster.database("outage").await;
    let store = replica(&url).await;
    assert!(
        store
            .audit_append(airlock::audit::record("before").into())
            .await
    );
    let out = cluster.pg_ctl_stop("fast");
    assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    let started = Instant::now();
    match store.reserve("r-outage", 1).await {
        Err(LedgerError::Io(..)) => {}
        other => panic!("a reservation with the database down: {other:?}"),
    }
    assert!(
        !store
            .audit_append(airlock::audit::record("during").into())
            .await
    );
    assert!(!store.audit_writable(), "the gate would stay open");
    assert!(store.audit_health().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited {:?} for a database that is down",
        started.elapsed()
    );
    cluster.pg_ctl_start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if store.reserve("r-outage", 1).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the store did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        store
            .audit_append(airlock::audit::record("after").into())
            .await
    );
    assert!(store.audit_writable());
    let verified = postgres::verify_audit(store.pool())
        .await
        .expect("verifies");
    assert_eq!(
        verified.records, 2,
        "the record made while down is not in the chain"
    );
}

/// `serve` with a database refuses to start, naming what is not in it yet.
async fn serve_refuses_a_database_that_holds_only_part_of_the_state(cluster: &Cluster) {
    let url = cluster.database("serve").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = config_with_database(dir.path(), &url);
    let out = airlock(&config, &["serve"]);
    assert!(!out.status.success(), "serve started: {}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("database_url") && said.contains("approvals"),
        "{said}"
    );
}

/// How long a change made through one replica may take to count on another.
const ACROSS_REPLICAS: Duration = Duration::from_secs(1);

/// Waits (bounded by [`ACROSS_REPLICAS`] and a little) until `seen` is true; how long it took,
/// or `None` if it never was.
async fn time_until(mut seen: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < ACROSS_REPLICAS * 3 {
        if seen() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// An enrolled passkey of `name` with a fresh P-256 key, as the enrollment page stores it.
fn passkey_record(name: &str, credential: &[u8]) -> PasskeyRecord {
    use base64::Engine as _;
    let signing = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let key = PasskeyKey::Es256(*signing.verifying_key());
    let public =
        PasskeyPublic::new(name, credential.to_vec(), key.clone(), "localhost").expect("passkey");
    PasskeyRecord {
        name: name.into(),
        key_id: public.key_id().as_str().into(),
        credential_id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential),
        public_key: key.encode(),
        rp_id: "localhost".into(),
        origin: "http://localhost:8444".into(),
        sign_count: 0,
        created_at: "2026-12-05T12:00:00Z".into(),
    }
}

/// Agents, passkeys, enrollments and revocations through two replicas (each a store over
/// its own pool, B following the agents as `serve` does), and the CLI through two configs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identities_are_shared_across_replicas() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("identities").await;
    let a = replica(&url).await;
    let b = Arc::new(
        Arc::into_inner(replica(&url).await)
            .expect("one owner")
            .with_approvers(Vec::new()),
    );
    an_agent_revoked_on_one_replica_is_refused_by_the_other(&url, &a, &b).await;
    an_approver_revoked_on_one_replica_is_untrusted_on_the_other(&a, &b).await;
    a_passkey_counter_advances_once_across_replicas(&a, &b).await;
    an_enrollment_link_works_once_across_replicas(&a, &b).await;
    a_pending_passkey_confirmed_on_one_replica_is_trusted_on_the_other(&a, &b).await;
    each_replicas_own_key_is_trusted_by_all(&a, &b).await;
    the_cli_shares_agents_through_the_database(&cluster).await;
}

async fn an_agent_revoked_on_one_replica_is_refused_by_the_other(
    url: &str,
    a: &PgStore,
    b: &PgStore,
) {
    let Identities::Postgres(b_identities) = b.identities() else {
        panic!("a PostgreSQL store keeps its identities in PostgreSQL");
    };
    // B starts as `serve` does: following the agents, its own key registered once it can.
    let own = airlock::receipt::ApproverKey::generate("airlock").expect("key");
    let registry = follow_agents(b_identities.clone(), &Secret::new(url), Some(own.public()))
        .await
        .expect("follow the agents");
    let mut registered = false;
    for _ in 0..100 {
        if b.trusted_keys().await.expect("trusted keys").len() == 1 {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(registered, "B's own key was not registered within a second");
    let added = a.identities().add_agent("claude").await.expect("add");
    let key = added.access_key_id.clone();
    let known = time_until(|| registry.get(&key).is_some()).await;
    let known = known.expect("the agent added on A is never known on B");
    println!("agent added on replica A: known on replica B after {known:?}");
    assert!(known < ACROSS_REPLICAS, "known on B after {known:?}");
    let on_b = registry.get(&key).expect("known");
    assert_eq!(on_b.name, "claude");
    assert_eq!(
        on_b.secret.expose(),
        added.secret_access_key.expose(),
        "B verifies with the same secret"
    );
    assert!(!b.agent_revoked(&key).await.expect("lookup"));
    assert!(
        a.identities().add_agent("claude").await.is_err(),
        "a second active agent of the same name"
    );

    a.identities().revoke_agent("claude").await.expect("revoke");
    let refused = time_until(|| registry.get(&key).is_none()).await;
    let refused = refused.expect("the key revoked on A is never refused on B");
    println!("agent revoked on replica A: refused on replica B after {refused:?}");
    assert!(refused < ACROSS_REPLICAS, "refused on B after {refused:?}");
    assert!(b.agent_revoked(&key).await.expect("lookup"));
    assert!(
        b.agent_revoked("AIRLOCKNEVERISSUED00")
            .await
            .expect("lookup"),
        "an unknown key counts as revoked"
    );
    let listed = b.identities().agents().await.expect("list").agents;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some(), "revoked agents are kept");

    // An agent bound to two accounts: both keys known on B.
    let accounts = [
        ("staging".to_owned(), "111111111111".to_owned()),
        ("prod".to_owned(), "222222222222".to_owned()),
    ];
    let bound = a
        .identities()
        .add_bound_agent("deployer", &accounts)
        .await
        .expect("bind");
    let both = time_until(|| {
        bound
            .iter()
            .all(|k| registry.get(&k.access_key_id).is_some())
    })
    .await;
    assert!(
        both.is_some_and(|t| t < ACROSS_REPLICAS),
        "B does not know both keys"
    );
    let prod = registry.get(&bound[1].access_key_id).expect("known");
    assert_eq!(prod.account.as_deref(), Some("prod"));
    a.identities()
        .revoke_agent("deployer")
        .await
        .expect("revoke");

    // Without the notification (the follower's connection gone), the poll still finds it.
    let again = a.identities().add_agent("codex").await.expect("add");
    cluster_terminate_listeners(a).await;
    a.identities().revoke_agent("codex").await.expect("revoke");
    let polled = time_until(|| registry.get(&again.access_key_id).is_none()).await;
    let polled = polled.expect("never refused without the notification");
    println!(
        "agent revoked with B's listening connection cut: refused on B after {polled:?} (poll)"
    );
    assert!(polled < ACROSS_REPLICAS, "refused after {polled:?}");
}

/// Ends every listening connection (as a lost connection would), so only polling is left
/// until they are made again.
async fn cluster_terminate_listeners(store: &PgStore) {
    let client = store.pool().get().await.expect("connection");
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate");
}

async fn an_approver_revoked_on_one_replica_is_untrusted_on_the_other(a: &PgStore, b: &PgStore) {
    let carol = passkey_record("carol", b"credential-carol");
    let key_id = KeyId::parse(&carol.key_id).expect("key id");
    a.identities()
        .add_passkey(carol.clone())
        .await
        .expect("enroll");
    let trusted = b.trusted_keys().await.expect("trusted keys");
    assert!(
        trusted.passkeys().any(|p| *p.key_id() == key_id),
        "the passkey enrolled on A is not trusted on B"
    );
    let mut twin = passkey_record("mallory", b"credential-carol");
    twin.sign_count = 1;
    assert!(
        a.identities().add_passkey(twin).await.is_err(),
        "a credential enrolled twice"
    );

    let (removed, ended) = a
        .identities()
        .revoke_approver("carol")
        .await
        .expect("revoke");
    assert_eq!((removed, ended), (1, 0));
    let start = Instant::now();
    let trusted = b.trusted_keys().await.expect("trusted keys");
    let after = start.elapsed();
    assert!(
        !trusted.passkeys().any(|p| *p.key_id() == key_id),
        "the approver revoked on A is still trusted on B"
    );
    println!("approver revoked on replica A: untrusted on replica B at its next read ({after:?})");
    assert!(
        a.trusted_keys().await.is_err(),
        "a store without the config's approvers checks no receipt"
    );
}

async fn a_passkey_counter_advances_once_across_replicas(a: &Arc<PgStore>, b: &Arc<PgStore>) {
    let dana = passkey_record("dana", b"credential-dana");
    let key_id = KeyId::parse(&dana.key_id).expect("key id");
    a.identities().add_passkey(dana).await.expect("enroll");
    a.identities()
        .advance_counter(&key_id, 5)
        .await
        .expect("first use");
    let replay = b.identities().advance_counter(&key_id, 5).await;
    assert!(
        replay.is_err_and(|e| e.contains("signature counter")),
        "the same counter accepted on B"
    );
    // The same assertion shown to both replicas at once, many times: one acceptance.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(if i % 2 == 0 { a } else { b });
        let key_id = key_id.clone();
        tasks.push(tokio::spawn(async move {
            store.identities().advance_counter(&key_id, 6).await.is_ok()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += usize::from(t.await.expect("task"));
    }
    println!("counter 6 shown 16 times over two replicas: accepted {accepted}");
    assert_eq!(accepted, 1);
    let stored = b.identities().passkeys().await.expect("passkeys");
    assert_eq!(stored[0].sign_count, 6);
}

async fn an_enrollment_link_works_once_across_replicas(a: &PgStore, b: &PgStore) {
    let token = a
        .identities()
        .open_enrollment("erin", Duration::from_secs(600))
        .await
        .expect("link");
    let on_b = b.identities().enrollments().await;
    let link = enroll::find_link(&on_b, &token).expect("the link made on A opens on B");
    assert_eq!(link.name, "erin");
    let hash = enroll::token_hash(&token).expect("hash");
    assert!(
        !serde_json::to_string(&on_b).expect("json").contains(&token),
        "the token itself is stored"
    );
    let name = b
        .identities()
        .consume_enrollment(&hash, None)
        .await
        .expect("used on B");
    assert_eq!(name, "erin");
    assert!(
        a.identities()
            .consume_enrollment(&hash, None)
            .await
            .is_err(),
        "the link worked twice"
    );
    assert!(enroll::find_link(&a.identities().enrollments().await, &token).is_none());
}

/// A passkey registered through a link on B waits; confirmed on A, it is trusted on B; the
/// confirmation settles and adds in one step, so a second confirmation finds nothing.
async fn a_pending_passkey_confirmed_on_one_replica_is_trusted_on_the_other(
    a: &PgStore,
    b: &PgStore,
) {
    let token = b
        .identities()
        .open_enrollment("frank", Duration::from_secs(600))
        .await
        .expect("link");
    let hash = enroll::token_hash(&token).expect("hash");
    let passkey = passkey_record("frank", b"credential-frank");
    let pending = enroll::PendingPasskey {
        id: "pending-frank".into(),
        passkey: passkey.clone(),
        registered_at: passkey.created_at.clone(),
        remote_addr: "127.0.0.1:50000".into(),
        user_agent: "test".into(),
        until: i64::MAX,
    };
    b.identities()
        .consume_enrollment(&hash, Some(pending))
        .await
        .expect("registered on B");
    let untrusted = b.trusted_keys().await.expect("trusted keys");
    assert!(
        !untrusted
            .passkeys()
            .any(|p| p.key_id().as_str() == passkey.key_id),
        "a pending passkey is trusted"
    );
    let waiting = enroll::waiting_in(a.identities().enrollments().await);
    assert_eq!(waiting.len(), 1, "A does not see the passkey waiting");
    let (_, added) = a
        .identities()
        .settle_pending(enroll::Settlement {
            id: "pending-frank",
            key_id: &passkey.key_id,
            confirmed: true,
            by: "dana",
        })
        .await
        .expect("confirmed on A");
    assert!(added.is_some());
    let trusted = b.trusted_keys().await.expect("trusted keys");
    assert!(
        trusted
            .passkeys()
            .any(|p| p.key_id().as_str() == passkey.key_id),
        "the passkey confirmed on A is not trusted on B"
    );
    assert!(
        b.identities()
            .settle_pending(enroll::Settlement {
                id: "pending-frank",
                key_id: &passkey.key_id,
                confirmed: true,
                by: "dana",
            })
            .await
            .is_err(),
        "confirmed twice"
    );
}

async fn each_replicas_own_key_is_trusted_by_all(a: &PgStore, b: &PgStore) {
    let before = b.trusted_keys().await.expect("trusted").len();
    for store in [a, b] {
        let own = airlock::receipt::ApproverKey::generate("airlock").expect("key");
        for _restart in 0..2 {
            store
                .identities()
                .register_airlock_key(&own.public())
                .await
                .expect("register");
        }
    }
    let after = b.trusted_keys().await.expect("trusted").len();
    assert_eq!(
        after,
        before + 2,
        "B does not trust both replicas' own keys (each registered twice)"
    );
}

async fn the_cli_shares_agents_through_the_database(cluster: &Cluster) {
    let url = cluster.database("identities_cli").await;
    let one = tempfile::tempdir().expect("dir");
    let two = tempfile::tempdir().expect("dir");
    let first = config_with_database(one.path(), &url);
    let second = config_with_database(two.path(), &url);
    let out = airlock(&first, &["db", "migrate"]);
    assert!(out.status.success(), "db migrate: {}", text(&out));
    let out = airlock(&first, &["agent", "add", "ci-runner", "--json"]);
    assert!(out.status.success(), "agent add: {}", text(&out));
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let key = env["AWS_ACCESS_KEY_ID"]
        .as_str()
        .expect("key id")
        .to_owned();
    assert!(
        !holds_file(one.path(), "agents.json", 4),
        "the agent went to a file, not to the database"
    );

    let listed = |config: &Path| -> serde_json::Value {
        let out = airlock(config, &["agent", "list", "--json"]);
        assert!(out.status.success(), "agent list: {}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!said.contains("SECRET"), "agent list shows secrets: {said}");
        serde_json::from_str(&said).expect("json")
    };
    let seen = listed(&second);
    assert_eq!(seen[0]["name"], "ci-runner", "{seen}");
    assert_eq!(seen[0]["access_key_id"], key.as_str());
    assert!(seen[0]["revoked_at"].is_null());

    let out = airlock(&second, &["agent", "revoke", "ci-runner"]);
    assert!(out.status.success(), "agent revoke: {}", text(&out));
    let seen = listed(&first);
    assert!(
        seen[0]["revoked_at"].is_string(),
        "revoked through the second config, still active for the first: {seen}"
    );
    let out = airlock(&first, &["approver", "revoke", "nobody"]);
    assert!(!out.status.success(), "revoked an approver that never was");

    // An enrollment link made through one config is in the database; an approver revoked
    // through the other loses its passkeys there, and the revocation is in the shared chain.
    let out = airlock(&first, &["approver", "enroll", "gina"]);
    assert!(out.status.success(), "approver enroll: {}", text(&out));
    let store = replica(&url).await;
    let links = store.identities().enrollments().await;
    assert!(
        links.len() == 1 && links[0].name == "gina",
        "the link is not in the database"
    );
    store
        .identities()
        .add_passkey(passkey_record("gina", b"credential-gina"))
        .await
        .expect("enroll");
    let out = airlock(&second, &["approver", "list", "--json"]);
    assert!(out.status.success(), "approver list: {}", text(&out));
    let approvers: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        approvers
            .as_array()
            .expect("list")
            .iter()
            .any(|a| a["name"] == "gina" && a["kind"] == "passkey"),
        "gina's passkey is not listed through the other config: {approvers}"
    );
    let out = airlock(&second, &["approver", "revoke", "gina"]);
    assert!(out.status.success(), "approver revoke: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passkey(s) removed, 1 open link(s)"),
        "{}",
        text(&out)
    );
    assert!(store
        .identities()
        .passkeys()
        .await
        .expect("passkeys")
        .is_empty());
    let verified = postgres::verify_audit(store.pool()).await.expect("chain");
    assert_eq!(verified.records, 1, "the revocation is not in the chain");
}

/// Whether `name` is anywhere under `dir` (at most `depth` levels down).
fn holds_file(dir: &Path, name: &str, depth: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        path.file_name().is_some_and(|n| n == name)
            || (depth > 0 && path.is_dir() && holds_file(&path, name, depth - 1))
    })
}
