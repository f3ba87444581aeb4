//! The index of approved plans: loaded from the files, read again when they change, and
//! keyed by agent and action.

use super::PlanIndex;
use crate::plan::store::{PlanRecord, PlanStatus, PlanStore};
use crate::receipt::{ApproverKey, PlanEntry};
use std::time::{Duration, SystemTime};

fn entry(service: &str, operation: &str, name: &str) -> PlanEntry {
    PlanEntry {
        address: format!("x.{name}"),
        environment: "prod".into(),
        account: Some("123456789012".into()),
        region: "eu-west-1".into(),
        service: service.into(),
        operation: operation.into(),
        resources: Vec::new(),
        params: [("Name".to_owned(), name.to_owned())].into(),
        free: Vec::new(),
        uses: Some(1),
    }
}

fn submitted(store: &PlanStore, agent: &str, entries: Vec<PlanEntry>) -> PlanRecord {
    store
        .submit(PlanRecord {
            agent: agent.into(),
            environments: vec!["prod".into()],
            entries,
            ..PlanRecord::default()
        })
        .expect("submitted")
}

fn fixture() -> (tempfile::TempDir, PlanStore, ApproverKey) {
    let state = tempfile::tempdir().expect("tempdir");
    let store = PlanStore::open(state.path()).expect("store");
    (state, store, ApproverKey::generate("alice").expect("key"))
}

fn approve(store: &PlanStore, key: &ApproverKey, record: &PlanRecord, ttl: Duration) {
    crate::plan::approved_alone(store, key, record, ttl);
}

/// Sets the plans directory's modification time back, as if the last change were old.
fn age_dir(state: &std::path::Path) {
    let dir = std::fs::File::open(state.join("plans")).expect("dir");
    dir.set_modified(SystemTime::now() - Duration::from_secs(60))
        .expect("set mtime");
}

fn ids(index: &PlanIndex, agent: &str, service: &str, operation: &str) -> Vec<String> {
    index
        .lookup(agent, service, operation)
        .expect("lookup")
        .iter()
        .map(|p| p.plan_id.clone())
        .collect()
}

/// Plan ids, in the order `ids` would list them if sorted.
fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[test]
fn approved_plans_are_found_by_agent_and_action_and_survive_a_restart() {
    let (state, store, alice) = fixture();
    let table = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "t")]);
    approve(&store, &alice, &table, Duration::from_secs(600));
    let vpc = submitted(&store, "tf", vec![entry("ec2", "DeleteVpc", "v")]);
    approve(&store, &alice, &vpc, Duration::from_secs(600));
    let pending = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "p")]);
    let other_agent = submitted(&store, "other", vec![entry("dynamodb", "DeleteTable", "o")]);
    approve(&store, &alice, &other_agent, Duration::from_secs(600));
    let expired = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "e")]);
    approve(&store, &alice, &expired, Duration::from_secs(1));

    // Loaded at start, as a restarted airlock does: nothing is lost.
    let index = PlanIndex::load(state.path()).expect("index");
    // A plan past its window is listed until the proxy, finding it so, ends it.
    assert_eq!(
        sorted(ids(&index, "tf", "dynamodb", "DeleteTable")),
        sorted(vec![table.id.clone(), expired.id.clone()])
    );
    assert!(store.end(&expired.id, PlanStatus::Expired).expect("ended"));
    assert_eq!(
        ids(&index, "tf", "dynamodb", "DeleteTable"),
        [table.id.as_str()]
    );
    assert_eq!(ids(&index, "tf", "ec2", "DeleteVpc"), [vpc.id.as_str()]);
    assert_eq!(
        ids(&index, "other", "dynamodb", "DeleteTable"),
        [other_agent.id.as_str()]
    );
    assert!(ids(&index, "tf", "ec2", "DeleteSubnet").is_empty());
    assert!(ids(&index, "nobody", "dynamodb", "DeleteTable").is_empty());
    let found = index
        .lookup("tf", "dynamodb", "DeleteTable")
        .expect("lookup");
    assert_eq!(
        found[0].receipt_id,
        store.get(&table.id).unwrap().receipt_id.unwrap()
    );
    assert!(found[0].receipt.body.plan.is_some());

    // Approved later (by another process: through the files only): found at the next lookup.
    approve(&store, &alice, &pending, Duration::from_secs(600));
    assert_eq!(
        sorted(ids(&index, "tf", "dynamodb", "DeleteTable")),
        sorted(vec![table.id.clone(), pending.id.clone()])
    );

    // Ended in another process: gone at the next lookup.
    assert!(store.end(&table.id, PlanStatus::Spent).expect("ended"));
    assert_eq!(
        ids(&index, "tf", "dynamodb", "DeleteTable"),
        [pending.id.as_str()]
    );
    // Ended here (the proxy spends or expires it): gone at once, without reading the files.
    age_dir(state.path());
    assert_eq!(ids(&index, "tf", "ec2", "DeleteVpc"), [vpc.id.as_str()]);
    let loads = index.loads();
    index.remove(&vpc.id);
    assert!(ids(&index, "tf", "ec2", "DeleteVpc").is_empty());
    assert_eq!(index.loads(), loads);
}

#[test]
fn the_files_are_read_again_only_when_the_plans_directory_changed() {
    let (state, store, alice) = fixture();
    let first = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "t")]);
    approve(&store, &alice, &first, Duration::from_secs(600));
    age_dir(state.path());
    let index = PlanIndex::load(state.path()).expect("index");
    assert_eq!(index.loads(), 1);
    for _ in 0..10 {
        assert_eq!(
            ids(&index, "tf", "dynamodb", "DeleteTable"),
            [first.id.as_str()]
        );
    }
    assert_eq!(index.loads(), 1, "an unchanged directory is not read again");

    // A change just now is read, and read again while its timestamp is too recent to trust
    // (a second change in the same clock tick would not move it).
    let second = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "u")]);
    approve(&store, &alice, &second, Duration::from_secs(600));
    assert_eq!(ids(&index, "tf", "dynamodb", "DeleteTable").len(), 2);
    assert_eq!(index.loads(), 2);
    ids(&index, "tf", "dynamodb", "DeleteTable");
    assert_eq!(index.loads(), 3, "a recent change is not trusted yet");
    age_dir(state.path());
    ids(&index, "tf", "dynamodb", "DeleteTable");
    ids(&index, "tf", "dynamodb", "DeleteTable");
    assert_eq!(
        index.loads(),
        4,
        "once old, the directory is read once more, then trusted"
    );
}

/// The plan ids the index holds now (sorted), without reading anything again.
fn held(index: &PlanIndex) -> Vec<String> {
    let loaded = index.lock();
    sorted(
        loaded
            .by_action
            .values()
            .flatten()
            .map(|p| p.plan_id.clone())
            .collect(),
    )
}

#[test]
fn a_read_from_before_a_removal_does_not_put_the_plan_back() {
    let (state, store, alice) = fixture();
    let spent = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "s")]);
    approve(&store, &alice, &spent, Duration::from_secs(600));
    let kept = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "k")]);
    approve(&store, &alice, &kept, Duration::from_secs(600));
    let index = PlanIndex::load(state.path()).expect("index");
    assert_eq!(
        held(&index),
        sorted(vec![spent.id.clone(), kept.id.clone()])
    );

    // A reload reads while the plan is still approved; the proxy removes it and ends it;
    // then the reload's result arrives.
    let started = index.lock().next_epoch();
    let read_before = super::by_action(store.approved().expect("approved"));
    index.remove(&spent.id);
    assert!(store.end(&spent.id, PlanStatus::Spent).expect("ended"));
    index.remove(&spent.id);
    index.lock().hold(started, read_before);
    assert_eq!(held(&index), [kept.id.as_str()], "the spent plan stays out");

    // A read started after the removal is the store's word, whatever it says.
    let started = index.lock().next_epoch();
    let read_after = super::by_action(store.approved().expect("approved"));
    index.lock().hold(started, read_after);
    assert_eq!(held(&index), [kept.id.as_str()]);
    assert!(
        index.lock().removed.is_empty(),
        "nothing kept once superseded"
    );

    // A read that started before the one held does not replace it.
    let earlier = index.lock().next_epoch();
    let later = index.lock().next_epoch();
    index
        .lock()
        .hold(later, super::by_action(store.approved().expect("approved")));
    index.lock().hold(earlier, Default::default());
    assert_eq!(held(&index), [kept.id.as_str()], "an older read is dropped");
}

#[test]
fn a_receipt_id_that_is_not_one_names_no_file() {
    let (state, store, alice) = fixture();
    let plan = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "t")]);
    approve(&store, &alice, &plan, Duration::from_secs(600));
    let receipt_id = store
        .get(&plan.id)
        .expect("plan")
        .receipt_id
        .expect("receipt");
    assert!(store.read_receipt(&receipt_id).is_ok());
    // A record edited by hand to name a file outside the receipts (which exists).
    let outside = format!("../plans/{}", plan.id);
    assert!(state
        .path()
        .join(format!("receipts/{outside}.json"))
        .exists());
    let e = store.read_receipt(&outside).expect_err("refused");
    assert!(e.to_string().contains("not a receipt id"), "{e}");
}

#[test]
fn a_decision_does_not_replace_another_plans_receipt() {
    let (_state, store, alice) = fixture();
    let first = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "a")]);
    let first = crate::plan::approved_alone(&store, &alice, &first, Duration::from_secs(600));
    let taken = first.receipt_id.expect("receipt");
    let bytes = store.read_receipt(&taken).expect("read");
    let other = submitted(&store, "tf", vec![entry("dynamodb", "DeleteTable", "b")]);
    let clash = store.sign(&other.id, |_, _| {
        Ok(crate::plan::store::PlanSigned {
            receipt_id: taken.clone(),
            receipt_json: b"{}".to_vec(),
            status: PlanStatus::Denied,
            approved_by: Vec::new(),
            decided_by: "mallory".into(),
            expires_at: None,
        })
    });
    let e = clash.expect_err("refused");
    assert!(e.to_string().contains("stored already"), "{e}");
    assert_eq!(store.read_receipt(&taken).expect("read"), bytes);
    assert_eq!(
        store.get(&other.id).expect("plan").status,
        PlanStatus::Pending
    );
}
