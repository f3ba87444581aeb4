//! The PostgreSQL store against a real PostgreSQL: a private cluster (`pg::Cluster`).
//!
//! What it proves: single use is the database's (concurrent reservers over two pools, as
//! two replicas would be, get exactly `uses` successes); the audit chain stays one chain
//! when two pools append at once, `airlock audit verify` checks it and names the first
//! bad record; a schema newer than airlock knows is refused by `migrate`, by
//! `airlock db migrate` and by `audit verify`; a database that goes down fails the ledger
//! and the audit closed, and both work again once it is back; `serve` refuses a
//! `database_url` while the page's approvals and agents are not in the database; a URL that requires
//! TLS is never served in plaintext; pending approvals are shared (one approval for the
//! same blocked call from two replicas, a decision through one wakes a call held on the
//! other within a second).

#![allow(clippy::expect_used)]

mod pg;

use airlock::identify::AwsCall;
use airlock::policy::{Decision, Effect, Policy};
use airlock::secret::Secret;
use airlock::state::approvals::{ApprovalError, Signed, Status};
use airlock::state::ledger::LedgerError;
use airlock::store::postgres::{self, SCHEMA_VERSION};
use airlock::store::{BlockedCall, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg::{airlock, config_with_database, listening_replica, replica, text, Cluster};

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
        said.contains("database_url") && said.contains("approvals") && said.contains("agents"),
        "{said}"
    );
}
