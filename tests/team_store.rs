//! The PostgreSQL store against a real PostgreSQL: a private cluster (`pg::Cluster`).
//!
//! What it proves: single use is the database's (concurrent reservers over two pools, as
//! two replicas would be, get exactly `uses` successes); the audit chain stays one chain
//! when two pools append at once, `airlock audit verify` checks it and names the first
//! bad record; a schema newer than airlock knows is refused by `migrate`, by
//! `airlock db migrate` and by `audit verify`; a database that goes down fails the ledger
//! and the audit closed, and both work again once it is back; a URL that requires
//! TLS is never served in plaintext; pending approvals are shared (one approval for the
//! same blocked call from two replicas, a decision through one wakes a call held on the
//! other within a second). And the failure behaviour of `serve`'s store (`PgStore::open`):
//! made while the database is down, it refuses reservations and spools audit records,
//! replayed in order (also after a restart) once the database is back; the database
//! stopped and started under two replicas' streams of appends, or turned read-only, loses
//! no record and the chain verifies; a replica killed with SIGKILL (a child process) loses
//! no record it answered. `airlock db import`/`export` move a file state (made by the file
//! store's own code, its log trimmed by retention) into an empty database and back. A
//! decision never replaces a receipt already issued (only its own quorum's); a schema that
//! a newer airlock migrated under a serving replica closes its gate until the version is
//! one it knows; a second `serve` on a state dir another uses is refused, saying why,
//! before it writes there.

#![allow(clippy::expect_used)]

mod pg;

use airlock::identify::AwsCall;
use airlock::policy::{Decision, Effect, Policy};
use airlock::secret::Secret;
use airlock::state::approvals::{ApprovalError, Signed, Status};
use airlock::state::ledger::LedgerError;
use airlock::store::postgres::{self, PgStore, SCHEMA_VERSION};
use airlock::store::{BlockedCall, Store};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg::{
    airlock, config_with_database, free_port, listening_replica, passkey_record, path_str, replica,
    text, Cluster,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_store_holds_across_replicas() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    single_use_is_the_databases(&cluster).await;
    one_audit_chain_from_two_writers(&cluster).await;
    concurrent_appends_are_group_committed_in_one_chain(&cluster).await;
    only_allowed_calls_records_commit_asynchronously(&cluster).await;
    a_newer_schema_is_refused(&cluster).await;
    a_database_that_is_down_fails_closed(&cluster).await;
    a_url_that_requires_tls_never_falls_back_to_plaintext(&cluster).await;
    one_approval_per_blocked_call_across_replicas(&cluster).await;
    a_store_opened_while_the_database_is_down_spools_and_replays(&cluster).await;
    an_outage_under_a_stream_of_appends_loses_nothing(&cluster).await;
    a_read_only_database_spools_and_refuses_gated_calls(&cluster).await;
    a_killed_replica_loses_no_record_it_answered(&cluster).await;
    import_and_export_move_the_state_whole(&cluster).await;
    a_decision_never_replaces_an_issued_receipt(&cluster).await;
    a_schema_upgraded_under_a_serving_replica_closes_its_gate(&cluster).await;
    one_serve_per_state_dir(&cluster).await;
}

/// Bounded waits: a held lock, a drain under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_postgres_store_never_waits_unbounded() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    a_held_chain_lock_spools_the_record_and_the_call_goes_on(&cluster).await;
    a_drain_under_a_stream_of_records_finishes_each_file(&cluster).await;
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
                // Reserved by the others, none committed: in flight.
                Err(LedgerError::InFlight { .. }) => {}
                Err(e) => panic!("a reservation failed for another reason: {e}"),
            }
        }
        assert_eq!(reserved, uses, "{receipt}: reservations that succeeded");
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    // The one use of r-one-use is reserved: nothing more, until it is released. It is in
    // flight (the call holding it may give it back), not used up.
    match b.reserve("r-one-use", 1).await {
        Err(LedgerError::InFlight { idle }) => {
            assert!(idle < Duration::from_secs(30), "idle for {idle:?}")
        }
        other => panic!("a use reserved on another replica: {other:?}"),
    }
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

/// Two replicas, each with 16 writers appending 50 records one after another (every tenth
/// one durable), on a database whose `synchronous_commit` is off: all 1,600 answered, each
/// writer's records in the chain in its order, once each, in fewer transactions than
/// records, and `airlock audit verify` checks the chain. Then the grouping itself: while
/// another session holds the chain's lock, one append waits for it and 40 more queue behind;
/// once the lock is let go they are committed in exactly two transactions (the waiting one,
/// then the 40 together), in the order they were queued. And replicas taking turns: each
/// goes on after the other's records, never over them.
async fn concurrent_appends_are_group_committed_in_one_chain(cluster: &Cluster) {
    let url = cluster.database("group_commit").await;
    let admin_pool = postgres::pool(&Secret::new(&url)).expect("pool");
    let admin = admin_pool.get().await.expect("client");
    // Before the replicas connect: their sessions commit asynchronously.
    admin
        .batch_execute("ALTER DATABASE group_commit SET synchronous_commit = off")
        .await
        .expect("synchronous_commit off");
    let replicas = [replica(&url).await, replica(&url).await];
    const WRITERS: usize = 16;
    const EACH: u64 = 50;
    let mut tasks = Vec::new();
    for (n, store) in replicas.iter().enumerate() {
        for w in 0..WRITERS {
            let store = Arc::clone(store);
            tasks.push(tokio::spawn(async move {
                let name = format!("r{n}-w{w}");
                let mut answered = 0;
                for i in 0..EACH {
                    let record = numbered("grouped", &name, i);
                    let ok = if i % 10 == 9 {
                        store.audit_append_durable(record).await
                    } else {
                        store.audit_append(record).await
                    };
                    answered += u64::from(ok);
                }
                answered
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.expect("writer"), EACH, "records not answered");
    }
    let records = chain(&url).await;
    for n in 0..2 {
        for w in 0..WRITERS {
            assert_eq!(
                numbers(&records, "grouped", &format!("r{n}-w{w}")),
                (0..EACH).collect::<Vec<_>>(),
                "writer r{n}-w{w}'s records are not all in the chain, in order, once each"
            );
        }
    }
    let total = 2 * WRITERS as u64 * EACH;
    assert_eq!(records.len() as u64, total);
    let transactions: i64 = admin
        .query_one("SELECT count(DISTINCT xmin::text) FROM airlock_audit", &[])
        .await
        .expect("transactions")
        .get(0);
    println!(
        "{total} records from {} writers on 2 replicas in {transactions} transactions",
        2 * WRITERS
    );
    assert!(
        (transactions as u64) < total,
        "{transactions} transactions for {total} records: nothing was grouped"
    );
    let dir = tempfile::tempdir().expect("dir");
    let config = config_with_database(dir.path(), &url);
    let out = airlock(&config, &["audit", "verify"]);
    assert!(
        out.status.success() && text(&out).contains(&format!("{total} records in PostgreSQL")),
        "audit verify: {}",
        text(&out)
    );

    // The chain's lock held elsewhere: the first append waits for it, 40 more queue.
    let mut holder = replicas[1].pool().get().await.expect("client");
    let held = holder.transaction().await.expect("transaction");
    held.execute("SELECT pg_advisory_xact_lock($1)", &[&postgres::AUDIT_LOCK])
        .await
        .expect("lock");
    let store = Arc::clone(&replicas[0]);
    let first = tokio::spawn(async move { store.audit_append(numbered("queued", "q", 0)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut queued = Vec::new();
    for i in 1..=40 {
        let store = Arc::clone(&replicas[0]);
        queued.push(tokio::spawn(async move {
            store.audit_append(numbered("queued", "q", i)).await
        }));
        // Queued in this order (each task sends before the next is spawned).
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !first.is_finished(),
        "an append went on while the chain's lock was held"
    );
    held.rollback().await.expect("let go of the lock");
    assert!(first.await.expect("first"));
    for q in queued {
        assert!(q.await.expect("queued"), "a queued record was not appended");
    }
    let rows = admin
        .query(
            "SELECT xmin::text, record FROM airlock_audit
             WHERE record::jsonb->>'event' = 'queued' ORDER BY seq",
            &[],
        )
        .await
        .expect("queued rows");
    let order: Vec<u64> = rows
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r.get(1)).expect("json");
            v["i"].as_u64().expect("i")
        })
        .collect();
    assert_eq!(
        order,
        (0..=40).collect::<Vec<_>>(),
        "not in the order queued"
    );
    let xmins: std::collections::BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        xmins.len(),
        2,
        "41 appends queued behind a held lock took {} transactions, not 2",
        xmins.len()
    );
    // Turns: each replica's next batch finds the chain moved on by the other's since its
    // own last one (its one-statement append writes nothing, the read under the lock
    // follows), and a replica appending twice in a row goes on from where it left off.
    for (turn, r) in [0usize, 1, 1, 0, 0, 1, 0].into_iter().enumerate() {
        assert!(
            replicas[r]
                .audit_append(numbered("turn", "t", turn as u64))
                .await,
            "turn {turn} on replica {r}"
        );
    }
    let records = chain(&url).await;
    assert_eq!(numbers(&records, "turn", "t"), (0..7).collect::<Vec<_>>());
    postgres::verify_audit(replicas[0].pool())
        .await
        .expect("the chain verifies");
}

/// The database at its default `synchronous_commit` (`on`), with a synchronous standby
/// required that never connects, so every commit made under `on` waits: audit records that
/// need not be durable are answered all the same (the appender's own session commits with
/// `synchronous_commit = off`), while a durable record and a ledger reservation wait, as
/// the database's setting says. Every connection the pool hands out after 200 such appends
/// still has `on` (the appender's setting never reached the pool), and once no standby is
/// required the waiting writes are answered.
async fn only_allowed_calls_records_commit_asynchronously(cluster: &Cluster) {
    let url = cluster.database("async_audit").await;
    let store = replica(&url).await;
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let standby = |names: &'static str| {
        let admin = &admin;
        async move {
            let set = if names.is_empty() {
                "ALTER SYSTEM RESET synchronous_standby_names".to_string()
            } else {
                format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'")
            };
            admin.batch_execute(&set).await.expect("alter system");
            admin
                .batch_execute("SELECT pg_reload_conf()")
                .await
                .expect("reload");
            // The backends and the checkpointer (which tells them a standby is required)
            // read the new setting within moments.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    standby("airlock_never_connects").await;

    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let name = format!("w{w}");
            let mut answered = 0;
            for i in 0..25 {
                answered += u64::from(store.audit_append(numbered("async", &name, i)).await);
            }
            answered
        }));
    }
    for t in tasks {
        let answered = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("audit records waited for the synchronous standby")
            .expect("writer");
        assert_eq!(answered, 25, "records not answered");
    }

    let pool = store.pool();
    let mut clients = Vec::new();
    for _ in 0..pool.status().max_size {
        clients.push(pool.get().await.expect("pooled connection"));
    }
    for client in &clients {
        let setting: String = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(setting, "on", "a pooled connection's synchronous_commit");
    }
    drop(clients);

    let durable = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            store
                .audit_append_durable(numbered("durable", "d", 0))
                .await
        })
    };
    let reserved = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.reserve("r-sync", 1).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !durable.is_finished(),
        "a durable record was answered before the synchronous standby had it"
    );
    assert!(
        !reserved.is_finished(),
        "a reservation was answered before the synchronous standby had it"
    );
    standby("").await;
    let durable = tokio::time::timeout(Duration::from_secs(10), durable)
        .await
        .expect("the durable record, once no standby is required")
        .expect("task");
    assert!(durable, "the durable record was not appended");
    tokio::time::timeout(Duration::from_secs(10), reserved)
        .await
        .expect("the reservation, once no standby is required")
        .expect("task")
        .expect("reserve");
    let records = chain(&url).await;
    for w in 0..8 {
        assert_eq!(
            numbers(&records, "async", &format!("w{w}")),
            (0..25).collect::<Vec<_>>()
        );
    }
    assert_eq!(numbers(&records, "durable", "d"), vec![0]);
    postgres::verify_audit(store.pool())
        .await
        .expect("the chain verifies");
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

/// A decision wakes only the calls held on the approval it decided (the `NOTIFY` names
/// it), and what the page and the CLI list and read is the database's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decision_wakes_only_the_calls_held_on_its_approval() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("wakeups").await;
    let (a, b) = (listening_replica(&url).await, listening_replica(&url).await);
    let (call, decision) = blocked_delete_table();
    let (x, _) = a
        .find_or_open_pending(blocked("binding-x", &call, &decision))
        .await
        .expect("open x");
    let (y, _) = a
        .find_or_open_pending(blocked("binding-y", &call, &decision))
        .await
        .expect("open y");
    let pending: std::collections::BTreeSet<String> = b
        .list_approvals(Some(0))
        .await
        .expect("list")
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(pending, [x.id.clone(), y.id.clone()].into(), "the pending");

    let hold = |id: String| {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            (b.wait_resolved(&id, deadline).await, Instant::now())
        })
    };
    let approve = |who: &'static str| -> airlock::store::SignStep<'static> {
        Box::new(move |_, _| {
            Ok(Signed {
                receipt_id: format!("rcpt-{who}"),
                receipt_json: b"{}".to_vec(),
                status: Status::Approved,
                approved_by: vec![who.into()],
                decided_by: who.into(),
            })
        })
    };
    let held = hold(x.id.clone());
    // Both listeners listening, the held call waiting (its first look done).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = b.wakeups();
    a.decide(&y.id, approve("alice")).await.expect("decide y");
    // Well inside the held call's 2 s poll: only a wake-up could make it look again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.wakeups(),
        before,
        "a decision on y woke calls held on x on the other replica"
    );
    assert!(
        !held.is_finished(),
        "the call held on x went on after y's decision"
    );

    let decided_at = Instant::now();
    a.decide(&x.id, approve("bob")).await.expect("decide x");
    let (woke, at) = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the call held on x was not woken within 5 s")
        .expect("task");
    assert!(woke, "the held call did not see x's decision");
    let waited = at.saturating_duration_since(decided_at);
    println!("a call held on x went on {waited:?} after x's decision on the other replica");
    assert!(
        waited < Duration::from_secs(1),
        "the held call went on {waited:?} after x's decision (NOTIFY did not wake it)"
    );
    assert_eq!(b.wakeups(), before + 1, "x's decision woke its calls once");
    assert!(b.list_approvals(Some(0)).await.expect("list").is_empty());
    assert_eq!(b.list_approvals(None).await.expect("list").len(), 2);
    assert_eq!(b.list_approvals(Some(1)).await.expect("list").len(), 1);
    let seen = b.get_approval(&x.id).await.expect("get");
    assert_eq!(
        (seen.status, seen.decided_by.as_deref()),
        (Status::Approved, Some("bob"))
    );
    assert!(matches!(
        b.get_approval("nosuchapproval").await,
        Err(ApprovalError::NotFound(_))
    ));

    // The listening connection lost: a decision still reaches the held call, by the poll
    // or once the listener is back.
    let (z, _) = a
        .find_or_open_pending(blocked("binding-z", &call, &decision))
        .await
        .expect("open z");
    let held = hold(z.id.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = a.pool().get().await.expect("client");
    let ended = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query LIKE 'LISTEN airlock%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate the listeners");
    assert_eq!(ended.len(), 2, "two listening connections");
    a.decide(&z.id, approve("carol")).await.expect("decide z");
    let (woke, _) = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the call held on z was stranded without its listener")
        .expect("task");
    assert!(woke);
}

/// `serve`'s store over `url`, its spool in `state`.
fn serving_replica(url: &str, state: &Path) -> Arc<PgStore> {
    Arc::new(PgStore::open(&Secret::new(url), state).expect("open the store"))
}

/// Waits until every spooled record is in the chain and the gate is open again.
async fn until_drained(store: &PgStore) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !store.audit_writable() {
        assert!(
            Instant::now() < deadline,
            "the spool was not drained within 60 s of the database being back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The chain's records as JSON, in `seq` order.
async fn chain(url: &str) -> Vec<serde_json::Value> {
    let pool = postgres::pool(&Secret::new(url)).expect("pool");
    let client = pool.get().await.expect("client");
    client
        .query("SELECT record FROM airlock_audit ORDER BY seq", &[])
        .await
        .expect("chain")
        .iter()
        .map(|row| serde_json::from_str(row.get::<_, &str>(0)).expect("a JSON record"))
        .collect()
}

/// The `i` of each record of `event` by `writer`, in chain order.
fn numbers(chain: &[serde_json::Value], event: &str, writer: &str) -> Vec<u64> {
    chain
        .iter()
        .filter(|r| r["event"] == event && r["writer"] == writer)
        .map(|r| r["i"].as_u64().expect("i"))
        .collect()
}

fn numbered(event: &str, writer: &str, i: u64) -> airlock::audit::Fields {
    let mut r = airlock::audit::record(event);
    r.insert("writer".into(), serde_json::json!(writer));
    r.insert("i".into(), serde_json::json!(i));
    r.into()
}

/// A client that holds the audit chain's lock and does nothing (stuck, or a transaction
/// left open) holds up no call: the record is given up on within seconds and spooled, the
/// records after it are spooled behind it at once, calls that need a receipt are refused
/// meanwhile, and once the lock is released every record reaches the chain, in order. The
/// pooled connections carry the server's own bounds.
async fn a_held_chain_lock_spools_the_record_and_the_call_goes_on(cluster: &Cluster) {
    let url = cluster.database("held_lock").await;
    let state = tempfile::tempdir().expect("state");
    let store = serving_replica(&url, state.path());
    until_drained(&store).await;
    {
        let client = store.pool().get().await.expect("client");
        for (setting, value) in [
            ("statement_timeout", "15s"),
            ("lock_timeout", "10s"),
            ("idle_in_transaction_session_timeout", "30s"),
        ] {
            let row = client
                .query_one(&format!("SHOW {setting}"), &[])
                .await
                .expect("show");
            assert_eq!(row.get::<_, &str>(0), value, "{setting}");
        }
    }
    assert!(store.audit_append(numbered("locked", "one", 0)).await);

    let (holder, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    // The chain's lock (`AUDIT_LOCK`), taken in a transaction that is then left open.
    holder
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(x'6169726c6f636b01'::bigint)")
        .await
        .expect("take the chain's lock");
    let started = Instant::now();
    let answered = tokio::time::timeout(
        Duration::from_secs(8),
        store.audit_append(numbered("locked", "one", 1)),
    )
    .await
    .expect("the append waited on the held lock: its call would never be answered");
    let waited = started.elapsed();
    println!("an audit append while another client holds the chain's lock: answered after {waited:?} (spooled)");
    assert!(answered, "record 1 lost");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
    assert!(
        !store.audit_writable(),
        "calls that need a receipt are served while a record waits in the spool"
    );
    for i in 2..5 {
        let started = Instant::now();
        assert!(store.audit_append(numbered("locked", "one", i)).await);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "record {i} waited on the lock too"
        );
    }
    holder.batch_execute("COMMIT").await.expect("release");
    until_drained(&store).await;
    assert!(store.audit_append(numbered("locked", "one", 5)).await);
    let records = chain(&url).await;
    assert_eq!(
        numbers(&records, "locked", "one"),
        (0..6).collect::<Vec<_>>(),
        "records out of order, twice or lost"
    );
    postgres::verify_audit(store.pool())
        .await
        .expect("the chain verifies");
}

/// Records keep coming while the spool is drained (a backlog from an earlier run, then the
/// records of calls answered meanwhile, which queue behind it): each spool file the keeper
/// picks is finished and removed while they still come, rather than read again and again
/// as it grows, and every record reaches the chain once, in order.
async fn a_drain_under_a_stream_of_records_finishes_each_file(cluster: &Cluster) {
    let url = cluster.database("drain_stream").await;
    let state = tempfile::tempdir().expect("state");
    const BACKLOG: u64 = 3000;
    {
        let spool = postgres::spool::Spool::open(state.path()).expect("spool");
        for i in 0..BACKLOG {
            spool
                .append(&numbered("backlog", "one", i), false)
                .expect("append");
        }
    }
    let store = serving_replica(&url, state.path());
    let spool_dir = state.path().join(postgres::spool::SPOOL_DIR);
    let files_at_start: Vec<_> = std::fs::read_dir(&spool_dir)
        .expect("spool dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files_at_start.len(), 2, "the backlog's file and this run's");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let started = Instant::now();
            let mut i = 0;
            // As fast as they can be written (a drain of the file being written would never
            // find it unchanged), bounded: at most 20 s, at most 100 000 records.
            while !stop.load(std::sync::atomic::Ordering::SeqCst)
                && started.elapsed() < Duration::from_secs(20)
                && i < 100_000
            {
                assert!(store.audit_append(numbered("stream", "one", i)).await);
                i += 1;
                tokio::task::yield_now().await;
            }
            i
        })
    };
    let started = Instant::now();
    while files_at_start.iter().any(|f| f.exists()) {
        assert!(
            !writer.is_finished(),
            "the spool files there at start were not drained while records kept coming"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "the spool's files at start drained after {:?} while records kept coming",
        started.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let streamed = writer.await.expect("writer");
    until_drained(&store).await;
    println!("{streamed} records appended during the drain");
    let records = chain(&url).await;
    assert_eq!(
        numbers(&records, "backlog", "one"),
        (0..BACKLOG).collect::<Vec<_>>()
    );
    assert_eq!(
        numbers(&records, "stream", "one"),
        (0..streamed).collect::<Vec<_>>(),
        "records appended during the drain are not all in the chain, in order, once each"
    );
    postgres::verify_audit(store.pool())
        .await
        .expect("the chain verifies");
}

/// A reservation refused for want of the database (the gate's 503), never "used up".
async fn reserve_fails_closed(store: &PgStore, key: &str) {
    match store.reserve(key, 1).await {
        Err(LedgerError::Io(..)) => {}
        other => panic!("a reservation without the database: {other:?}"),
    }
}

/// `serve`'s store is made while the database is down (no contact at all): gated steps
/// fail closed, audit records wait in the spool; a second store over the same state dir
/// (a restart) finds them and appends them before its own; once the database is up the
/// schema is migrated and the chain holds every record in order.
async fn a_store_opened_while_the_database_is_down_spools_and_replays(cluster: &Cluster) {
    let url = cluster.database("spool_at_start").await;
    let state = tempfile::tempdir().expect("state");
    let out = cluster.pg_ctl_stop("fast");
    assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    let started = Instant::now();
    let store = serving_replica(&url, state.path());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "opening waited for the database"
    );
    reserve_fails_closed(&store, "r-at-start").await;
    assert!(
        !store.audit_writable(),
        "the gate is open without a database"
    );
    for i in 0..5 {
        assert!(
            store.audit_append(numbered("early", "one", i)).await,
            "record {i} lost"
        );
    }
    // A restart with records in the spool: they stay ahead of the new run's.
    drop(store);
    let store = serving_replica(&url, state.path());
    for i in 5..10 {
        assert!(
            store
                .audit_append_durable(numbered("early", "one", i))
                .await
        );
    }
    assert!(!store.audit_writable());
    cluster.pg_ctl_start();
    until_drained(&store).await;
    assert!(store.audit_append(numbered("early", "one", 10)).await);
    store
        .reserve("r-at-start", 1)
        .await
        .expect("reserve once it is back");
    let records = chain(&url).await;
    assert_eq!(
        numbers(&records, "early", "one"),
        (0..=10).collect::<Vec<_>>()
    );
    // Each run's start first, then its records: the first run's before the second's.
    let events: Vec<String> = records
        .iter()
        .map(|r| match r["event"].as_str() {
            Some("early") => format!("early {}", r["i"]),
            other => other.unwrap_or("?").to_string(),
        })
        .collect();
    let mut expected = vec!["serve_started".to_string()];
    expected.extend((0..5).map(|i| format!("early {i}")));
    expected.push("serve_started".into());
    expected.extend((5..=10).map(|i| format!("early {i}")));
    assert_eq!(events, expected, "records out of order, twice or lost");
    postgres::verify_audit(store.pool())
        .await
        .expect("the chain verifies");
    let spooled = std::fs::read_dir(state.path().join(postgres::spool::SPOOL_DIR))
        .expect("spool dir")
        .count();
    assert_eq!(spooled, 0, "a drained spool file was left behind");
}

/// Two replicas, each with its spool, append a stream of records while the database is
/// stopped and started under them: every record answered is in the one chain, each
/// replica's in its own order, none twice; reservations during the outage fail closed.
async fn an_outage_under_a_stream_of_appends_loses_nothing(cluster: &Cluster) {
    let url = cluster.database("spool_stream").await;
    let states = [
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    ];
    let replicas = [
        serving_replica(&url, states[0].path()),
        serving_replica(&url, states[1].path()),
    ];
    for r in &replicas {
        until_drained(r).await;
    }
    const RECORDS: u64 = 400;
    let mut writers = Vec::new();
    for (n, store) in replicas.iter().enumerate() {
        let store = Arc::clone(store);
        writers.push(tokio::spawn(async move {
            let name = format!("replica-{n}");
            let mut answered = 0;
            for i in 0..RECORDS {
                if store.audit_append(numbered("stream", &name, i)).await {
                    answered += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out = cluster.pg_ctl_stop("fast");
    assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    reserve_fails_closed(&replicas[0], "r-stream").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in &replicas {
        assert!(
            !r.audit_writable(),
            "the gate is open while the database is down"
        );
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cluster.pg_ctl_start();
    for w in writers {
        assert_eq!(w.await.expect("writer"), RECORDS, "records not answered");
    }
    for r in &replicas {
        until_drained(r).await;
    }
    let records = chain(&url).await;
    for n in 0..2 {
        assert_eq!(
            numbers(&records, "stream", &format!("replica-{n}")),
            (0..RECORDS).collect::<Vec<_>>(),
            "replica {n}'s records are not all in the chain, in order, once each"
        );
    }
    let verified = postgres::verify_audit(replicas[0].pool())
        .await
        .expect("the chain verifies");
    // And each replica's start.
    assert_eq!(verified.records, 2 * RECORDS + 2);
    println!(
        "an outage under 2×{RECORDS} appends: all {} records in one verified chain",
        verified.records
    );
}

/// A database that turns read-only (as a standby is) refuses reservations and takes no
/// audit record: they are spooled and appended once it is writable again.
async fn a_read_only_database_spools_and_refuses_gated_calls(cluster: &Cluster) {
    let url = cluster.database("read_only").await;
    let state = tempfile::tempdir().expect("state");
    let store = serving_replica(&url, state.path());
    until_drained(&store).await;
    assert!(store.audit_append(numbered("ro", "one", 0)).await);
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    // One statement per call: ALTER SYSTEM cannot run in the implicit transaction of a
    // batch.
    for statement in [
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(statement).await.expect("read-only");
    }
    // Reloaded by every backend shortly after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    reserve_fails_closed(&store, "r-read-only").await;
    for i in 1..4 {
        assert!(store.audit_append(numbered("ro", "one", i)).await);
    }
    assert!(
        !store.audit_writable(),
        "the gate is open on a read-only database"
    );
    for statement in [
        "SET default_transaction_read_only = off",
        "ALTER SYSTEM RESET default_transaction_read_only",
        "SELECT pg_reload_conf()",
    ] {
        admin
            .batch_execute(statement)
            .await
            .expect("writable again");
    }
    until_drained(&store).await;
    store.reserve("r-read-only", 1).await.expect("reserve");
    let records = chain(&url).await;
    assert_eq!(numbers(&records, "ro", "one"), vec![0, 1, 2, 3]);
    postgres::verify_audit(store.pool())
        .await
        .expect("verifies");
}

/// The environment that makes [`spool_child_appends_until_killed`] do its work.
const SPOOL_CHILD: &str = "AIRLOCK_TEST_SPOOL_CHILD_STATE";

/// Run only by [`a_killed_replica_loses_no_record_it_answered`], as a process of its own:
/// appends numbered records to a store whose database cannot be reached, saying on stdout
/// each one that was answered, until it is killed (at most 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of a_killed_replica_loses_no_record_it_answered"]
async fn spool_child_appends_until_killed() {
    use std::io::Write;
    let state = std::env::var(SPOOL_CHILD).expect("run by the parent test only");
    // The log `serve` would write, for the parent to read.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let url = format!("postgres://airlock@127.0.0.1:{}/nowhere", free_port());
    let store = PgStore::open(&Secret::new(url), Path::new(&state)).expect("open");
    let until = Instant::now() + Duration::from_secs(60);
    let mut out = std::io::stdout();
    for i in 0.. {
        if Instant::now() > until {
            break;
        }
        assert!(store.audit_append(numbered("killed", "child", i)).await);
        writeln!(out, "answered {i}").expect("stdout");
        out.flush().expect("flush");
    }
}

/// A replica killed with SIGKILL while its records wait in the spool: a new run over the
/// same state dir appends every record the killed one answered, in order, once each.
async fn a_killed_replica_loses_no_record_it_answered(cluster: &Cluster) {
    use std::io::BufRead;
    let url = cluster.database("spool_killed").await;
    let state = tempfile::tempdir().expect("state");
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--ignored",
            "--exact",
            "spool_child_appends_until_killed",
            "--nocapture",
        ])
        .env(SPOOL_CHILD, state.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(state.path().join("child.log")).expect("log"))
        .spawn()
        .expect("child");
    let stdout = child.stdout.take().expect("stdout");
    let mut answered: Option<u64> = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        if let Some(i) = line.strip_prefix("answered ") {
            answered = Some(i.parse().expect("a number"));
            if answered >= Some(300) {
                child.kill().expect("SIGKILL");
                break;
            }
        }
    }
    child.wait().expect("wait");
    let answered = answered.expect("the child answered records");
    // It said, once, that the database cannot be reached and what that means for calls.
    let log = std::fs::read_to_string(state.path().join("child.log")).expect("log");
    assert_eq!(
        log.matches("PostgreSQL cannot be reached or used").count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("calls that need a receipt are refused (503)")
            && log.contains("allowed calls are still served"),
        "{log}"
    );
    let store = serving_replica(&url, state.path());
    until_drained(&store).await;
    let records = chain(&url).await;
    let kept = numbers(&records, "killed", "child");
    assert!(
        kept.len() as u64 > answered,
        "records answered before SIGKILL were lost: {} of {}",
        kept.len(),
        answered + 1
    );
    assert_eq!(
        kept,
        (0..kept.len() as u64).collect::<Vec<_>>(),
        "out of order or twice"
    );
    postgres::verify_audit(store.pool())
        .await
        .expect("verifies");
    println!(
        "SIGKILL after {} answered records: {} in the chain",
        answered + 1,
        kept.len()
    );
}

/// A file state made by the file store's own code (ledger uses, approvals opened, decided
/// and closed, audit records over several segments) is imported into an empty database:
/// the chain verifies there with every line (so every hash) unchanged, the ledger counts
/// and approvals are the same; a second import is refused. Exported into a new directory,
/// it verifies with `airlock audit verify` and has the same ledger counts, approvals and
/// receipts; an export into a directory with something in it is refused.
async fn import_and_export_move_the_state_whole(cluster: &Cluster) {
    use airlock::state::approvals::ApprovalStore;
    use airlock::store::files::FileStore;
    let url = cluster.database("transfer").await;
    let dir = tempfile::tempdir().expect("dir");
    let config_path = config_with_database(dir.path(), &url);
    // Small segments: the log spans several, and retention has removed the oldest (so
    // the chain starts where a retention record says, not at record 0).
    let small = std::fs::read_to_string(&config_path)
        .expect("config")
        .replacen("segment_bytes = 67108864", "segment_bytes = 4096", 1)
        .replacen("# keep_segments = 30", "keep_segments = 3", 1);
    std::fs::write(&config_path, small).expect("config");
    let config = Arc::new(airlock::config::Config::load_existing(&config_path).expect("config"));
    assert_eq!(
        config.audit.segment_bytes, 4096,
        "the example config changed"
    );
    let state = config.state_dir.clone();

    let (call, decision) = blocked_delete_table();
    let receipt_id = "0123456789abcdef0123456789abcdef";
    let receipt = br#"{"stand-in":"receipt bytes"}"#.to_vec();
    let files = FileStore::open(Arc::clone(&config)).expect("file store");
    for (key, reserve, commit, release) in [
        ("r-two-of-three", 2, 2, 0),
        ("r-unsettled", 1, 0, 0),
        ("r-released", 1, 0, 1),
    ] {
        for _ in 0..reserve {
            files.reserve(key, 3).await.expect("reserve");
        }
        for _ in 0..commit {
            files.commit(key).await.expect("commit");
        }
        for _ in 0..release {
            files.release(key).await.expect("release");
        }
    }
    let (approved, _) = files
        .find_or_open_pending(blocked("binding-approved", &call, &decision))
        .await
        .expect("open");
    let receipt_for_sign = receipt.clone();
    files
        .decide(
            &approved.id,
            Box::new(move |_, _| {
                Ok(Signed {
                    receipt_id: receipt_id.into(),
                    receipt_json: receipt_for_sign,
                    status: Status::Approved,
                    approved_by: vec!["alice".into()],
                    decided_by: "alice".into(),
                })
            }),
        )
        .await
        .expect("decide");
    let (pending, _) = files
        .find_or_open_pending(blocked("binding-pending", &call, &decision))
        .await
        .expect("open");
    let (closed, _) = files
        .find_or_open_pending(blocked("binding-closed", &call, &decision))
        .await
        .expect("open");
    files.close_approval(&closed.id).await.expect("close");
    for i in 0..150 {
        assert!(files.audit_append(numbered("filed", "files", i)).await);
    }
    files.audit_sync().await.expect("sync");
    drop(files);
    let identities = identities_in_files(&state);
    let (plan_id, plan_receipt) = approved_plan_in_files(&state);
    let own_key = airlock::state::trust::ensure_airlock_key(&state)
        .expect("own key")
        .public();
    let segments = std::fs::read_dir(state.join("audit"))
        .expect("audit dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        })
        .count();
    assert_eq!(segments, 3, "segments kept");
    let file_lines: Vec<String> = airlock::audit::Records::of(&state)
        .expect("records")
        .map(|l| String::from_utf8(l.expect("line")).expect("utf-8"))
        .collect();
    let first: serde_json::Value = serde_json::from_str(&file_lines[0]).expect("a record");
    assert!(
        first["seq"].as_u64() > Some(0),
        "retention removed nothing: {first}"
    );
    let usage_before = ledger_counts(&state);

    let out = airlock(&config_path, &["db", "import"]);
    assert!(out.status.success(), "db import: {}", text(&out));
    println!("{}", text(&out).trim());
    assert!(
        text(&out).contains(&format!("{} audit records", file_lines.len())),
        "{}",
        text(&out)
    );
    let pool = postgres::pool(&Secret::new(url.as_str())).expect("pool");
    let verified = postgres::verify_audit(&pool)
        .await
        .expect("the imported chain verifies");
    assert_eq!(verified.records, file_lines.len() as u64);
    let client = pool.get().await.expect("client");
    let db_lines: Vec<String> = client
        .query("SELECT record FROM airlock_audit ORDER BY seq", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        db_lines, file_lines,
        "records (and so hashes) changed on import"
    );
    let db = PgStore::new(pool.clone());
    assert_eq!(db.committed("r-two-of-three").await.expect("count"), 2);
    assert_eq!(
        db.committed("r-unsettled").await.expect("count"),
        1,
        "an unsettled reservation must count"
    );
    assert_eq!(db.committed("r-released").await.expect("count"), 0);
    assert!(matches!(
        db.reserve("r-unsettled", 1).await,
        Err(LedgerError::UsedUp)
    ));
    let open = db
        .current_approval("binding-approved")
        .await
        .expect("current")
        .expect("the approved approval");
    assert_eq!(
        (open.id.as_str(), open.status),
        (approved.id.as_str(), Status::Approved)
    );
    assert_eq!(db.read_receipt(receipt_id).await.expect("receipt"), receipt);
    let still_pending = db
        .current_approval("binding-pending")
        .await
        .expect("current")
        .expect("the pending approval");
    assert_eq!(still_pending.id, pending.id);
    assert!(db
        .current_approval("binding-closed")
        .await
        .expect("current")
        .is_none());
    let in_db = airlock::store::postgres::identities::PgIdentities::new(pool.clone());
    assert_eq!(
        Identities::of_db(&in_db).await,
        identities,
        "agents, passkeys or enrollments changed on import"
    );
    let plan: serde_json::Value = serde_json::from_str(
        &db.plan_record(&plan_id)
            .await
            .expect("plan")
            .expect("the plan imported"),
    )
    .expect("plan record");
    assert_eq!(plan["status"], "approved", "{plan}");
    assert_eq!(
        db.plan_status(&plan_id).await.expect("status").as_deref(),
        Some("approved")
    );
    assert_eq!(
        db.plan_receipt(PLAN_RECEIPT).await.expect("receipt"),
        Some(plan_receipt.clone())
    );
    let own_key_registered = client
        .query_opt(
            "SELECT public_key FROM airlock_keys WHERE key_id = $1",
            &[&own_key.key_id().as_str()],
        )
        .await
        .expect("keys")
        .map(|r| r.get::<_, String>(0));
    assert_eq!(
        own_key_registered,
        Some(own_key.config_value()),
        "the file state's own key is not trusted by the replicas"
    );

    let out = airlock(&config_path, &["db", "import"]);
    assert!(!out.status.success(), "a second import ran: {}", text(&out));
    assert!(text(&out).contains("EMPTY database"), "{}", text(&out));

    let exported = dir.path().join("exported");
    let out = airlock(&config_path, &["db", "export", path_str(&exported)]);
    assert!(out.status.success(), "db export: {}", text(&out));
    println!("{}", text(&out).trim());
    // `airlock audit verify` over the exported dir, as the file store's serve would use it.
    let files_config = dir.path().join("files.toml");
    let text_files = std::fs::read_to_string(&config_path)
        .expect("config")
        .replacen(&format!("database_url = \"{url}\"\n"), "", 1)
        .replacen(
            "dir = \"../state\"",
            &format!("dir = \"{}\"", exported.display()),
            1,
        );
    assert!(
        text_files.contains(&exported.display().to_string()) && !text_files.contains(&url),
        "{text_files}"
    );
    std::fs::write(&files_config, text_files).expect("config");
    let out = airlock(&files_config, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "audit verify of the export: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(&file_lines.len().to_string()),
        "{}",
        text(&out)
    );
    let usage_after = ledger_counts(&exported);
    // (A key with no use counted is not written: it reads as 0 uses, as before.)
    assert_eq!(usage_before.len(), 2, "{usage_before:?}");
    assert_eq!(
        usage_after, usage_before,
        "ledger counts changed through the database"
    );
    let approvals = ApprovalStore::open(&exported).expect("approvals");
    let mut ids: Vec<String> = approvals
        .list()
        .expect("list")
        .into_iter()
        .map(|a| a.id)
        .collect();
    ids.sort();
    let mut expected = vec![approved.id.clone(), pending.id.clone(), closed.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(
        approvals.read_receipt(receipt_id).expect("receipt"),
        receipt
    );
    assert_eq!(
        approvals
            .current("binding-pending")
            .expect("current")
            .map(|a| a.id),
        Some(pending.id)
    );
    assert_eq!(
        Identities::of_files(&exported),
        identities,
        "agents, passkeys or enrollments changed through the database"
    );
    let plans = airlock::plan::store::PlanStore::open(&exported).expect("plans");
    let exported_plan = plans.get(&plan_id).expect("the plan exported");
    assert_eq!(
        exported_plan.status,
        airlock::plan::store::PlanStatus::Approved
    );
    assert_eq!(
        plans.read_receipt(PLAN_RECEIPT).expect("plan receipt"),
        plan_receipt
    );
    let exported_key = airlock::state::trust::airlock_public(&exported)
        .expect("read")
        .expect("the exported state has its own key");
    assert_ne!(
        exported_key, own_key,
        "a private key cannot come out of the database"
    );

    // The database's chain cut at its start: no retention record names the new start.
    client
        .execute(
            "DELETE FROM airlock_audit WHERE seq = (SELECT min(seq) FROM airlock_audit)",
            &[],
        )
        .await
        .expect("cut");
    let e = postgres::verify_audit(&pool)
        .await
        .expect_err("a chain cut at its start verified");
    assert!(
        e.to_string().contains("earlier records were removed"),
        "{e}"
    );

    let out = airlock(&config_path, &["db", "export", path_str(&exported)]);
    assert!(
        !out.status.success(),
        "an export over a state ran: {}",
        text(&out)
    );
    assert!(text(&out).contains("not empty"), "{}", text(&out));
}

/// The approved plan's receipt id (stand-in bytes: what is moved is bytes).
const PLAN_RECEIPT: &str = "fedcba9876543210fedcba9876543210";

/// The three identity sets, compared by what a user would check: the agents' key ids and
/// secrets, the passkeys' counters, the enrollments as kept.
#[derive(Debug, PartialEq)]
struct Identities {
    /// (access key id, name, secret access key, revoked).
    agents: Vec<(String, String, String, bool)>,
    /// (key id, name, counter).
    passkeys: Vec<(String, String, u32)>,
    /// Each enrollment as JSON.
    enrollments: Vec<serde_json::Value>,
}

impl Identities {
    fn of(
        agents: airlock::state::agents::AgentsFile,
        passkeys: Vec<airlock::state::trust::PasskeyRecord>,
        enrollments: Vec<airlock::state::enrollments::Enrollment>,
    ) -> Identities {
        Identities {
            agents: agents
                .agents
                .into_iter()
                .map(|a| {
                    let revoked = a.revoked_at.is_some();
                    (
                        a.access_key_id,
                        a.name,
                        a.secret_access_key.expose().to_owned(),
                        revoked,
                    )
                })
                .collect(),
            passkeys: passkeys
                .into_iter()
                .map(|p| (p.key_id, p.name, p.sign_count))
                .collect(),
            enrollments: enrollments
                .iter()
                .map(|e| serde_json::to_value(e).expect("json"))
                .collect(),
        }
    }

    fn of_files(state: &Path) -> Identities {
        Identities::of(
            airlock::state::agents::AgentStore::new(state)
                .load()
                .expect("agents"),
            airlock::state::trust::PasskeyStore::new(state)
                .load()
                .expect("passkeys"),
            airlock::state::enrollments::EnrollmentStore::new(state)
                .load()
                .expect("enrollments"),
        )
    }

    async fn of_db(db: &airlock::store::postgres::identities::PgIdentities) -> Identities {
        Identities::of(
            db.agents().await.expect("agents"),
            db.passkeys().await.expect("passkeys"),
            db.enrollments().await.expect("enrollments"),
        )
    }
}

/// In the file state: two agents (one revoked), a passkey whose counter moved, an open
/// link and a passkey registered through another link, waiting for confirmation.
fn identities_in_files(state: &Path) -> Identities {
    use airlock::state::enrollments::{token_hash, EnrollmentStore, PendingPasskey};
    let agents = airlock::state::agents::AgentStore::new(state);
    agents.add("builder").expect("agent");
    agents.add("retired").expect("agent");
    agents.revoke("retired").expect("revoked");
    let passkeys = airlock::state::trust::PasskeyStore::new(state);
    let alice = passkey_record("alice", b"credential-alice");
    passkeys.add(alice.clone()).expect("passkey");
    let key_id = airlock::receipt::KeyId::parse(&alice.key_id).expect("key id");
    passkeys.advance_counter(&key_id, 7).expect("counter");
    let enrollments = EnrollmentStore::new(state);
    enrollments
        .create("bob", Duration::from_secs(600))
        .expect("open link");
    let token = enrollments
        .create("frank", Duration::from_secs(600))
        .expect("link");
    let frank = passkey_record("frank", b"credential-frank");
    let pending = PendingPasskey {
        id: "pending-frank".into(),
        registered_at: frank.created_at.clone(),
        passkey: frank,
        remote_addr: "127.0.0.1:50000".into(),
        user_agent: "test".into(),
        until: i64::MAX,
    };
    enrollments
        .consume(&token_hash(&token).expect("hash"), Some(pending))
        .expect("registered");
    assert_eq!(enrollments.waiting().len(), 1, "frank's passkey waits");
    let identities = Identities::of_files(state);
    assert_eq!(
        (
            identities.agents.len(),
            identities.passkeys.len(),
            identities.enrollments.len()
        ),
        (2, 1, 2)
    );
    identities
}

/// In the file state: a submitted plan approved (its receipt stand-in bytes); its id and
/// those bytes.
fn approved_plan_in_files(state: &Path) -> (String, Vec<u8>) {
    use airlock::plan::store::{PlanRecord, PlanSigned, PlanStatus, PlanStore};
    let plans = PlanStore::open(state).expect("plans");
    let submitted = plans
        .submit(PlanRecord {
            agent: "builder".into(),
            digest: "ab".repeat(32),
            environments: vec!["prod".into()],
            ..PlanRecord::default()
        })
        .expect("submitted");
    let receipt = br#"{"stand-in":"plan receipt bytes"}"#.to_vec();
    let bytes = receipt.clone();
    plans
        .sign(&submitted.id, move |_, _| {
            Ok(PlanSigned {
                receipt_id: PLAN_RECEIPT.into(),
                receipt_json: bytes,
                status: PlanStatus::Approved,
                approved_by: vec!["alice".into()],
                decided_by: "alice".into(),
                expires_at: Some("2099-01-01T00:00:00Z".into()),
            })
        })
        .expect("approved");
    (submitted.id, receipt)
}

/// The file ledger's keys with a use counted: (key, committed, reserved), sorted.
fn ledger_counts(state: &Path) -> Vec<(String, u32, u32)> {
    let mut counts: Vec<(String, u32, u32)> = airlock::state::ledger::Ledger::open(state)
        .expect("ledger")
        .entries()
        .into_iter()
        .filter(|(_, u)| u.committed + u.reserved > 0)
        .map(|(k, u)| (k, u.committed, u.reserved))
        .collect();
    counts.sort();
    counts
}

/// What a decision stores, as `quorum::record`'s sign step would give it.
fn signed(receipt_id: &str, bytes: &[u8], status: Status, approvers: &[&str]) -> Signed {
    Signed {
        receipt_id: receipt_id.into(),
        receipt_json: bytes.to_vec(),
        status,
        approved_by: approvers.iter().map(|a| a.to_string()).collect(),
        decided_by: approvers.join(", "),
    }
}

/// A receipt, once issued, is never replaced by another decision: a grant of another
/// approval naming its id is refused, and both stay as they were. The one receipt a
/// decision stores over is its own quorum's under way (a second approver joining it).
async fn a_decision_never_replaces_an_issued_receipt(cluster: &Cluster) {
    let url = cluster.database("receipt_ids").await;
    let store = replica(&url).await;
    let (call, decision) = blocked_delete_table();
    let (x, _) = store
        .find_or_open_pending(blocked("binding-x", &call, &decision))
        .await
        .expect("open x");
    let (y, _) = store
        .find_or_open_pending(blocked("binding-y", &call, &decision))
        .await
        .expect("open y");
    let issued = signed("rcpt-issued", b"issued", Status::Approved, &["alice"]);
    store
        .decide(&x.id, Box::new(move |_, _| Ok(issued)))
        .await
        .expect("grant x");

    let forged = signed("rcpt-issued", b"forged", Status::Approved, &["mallory"]);
    let refused = store.decide(&y.id, Box::new(move |_, _| Ok(forged))).await;
    match refused {
        Err(ApprovalError::Refused(e)) => assert!(e.contains("already stored"), "{e}"),
        other => panic!("a second grant replaced an issued receipt: {other:?}"),
    }
    assert_eq!(
        store.read_receipt("rcpt-issued").await.expect("receipt"),
        b"issued"
    );
    let x_now = store.get_approval(&x.id).await.expect("x");
    assert_eq!(
        (x_now.status, x_now.receipt_id.as_deref()),
        (Status::Approved, Some("rcpt-issued"))
    );
    let y_now = store.get_approval(&y.id).await.expect("y");
    assert_eq!((y_now.status, y_now.receipt_id), (Status::Pending, None));

    // A quorum of two: the second signature is stored over the first's receipt.
    let first = signed("rcpt-y", b"one", Status::Pending, &["alice"]);
    store
        .decide(&y.id, Box::new(move |_, _| Ok(first)))
        .await
        .expect("first of two");
    let second = signed("rcpt-y", b"two", Status::Approved, &["alice", "bob"]);
    store
        .decide(
            &y.id,
            Box::new(move |_, stored| {
                assert_eq!(stored.as_deref(), Some(&b"one"[..]));
                Ok(second)
            }),
        )
        .await
        .expect("second of two");
    assert_eq!(store.read_receipt("rcpt-y").await.expect("receipt"), b"two");
    assert_eq!(
        store.read_receipt("rcpt-issued").await.expect("receipt"),
        b"issued"
    );
}

/// A newer airlock migrates the schema under a serving replica: within a few seconds its
/// keeper sees the newer version and the replica refuses every step that needs the
/// database (the gate's 503), with its audit records spooled; once the schema is one it
/// knows again, it serves again.
async fn a_schema_upgraded_under_a_serving_replica_closes_its_gate(cluster: &Cluster) {
    let url = cluster.database("upgraded").await;
    let state = tempfile::tempdir().expect("state");
    let store = serving_replica(&url, state.path());
    until_drained(&store).await;
    store
        .reserve("r-upgraded", 2)
        .await
        .expect("reserve while the schema is current");
    let admin = postgres::pool(&Secret::new(url.as_str())).expect("pool");
    let set_version = |v: i32| {
        let admin = admin.clone();
        async move {
            admin
                .get()
                .await
                .expect("client")
                .execute("UPDATE airlock_schema SET version = $1", &[&v])
                .await
                .expect("set the schema's version");
        }
    };
    set_version(SCHEMA_VERSION + 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.audit_writable() {
        assert!(
            Instant::now() < deadline,
            "a replica kept its gate open on a schema newer than it knows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reserve_fails_closed(&store, "r-upgraded").await;
    assert!(store.audit_health().await.is_err(), "/healthz stayed OK");
    assert!(
        store
            .audit_append(airlock::audit::record("while_newer").into())
            .await,
        "an audit record was lost"
    );
    set_version(SCHEMA_VERSION).await;
    until_drained(&store).await;
    store
        .reserve("r-upgraded", 2)
        .await
        .expect("reserve once the schema is one it knows");
    let records = chain(&url).await;
    assert!(
        records.iter().any(|r| r["event"] == "while_newer"),
        "the spooled record did not reach the chain"
    );
}

/// Two `serve`s on one host sharing a state dir would share its audit spool: the second
/// store is refused, saying why, and the state dir is free again once the first is gone.
async fn one_serve_per_state_dir(cluster: &Cluster) {
    let url = cluster.database("one_serve").await;
    let state = tempfile::tempdir().expect("state");
    // As `airlock init` makes it: serve checks that nobody else can read it.
    std::fs::set_permissions(
        state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let first = serving_replica(&url, state.path());
    let e = match PgStore::open(&Secret::new(url.as_str()), state.path()) {
        Ok(_) => panic!("a second serve's store was opened on the same state dir"),
        Err(e) => e,
    };
    assert!(
        e.contains("another `airlock serve`") && e.contains(&state.path().display().to_string()),
        "{e}"
    );
    // Another process is refused as well: `airlock serve` itself, with the same state dir.
    let dir = tempfile::tempdir().expect("dir");
    let config = config_with_database(dir.path(), &url);
    let written = std::fs::read_to_string(&config)
        .expect("config")
        .replacen(
            "dir = \"../state\"",
            &format!("dir = \"{}\"", path_str(state.path())),
            1,
        )
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8444", "127.0.0.1:0");
    std::fs::write(&config, written).expect("write config");
    let log = dir.path().join("serve.log");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("AIRLOCK_DATABASE_URL")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("airlock serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = serve.kill();
            let _ = serve.wait();
            panic!(
                "a second serve on the same state dir kept running: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let said = std::fs::read_to_string(&log).expect("log");
    assert!(!status.success(), "{said}");
    assert!(said.contains("another `airlock serve`"), "{said}");
    assert!(
        !state.path().join("listen.json").exists(),
        "the refused serve wrote to the state dir"
    );
    drop(first);
    let again = serving_replica(&url, state.path());
    until_drained(&again).await;
}
