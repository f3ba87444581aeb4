//! The rules that can match a call, found once per (action, agent, environment) and kept.
//!
//! A rule matches a call when its actions, environments and agents match (the
//! *who and what*) and its resources, `when` conditions and typed check hold. The first part
//! reads nothing but the three names, so its answer for one (action, agent, environment) is
//! the same for every call: a [`Shortlist`] of the rules that pass it, config and catalogue
//! apart, in their order. [`Policy::decide`](super::Policy::decide) makes one per call; the
//! proxy decides through [`Shortlists`], which keeps them, so a call is tested only against
//! the rules that name its action (most rules, and all but a few of the catalogue's, do
//! not).
//!
//! What is kept is never a decision: resources, parameters and checks are tested on every
//! call, so two calls that could be decided differently (the same operation on another
//! resource, with another parameter) share a shortlist and are still decided apart.
//!
//! - Keyed by all three names, compared in full on every hit (the hash only finds the entry).
//! - Bounded: at most [`MAX_SHORTLISTS`] entries; past that the cache starts over. The names
//!   are not the agent's to choose at will anyway: actions come from AWS's model (an
//!   unidentified call never gets here), agents from the registry, environments from the
//!   config.
//! - Bound to one policy: [`Shortlists`] holds the policy it caches for (through its owner,
//!   the proxy's immutable `Arc<Config>`), and decides only by it, so no entry can be read
//!   against rules other than those it was made from.

use super::{builtin, Decision, Policy};
use crate::identify::AwsCall;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

/// Shortlists kept at most: far more than one airlock's agents × actions in use.
pub const MAX_SHORTLISTS: usize = 4096;

/// The positions of the rules whose action, environment and agent globs match one
/// (action, agent, environment), in rule order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shortlist {
    /// Indices into `Policy::rules`.
    pub(super) config: Vec<usize>,
    /// Indices into the catalogue (`builtin::rules()`), empty when it is off.
    pub(super) catalogue: Vec<usize>,
}

impl Shortlist {
    /// Tests every rule of `policy`.
    pub fn of(policy: &Policy, action: &str, agent: &str, environment: &str) -> Shortlist {
        let passing = |rules: &[super::Rule]| -> Vec<usize> {
            rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.matches_who_and_what(action, agent, environment))
                .map(|(i, _)| i)
                .collect()
        };
        Shortlist {
            config: passing(&policy.rules),
            catalogue: if policy.builtin {
                passing(builtin::rules())
            } else {
                Vec::new()
            },
        }
    }
}

struct Entry {
    action: Box<str>,
    agent: Box<str>,
    environment: Box<str>,
    shortlist: Arc<Shortlist>,
}

/// A policy's decisions, with its shortlists kept by (action, agent, environment) (see the
/// module docs). `O` owns the policy (the proxy's `Config`); it is held, never changed.
pub struct Shortlists<O> {
    owner: Arc<O>,
    policy_of: fn(&O) -> &Policy,
    hasher: RandomState,
    entries: RwLock<HashMap<u64, Entry>>,
    max: usize,
}

impl<O> Shortlists<O> {
    /// Decides by `policy_of(&owner)`, keeping at most [`MAX_SHORTLISTS`] shortlists.
    pub fn new(owner: Arc<O>, policy_of: fn(&O) -> &Policy) -> Self {
        Self::with_max(owner, policy_of, MAX_SHORTLISTS)
    }

    pub fn with_max(owner: Arc<O>, policy_of: fn(&O) -> &Policy, max: usize) -> Self {
        Shortlists {
            owner,
            policy_of,
            hasher: RandomState::new(),
            entries: RwLock::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// The policy it decides by.
    pub fn policy(&self) -> &Policy {
        (self.policy_of)(&self.owner)
    }

    /// [`Policy::decide`], with the shortlist for the call's names from the cache.
    pub fn decide(&self, call: &AwsCall, agent: &str, environment: &str) -> Decision {
        let action = call.action();
        let shortlist = self.get(&action, agent, environment);
        self.policy().decide_among(call, &shortlist)
    }

    /// The shortlist for these names, from the cache or made now.
    fn get(&self, action: &str, agent: &str, environment: &str) -> Arc<Shortlist> {
        let hash = self.hasher.hash_one((action, agent, environment));
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.get(&hash).filter(|e| {
                *e.action == *action && *e.agent == *agent && *e.environment == *environment
            }) {
                return Arc::clone(&e.shortlist);
            }
        }
        let shortlist = Arc::new(Shortlist::of(self.policy(), action, agent, environment));
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max {
            entries.clear();
        }
        entries.insert(
            hash,
            Entry {
                action: action.into(),
                agent: agent.into(),
                environment: environment.into(),
                shortlist: Arc::clone(&shortlist),
            },
        );
        shortlist
    }

    /// Shortlists kept now.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::Resource;
    use crate::policy::{Effect, Mode, Rule};

    fn rules(text: &str) -> Vec<Rule> {
        #[derive(serde::Deserialize)]
        struct File {
            rule: Vec<Rule>,
        }
        toml::from_str::<File>(text)
            .map(|f| f.rule)
            .unwrap_or_default()
    }

    /// Rules that name resources, parameters, agents and environments, one that lifts a
    /// catalogue class, and the catalogue.
    fn policy() -> Policy {
        let rules = rules(
            r#"
            [[rule]]
            name = "secret-reads"
            effect = "require_receipt"
            actions = ["s3:GetObject"]
            resources = ["arn:aws:s3:::secret/*", "Bucket=vault"]

            [[rule]]
            name = "no-skipped-snapshots"
            effect = "deny"
            actions = ["rds:DeleteDBInstance"]
            when = { SkipFinalSnapshot = "true" }

            [[rule]]
            name = "ci-writes-staging"
            effect = "allow"
            actions = ["s3:PutObject"]
            agents = ["ci-*"]
            environments = ["staging"]

            [[rule]]
            name = "writes-need-approval"
            effect = "require_receipt"
            actions = ["s3:Put*"]
            environments = ["prod"]

            [[rule]]
            name = "bot-may-vend-keys"
            effect = "allow"
            actions = ["iam:CreateAccessKey"]
            agents = ["bot"]
            resources = ["UserName=bot-*"]
            overrides = ["builtin:credential-vending"]
            "#,
        );
        assert_eq!(rules.len(), 5, "the rules parse");
        Policy {
            mode: Mode::Enforce,
            rules,
            builtin: true,
            irreversible_quorum: 2,
        }
    }

    fn call(
        service: &str,
        operation: &str,
        params: &[(&str, &str)],
        resource: Option<(&str, &str, &str)>,
    ) -> AwsCall {
        AwsCall {
            service: service.into(),
            signing_name: service.into(),
            operation: operation.into(),
            region: "us-east-1".into(),
            account: Some("111111111111".into()),
            resources: resource
                .map(|(member, value, arn)| {
                    vec![Resource {
                        member: member.into(),
                        value: value.into(),
                        arn: (!arn.is_empty()).then(|| arn.to_string()),
                    }]
                })
                .unwrap_or_default(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn get(bucket: &str, key: &str) -> AwsCall {
        call(
            "s3",
            "GetObject",
            &[("Bucket", bucket), ("Key", key)],
            Some(("Bucket", bucket, &format!("arn:aws:s3:::{bucket}/{key}"))),
        )
    }

    fn cached(policy: Policy) -> Shortlists<Policy> {
        Shortlists::new(Arc::new(policy), |p| p)
    }

    /// The calls of the tests below: pairs of the same operation that the rules decide
    /// differently by resource, parameter or key name.
    fn calls() -> Vec<AwsCall> {
        let delete = |skip: &str| {
            call(
                "rds",
                "DeleteDBInstance",
                &[("DBInstanceIdentifier", "db"), ("SkipFinalSnapshot", skip)],
                Some((
                    "DBInstanceIdentifier",
                    "db",
                    "arn:aws:rds:us-east-1:111111111111:db:db",
                )),
            )
        };
        let keys = |user: &str| {
            call(
                "iam",
                "CreateAccessKey",
                &[("UserName", user)],
                Some(("UserName", user, "")),
            )
        };
        vec![
            get("public", "a.txt"),
            get("secret", "a.txt"),
            get("vault", "a.txt"),
            get("public", "b.txt"),
            delete("false"),
            delete("true"),
            delete("TRUE"),
            call("s3", "PutObject", &[("Bucket", "b"), ("Key", "k")], None),
            keys("bot-1"),
            keys("alice"),
            call("s3", "DeleteBucket", &[("Bucket", "b")], None),
            call("dynamodb", "GetItem", &[("TableName", "t")], None),
        ]
    }

    #[test]
    fn the_same_operation_on_another_resource_is_decided_anew() {
        let decisions = cached(policy());
        let public = get("public", "report.csv");
        let secret = get("secret", "report.csv");
        // Kept after the first call, the shortlist holds the rule that names the resource;
        // whichever call comes first, each is decided by its own resource.
        for _ in 0..2 {
            assert_eq!(
                decisions.decide(&public, "claude", "prod").effect(),
                Effect::Allow
            );
            let gated = decisions.decide(&secret, "claude", "prod");
            assert_eq!(gated.effect(), Effect::RequireReceipt);
            assert_eq!(gated.rule(), "secret-reads");
        }
        let reversed = cached(policy());
        assert_eq!(
            reversed.decide(&secret, "claude", "prod").effect(),
            Effect::RequireReceipt
        );
        assert_eq!(
            reversed.decide(&public, "claude", "prod").effect(),
            Effect::Allow
        );
        // A `member=value` glob too.
        assert_eq!(
            reversed
                .decide(&get("vault", "x"), "claude", "prod")
                .effect(),
            Effect::RequireReceipt
        );
        assert_eq!(decisions.len(), 1);
    }

    #[test]
    fn the_same_operation_with_other_parameters_is_decided_anew() {
        let decisions = cached(policy());
        let calls = calls();
        let (keep, skip) = (&calls[4], &calls[5]);
        for _ in 0..2 {
            assert_eq!(
                decisions.decide(keep, "claude", "prod").effect(),
                Effect::RequireReceipt,
                "the catalogue's destructive verb"
            );
            let denied = decisions.decide(skip, "claude", "prod");
            assert_eq!(denied.effect(), Effect::Deny);
            assert_eq!(denied.rule(), "no-skipped-snapshots");
        }
        // An override holds only where its resources match: the same agent and action on
        // another user is still denied by the catalogue.
        let (bot, alice) = (&calls[8], &calls[9]);
        for _ in 0..2 {
            assert_eq!(decisions.decide(bot, "bot", "prod").effect(), Effect::Allow);
            let vending = decisions.decide(alice, "bot", "prod");
            assert_eq!(vending.effect(), Effect::Deny);
            assert!(vending.vends_credentials());
        }
    }

    #[test]
    fn another_agent_or_environment_has_its_own_shortlist() {
        let decisions = cached(policy());
        let put = &calls()[7];
        for _ in 0..2 {
            assert_eq!(
                decisions.decide(put, "ci-1", "staging").effect(),
                Effect::Allow
            );
            assert_eq!(
                decisions.decide(put, "ci-1", "prod").effect(),
                Effect::RequireReceipt
            );
            // No rule for claude in staging: the default allow, not ci-1's rule.
            let default = decisions.decide(put, "claude", "staging");
            assert_eq!(
                (default.effect(), default.rule()),
                (Effect::Allow, "default")
            );
            assert_eq!(
                decisions.decide(put, "claude", "prod").rule(),
                "writes-need-approval"
            );
        }
        assert_eq!(decisions.len(), 4);
    }

    /// Every call, agent and environment, twice over (cold, then from the cache), and once
    /// more through a cache too small to keep them all: always what the policy decides
    /// without a cache, in full (rule, reason, quorum, irreversibility).
    #[test]
    fn kept_shortlists_decide_exactly_as_the_policy_does() {
        let reference = policy();
        let agents = ["claude", "ci-1", "bot"];
        let environments = ["prod", "staging"];
        for decisions in [
            cached(policy()),
            Shortlists::with_max(Arc::new(policy()), |p| p, 3),
        ] {
            for round in 0..2 {
                for c in calls() {
                    for agent in agents {
                        for environment in environments {
                            assert_eq!(
                                decisions.decide(&c, agent, environment),
                                reference.decide(&c, agent, environment),
                                "{} for {agent} in {environment}, round {round}",
                                c.action()
                            );
                        }
                    }
                }
            }
            assert!(decisions.len() <= MAX_SHORTLISTS);
        }
        let small = Shortlists::with_max(Arc::new(policy()), |p| p, 3);
        for c in calls() {
            small.decide(&c, "claude", "prod");
            assert!(small.len() <= 3);
        }
    }
}
