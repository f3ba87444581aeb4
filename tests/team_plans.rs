//! Submitted Terraform plans shared through a real PostgreSQL (a private cluster,
//! `pg::Cluster`), with two stores over pools of their own standing for two replicas.
//!
//! What it proves: a plan submitted through replica A is listed by B; two approvers, one
//! through A and one through B at the same moment, complete the quorum exactly once and the
//! receipt carries both signatures (the plan's row is locked while each joins, so the second
//! sees the first's receipt); B's plan index honours the approved plan within a second of the
//! approving commit (measured and printed), and drops it within a second of being spent
//! through B; the same approver through both at once counts once; a plan denied after one
//! approval takes no further decision (an approval signed before the denial is refused when
//! recorded); with the listening connections killed, the index still learns of an approval
//! by polling within about a second (no listener back yet), and with the database restarted they keep what they
//! had while it was down and follow it again once it is back; and the `airlock plan`
//! commands work against the
//! database (submit, list, show, approve, with their audit records in the database's chain).

#![allow(clippy::expect_used)]

mod pg;

use airlock::plan::index::PlanIndex;
use airlock::plan::quorum::{self, PlanRecorded};
use airlock::plan::shared::Plans;
use airlock::plan::store::{PlanRecord, PlanStatus, PlanStoreError};
use airlock::receipt::{self, ApproverKey, Decision, PlanEntry, Quorum, TrustedKeys};
use airlock::secret::Secret;
use airlock::store::postgres::PgStore;
use airlock::store::Store;
use pg::{airlock, config_with_database, replica, text, Cluster};
use std::sync::Arc;
use std::time::{Duration, Instant};

const AGENT: &str = "terraform";

/// How long an index may take to see a change: the requirement is a second; the bound
/// allows for a loaded machine, and the figure measured is printed.
const WITHIN: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_are_shared_by_replicas() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    replicas_share_plans_their_quorum_and_their_end(&cluster).await;
    the_plan_commands_work_against_the_database(&cluster).await;
    the_follower_reads_again_after_a_failure_and_on_a_timer(&cluster).await;
}

/// The `LISTEN` connections on `url`'s database for plan changes, now.
async fn plan_listeners(admin: &tokio_postgres::Client) -> usize {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE query = 'LISTEN airlock_plan_changed' AND datname = current_database()",
            &[],
        )
        .await
        .expect("listeners")
        .len()
}

/// A connection of the test's own to `url`, for looking at (and breaking) the replicas'.
async fn admin_connection(url: &str) -> tokio_postgres::Client {
    let (admin, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    admin
}

/// `plans::follow` while its `LISTEN` connection is up and no plan changes: a reload that
/// fails is tried again every `PLANS_POLL` (not only at the next notification, which may
/// never come); one that succeeds is done again after `PLANS_REFRESH`, and not before.
async fn the_follower_reads_again_after_a_failure_and_on_a_timer(cluster: &Cluster) {
    use airlock::store::postgres::plans::{follow, PLANS_POLL, PLANS_REFRESH};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let url = cluster.database("follow").await;
    let admin = admin_connection(&url).await;
    let reads = Arc::new(AtomicU32::new(0));
    let failing = Arc::new(AtomicBool::new(true));
    let task = {
        let (reads, failing) = (Arc::clone(&reads), Arc::clone(&failing));
        follow(&Secret::new(&url), move || {
            reads.fetch_add(1, Ordering::SeqCst);
            let read = !failing.load(Ordering::SeqCst);
            async move { read }
        })
        .expect("follows")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while plan_listeners(&admin).await == 0 {
        assert!(Instant::now() < deadline, "not listening after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the reload made once listening.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = reads.load(Ordering::SeqCst);
    tokio::time::sleep(PLANS_POLL * 3 + Duration::from_millis(500)).await;
    let retried = reads.load(Ordering::SeqCst) - before;
    println!("a failing reload while listening was tried again {retried} time(s) in 3.5 s");
    assert!(retried >= 2, "{retried} reads in 3.5 s");
    assert_eq!(plan_listeners(&admin).await, 1, "listening all along");

    // Reading well again: the next read is the last for PLANS_REFRESH; then one more.
    failing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + PLANS_POLL * 3;
    let recovered = reads.load(Ordering::SeqCst);
    while reads.load(Ordering::SeqCst) == recovered {
        assert!(Instant::now() < deadline, "no read after the failures");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let read_well = Instant::now();
    let after = reads.load(Ordering::SeqCst);
    tokio::time::sleep(PLANS_REFRESH - Duration::from_millis(700)).await;
    assert_eq!(
        reads.load(Ordering::SeqCst),
        after,
        "no polling while listening"
    );
    while reads.load(Ordering::SeqCst) == after {
        assert!(
            read_well.elapsed() < PLANS_REFRESH + Duration::from_secs(2),
            "no read {PLANS_REFRESH:?} after the last, while listening"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "while listening and with no change announced, read again after {:?}",
        read_well.elapsed()
    );
    task.abort();
}

/// A snapshot delete, the kind of entry a quorum protects.
fn snapshot_entry(snapshot: &str) -> PlanEntry {
    PlanEntry {
        address: format!("aws_db_snapshot.{snapshot}"),
        environment: "prod".into(),
        account: Some("123456789012".into()),
        region: "eu-west-1".into(),
        service: "rds".into(),
        operation: "DeleteDBSnapshot".into(),
        resources: vec![format!(
            "arn:aws:rds:eu-west-1:123456789012:snapshot:{snapshot}"
        )],
        params: [("DBSnapshotIdentifier".to_owned(), snapshot.to_owned())].into(),
        free: Vec::new(),
        uses: Some(1),
    }
}

/// A plan deleting `snapshot` that needs `approvals` distinct approvers.
fn plan_for(snapshot: &str, approvals: u32) -> PlanRecord {
    PlanRecord {
        agent: AGENT.into(),
        digest: "ab".repeat(32),
        environments: vec!["prod".into()],
        entries: vec![snapshot_entry(snapshot)],
        quorums: vec![Quorum {
            approvals,
            approvers: None,
        }],
        ..PlanRecord::default()
    }
}

/// A decision on another plan whose receipt id clashes with a stored receipt (`taken`, with
/// `bytes`) fails, and leaves that receipt as it was: only the receipt of the decided plan's
/// own quorum under way is stored over.
async fn a_decision_cannot_overwrite_another_receipt(
    store: &PgStore,
    plans: &Arc<dyn Plans>,
    taken: &str,
    bytes: &[u8],
) {
    use airlock::store::postgres::plans::{LockedPlan, PlanChange, PlanRow};
    let other = plans.submit(plan_for("clash", 1)).await.expect("submitted");
    let clash = store
        .decide_plan(
            &other.id,
            |e| e,
            |locked: Option<LockedPlan>| {
                let locked = locked.ok_or("no plan")?;
                let row = PlanRow {
                    id: other.id.clone(),
                    status: "denied".into(),
                    agent: other.agent.clone(),
                    receipt_id: Some(taken.to_owned()),
                    submitted_at: other.submitted_at.clone(),
                    record: locked.record,
                };
                let receipt = Some((taken.to_owned(), b"{\"not\": \"this\"}".to_vec()));
                Ok((PlanChange { row, receipt }, ()))
            },
        )
        .await;
    assert!(clash.is_err(), "a clashing receipt id is refused");
    assert_eq!(plans.read_receipt(taken).await.expect("read"), bytes);
    let still = plans.get(&other.id).await.expect("read");
    assert_eq!(
        still.status,
        PlanStatus::Pending,
        "nothing of the decision stored"
    );
}

/// One approver's decision on plan `id` through `plans`, as the page or `plan approve` makes
/// it: the body to sign, signed, recorded. `barrier`: wait there after signing, so two
/// approvers record at the same moment. An approval that lost the race to another approver
/// (the body it signed is no longer the quorum's) starts again, as the page tells a human;
/// returns what was recorded and how many times it started again.
async fn decide(
    plans: &dyn Plans,
    trusted: &TrustedKeys,
    key: &ApproverKey,
    id: &str,
    decision: Decision,
    barrier: Option<&tokio::sync::Barrier>,
) -> Decided {
    let mut again = 0;
    let mut barrier = barrier;
    loop {
        let p = plans.get(id).await?;
        p.check_pending()?;
        let body =
            quorum::body_to_sign(plans, &p, decision, &key.public(), Duration::from_secs(900))
                .await
                .map_err(PlanStoreError::Refused)?;
        let signed = receipt::sign(body, key).expect("signed");
        if let Some(b) = barrier.take() {
            b.wait().await;
        }
        match quorum::record(plans, trusted, signed).await {
            Err(PlanStoreError::Refused(e)) if e.contains("start again") && again < 5 => {
                again += 1;
            }
            done => return done.map(|r| (r, again)),
        }
    }
}

/// What [`decide`] returns.
type Decided = Result<(PlanRecorded, u32), PlanStoreError>;

/// `key`'s approval of plan `id` through `plans`, in a task of its own, recorded at the
/// moment the other party at `barrier` records; with when it was done.
fn approving_at_once(
    plans: Arc<dyn Plans>,
    trusted: Arc<TrustedKeys>,
    key: Arc<ApproverKey>,
    id: String,
    barrier: Arc<tokio::sync::Barrier>,
) -> tokio::task::JoinHandle<(Decided, Instant)> {
    tokio::spawn(async move {
        let out = decide(
            &*plans,
            &trusted,
            &key,
            &id,
            Decision::Approve,
            Some(&barrier),
        )
        .await;
        (out, Instant::now())
    })
}

/// Plan `id`, which needs one approver, approved by `key` through `plans`.
async fn approve_alone(plans: &dyn Plans, trusted: &TrustedKeys, key: &ApproverKey, id: &str) {
    let (approved, _) = decide(plans, trusted, key, id, Decision::Approve, None)
        .await
        .expect("approved");
    assert_eq!(approved.plan.status, PlanStatus::Approved);
}

/// How long until `index` says whether plan `id` covers the agent's snapshot deletes as
/// `wanted`; panics after three seconds.
async fn until_indexed(index: &PlanIndex, id: &str, wanted: bool, since: Instant) -> Duration {
    loop {
        let found = index
            .lookup(AGENT, "rds", "DeleteDBSnapshot")
            .expect("lookup")
            .iter()
            .any(|p| p.plan_id == id);
        if found == wanted {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(3),
            "plan {id} still {} the index after 3 s",
            if wanted { "not in" } else { "in" }
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn replicas_share_plans_their_quorum_and_their_end(cluster: &Cluster) {
    let url = cluster.database("plans").await;
    let (a, b) = (replica(&url).await, replica(&url).await);
    let secret = Secret::new(&url);
    let index_a = PlanIndex::follow(Arc::clone(&a), &secret).expect("A follows");
    let index_b = PlanIndex::follow(Arc::clone(&b), &secret).expect("B follows");
    let (plans_a, plans_b): (Arc<dyn Plans>, Arc<dyn Plans>) =
        (Arc::clone(&a) as _, Arc::clone(&b) as _);
    let keys: Vec<Arc<ApproverKey>> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| Arc::new(ApproverKey::generate(n).expect("key")))
        .collect();
    let mut trusted = TrustedKeys::new();
    for k in &keys {
        trusted.add_approver(&k.public()).expect("trusted");
    }
    let trusted = Arc::new(trusted);
    let (alice, bob, carol) = (&keys[0], &keys[1], &keys[2]);

    // Submitted through A, listed by B.
    let submitted = plans_a
        .submit(plan_for("nightly", 2))
        .await
        .expect("submitted");
    let listed = plans_b.list().await.expect("B lists");
    assert_eq!(
        listed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [submitted.id.as_str()]
    );
    assert_eq!(listed[0].status, PlanStatus::Pending);
    assert_eq!(listed[0].entries, submitted.entries);

    // Two approvers at the same moment, alice through A and bob through B.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let race = |plans: Arc<dyn Plans>, key: Arc<ApproverKey>| {
        approving_at_once(
            plans,
            Arc::clone(&trusted),
            key,
            submitted.id.clone(),
            Arc::clone(&barrier),
        )
    };
    let through_a = race(Arc::clone(&plans_a), Arc::clone(alice));
    let through_b = race(Arc::clone(&plans_b), Arc::clone(bob));
    let results = [
        through_a.await.expect("A's approver"),
        through_b.await.expect("B's approver"),
    ];
    let mut completed = Vec::new();
    let mut started_again = 0;
    for (out, at) in &results {
        let (recorded, again) = out.as_ref().expect("each approval is recorded");
        started_again += again;
        if recorded.plan.status == PlanStatus::Approved {
            completed.push(*at);
        } else {
            assert_eq!(recorded.plan.status, PlanStatus::Pending);
            assert_eq!(recorded.plan.progress(), "1 of 2 approvals");
        }
    }
    assert_eq!(completed.len(), 1, "the quorum completed exactly once");
    let approved_at = completed[0];
    println!("two concurrent approvals through two replicas: one started again {started_again} time(s) after the other joined first");

    let on_b = plans_b.get(&submitted.id).await.expect("B reads it");
    assert_eq!(on_b.status, PlanStatus::Approved);
    let mut by = on_b.approved_by.clone();
    by.sort();
    assert_eq!(by, ["alice", "bob"]);
    let receipt_id = on_b.receipt_id.clone().expect("receipt");
    let bytes = plans_a
        .read_receipt(&receipt_id)
        .await
        .expect("the receipt is shared");
    let stored = receipt::Receipt::from_json(&bytes).expect("receipt");
    let verified = receipt::verify(&stored, &trusted).expect("verifies");
    let mut signers = verified.approvers().to_vec();
    signers.sort();
    assert_eq!(signers, ["alice", "bob"], "both signatures, each once");
    a_decision_cannot_overwrite_another_receipt(&a, &plans_a, &receipt_id, &bytes).await;

    // Honoured by B's index (and A's) within a second of the approving commit.
    let on_index_b = until_indexed(&index_b, &submitted.id, true, approved_at).await;
    let on_index_a = until_indexed(&index_a, &submitted.id, true, approved_at).await;
    println!(
        "approved plan in replica B's index {on_index_b:?} after the approving commit (A's: {on_index_a:?})"
    );
    assert!(on_index_b < WITHIN, "{on_index_b:?}");
    // What B's proxy does with it: the receipt in its index covers the call, verifies, and
    // the entry is reserved in the shared ledger once.
    let found = index_b
        .lookup(AGENT, "rds", "DeleteDBSnapshot")
        .expect("lookup");
    let plan = found
        .iter()
        .find(|p| p.plan_id == submitted.id)
        .expect("in B's index");
    let call = quorum::entry_call(&snapshot_entry("nightly"));
    let covering = receipt::covering_entries(&plan.receipt.body, AGENT, "prod", &call);
    assert_eq!(covering, [0]);
    assert!(receipt::verify(&plan.receipt, &trusted).is_ok());
    let other = quorum::entry_call(&snapshot_entry("weekly"));
    assert!(receipt::covering_entries(&plan.receipt.body, AGENT, "prod", &other).is_empty());
    let entry_key = format!("{receipt_id}#0");
    b.reserve(&entry_key, 1)
        .await
        .expect("B reserves the entry");
    assert!(a.reserve(&entry_key, 1).await.is_err(), "single use");

    // Spent through B: gone from A's index within a second, ended once; and what A's proxy
    // asks before it uses an entry its index may still hold says so at once.
    assert_eq!(
        plans_a.status(&submitted.id).await.expect("status"),
        PlanStatus::Approved
    );
    let ended_at = Instant::now();
    assert!(plans_b
        .end(&submitted.id, PlanStatus::Spent)
        .await
        .expect("ends"));
    assert_eq!(
        plans_a.status(&submitted.id).await.expect("status"),
        PlanStatus::Spent
    );
    assert!(matches!(
        plans_a.status("no-such-plan").await,
        Err(PlanStoreError::NotFound(_))
    ));
    assert!(!plans_a
        .end(&submitted.id, PlanStatus::Spent)
        .await
        .expect("already ended"));
    let dropped = until_indexed(&index_a, &submitted.id, false, ended_at).await;
    println!("spent plan dropped from replica A's index {dropped:?} after it was spent through B");
    assert!(dropped < WITHIN, "{dropped:?}");

    // The same approver through A and through B at the same moment counts once.
    let twice = plans_a
        .submit(plan_for("twice", 2))
        .await
        .expect("submitted");
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let alice_through = |plans: Arc<dyn Plans>| {
        approving_at_once(
            plans,
            Arc::clone(&trusted),
            Arc::clone(alice),
            twice.id.clone(),
            Arc::clone(&barrier),
        )
    };
    let both = [
        alice_through(Arc::clone(&plans_a)),
        alice_through(Arc::clone(&plans_b)),
    ];
    let mut counted = 0;
    for attempt in both {
        match attempt.await.expect("alice's approval").0 {
            Ok((recorded, _)) => {
                counted += 1;
                assert_eq!(recorded.plan.progress(), "1 of 2 approvals");
            }
            Err(PlanStoreError::Refused(e)) => assert!(e.contains("already approved"), "{e}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(counted, 1, "one of alice's approvals is recorded");
    let after_both = plans_b.get(&twice.id).await.expect("read");
    assert_eq!(after_both.status, PlanStatus::Pending);
    assert_eq!(after_both.approved_by, ["alice"]);

    // One approval through A, then a denial through B: an approval signed through A before
    // the denial and recorded after it is refused by the decision step itself.
    let denied = plans_a
        .submit(plan_for("weekly", 2))
        .await
        .expect("submitted");
    let (first, _) = decide(
        &*plans_a,
        &trusted,
        alice,
        &denied.id,
        Decision::Approve,
        None,
    )
    .await
    .expect("one approval");
    assert_eq!(first.plan.status, PlanStatus::Pending);
    let seen_by_carol = plans_a.get(&denied.id).await.expect("read");
    let carols_body = quorum::body_to_sign(
        &*plans_a,
        &seen_by_carol,
        Decision::Approve,
        &carol.public(),
        Duration::from_secs(900),
    )
    .await
    .expect("a body to sign while pending");
    let carols = receipt::sign(carols_body, carol).expect("signed");
    let (no, _) = decide(&*plans_b, &trusted, bob, &denied.id, Decision::Deny, None)
        .await
        .expect("denied");
    assert_eq!(no.plan.status, PlanStatus::Denied);
    let late = quorum::record(&*plans_a, &trusted, carols).await;
    assert!(
        matches!(late, Err(PlanStoreError::NotPending(_, "denied"))),
        "{:?}",
        late.map(|r| r.plan.status)
    );
    assert_eq!(
        plans_a.get(&denied.id).await.expect("read").status,
        PlanStatus::Denied
    );

    // The listening connections killed: the indexes poll, and still see an approval within
    // about a second, before either listens again (they wait LISTEN_RETRY, 2 s, first).
    let unheard = plans_a
        .submit(plan_for("hourly", 1))
        .await
        .expect("submitted");
    let admin = admin_connection(&url).await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query = 'LISTEN airlock_plan_changed'",
            &[],
        )
        .await
        .expect("terminate the listeners");
    assert_eq!(killed.len(), 2, "one listening connection per replica");
    // Past the moment the replicas notice (and reload once).
    tokio::time::sleep(Duration::from_millis(300)).await;
    approve_alone(&*plans_a, &trusted, carol, &unheard.id).await;
    let polled = until_indexed(&index_b, &unheard.id, true, Instant::now()).await;
    let listening = plan_listeners(&admin).await;
    println!("with its listening connection killed, replica B's index saw an approval after {polled:?} (polling; {listening} listening again by then)");
    assert_eq!(
        listening, 0,
        "seen by polling, not by a listener back already"
    );
    assert!(polled < WITHIN, "{polled:?}");
    drop(admin);

    // The database down: the indexes keep what they had (the shared ledger, down too, is
    // what refuses a use meanwhile); back up, they follow it again.
    until_indexed(&index_a, &unheard.id, true, Instant::now()).await;
    let out = cluster.pg_ctl_stop("fast");
    assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    tokio::time::sleep(WITHIN).await;
    for index in [&index_a, &index_b] {
        until_indexed(index, &unheard.id, true, Instant::now()).await;
    }
    cluster.pg_ctl_start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        match plans_a.submit(plan_for("daily", 1)).await {
            Ok(p) => break p,
            Err(e) => assert!(Instant::now() < deadline, "A did not come back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    approve_alone(&*plans_a, &trusted, carol, &after.id).await;
    let resumed = until_indexed(&index_b, &after.id, true, Instant::now()).await;
    println!("after the database restarted, replica B's index saw an approval after {resumed:?}");
    assert!(resumed < WITHIN, "{resumed:?}");

    // A replica starting now loads the approved plans, and only those.
    let c = replica(&url).await;
    let started = Instant::now();
    let index_c = PlanIndex::follow(c, &secret).expect("C follows");
    until_indexed(&index_c, &after.id, true, started).await;
    let mut honoured: Vec<String> = index_c
        .lookup(AGENT, "rds", "DeleteDBSnapshot")
        .expect("lookup")
        .iter()
        .map(|p| p.plan_id.clone())
        .collect();
    honoured.sort();
    let mut expected = vec![unheard.id.clone(), after.id.clone()];
    expected.sort();
    assert_eq!(
        honoured, expected,
        "neither the spent plan nor the denied one"
    );
}

/// `airlock plan submit|list|show|approve` with `[state] database_url`: the plan and its
/// decision are the database's, and so are their audit records.
async fn the_plan_commands_work_against_the_database(cluster: &Cluster) {
    let url = cluster.database("plan_commands").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = config_with_database(dir.path(), &url);
    succeeds(&config, &["db", "migrate"]);
    let key = dir.path().join("alice.key");
    let made = succeeds(
        &config,
        &[
            "keygen",
            "--out",
            key.to_str().expect("path"),
            "--name",
            "alice",
            "--insecure-plaintext-key",
        ],
    );
    let block: String = String::from_utf8_lossy(&made.stdout)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut config_text = std::fs::read_to_string(&config).expect("config");
    config_text.push('\n');
    config_text.push_str(&block);
    std::fs::write(&config, config_text).expect("config");
    succeeds(&config, &["agent", "add", AGENT]);

    let plan = dir.path().join("plan.json");
    let arn = "arn:aws:rds:eu-west-1:123456789012:snapshot:cli";
    let doc = serde_json::json!({
        "format_version": "1.2",
        "terraform_version": "1.9.8",
        "prior_state": {"format_version": "1.0", "values": {"root_module": {}}},
        "configuration": {"provider_config": {"aws": {"name": "aws",
            "expressions": {"region": {"constant_value": "eu-west-1"}}}}},
        "resource_changes": [{
            "address": "aws_db_snapshot.cli", "mode": "managed", "type": "aws_db_snapshot",
            "name": "cli", "provider_name": "registry.terraform.io/hashicorp/aws",
            "change": {"actions": ["delete"], "after": null,
                "before": {"id": "cli", "db_snapshot_identifier": "cli", "db_snapshot_arn": arn,
                           "db_instance_identifier": "db"}},
        }],
    });
    std::fs::write(&plan, doc.to_string()).expect("plan");
    let out = succeeds(
        &config,
        &[
            "plan",
            "submit",
            plan.to_str().expect("path"),
            "--agent",
            AGENT,
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let id = said
        .lines()
        .find_map(|l| l.strip_prefix("approve at ")?.rsplit('/').next())
        .expect("a link")
        .to_owned();
    // Not in the files: in the database, which a replica reads.
    assert!(!dir.path().join(format!("state/plans/{id}.json")).exists());
    let store = replica(&url).await;
    let in_db = Plans::get(&*store, &id).await.expect("in the database");
    assert_eq!(in_db.status, PlanStatus::Pending);

    let listed = succeeds(&config, &["plan", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).lines().any(|l| l
            .starts_with(&format!("{id} pending agent \"terraform\""))
            || l.starts_with(&format!("{id} pending agent terraform"))),
        "{}",
        text(&listed)
    );

    let approved = succeeds(
        &config,
        &[
            "plan",
            "approve",
            &id,
            "--key",
            key.to_str().expect("path"),
            "--insecure-plaintext-key",
        ],
    );
    assert!(
        text(&approved).contains("in PostgreSQL"),
        "{}",
        text(&approved)
    );
    let shown = succeeds(&config, &["plan", "show", &id, "--json"]);
    let record: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(record["status"], "approved");
    assert_eq!(record["approved_by"], serde_json::json!(["alice"]));
    assert_eq!(
        Plans::get(&*store, &id).await.expect("read").status,
        PlanStatus::Approved
    );

    // Its receipt, out of the database, verifies offline.
    let printed = succeeds(&config, &["plan", "receipt", &id]);
    let receipt_file = dir.path().join("plan-receipt.json");
    std::fs::write(&receipt_file, &printed.stdout).expect("receipt file");
    succeeds(
        &config,
        &["receipt", "verify", receipt_file.to_str().expect("path")],
    );

    // Their audit records are in the database's chain, which verifies.
    let events = audit_events(&store, &id).await;
    assert_eq!(events, ["plan_submitted", "plan_approved"], "{events:?}");
    succeeds(&config, &["audit", "verify"]);
}

/// `airlock ARGS` with `config`, which must succeed.
fn succeeds(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = airlock(config, args);
    assert!(out.status.success(), "airlock {args:?}: {}", text(&out));
    out
}

/// The events of the audit records about plan `id` in the database's chain, in order.
async fn audit_events(store: &PgStore, id: &str) -> Vec<String> {
    let client = store.pool().get().await.expect("connection");
    client
        .query("SELECT record FROM airlock_audit ORDER BY seq", &[])
        .await
        .expect("audit")
        .iter()
        .filter_map(|row| {
            let record: serde_json::Value =
                serde_json::from_str(row.get::<_, &str>(0)).expect("a record");
            (record["plan"] == id).then(|| record["event"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}
