//! Redeeming plan receipts through a real gate (state in a temporary directory): which
//! calls an approved plan's entries let through, and when they stop.

use super::redeem;
use crate::config::Config;
use crate::gate::Gate;
use crate::identify::AwsCall;
use crate::plan::mapping::{destroyed, Defaults};
use crate::plan::store::{PlanRecord, PlanStore};
use crate::proxy::error::ProxyError;
use crate::proxy::forward::Forwarded;
use crate::proxy::redeem::Authorization;
use crate::receipt::{ApproverKey, Quorum};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "eu-west-1";
const AGENT: &str = "terraform";

struct Harness {
    _dir: tempfile::TempDir,
    gate: Gate,
    alice: ApproverKey,
    /// `AGENT`'s access key id.
    key: String,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = ApproverKey::generate("alice").expect("key");
    let text = format!(
        "[listen]\nproxy = \"127.0.0.1:0\"\napprovals = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\n{}",
        dir.path().display(),
        crate::receipt::keys::config_block(&alice.public())
    );
    let config = Config::parse(&dir.path().join("airlock.toml"), &text).expect("config parses");
    let gate = Gate::open(Arc::new(config)).await.expect("gate opens");
    let key = crate::state::agents::AgentStore::new(dir.path())
        .add(AGENT)
        .expect("agent")
        .access_key_id;
    Harness {
        _dir: dir,
        gate,
        alice,
        key,
    }
}

fn change(t: &str, name: &str, before: Value) -> Value {
    json!({
        "address": format!("{t}.{name}"),
        "mode": "managed",
        "type": t,
        "name": name,
        "provider_name": "registry.terraform.io/hashicorp/aws",
        "change": {"actions": ["delete"], "before": before, "after": null},
    })
}

/// Submits a plan destroying `changes` for `AGENT` and approves it with alice's key.
fn approved_plan(h: &Harness, changes: &[Value]) -> PlanRecord {
    approved_for(h, changes, Duration::from_secs(600))
}

fn approved_for(h: &Harness, changes: &[Value], ttl: Duration) -> PlanRecord {
    let config = &h.gate.config;
    let destroyed = destroyed(
        changes,
        &Defaults {
            region: Some(REGION),
            account: Some(ACCOUNT),
        },
    );
    let entries = crate::plan::entries(&destroyed, |a, r| config.environment_of(a, r));
    let mut environments: Vec<String> = entries.iter().map(|e| e.environment.clone()).collect();
    environments.sort();
    environments.dedup();
    let store = PlanStore::open(&config.state_dir).expect("store");
    let record = store
        .submit(PlanRecord {
            agent: AGENT.into(),
            digest: "d".repeat(64),
            environments,
            destroyed,
            entries,
            ..PlanRecord::default()
        })
        .expect("submitted");
    crate::plan::approved_alone(&store, &h.alice, &record, ttl)
}

fn s3_call(operation: &str, params: &[(&str, &str)]) -> AwsCall {
    AwsCall {
        service: "s3".into(),
        signing_name: "s3".into(),
        operation: operation.into(),
        region: REGION.into(),
        account: Some(ACCOUNT.into()),
        resources: Vec::new(),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn delete_table(name: &str) -> AwsCall {
    AwsCall {
        service: "dynamodb".into(),
        signing_name: "dynamodb".into(),
        operation: "DeleteTable".into(),
        region: REGION.into(),
        account: Some(ACCOUNT.into()),
        resources: Vec::new(),
        params: [("TableName".to_owned(), name.to_owned())].into(),
    }
}

fn table(name: &str) -> Value {
    change(
        "aws_dynamodb_table",
        name,
        json!({"id": name, "name": name}),
    )
}

async fn redeemed(h: &Harness, call: &AwsCall) -> Option<Authorization> {
    redeem_for(h, call).await.expect("no state error")
}

/// `AGENT`'s call, signed with its key, as redeem sees it.
async fn redeem_for(h: &Harness, call: &AwsCall) -> Result<Option<Authorization>, ProxyError> {
    let environment = h
        .gate
        .config
        .environment_of(call.account.as_deref(), &call.region);
    let quorum = Quorum {
        approvals: 1,
        approvers: None,
    };
    let shape = crate::proxy::error::Shape::of(&http::HeaderMap::new(), None);
    let signer = crate::proxy::redeem::Signer {
        access_key_id: &h.key,
        shape: &shape,
    };
    redeem(&h.gate, call, AGENT, &environment, &quorum, signer).await
}

/// The upstream's answer to a forwarded call.
fn answered(status: u16) -> Result<Forwarded, crate::proxy::error::ProxyError> {
    let response = http::Response::builder()
        .status(status)
        .body(crate::proxy::body::full(Vec::new()))
        .expect("response");
    Ok(Forwarded { response })
}

/// A timed loop (printed, never asserted): the cost of looking for a plan entry, for a
/// destructive call no plan covers and for one a plan covers, with 1 and 200 approved plans
/// of the same agent. A benchmark, not a check, so it runs only when asked:
/// `cargo test --lib plan_lookup_cost -- --ignored --nocapture`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn plan_lookup_cost() {
    for plans in [1usize, 200] {
        let h = harness().await;
        for i in 0..plans {
            approved_plan(&h, &[table(&format!("t{i}"))]);
        }
        // The steady state: the plans directory last changed a while ago (right after a
        // change the index reads the files again for a moment; see `plan::index`).
        std::fs::File::open(h.gate.config.state_dir.join("plans"))
            .and_then(|dir| {
                dir.set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
            })
            .expect("plans dir aged");
        let uncovered = delete_table("not-in-any-plan");
        let covered = delete_table("t0");
        const ROUNDS: u32 = 200;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            assert!(redeemed(&h, &uncovered).await.is_none());
        }
        let per_uncovered = started.elapsed() / ROUNDS;
        let other_action = s3_call("DeleteBucket", &[("Bucket", "b")]);
        let started = Instant::now();
        for _ in 0..ROUNDS {
            assert!(redeemed(&h, &other_action).await.is_none());
        }
        let per_other_action = started.elapsed() / ROUNDS;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let authorization = redeemed(&h, &covered).await.expect("covered");
            authorization.release(&h.gate).await;
        }
        let per_covered = started.elapsed() / ROUNDS;
        println!(
            "plan lookup with {plans} approved plans: {per_uncovered:?} per uncovered call of a planned action, {per_other_action:?} per call of an action no plan has, {per_covered:?} per covered call (reserve + release)"
        );
    }
}

/// A `force_destroy` bucket's entries: `DeleteBucket` may be refused (409) and sent again,
/// but once it succeeded neither it nor the entries that empty the bucket cover anything
/// more, so a bucket re-created under the same name is not emptied or deleted under the
/// plan, while the plan's other entries still cover their calls.
#[tokio::test(flavor = "current_thread")]
async fn a_deleted_bucket_closes_its_entries() {
    let h = harness().await;
    approved_plan(
        &h,
        &[
            change(
                "aws_s3_bucket",
                "data",
                json!({"id": "b", "bucket": "b", "force_destroy": true}),
            ),
            table("t"),
        ],
    );
    let delete_bucket = s3_call("DeleteBucket", &[("Bucket", "b")]);
    let delete_objects = s3_call(
        "DeleteObjects",
        &[
            ("Bucket", "b"),
            ("delete", ""),
            ("Object.1.Key", "k1"),
            ("Object.2.Key", "k2"),
        ],
    );
    let delete_object = s3_call("DeleteObject", &[("Bucket", "b"), ("Key", "k3")]);

    // Refused while the bucket holds objects; a 5xx is given back.
    let first = redeemed(&h, &delete_bucket).await.expect("covered");
    first.finish(&h.gate, &answered(409)).await;
    let throttled = redeemed(&h, &delete_bucket).await.expect("covered");
    throttled.finish(&h.gate, &answered(503)).await;
    for _ in 0..2 {
        let emptying = redeemed(&h, &delete_objects).await.expect("covered");
        emptying.finish(&h.gate, &answered(200)).await;
    }
    let deleted = redeemed(&h, &delete_bucket).await.expect("covered");
    deleted.finish(&h.gate, &answered(204)).await;

    assert!(
        redeemed(&h, &delete_bucket).await.is_none(),
        "DeleteBucket again"
    );
    assert!(
        redeemed(&h, &delete_objects).await.is_none(),
        "DeleteObjects after DeleteBucket"
    );
    assert!(
        redeemed(&h, &delete_object).await.is_none(),
        "DeleteObject after DeleteBucket"
    );

    // The table's entry still covers its call, once.
    let table_deleted = redeemed(&h, &delete_table("t")).await.expect("covered");
    table_deleted.finish(&h.gate, &answered(200)).await;
    assert!(redeemed(&h, &delete_table("t")).await.is_none());
}

/// A plan past its window covers nothing; the call that finds it so records it expired.
#[tokio::test(flavor = "current_thread")]
async fn a_plan_past_its_window_is_ended_by_the_call_that_finds_it() {
    let h = harness().await;
    let plan = approved_for(&h, &[table("t")], Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(1100));
    assert!(redeemed(&h, &delete_table("t")).await.is_none());
    let store = PlanStore::open(&h.gate.config.state_dir).expect("store");
    assert_eq!(
        store.get(&plan.id).expect("plan").status,
        crate::plan::store::PlanStatus::Expired
    );
    assert!(h
        .gate
        .plans
        .lookup(AGENT, "dynamodb", "DeleteTable")
        .expect("lookup")
        .is_empty());
}

/// Sets the plans directory's modification time to `at`, as if nothing had changed since.
fn set_plans_dir_time(h: &Harness, at: std::time::SystemTime) {
    std::fs::File::open(h.gate.config.state_dir.join("plans"))
        .and_then(|dir| dir.set_modified(at))
        .expect("plans dir time set");
}

/// An index that has not caught up (another replica ended the plan; here, the plans
/// directory's time set back so the index trusts what it read) still holds the plan: the
/// status where plans are kept decides, and a status that cannot be read refuses the call.
#[tokio::test(flavor = "current_thread")]
async fn a_plan_ended_elsewhere_covers_nothing_though_the_index_holds_it() {
    let h = harness().await;
    let spent = approved_plan(&h, &[table("spent")]);
    let unreadable = approved_plan(&h, &[table("unreadable")]);
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(60);
    set_plans_dir_time(&h, long_ago);
    let held = |h: &Harness| -> BTreeSet<String> {
        let found = h.gate.plans.lookup(AGENT, "dynamodb", "DeleteTable");
        found
            .expect("lookup")
            .iter()
            .map(|p| p.plan_id.clone())
            .collect()
    };
    let both = BTreeSet::from([spent.id.clone(), unreadable.id.clone()]);
    assert_eq!(held(&h), both);

    // Spent through another replica; this one's index does not know.
    let elsewhere = PlanStore::open(&h.gate.config.state_dir).expect("store");
    assert!(elsewhere
        .end(&spent.id, crate::plan::store::PlanStatus::Spent)
        .expect("ended"));
    set_plans_dir_time(&h, long_ago);
    assert_eq!(held(&h), both, "the index is behind");
    assert!(
        redeemed(&h, &delete_table("spent")).await.is_none(),
        "a spent plan covers nothing"
    );
    assert_eq!(
        h.gate
            .store
            .committed(&format!(
                "{}#0",
                spent.receipt_id.as_deref().expect("receipt")
            ))
            .await
            .expect("ledger"),
        0
    );
    assert_eq!(
        held(&h),
        BTreeSet::from([unreadable.id.clone()]),
        "and leaves the index"
    );

    // A status that cannot be read: refused (fail closed), not honoured.
    let path = h
        .gate
        .config
        .state_dir
        .join(format!("plans/{}.json", unreadable.id));
    std::fs::write(&path, b"{ not json").expect("broken");
    set_plans_dir_time(&h, long_ago);
    let refused = redeem_for(&h, &delete_table("unreadable"))
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, http::StatusCode::SERVICE_UNAVAILABLE);
}

/// A key revoked where agents are kept (here, by another process: the request path's
/// registry has not reloaded) spends no use of a plan entry that covers its call: the key
/// is looked up again just before the use is reserved.
#[tokio::test(flavor = "current_thread")]
async fn a_key_revoked_since_the_agents_were_loaded_spends_no_use() {
    let h = harness().await;
    let plan = approved_plan(&h, &[table("orders")]);
    let entry = format!("{}#0", plan.receipt_id.as_deref().expect("receipt"));
    crate::state::agents::AgentStore::new(&h.gate.config.state_dir)
        .revoke(AGENT)
        .expect("revoke");
    let refused = redeem_for(&h, &delete_table("orders"))
        .await
        .err()
        .expect("a revoked key is refused");
    assert_eq!(refused.status, http::StatusCode::FORBIDDEN);
    assert_eq!(refused.code, "InvalidClientTokenId");
    // Nothing reserved: an active key finds the entry's one use still there.
    assert_eq!(h.gate.store.committed(&entry).await.expect("ledger"), 0);
    let store = h.gate.store.reserve(&entry, 1).await;
    assert!(
        store.is_ok(),
        "the revoked key took the entry's use: {store:?}"
    );
}
