//! M-of-N for plans: how many approvers each call a plan covers needs, and collecting them.
//!
//! At submission every entry gets the quorum the gate would give its call ([`entry_quorum`]):
//! `Policy::decide` on the call the entry describes, or, for an entry with parameters the plan
//! cannot fix, `Policy::quorum_bound_within` (the most any rule matching the rest, or
//! anything under its resources, could ask). A plan
//! is approved once every entry's quorum is met by distinct approvers its rules let count
//! ([`tally`]). Until then the plan stays pending and the receipt of the quorum under way is
//! stored with it and authorizes nothing (the proxy redeems approved plans only). Joining,
//! checking and counting approvals is `receipt::collect`, the code single calls use too (one
//! body, each further approver a cosigner); this module only says what a plan needs.
//! One denial, by anyone trusted, denies the plan.

use crate::identify::AwsCall;
use crate::plan::shared::Plans;
use crate::plan::store::{PlanRecord, PlanSigned, PlanStatus, PlanStoreError};
use crate::policy::Policy;
use crate::receipt::collect::{self, Collects, Joined};
use crate::receipt::ids::NamedKey;
use crate::receipt::{self, Decision, PlanEntry, Quorum, Receipt, Tally, VerifiedReceipt};
use serde_json::{json, Map, Value};

/// The call an entry describes, as `identify` would read it: its parameters are the ones the
/// plan fixes.
pub fn entry_call(e: &PlanEntry) -> AwsCall {
    AwsCall {
        service: e.service.clone(),
        signing_name: receipt::quorum::signing_name_of(&e.service),
        operation: e.operation.clone(),
        region: e.region.clone(),
        account: e.account.clone(),
        resources: crate::identify::resources::of_params(
            &e.service,
            &e.operation,
            &e.region,
            e.account.as_deref(),
            &e.params,
        ),
        params: e.params.clone(),
    }
}

/// The quorum `agent`'s call that `e` covers needs under `policy`: what the gate decides for
/// it; for an entry with parameters the plan cannot fix (`free`), the most any rule matching
/// the rest could require, whatever its parameter conditions, including rules for anything
/// under the entry's resources (an object key the plan cannot know).
pub fn entry_quorum(policy: &Policy, agent: &str, e: &PlanEntry) -> Quorum {
    let call = entry_call(e);
    if e.free.is_empty() {
        policy.decide(&call, agent, &e.environment).quorum().clone()
    } else {
        policy.quorum_bound_within(&call, agent, &e.environment)
    }
}

/// Every entry's quorum under `policy`, in entry order.
pub fn entry_quorums(policy: &Policy, agent: &str, entries: &[PlanEntry]) -> Vec<Quorum> {
    entries
        .iter()
        .map(|e| entry_quorum(policy, agent, e))
        .collect()
}

/// How far the distinct `approvers` go toward every entry's quorum (`quorums`): those who
/// count for at least one entry, and `need`, at least as many as the entry furthest from its
/// quorum still needs on top (exact unless entries' `approvers` lists differ). Complete when
/// every entry's quorum is met.
pub fn tally(quorums: &[Quorum], approvers: &[String]) -> Tally {
    let counted: Vec<String> = approvers
        .iter()
        .filter(|name| quorums.iter().any(|q| q.counts(name)))
        .cloned()
        .collect();
    let missing = quorums
        .iter()
        .map(|q| missing_for(q, approvers))
        .max()
        .unwrap_or(0);
    Tally {
        need: u32::try_from(counted.len() + missing).unwrap_or(u32::MAX),
        counted,
    }
}

/// How many more approvers entry quorum `q` needs after `approvers`.
fn missing_for(q: &Quorum, approvers: &[String]) -> usize {
    let have = approvers.iter().filter(|n| q.counts(n)).count();
    (q.approvals.max(1) as usize).saturating_sub(have)
}

/// The quorum a plan receipt's body states: the most approvals any entry needs; at least two
/// when no one name counts for every entry (their `approvers` lists share none).
pub fn stated_quorum(quorums: &[Quorum]) -> u32 {
    let most = quorums
        .iter()
        .map(|q| q.approvals.max(1))
        .max()
        .unwrap_or(1);
    let lists: Vec<&Vec<String>> = quorums
        .iter()
        .filter_map(|q| q.approvers.as_ref())
        .collect();
    let one_name_for_all = match lists.split_first() {
        None => true,
        Some((first, rest)) => first.iter().any(|n| rest.iter().all(|l| l.contains(n))),
    };
    if one_name_for_all {
        most
    } else {
        most.max(2)
    }
}

impl PlanRecord {
    /// Each entry's quorum; one approver, anyone trusted, for a record from before quorums.
    pub fn entry_quorums(&self) -> Vec<Quorum> {
        if self.quorums.len() == self.entries.len() && !self.quorums.is_empty() {
            self.quorums.clone()
        } else {
            vec![Quorum::default(); self.entries.len().max(1)]
        }
    }

    /// "1 of 2 approvals": how far the plan is toward every entry's quorum.
    pub fn progress(&self) -> String {
        let t = tally(&self.entry_quorums(), &self.approved_by);
        format!("{} of {} approvals", t.have(), t.need)
    }

    /// More than one approver is needed (by some entry, or by the plan as a whole).
    pub fn needs_several(&self) -> bool {
        stated_quorum(&self.entry_quorums()) > 1
    }

    /// The entries that need more than one approver, or only some names: "needs 2 approvers:
    /// rds:DeleteDBSnapshot on arn:… (only alice, bob count)". Values come from the plan:
    /// the caller escapes them for its medium.
    pub fn quorum_lines(&self) -> Vec<String> {
        self.entries
            .iter()
            .zip(self.entry_quorums())
            .filter(|(_, q)| q.approvals > 1 || q.approvers.is_some())
            .map(|(e, q)| {
                let only = q
                    .approvers
                    .as_ref()
                    .map(|names| format!(" (only {} count)", names.join(", ")))
                    .unwrap_or_default();
                format!(
                    "needs {} approver{}: {} on {}{only}",
                    q.approvals.max(1),
                    if q.approvals > 1 { "s" } else { "" },
                    e.action(),
                    e.resources.join(", ")
                )
            })
            .collect()
    }
}

impl Collects for PlanRecord {
    const NOUN: &'static str = "plan";

    fn is_pending(&self) -> bool {
        self.status == PlanStatus::Pending
    }

    fn partial_receipt_id(&self) -> Option<&str> {
        self.receipt_id.as_deref()
    }

    fn approved_by(&self) -> &[String] {
        &self.approved_by
    }

    fn stated_quorum(&self) -> u32 {
        stated_quorum(&self.entry_quorums())
    }

    fn does_not_count(&self, approver: &str, so_far: &[String]) -> Option<String> {
        let quorums = self.entry_quorums();
        // A body stating one approver can carry no cosigner: its one approver must count for
        // every entry, or the plan would wait for a second signature it cannot take.
        if stated_quorum(&quorums) == 1 && !quorums.iter().all(|q| q.counts(approver)) {
            let mut lists = quorums.iter().filter_map(|q| q.approvers.as_ref());
            let first = lists.next().cloned().unwrap_or_default();
            let rest: Vec<&Vec<String>> = lists.collect();
            let everywhere: Vec<String> = first
                .into_iter()
                .filter(|n| rest.iter().all(|l| l.contains(n)))
                .collect();
            return Some(format!(
                "{approver:?} does not count for every call this plan covers, and it takes one approver who does: {}",
                everywhere.join(", ")
            ));
        }
        let waiting: Vec<(&PlanEntry, &Quorum)> = self
            .entries
            .iter()
            .zip(&quorums)
            .filter(|(_, q)| missing_for(q, so_far) > 0)
            .collect();
        if waiting.iter().any(|(_, q)| q.counts(approver)) {
            return None;
        }
        let mut names: Vec<String> = waiting
            .iter()
            .map(|(e, q)| {
                let who = q.approvers.as_deref().unwrap_or_default().join(", ");
                format!("{}: {who}", e.action())
            })
            .collect();
        names.dedup();
        Some(format!(
            "{approver:?} is not among the approvers who count for what this plan still needs ({})",
            names.join("; ")
        ))
    }

    fn tally(&self, verified: &VerifiedReceipt) -> Tally {
        tally(&self.entry_quorums(), verified.approvers())
    }

    fn progress(&self) -> String {
        PlanRecord::progress(self)
    }
}

/// Tells the approvers again that plan `p` waits for another approver (its page: `link`).
pub fn notify_again(config: &crate::config::Config, p: &PlanRecord, link: &str) {
    let environment = p.environment_label();
    let progress = p.progress();
    crate::notify::plan_again(
        config,
        &crate::notify::PlanWaiting {
            id: &p.id,
            environment: &environment,
            agent: &p.agent,
            calls: p.entries.len(),
            progress: &progress,
        },
        link,
    );
}

async fn stored_receipt(
    plans: &dyn Plans,
    p: &PlanRecord,
) -> Result<Option<Vec<u8>>, PlanStoreError> {
    match p.receipt_id.as_deref() {
        Some(id) => plans.read_receipt(id).await.map(Some),
        None => Ok(None),
    }
}

/// Refuses an approval that cannot add to the plan's quorum (`receipt::collect::may_approve_with`).
pub async fn may_approve(plans: &dyn Plans, p: &PlanRecord, approver: &str) -> Result<(), String> {
    let stored = stored_receipt(plans, p).await.map_err(|e| e.to_string())?;
    collect::may_approve_with(p, stored, approver)
}

/// The body an approver signs for plan `p` (`receipt::collect::body_to_sign_with`): while a
/// quorum is under way, its body in their name; otherwise a fresh plan receipt body, valid
/// for `ttl` from now, that states the plan's quorum.
pub async fn body_to_sign(
    plans: &dyn Plans,
    p: &PlanRecord,
    decision: Decision,
    approver: &impl NamedKey,
    ttl: std::time::Duration,
) -> Result<receipt::ReceiptBody, String> {
    let stored = stored_receipt(plans, p).await.map_err(|e| e.to_string())?;
    collect::body_to_sign_with(
        p,
        stored,
        decision,
        (approver.name(), approver.key_id()),
        || super::receipt_body(p, decision, approver, ttl),
    )
}

/// What [`record`] stored.
#[derive(Debug)]
pub struct PlanRecorded {
    pub plan: PlanRecord,
    pub receipt_id: String,
    pub decision: Decision,
    /// Toward the quorum (an approval only).
    pub tally: Option<Tally>,
}

/// Stores `single`, one approver's plan receipt over the body [`body_to_sign`] gave them: a
/// denial decides the plan; an approval joins the receipt of the quorum under way and
/// approves the plan once every entry's quorum is met. Checked again while nothing else
/// can change the plan (the files' lock, or its row locked in the database), against
/// `trusted`.
pub async fn record(
    plans: &dyn Plans,
    trusted: &receipt::TrustedKeys,
    single: Receipt,
) -> Result<PlanRecorded, PlanStoreError> {
    let refused = |e: String| PlanStoreError::Refused(e);
    let decision = single.body.decision;
    let approver = single.body.approver.clone();
    let id = single.body.approval_id.clone();
    let mut tally = None;
    let tally_out = &mut tally;
    let step = Box::new(move |p: &PlanRecord, stored: Option<Vec<u8>>| {
        if single.body.binding() != super::receipt_binding(p)
            || single.body.plan_grant() != Some(&super::grant(p))
        {
            return Err(refused("the receipt is for another plan".into()));
        }
        if decision == Decision::Deny {
            receipt::verify_signatures(&single, trusted).map_err(|e| refused(e.to_string()))?;
            return Ok(PlanSigned {
                receipt_id: single.body.id.as_str().to_owned(),
                receipt_json: single
                    .to_json()
                    .map_err(|e| refused(e.to_string()))?
                    .into_bytes(),
                status: PlanStatus::Denied,
                approved_by: p.approved_by.clone(),
                decided_by: approver.clone(),
                expires_at: None,
            });
        }
        let Joined {
            receipt: joined,
            tally: t,
        } = collect::join_approval(p, stored, single, trusted).map_err(refused)?;
        let complete = t.complete();
        let signed = PlanSigned {
            receipt_id: joined.body.id.as_str().to_owned(),
            receipt_json: joined
                .to_json()
                .map_err(|e| refused(e.to_string()))?
                .into_bytes(),
            status: if complete {
                PlanStatus::Approved
            } else {
                PlanStatus::Pending
            },
            approved_by: t.counted.clone(),
            decided_by: t.counted.join(", "),
            expires_at: complete.then(|| joined.body.expires_at.to_string()),
        };
        *tally_out = Some(t);
        Ok(signed)
    });
    let plan = plans.sign(&id, step).await?;
    Ok(PlanRecorded {
        receipt_id: plan.receipt_id.clone().unwrap_or_default(),
        plan,
        decision,
        tally,
    })
}

/// The audit records of one decision on a plan `via` the page or the CLI: for a plan that
/// needs several approvers, `quorum_signature` for each approval as it arrives (who, k of
/// M); then, once decided, `plan_approved` (with every approver) or `plan_denied`.
pub fn audit_records(r: &PlanRecorded, approver: &str, via: &str) -> Vec<Map<String, Value>> {
    let p = &r.plan;
    let mut out = Vec::new();
    let several = p.needs_several();
    if let Some(t) = r.tally.as_ref().filter(|_| several) {
        out.push(super::records::quorum_signature(
            p,
            &r.receipt_id,
            approver,
            via,
            (t.have(), t.need),
        ));
    }
    match p.status {
        PlanStatus::Approved => {
            let by = p.approved_by.join(", ");
            let mut d = super::records::approved(p, &r.receipt_id, &by, via);
            if several {
                d.insert("approvers".into(), json!(p.approved_by));
                d.insert("quorum".into(), json!(p.approved_by.len()));
            }
            out.push(d);
        }
        PlanStatus::Denied => out.push(super::records::denied(p, &r.receipt_id, approver, via)),
        PlanStatus::Pending | PlanStatus::Spent | PlanStatus::Expired => {}
    }
    out
}

/// The quorum a verified plan receipt meets under `policy` now, for `airlock receipt verify`:
/// every entry's quorum worked out afresh from the receipt's own entries (they carry the
/// parameters the plan fixes), over its distinct approvers.
pub fn tally_now(policy: &Policy, verified: &VerifiedReceipt) -> Option<Tally> {
    let body = verified.body();
    let grant = body.plan_grant()?;
    let quorums = entry_quorums(policy, &body.agent, &grant.entries);
    Some(tally(&quorums, verified.approvers()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::store::PlanStore;
    use std::collections::BTreeMap;

    fn entry(service: &str, operation: &str, params: &[(&str, &str)]) -> PlanEntry {
        PlanEntry {
            address: format!("{service}.{operation}"),
            environment: "prod".into(),
            account: Some("123456789012".into()),
            region: "eu-west-1".into(),
            service: service.into(),
            operation: operation.into(),
            resources: Vec::new(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            free: Vec::new(),
            uses: Some(1),
        }
    }

    fn policy(extra: &str, irreversible_quorum: u32) -> Policy {
        let config: crate::config::Config = crate::config::Config::parse(
            std::path::Path::new("airlock.toml"),
            &format!(
                "{}\n{extra}",
                crate::config::EXAMPLE.replace(
                    "irreversible_quorum = 1",
                    &format!("irreversible_quorum = {irreversible_quorum}")
                )
            ),
        )
        .expect("config");
        config.policy
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn each_entry_gets_the_quorum_the_gate_gives_its_call() {
        let snapshot = entry(
            "rds",
            "DeleteDBSnapshot",
            &[("DBSnapshotIdentifier", "nightly")],
        );
        let table = entry("dynamodb", "DeleteTable", &[("TableName", "items")]);
        let rule = "[[rule]]\nname = \"two\"\neffect = \"require_receipt\"\nactions = [\"rds:DeleteDBSnapshot\"]\napprovals = 2\napprovers = [\"alice\", \"bob\"]\n";
        // A rule's `approvals` and `approvers`.
        let p = policy(rule, 1);
        let qs = entry_quorums(&p, "terraform", &[snapshot.clone(), table.clone()]);
        assert_eq!(qs[0].approvals, 2);
        assert_eq!(
            qs[0].approvers.as_deref(),
            Some(&names(&["alice", "bob"])[..])
        );
        assert_eq!(qs[1], Quorum::default());
        // The catalogue's irreversible calls under `irreversible_quorum`.
        let p = policy("", 2);
        let qs = entry_quorums(&p, "terraform", &[snapshot.clone(), table.clone()]);
        assert_eq!(qs[0].approvals, 2);
        assert_eq!(
            qs[1].approvals, 1,
            "a table delete can be undone from backups"
        );
        // Each the same as the gate's decision on the call itself.
        for e in [&snapshot, &table] {
            let decided = p.decide(&entry_call(e), "terraform", "prod");
            assert_eq!(&entry_quorum(&p, "terraform", e), decided.quorum());
        }
    }

    #[test]
    fn a_plan_is_complete_when_every_entry_has_its_distinct_approvers() {
        let two_of = |n: Option<&[&str]>| Quorum {
            approvals: 2,
            approvers: n.map(names),
        };
        let one = Quorum::default();
        let quorums = [two_of(Some(&["alice", "bob"])), one.clone()];
        let t = tally(&quorums, &[]);
        assert_eq!((t.have(), t.need, t.complete()), (0, 2, false));
        let t = tally(&quorums, &names(&["alice"]));
        assert_eq!((t.have(), t.need, t.complete()), (1, 2, false));
        // Carol counts for the table, not the snapshot: still one more is needed.
        let t = tally(&quorums, &names(&["alice", "carol"]));
        assert_eq!((t.have(), t.need, t.complete()), (2, 3, false));
        let t = tally(&quorums, &names(&["alice", "bob"]));
        assert_eq!((t.have(), t.need, t.complete()), (2, 2, true));
        // A name no entry lets count is not counted at all.
        let only = [two_of(Some(&["alice", "bob"]))];
        let t = tally(&only, &names(&["carol", "alice"]));
        assert_eq!(t.counted, names(&["alice"]));
        assert!(!t.complete());
        // One approver suffices when every entry needs one.
        assert!(tally(&[one.clone(), one.clone()], &names(&["dave"])).complete());

        assert_eq!(stated_quorum(&quorums), 2);
        assert_eq!(stated_quorum(std::slice::from_ref(&one)), 1);
        // Two entries whose lists share no name need two people even at one approval each.
        let alice_only = Quorum {
            approvals: 1,
            approvers: Some(names(&["alice"])),
        };
        let bob_only = Quorum {
            approvals: 1,
            approvers: Some(names(&["bob"])),
        };
        assert_eq!(stated_quorum(&[alice_only.clone(), bob_only.clone()]), 2);
        let t = tally(&[alice_only, bob_only], &names(&["alice"]));
        assert_eq!((t.have(), t.need, t.complete()), (1, 2, false));
    }

    /// `plan approve|deny` against a real state dir: `who` decides plan `id`.
    fn decide(
        store: &PlanStore,
        trusted: &receipt::TrustedKeys,
        key: &receipt::ApproverKey,
        id: &str,
        decision: Decision,
    ) -> Result<PlanRecorded, String> {
        use crate::plan::shared::at_once;
        let public = key.public();
        let p = store.get(id).map_err(|e| e.to_string())?;
        if decision == Decision::Approve {
            at_once(may_approve(store, &p, public.name()))?;
        }
        let body = at_once(body_to_sign(
            store,
            &p,
            decision,
            &public,
            std::time::Duration::from_secs(900),
        ))?;
        let signed = receipt::sign(body, key).map_err(|e| e.to_string())?;
        at_once(record(store, trusted, signed)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_plan_collects_distinct_approvers_and_one_denial_denies_it() {
        use crate::plan::store::PlanRecord;
        let dir = tempfile::tempdir().expect("dir");
        let store = PlanStore::open(dir.path()).expect("store");
        let keys: Vec<receipt::ApproverKey> = ["alice", "bob", "carol"]
            .iter()
            .map(|n| receipt::ApproverKey::generate(n).expect("key"))
            .collect();
        let mut trusted = receipt::TrustedKeys::new();
        for k in &keys {
            trusted.add_approver(&k.public()).expect("trusted");
        }
        let snapshot = entry(
            "rds",
            "DeleteDBSnapshot",
            &[("DBSnapshotIdentifier", "nightly")],
        );
        let submit_with = |entries: Vec<PlanEntry>, quorums: Vec<Quorum>| {
            store
                .submit(PlanRecord {
                    agent: "terraform".into(),
                    digest: "00".repeat(32),
                    environments: vec!["prod".into()],
                    entries,
                    quorums,
                    ..PlanRecord::default()
                })
                .expect("submitted")
                .id
        };
        let submit = || {
            submit_with(
                vec![snapshot.clone()],
                vec![Quorum {
                    approvals: 2,
                    approvers: Some(names(&["alice", "bob"])),
                }],
            )
        };
        let id = submit();
        let first = decide(&store, &trusted, &keys[0], &id, Decision::Approve).expect("alice");
        assert_eq!(first.plan.status, PlanStatus::Pending);
        assert_eq!(first.plan.progress(), "1 of 2 approvals");
        let events: Vec<Value> = audit_records(&first, "alice", "cli")
            .into_iter()
            .map(|r| json!([r["event"], r["approvals"], r["quorum"]]))
            .collect();
        assert_eq!(events, [json!(["quorum_signature", 1, 2])]);
        let twice = decide(&store, &trusted, &keys[0], &id, Decision::Approve).expect_err("twice");
        assert!(twice.contains("already approved this plan"), "{twice}");
        let carol = decide(&store, &trusted, &keys[2], &id, Decision::Approve).expect_err("carol");
        assert!(carol.contains("not among the approvers"), "{carol}");
        let second = decide(&store, &trusted, &keys[1], &id, Decision::Approve).expect("bob");
        assert_eq!(second.plan.status, PlanStatus::Approved);
        assert_eq!(second.plan.approved_by, names(&["alice", "bob"]));
        assert_eq!(second.receipt_id, first.receipt_id, "one receipt, one body");
        let stored = store.read_receipt(&second.receipt_id).expect("receipt");
        let v = receipt::verify(&Receipt::from_json(&stored).expect("reads"), &trusted)
            .expect("complete");
        assert!(v
            .check_entry_quorum(&Quorum {
                approvals: 2,
                approvers: Some(names(&["alice", "bob"])),
            })
            .is_ok());
        assert!(v
            .check_entry_quorum(&Quorum {
                approvals: 3,
                approvers: None,
            })
            .is_err());

        // Another plan: alice approves, carol (who counts for nothing here) may still deny.
        let id = submit();
        decide(&store, &trusted, &keys[0], &id, Decision::Approve).expect("alice");
        let no = decide(&store, &trusted, &keys[2], &id, Decision::Deny).expect("carol denies");
        assert_eq!(no.plan.status, PlanStatus::Denied);
        assert_eq!(no.plan.decided_by.as_deref(), Some("carol"));
        assert!(decide(&store, &trusted, &keys[1], &id, Decision::Approve).is_err());

        // One approval each, the snapshot's from alice or bob, the table's from anyone: the
        // body states one approver, so the one who signs must count for both. Carol does not.
        let table = entry("dynamodb", "DeleteTable", &[("TableName", "items")]);
        let id = submit_with(
            vec![snapshot.clone(), table],
            vec![
                Quorum {
                    approvals: 1,
                    approvers: Some(names(&["alice", "bob"])),
                },
                Quorum::default(),
            ],
        );
        let carol = decide(&store, &trusted, &keys[2], &id, Decision::Approve).expect_err("carol");
        assert!(
            carol.contains("does not count for every call") && carol.ends_with(": alice, bob"),
            "{carol}"
        );
        let bob = decide(&store, &trusted, &keys[1], &id, Decision::Approve).expect("bob");
        assert_eq!(bob.plan.status, PlanStatus::Approved);
        assert_eq!(bob.plan.approved_by, names(&["bob"]));
    }

    #[test]
    fn an_entry_whose_keys_the_plan_cannot_know_needs_what_rules_under_its_bucket_need() {
        let mut objects = entry("s3", "DeleteObject", &[("Bucket", "data")]);
        objects.free = vec!["Key".into()];
        let rule = |glob: &str| {
            format!("[[rule]]\nname = \"two\"\neffect = \"require_receipt\"\nactions = [\"s3:DeleteObject\"]\nresources = [\"{glob}\"]\napprovals = 2\n")
        };
        for (glob, quorum) in [
            ("arn:aws:s3:::data/secret/*", 2),
            ("arn:aws:s3:::dat*", 2),
            ("arn:aws:s3:::data", 2),
            ("arn:aws:s3:::other/*", 1),
            ("arn:aws:s3:::data-archive/*", 1),
        ] {
            let p = policy(&rule(glob), 1);
            assert_eq!(
                entry_quorum(&p, "terraform", &objects).approvals.max(1),
                quorum,
                "{glob}"
            );
        }
    }
}
