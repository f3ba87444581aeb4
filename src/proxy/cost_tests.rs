//! Timed loops (printed, never asserted) for BENCHMARKS.md: what the in-process steps of one
//! call cost, and how that cost grows with the work: rules in the policy, agents in the
//! registry, approvals in the store. Benchmarks, not checks, so they run only when asked,
//! best with airlock's own code optimised (as the release build is; the dependencies
//! already are):
//!
//! ```sh
//! cargo test --lib --config 'profile.dev.package.airlock.opt-level=2' cost_ \
//!     -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Each figure is the least of 7 samples of a loop long enough to take ~20 ms.

// Setup that cannot succeed should stop the run loudly.
#![allow(clippy::expect_used)]

use crate::config::Config;
use crate::gate::Gate;
use crate::identify::{identify, AwsCall, Request};
use crate::policy::shortlist::Shortlists;
use crate::policy::{Mode, Policy, Rule};
use crate::receipt::Binding;
use crate::sigv4::key_cache::KeyCache;
use crate::sigv4::Scope;
use crate::state::agents::{AgentRecord, AgentRegistry, AgentsFile};
use crate::state::approvals::{Approval, Status};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const AGENT: &str = "claude";
const ENVIRONMENT: &str = "prod";
const ACCOUNT: &str = "111111111111";
const REGION: &str = "us-east-1";

/// The time of one `f()`: the least of 7 samples of ~20 ms each (the machine is shared, and
/// the least is the figure other processes disturbed least).
fn per_call(mut f: impl FnMut()) -> Duration {
    let mut n: u32 = 1;
    loop {
        let started = Instant::now();
        for _ in 0..n {
            f();
        }
        if started.elapsed() >= Duration::from_millis(20) || n >= 1 << 20 {
            break;
        }
        n *= 2;
    }
    (0..7)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..n {
                f();
            }
            started.elapsed() / n
        })
        .min()
        .unwrap_or_default()
}

/// `aws s3 cp s3://analytics-exports/reports/2026/02/q1-summary.csv -`, as authentication
/// hands it to identification (path-style, the SDK's `x-id`).
struct S3Get {
    query: Vec<(String, String)>,
    headers: http::HeaderMap,
}

impl S3Get {
    fn new() -> S3Get {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "user-agent",
            http::HeaderValue::from_static("aws-sdk-rust/1.3.9 os/linux lang/rust/1.89.0"),
        );
        headers.insert(
            "amz-sdk-invocation-id",
            http::HeaderValue::from_static("b6d4f3a0-6c1b-4e0e-9f4a-2d5c1e7a9b10"),
        );
        S3Get {
            query: vec![("x-id".into(), "GetObject".into())],
            headers,
        }
    }

    fn request(&self) -> Request<'_> {
        Request {
            signing_name: "s3",
            region: REGION,
            method: "GET",
            path: "/analytics-exports/reports/2026/02/q1-summary.csv",
            query: &self.query,
            headers: &self.headers,
            host: "localhost:8443",
            body: None,
            account: Some(ACCOUNT),
        }
    }
}

fn rules_from(text: &str) -> Vec<Rule> {
    #[derive(serde::Deserialize)]
    struct File {
        rule: Vec<Rule>,
    }
    toml::from_str::<File>(text).expect("the rules parse").rule
}

/// The five rules of `benches/hot_path.rs` (`benches/five_rules.toml`): what an operator writes.
fn five_rules() -> Vec<Rule> {
    rules_from(include_str!("../../benches/five_rules.toml"))
}

/// `n` rules as a large config has them: spread over ten services and five verbs, each
/// naming its own resources, a tenth of them for named agents only.
fn spread_rules(n: usize) -> Vec<Rule> {
    const SERVICES: &[&str] = &[
        "s3", "rds", "dynamodb", "lambda", "ec2", "iam", "sqs", "sns", "kms", "logs",
    ];
    const VERBS: &[&str] = &["Get", "Put", "Delete", "Create", "Update"];
    const EFFECTS: &[&str] = &["allow", "require_receipt", "deny"];
    let mut text = String::new();
    for i in 0..n {
        let service = SERVICES[i % SERVICES.len()];
        let verb = VERBS[(i / SERVICES.len()) % VERBS.len()];
        let agents = if i % 10 == 9 {
            format!("[\"agent-{i}\"]")
        } else {
            "[\"*\"]".to_string()
        };
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\neffect = \"{effect}\"\nactions = [\"{service}:{verb}*\"]\nresources = [\"arn:aws:{service}:*:*:thing-{i}-*\", \"arn:aws:s3:::bucket-{i}/*\"]\nagents = {agents}\n",
            effect = EFFECTS[i % EFFECTS.len()],
        ));
    }
    rules_from(&text)
}

/// `n` rules that all name `s3:GetObject`, each on its own bucket: the worst case for a
/// policy, every rule a candidate for the one call.
fn same_action_rules(n: usize) -> Vec<Rule> {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\neffect = \"require_receipt\"\nactions = [\"s3:GetObject\"]\nresources = [\"arn:aws:s3:::bucket-{i}/*\"]\n"
        ));
    }
    rules_from(&text)
}

fn policy(rules: Vec<Rule>) -> Policy {
    Policy {
        mode: Mode::Enforce,
        rules,
        builtin: true,
        irreversible_quorum: 1,
    }
}

fn rds_delete() -> AwsCall {
    AwsCall {
        service: "rds".into(),
        signing_name: "rds".into(),
        operation: "DeleteDBInstance".into(),
        region: REGION.into(),
        account: Some(ACCOUNT.into()),
        resources: vec![crate::identify::Resource {
            member: "DBInstanceIdentifier".into(),
            value: "prod-orders-db".into(),
            arn: Some(format!("arn:aws:rds:{REGION}:{ACCOUNT}:db:prod-orders-db")),
        }],
        params: [
            ("DBInstanceIdentifier", "prod-orders-db"),
            ("SkipFinalSnapshot", "true"),
            ("DeleteAutomatedBackups", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    }
}

/// Identification and the policy decision of one call, as the proxy runs them.
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn cost_identify_and_decide() {
    let get = S3Get::new();
    let read = identify(&get.request()).expect("identified");
    assert_eq!(read.action(), "s3:GetObject");
    let t = per_call(|| {
        black_box(identify(black_box(&get.request())).expect("identified"));
    });
    println!("identify s3:GetObject: {t:?}");
    let p = policy(five_rules());
    let delete = rds_delete();
    for (name, call) in [("s3:GetObject", &read), ("rds:DeleteDBInstance", &delete)] {
        let t = per_call(|| {
            black_box(p.decide(black_box(call), AGENT, ENVIRONMENT));
        });
        let kept = Shortlists::new(Arc::new(p.clone()), |p| p);
        let t_kept = per_call(|| {
            black_box(kept.decide(black_box(call), AGENT, ENVIRONMENT));
        });
        println!("decide {name}, 5 rules + the catalogue: {t:?}; with kept shortlists (as the proxy decides): {t_kept:?}");
    }
}

/// Decision time per call with 10 and 1,000 config rules (and the catalogue).
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn cost_policy_rules() {
    let read = identify(&S3Get::new().request()).expect("identified");
    let delete = rds_delete();
    for (shape, make) in [
        ("spread", spread_rules as fn(usize) -> Vec<Rule>),
        ("all on s3:GetObject", same_action_rules),
    ] {
        for n in [10, 1000] {
            let p = policy(make(n));
            for (name, call) in [("s3:GetObject", &read), ("rds:DeleteDBInstance", &delete)] {
                let t = per_call(|| {
                    black_box(p.decide(black_box(call), AGENT, ENVIRONMENT));
                });
                let kept = Shortlists::new(Arc::new(p.clone()), |p| p);
                let t_kept = per_call(|| {
                    black_box(kept.decide(black_box(call), AGENT, ENVIRONMENT));
                });
                println!(
                    "decide {name}, {n} rules ({shape}): {t:?}; with kept shortlists: {t_kept:?}"
                );
            }
        }
    }
}

/// Decision time per call with 10 and 10,000 agents calling in turn, each with two
/// actions, through the proxy's kept shortlists (5 rules + the catalogue).
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn cost_decision_agents() {
    let read = identify(&S3Get::new().request()).expect("identified");
    let delete = rds_delete();
    for n in [10usize, 10_000] {
        let agents: Vec<String> = (0..n).map(|i| format!("agent-{i}")).collect();
        let kept = Shortlists::new(Arc::new(policy(five_rules())), |p| p);
        let mut i = 0usize;
        let t = per_call(|| {
            let call = if (i / n).is_multiple_of(2) {
                &read
            } else {
                &delete
            };
            black_box(kept.decide(black_box(call), &agents[i % n], ENVIRONMENT));
            i += 1;
        });
        println!(
            "decide, {n} agents in turn, 2 actions each, kept shortlists: {t:?}; {} kept",
            kept.len()
        );
    }
}

/// What authentication looks up per call by the agent: the registry (by access key id)
/// and the agent's signing key (by key id and scope), with 10 and 10,000 agents, each
/// calling in turn.
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn cost_agents() {
    for n in [10usize, 10_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let records: Vec<AgentRecord> = (0..n)
            .map(|i| AgentRecord {
                name: format!("agent-{i}"),
                access_key_id: format!("AIRLOCK{i:013}"),
                secret_access_key: crate::secret::Secret::new(format!("secret-{i:034}")),
                created_at: "2026-12-05T00:00:00Z".into(),
                revoked_at: None,
                account: None,
                account_id: None,
            })
            .collect();
        let ids: Vec<String> = records.iter().map(|r| r.access_key_id.clone()).collect();
        let file = AgentsFile { agents: records };
        std::fs::write(
            dir.path().join("agents.json"),
            serde_json::to_vec(&file).expect("json"),
        )
        .expect("agents file written");
        let registry = AgentRegistry::open(dir.path()).expect("registry");
        assert_eq!(registry.len(), n);
        let keys = KeyCache::default();
        let scope = Scope {
            date: "20261205".into(),
            region: REGION.into(),
            service: "s3".into(),
        };
        let mut i = 0usize;
        let t_registry = per_call(|| {
            black_box(registry.get(&ids[i % n]).expect("known"));
            i += 1;
        });
        let t = per_call(|| {
            let agent = registry.get(&ids[i % n]).expect("known");
            black_box(keys.key(&agent.access_key_id, agent.secret.expose(), (&scope).into()));
            i += 1;
        });
        println!(
            "authentication lookups, {n} agents in turn: the agent {t_registry:?}; the agent and its signing key {t:?}; {} keys cached",
            keys.len()
        );
    }
}

/// A gate over a state dir holding `n` pending approvals of `AGENT`, each for its own
/// bucket's deletion.
async fn gate_with_pending(dir: &std::path::Path, n: usize) -> Gate {
    let approvals = dir.join("approvals");
    std::fs::create_dir_all(&approvals).expect("approvals dir");
    let decision = policy(Vec::new()).decide(&delete_bucket("b"), AGENT, ENVIRONMENT);
    for i in 0..n {
        let call = delete_bucket(&format!("bucket-{i}"));
        let binding = Binding::of(&call, AGENT, ENVIRONMENT);
        let a = Approval {
            id: format!("pending{i:019}"),
            status: Status::Pending,
            binding_key: super::redeem::binding_key(&binding),
            call,
            agent: AGENT.into(),
            environment: ENVIRONMENT.into(),
            rule: decision.rule().into(),
            reason: decision.reason().into(),
            irreversible: false,
            irreversible_reasons: Vec::new(),
            created_at: format!(
                "2026-12-05T{:02}:{:02}:{:02}Z",
                i / 3600 % 24,
                i / 60 % 60,
                i % 60
            ),
            last_seen_at: "2026-12-05T00:00:00Z".into(),
            attempts: 1,
            receipt_id: None,
            decided_by: None,
            decided_at: None,
            quorum: decision.quorum().clone(),
            approved_by: Vec::new(),
        };
        std::fs::write(
            approvals.join(format!("{}.json", a.id)),
            serde_json::to_vec_pretty(&a).expect("json"),
        )
        .expect("approval written");
    }
    let text = format!(
        "[listen]\nproxy = \"127.0.0.1:0\"\napprovals = \"127.0.0.1:0\"\n[state]\ndir = \"{}\"\n[approval]\nhold_seconds = 0\n",
        dir.display()
    );
    let config = Config::parse(&dir.join("airlock.toml"), &text).expect("config parses");
    Gate::open(Arc::new(config)).await.expect("gate opens")
}

fn delete_bucket(bucket: &str) -> AwsCall {
    AwsCall {
        service: "s3".into(),
        signing_name: "s3".into(),
        operation: "DeleteBucket".into(),
        region: REGION.into(),
        account: Some(ACCOUNT.into()),
        resources: vec![crate::identify::Resource {
            member: "Bucket".into(),
            value: bucket.into(),
            arn: Some(format!("arn:aws:s3:::{bucket}")),
        }],
        params: [("Bucket".to_owned(), bucket.to_owned())].into(),
    }
}

/// A blocked call's cost (find the open approval for its binding, or open one) and the
/// approval page's list, with 10 and 10,000 pending approvals.
#[test]
#[ignore = "a benchmark: run with --ignored --nocapture"]
fn cost_pending_approvals() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in [10usize, 10_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        let gate = runtime.block_on(gate_with_pending(dir.path(), n));
        let opened = started.elapsed();
        let decision = policy(Vec::new()).decide(&delete_bucket("b"), AGENT, ENVIRONMENT);
        // What `redeem` does for a call with no approval yet, then for its retries: the plan
        // index, the binding, the current approval, then attach or open.
        let blocked = |call: &AwsCall| {
            let binding = Binding::of(call, AGENT, ENVIRONMENT);
            let key = super::redeem::binding_key(&binding);
            runtime.block_on(async {
                let current = gate.store.current_approval(&key).await.expect("readable");
                let (a, is_new) = gate
                    .store
                    .find_or_open_pending(crate::store::BlockedCall {
                        binding_key: &key,
                        call,
                        agent: AGENT,
                        environment: ENVIRONMENT,
                        decision: &decision,
                    })
                    .await
                    .expect("recorded");
                black_box((current, a, is_new));
            });
        };
        let retry = delete_bucket(&format!("bucket-{}", n / 2));
        let plans = |call: &AwsCall| {
            gate.plans
                .lookup(AGENT, &call.service, &call.operation)
                .expect("lookup")
                .len()
        };
        let t_retry = per_call(|| {
            black_box(plans(&retry));
            blocked(&retry);
        });
        let mut fresh = 0usize;
        let t_new = per_call(|| {
            fresh += 1;
            blocked(&delete_bucket(&format!("new-{fresh}")));
        });
        let t_list = per_call(|| {
            let all = runtime
                .block_on(gate.store.list_approvals(None))
                .expect("list");
            let (pending, decided): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|a| a.status == Status::Pending);
            black_box(crate::approvals::pages::list_page(
                &pending,
                &decided,
                &[],
                "csrf",
            ));
        });
        println!(
            "{n} pending approvals: gate opened in {opened:?}; blocked call, retry {t_retry:?}, new {t_new:?} ({fresh} opened); list page {t_list:?}"
        );
    }
}
