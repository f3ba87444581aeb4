//! The rules that can match a call, found once per (action, environment, agent class) and
//! kept.
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
//! A long shortlist (many rules on one action, each for its own resources) also keeps its
//! rules by the literal start of their resource globs (`ResourceIndex`), so a call is
//! tested only against the rules whose resources could match it.
//!
//! What is kept is never a decision: resources, parameters and checks are tested on every
//! call, so two calls that could be decided differently (the same operation on another
//! resource, with another parameter) share a shortlist and are still decided apart.
//!
//! - Keyed by (action, environment, agent class): an agent's class is the set of rules whose
//!   `agents` globs match its name (found once per agent, remembered for up to
//!   [`MAX_AGENTS`] agents, one forgotten per new one past that), so agents no rule singles
//!   out share one class, and 10,000 agents keep as few lists as one. Names and class are
//!   compared in full on every hit (the hash only finds the entry).
//! - Bounded: at most [`MAX_SHORTLISTS`] entries; past that one is let go per new one
//!   (never all at once). Lists with the same rules are shared (and their index). The names
//!   are not the agent's to choose at will anyway: actions come from AWS's model (an
//!   unidentified call never gets here), agents from the registry, environments from the
//!   config.
//! - Bound to one policy: [`Shortlists`] holds the policy it caches for (through its owner,
//!   the proxy's immutable `Arc<Config>`), and decides only by it, so no entry can be read
//!   against rules other than those it was made from.

use super::{builtin, Decision, Policy};
use crate::identify::AwsCall;
use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock, RwLock};

/// Shortlists kept at most: far more than one airlock's actions × environments × agent
/// classes in use (agents no rule singles out are one class, whatever their number).
pub const MAX_SHORTLISTS: usize = 4096;

/// Agents whose class is remembered at most (past that, one is forgotten per new agent).
pub const MAX_AGENTS: usize = 65_536;

/// The positions of the rules whose action, environment and agent globs match one
/// (action, agent, environment), in rule order.
#[derive(Debug, Clone, Default)]
pub struct Shortlist {
    /// Indices into `Policy::rules`.
    pub(super) config: Vec<usize>,
    /// Indices into the catalogue (`builtin::rules()`), empty when it is off.
    pub(super) catalogue: Vec<usize>,
    /// A long `config` list's rules by the literal start of their resource globs, made on
    /// first use; only for a kept shortlist (one made for a single call is used once).
    by_resource: Option<OnceLock<ResourceIndex>>,
}

/// Config rules on a shortlist at least this long are looked up by their resources'
/// literal start ([`ResourceIndex`]) rather than each tested.
const INDEX_FROM: usize = 16;

/// A shortlist's config rules by what their resource globs start with. A glob can match a
/// text only if the text starts with the glob's characters before its first wildcard (`*`
/// or `?`; resources compare case-sensitively), so a rule none of whose globs' literal
/// starts begins one of a call's resource texts (its `member=value`s and ARNs) cannot match
/// the call, and is not tested. A rule with a glob that starts with a wildcard (`*`) is
/// always tested. Only rules that cannot match are left out: the rest are tested in full.
#[derive(Debug, Clone, Default)]
struct ResourceIndex {
    /// Rules with a glob that starts with a wildcard.
    always: Vec<usize>,
    /// Literal start → the rules with a glob that starts so.
    by_start: HashMap<String, Vec<usize>>,
    /// The lengths of the literal starts, shortest first.
    lengths: Vec<usize>,
    /// Whether looking up leaves out enough to pay: not when the rules that are always
    /// tested and the largest group of one start are half the list or more (many rules
    /// whose globs start `arn:aws:s3:` and no more, say).
    selective: bool,
}

impl ResourceIndex {
    fn of(rules: &[super::Rule], positions: &[usize]) -> ResourceIndex {
        let mut index = ResourceIndex::default();
        for &i in positions {
            let Some(rule) = rules.get(i) else { continue };
            for glob in &rule.resources {
                let start = &glob[..glob.find(['*', '?']).unwrap_or(glob.len())];
                if start.is_empty() {
                    index.always.push(i);
                } else {
                    index.by_start.entry(start.to_string()).or_default().push(i);
                }
            }
        }
        index.lengths = index.by_start.keys().map(String::len).collect();
        index.lengths.sort_unstable();
        index.lengths.dedup();
        let largest = index.by_start.values().map(Vec::len).max().unwrap_or(0);
        index.selective = 2 * (index.always.len() + largest) < positions.len();
        index
    }

    /// The rules that may match a call whose resource texts are `texts`, in rule order.
    fn candidates<'t>(&self, texts: impl Iterator<Item = &'t str>) -> Vec<usize> {
        let mut found = self.always.clone();
        for text in texts {
            for &len in &self.lengths {
                let Some(start) = text.get(..len) else {
                    // Longer than the text, or not at a character boundary (then no literal
                    // start of that length begins it).
                    continue;
                };
                if let Some(rules) = self.by_start.get(start) {
                    found.extend_from_slice(rules);
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

impl Shortlist {
    /// Tests every rule of `policy`.
    pub fn of(policy: &Policy, action: &str, agent: &str, environment: &str) -> Shortlist {
        let (config, catalogue) = passing(policy, |r| {
            r.matches_who_and_what(action, agent, environment)
        });
        Shortlist {
            config,
            catalogue,
            by_resource: None,
        }
    }

    /// [`Shortlist::of`], to be kept: a long one is indexed by resource on first use.
    fn kept(policy: &Policy, action: &str, agent: &str, environment: &str) -> Shortlist {
        Shortlist {
            by_resource: Some(OnceLock::new()),
            ..Shortlist::of(policy, action, agent, environment)
        }
    }

    /// The config rules of the list that may match `call` (whose `member=value`s are
    /// `keys`), in rule order: all of them for a short list, else those the
    /// [`ResourceIndex`] does not rule out by the call's resource texts (its `member=value`s
    /// and ARNs).
    pub(super) fn config_candidates(
        &self,
        rules: &[super::Rule],
        call: &AwsCall,
        keys: &super::ResourceKeys,
    ) -> Cow<'_, [usize]> {
        let Some(by_resource) = self.by_resource.as_ref() else {
            return Cow::Borrowed(&self.config);
        };
        if self.config.len() < INDEX_FROM {
            return Cow::Borrowed(&self.config);
        }
        let index = by_resource.get_or_init(|| ResourceIndex::of(rules, &self.config));
        if !index.selective {
            return Cow::Borrowed(&self.config);
        }
        let texts = keys
            .get(call)
            .iter()
            .map(String::as_str)
            .chain(call.resources.iter().filter_map(|r| r.arn.as_deref()));
        Cow::Owned(index.candidates(texts))
    }
}

/// The positions of the rules whose `agents` globs match one agent (config, catalogue):
/// agents with the same are one class, and have the same shortlists.
#[derive(PartialEq, Eq, Hash)]
struct AgentClass {
    config: Vec<usize>,
    catalogue: Vec<usize>,
}

impl AgentClass {
    fn of(policy: &Policy, agent: &str) -> AgentClass {
        let (config, catalogue) = passing(policy, |r| r.matches_agent(agent));
        AgentClass { config, catalogue }
    }
}

/// The positions of the config rules and of the catalogue's (none when it is off) that
/// pass `test`, in rule order.
fn passing(policy: &Policy, test: impl Fn(&super::Rule) -> bool) -> (Vec<usize>, Vec<usize>) {
    let positions = |rules: &[super::Rule]| -> Vec<usize> {
        (0..rules.len()).filter(|&i| test(&rules[i])).collect()
    };
    let catalogue = if policy.builtin {
        positions(builtin::rules())
    } else {
        Vec::new()
    };
    (positions(&policy.rules), catalogue)
}

/// Agents' classes, by a number never reused.
#[derive(Default)]
struct Classes {
    /// Agent name → its class's number.
    by_agent: HashMap<Box<str>, u64>,
    /// Each class seen (at most `max`; then started over: a class seen again gets a new
    /// number, and old numbers keep their meaning).
    numbers: HashMap<AgentClass, u64>,
    next: u64,
}

struct Entry {
    action: Box<str>,
    environment: Box<str>,
    class: u64,
    shortlist: Arc<Shortlist>,
}

/// A policy's decisions, with its shortlists kept by (action, environment, agent class)
/// (see the module docs). `O` owns the policy (the proxy's `Config`); it is held, never
/// changed.
pub struct Shortlists<O> {
    owner: Arc<O>,
    policy_of: fn(&O) -> &Policy,
    hasher: RandomState,
    classes: RwLock<Classes>,
    entries: RwLock<Entries>,
    /// Shortlists kept at most, and agents' classes remembered at most.
    max: usize,
    max_agents: usize,
}

#[derive(Default)]
struct Entries {
    /// By the hash of (action, environment, class).
    by_names: HashMap<u64, Entry>,
    /// Each distinct shortlist once, by the hash of its rule positions: names with the same
    /// rules share one list, and its index. At most `max` lists in all.
    distinct: HashMap<u64, Vec<Arc<Shortlist>>>,
    distinct_count: usize,
}

impl Entries {
    /// Lets go of one entry (any), and of its list when no other entry holds it.
    fn evict_one(&mut self, hasher: &RandomState) {
        let Some(&hash) = self.by_names.keys().next() else {
            return;
        };
        let Some(gone) = self.by_names.remove(&hash) else {
            return;
        };
        // Held by `gone` and by `distinct` only (a call deciding with it holds one more; the
        // list then stays in `distinct` until the bound below clears it).
        if Arc::strong_count(&gone.shortlist) == 2 {
            let same_rules = hasher.hash_one((&gone.shortlist.config, &gone.shortlist.catalogue));
            if let Some(alike) = self.distinct.get_mut(&same_rules) {
                let before = alike.len();
                alike.retain(|s| !Arc::ptr_eq(s, &gone.shortlist));
                self.distinct_count -= before - alike.len();
                if alike.is_empty() {
                    self.distinct.remove(&same_rules);
                }
            }
        }
    }
}

impl<O> Shortlists<O> {
    /// Decides by `policy_of(&owner)`, keeping at most [`MAX_SHORTLISTS`] shortlists and
    /// [`MAX_AGENTS`] agents' classes.
    pub fn new(owner: Arc<O>, policy_of: fn(&O) -> &Policy) -> Self {
        Self::with_limits(owner, policy_of, MAX_SHORTLISTS, MAX_AGENTS)
    }

    /// At most `max` shortlists and `max` agents' classes (a small cache, for tests).
    #[cfg(test)]
    fn with_max(owner: Arc<O>, policy_of: fn(&O) -> &Policy, max: usize) -> Self {
        Self::with_limits(owner, policy_of, max, max)
    }

    fn with_limits(
        owner: Arc<O>,
        policy_of: fn(&O) -> &Policy,
        max: usize,
        max_agents: usize,
    ) -> Self {
        Shortlists {
            owner,
            policy_of,
            hasher: RandomState::new(),
            classes: RwLock::new(Classes::default()),
            entries: RwLock::new(Entries::default()),
            max: max.max(1),
            max_agents: max_agents.max(1),
        }
    }

    /// The policy it decides by.
    pub fn policy(&self) -> &Policy {
        (self.policy_of)(&self.owner)
    }

    /// Whether `owner` is the very owner it decides for (the same `Arc`).
    pub fn is_for(&self, owner: &Arc<O>) -> bool {
        Arc::ptr_eq(&self.owner, owner)
    }

    /// [`Policy::decide`], with the shortlist for the call's names from the cache.
    pub fn decide(&self, call: &AwsCall, agent: &str, environment: &str) -> Decision {
        let action = call.action();
        let shortlist = self.get(&action, agent, environment);
        self.policy().decide_among(call, &shortlist)
    }

    /// The number of `agent`'s class, remembered or found now.
    fn class_of(&self, agent: &str) -> u64 {
        if let Some(&n) = self
            .classes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_agent
            .get(agent)
        {
            return n;
        }
        let class = AgentClass::of(self.policy(), agent);
        let mut classes = self.classes.write().unwrap_or_else(|p| p.into_inner());
        if classes.by_agent.len() >= self.max_agents {
            if let Some(any) = classes.by_agent.keys().next().cloned() {
                classes.by_agent.remove(&any);
            }
        }
        if classes.numbers.len() >= self.max && !classes.numbers.contains_key(&class) {
            classes.numbers.clear();
        }
        let next = classes.next;
        let n = *classes.numbers.entry(class).or_insert(next);
        if n == next {
            classes.next += 1;
        }
        classes.by_agent.insert(agent.into(), n);
        n
    }

    /// The shortlist for these names, from the cache or made now.
    fn get(&self, action: &str, agent: &str, environment: &str) -> Arc<Shortlist> {
        let class = self.class_of(agent);
        let hash = self.hasher.hash_one((action, environment, class));
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = entries.by_names.get(&hash).filter(|e| {
                *e.action == *action && *e.environment == *environment && e.class == class
            }) {
                return Arc::clone(&e.shortlist);
            }
        }
        // The agent stands for its class: its agent test passes the class's rules only.
        let made = Shortlist::kept(self.policy(), action, agent, environment);
        let same_rules = self.hasher.hash_one((&made.config, &made.catalogue));
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.by_names.len() >= self.max && !entries.by_names.contains_key(&hash) {
            entries.evict_one(&self.hasher);
        }
        if entries.distinct_count >= self.max {
            entries.distinct.clear();
            entries.distinct_count = 0;
        }
        let alike = entries.distinct.entry(same_rules).or_default();
        let shortlist = match alike
            .iter()
            .find(|s| s.config == made.config && s.catalogue == made.catalogue)
        {
            Some(shared) => Arc::clone(shared),
            None => {
                let new = Arc::new(made);
                alike.push(Arc::clone(&new));
                entries.distinct_count += 1;
                new
            }
        };
        entries.by_names.insert(
            hash,
            Entry {
                action: action.into(),
                environment: environment.into(),
                class,
                shortlist: Arc::clone(&shortlist),
            },
        );
        shortlist
    }

    /// Shortlists kept now.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_names
            .len()
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
        // Agents no rule singles out share one list.
        let (a, b) = (
            decisions.get("s3:PutObject", "claude", "prod"),
            decisions.get("s3:PutObject", "someone-else", "prod"),
        );
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(
            &a,
            &decisions.get("s3:PutObject", "ci-1", "staging")
        ));
    }

    /// Every call, agent and environment, twice over (cold, then from the cache), and once
    /// more through a cache too small to keep them all: always what the policy decides
    /// without a cache, in full (rule, reason, quorum, irreversibility).
    #[test]
    fn kept_shortlists_decide_exactly_as_the_policy_does() {
        let reference = policy();
        let agents = ["claude", "ci-1", "bot"];
        let environments = ["prod", "staging"];
        for (decisions, bound) in [
            (cached(policy()), MAX_SHORTLISTS),
            (Shortlists::with_max(Arc::new(policy()), |p| p, 3), 3),
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
            assert!(decisions.len() <= bound);
            assert_eq!(bound == 3, decisions.len() == 3, "the small cache is full");
        }
        let small = Shortlists::with_max(Arc::new(policy()), |p| p, 3);
        for c in calls() {
            for agent in ["claude", "ci-1", "bot", "ci-2", "someone"] {
                small.decide(&c, agent, "prod");
                assert!(small.len() <= 3);
                assert!(
                    distinct_kept(&small) <= 3,
                    "the distinct lists are let go too"
                );
            }
        }
    }

    fn distinct_kept<O>(decisions: &Shortlists<O>) -> usize {
        let entries = decisions.entries.read().unwrap_or_else(|p| p.into_inner());
        let kept = entries.distinct.values().map(Vec::len).sum();
        assert_eq!(
            kept, entries.distinct_count,
            "the count kept is the real one"
        );
        kept
    }

    /// A shortlist naming a rule the policy does not have is a bug: caught in debug builds
    /// (and decided as a deny in release ones, never by the rules that happen to exist).
    #[test]
    #[should_panic(expected = "a shortlist names a rule the policy does not have")]
    fn a_shortlist_of_another_policy_is_not_used() {
        let policy = policy();
        let wrong = Shortlist {
            config: vec![policy.rules.len()],
            ..Shortlist::default()
        };
        policy.decide_among(&calls()[0], &wrong);
    }

    /// Thousands of agents, most of whom no rule singles out: they are one class, so the
    /// shortlists kept do not grow with them, and every decision (through a full cache and
    /// one that forgets agents and lists all the time) is the policy's own.
    #[test]
    fn many_agents_share_shortlists_and_decide_as_the_policy_does() {
        let reference = policy();
        let agents: Vec<String> = (0..2000)
            .map(|i| match i % 4 {
                0 => format!("ci-{i}"),
                1 if i % 3 == 0 => "bot".to_string(),
                _ => format!("agent-{i}"),
            })
            .collect();
        let calls = calls();
        let full = cached(policy());
        let small = Shortlists::with_max(Arc::new(policy()), |p| p, 3);
        for (i, agent) in agents.iter().enumerate() {
            for c in [&calls[i % calls.len()], &calls[(i * 7 + 3) % calls.len()]] {
                for environment in ["prod", "staging"] {
                    let expected = reference.decide(c, agent, environment);
                    for decisions in [&full, &small] {
                        assert_eq!(
                            decisions.decide(c, agent, environment),
                            expected,
                            "{} for {agent} in {environment}",
                            c.action()
                        );
                    }
                }
            }
        }
        // 3 classes (ci-*, bot, everyone else) × 9 actions × 2 environments at most.
        assert!(full.len() <= 3 * 9 * 2, "{} kept", full.len());
        assert!(small.len() <= 3 && distinct_kept(&small) <= 3);
        let classes = full.classes.read().unwrap_or_else(|p| p.into_inner());
        assert_eq!(classes.numbers.len(), 3, "three classes of agents");
        let remembered = small.classes.read().unwrap_or_else(|p| p.into_inner());
        assert!(remembered.by_agent.len() <= 3 && remembered.numbers.len() <= 3);
    }

    /// Many rules on one action, with every kind of resource glob: the index leaves out no
    /// rule that matches, and the decision is the one a plain walk of every rule makes.
    #[test]
    fn the_resource_index_leaves_out_only_rules_that_cannot_match() {
        let globs = [
            "arn:aws:s3:::data/*",
            "arn:aws:s3:::data/secret/*",
            "arn:aws:s3:::dat?/*",
            "arn:aws:s3:::data",
            "*/secret/*",
            "*",
            "Bucket=data",
            "Bucket=d*",
            "Key=secret/*",
            "arn:aws:s3:::dätä/*",
            "arn:aws:s3:::other-*",
            "arn:aws:s3:::DATA/*",
            "arn:aws:s3:::data/secret/key.txt",
            "?rn:aws:s3:::data/*",
        ];
        let mut text = String::new();
        for (i, glob) in globs.iter().enumerate() {
            for effect in ["allow", "require_receipt", "deny"] {
                text.push_str(&format!(
                    "[[rule]]\nname = \"r{i}-{effect}\"\neffect = \"{effect}\"\nactions = [\"s3:GetObject\"]\nresources = [\"{glob}\"]\n"
                ));
            }
        }
        // Two globs on one rule, and a rule with none (it never matches).
        text.push_str("[[rule]]\nname = \"two\"\neffect = \"deny\"\nactions = [\"s3:GetObject\"]\nresources = [\"arn:aws:s3:::x/*\", \"Key=y\"]\n");
        text.push_str("[[rule]]\nname = \"none\"\neffect = \"deny\"\nactions = [\"s3:GetObject\"]\nresources = []\n");
        let rules = rules(&text);
        assert_eq!(rules.len(), globs.len() * 3 + 2, "the rules parse");
        let policy = Policy {
            mode: Mode::Enforce,
            rules,
            builtin: false,
            irreversible_quorum: 1,
        };
        let shortlist = Shortlist::kept(&policy, "s3:GetObject", "claude", "prod");
        assert!(shortlist.config.len() >= INDEX_FROM, "the index is used");
        let kept = Shortlists::new(Arc::new(policy.clone()), |p| p);
        let mut calls = vec![
            get("data", "secret/key.txt"),
            get("data", "public.txt"),
            get("dätä", "x"),
            get("DATA", "x"),
            get("other-1", "secret/a"),
            get("x", "y"),
            get("dat", "z"),
            call("s3", "GetObject", &[], None),
        ];
        // A resource without an ARN, and one with two resources.
        calls.push(call("s3", "GetObject", &[], Some(("Bucket", "data", ""))));
        let mut two = get("data", "k");
        two.resources.push(Resource {
            member: "Key".into(),
            value: "y".into(),
            arn: None,
        });
        calls.push(two);
        for c in &calls {
            let keys = super::super::ResourceKeys::default();
            let candidates = shortlist.config_candidates(&policy.rules, c, &keys);
            let matching: Vec<usize> = (0..policy.rules.len())
                .filter(|&i| policy.rules[i].matches(c, "claude", "prod"))
                .collect();
            assert!(
                shortlist
                    .by_resource
                    .as_ref()
                    .and_then(OnceLock::get)
                    .is_some_and(|index| index.selective),
                "the index is used"
            );
            for i in &matching {
                assert!(
                    candidates.contains(i),
                    "rule {} matches {:?} but was left out",
                    policy.rules[*i].name,
                    c.resources
                );
            }
            let decision = kept.decide(c, "claude", "prod");
            assert_eq!(decision, policy.decide(c, "claude", "prod"));
            let strongest = matching.iter().map(|&i| policy.rules[i].effect).max();
            let first = strongest.and_then(|e| {
                matching
                    .iter()
                    .map(|&i| &policy.rules[i])
                    .find(|r| r.effect == e)
            });
            assert_eq!(
                (decision.effect(), decision.rule()),
                (
                    strongest.unwrap_or(Effect::Allow),
                    first.map_or("default", |r| r.name.as_str())
                ),
                "{:?}",
                c.resources
            );
        }
    }
}
