//! The pure core of the decide phase (`proxy::decide`): policy rules over environment,
//! agent, action, resource and parameters. Pure code.
//!
//! IAM-flavoured: each rule has an `effect` (`allow`, `require_receipt`, `deny`), `actions`
//! (`rds:Delete*`), `resources` (ARN globs, also matched against `member=value`),
//! `environments`, `agents`, and `when` conditions on parameters. An explicit deny beats a
//! required receipt, which beats an allow; what no rule matches is allowed. The built-in
//! catalogue ([`builtin`]) adds the classes of calls every account should gate.
//!
//! A user's rule lifts a built-in class only by naming it: `overrides =
//! ["builtin:credential-vending"]`, on a rule that names its agents and actions exactly
//! (the config refuses wildcards there). For a call that rule matches, the named class's
//! rules are set aside and the rest decide as usual.

pub mod builtin;
pub mod changeset;
pub mod checks;
pub mod glob;
pub mod shortlist;

use crate::identify::AwsCall;
pub use crate::receipt::Quorum;
pub use builtin::DESTRUCTIVE_VERBS;
use glob::glob_match;
use serde::{Deserialize, Serialize};
use shortlist::Shortlist;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    RequireReceipt,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::RequireReceipt => "require_receipt",
            Effect::Deny => "deny",
        }
    }
}

/// `enforce` gates; `shadow` forwards everything and records what would have been gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Enforce,
    Shadow,
}

/// One rule, as written in the config (`[[rule]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub actions: Vec<String>,
    #[serde(default = "any")]
    pub resources: Vec<String>,
    #[serde(default = "any")]
    pub environments: Vec<String>,
    #[serde(default = "any")]
    pub agents: Vec<String>,
    /// Parameter conditions, all of which must hold (values are globs, compared
    /// case-insensitively for `true`/`false`).
    #[serde(default)]
    pub when: BTreeMap<String, String>,
    /// Shown on the approval: the call cannot be undone.
    #[serde(default)]
    pub irreversible: bool,
    /// Why the rule exists; shown to the agent and the approver.
    #[serde(default)]
    pub reason: Option<String>,
    /// Built-in classes (`builtin:credential-vending`) or rules this rule sets aside for
    /// the calls it matches. The config requires exact agents and actions with it.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// How many distinct approvers a call this rule gates needs (`require_receipt` only;
    /// default 1).
    #[serde(default)]
    pub approvals: Option<u32>,
    /// The approvers whose approvals count toward it (default: every trusted approver).
    #[serde(default)]
    pub approvers: Option<Vec<String>>,
    /// The built-in class the rule belongs to (catalogue rules only).
    #[serde(skip)]
    pub class: Option<&'static str>,
    /// A typed condition beyond `when` (catalogue rules only).
    #[serde(skip)]
    pub check: Option<checks::Check>,
}

fn any() -> Vec<String> {
    vec!["*".to_string()]
}

/// What the policy decided, and why. Made only here ([`Policy::decide`], and
/// [`changeset::apply`] once a change set is read); read through its accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    effect: Effect,
    /// The deciding rule's name (`default` when none matched).
    rule: String,
    reason: String,
    /// Any matching rule says the call cannot be undone.
    irreversible: bool,
    /// Why it cannot be undone: the reasons of the matching irreversible rules.
    irreversible_reasons: Vec<String>,
    /// The built-in class of the deciding rule, when it is a catalogue rule.
    class: Option<&'static str>,
    /// A `credential-vending` rule matched and was not overridden, whichever rule decided
    /// (shadow mode refuses such calls too: credentials handed out cannot be taken back).
    vends_credentials: bool,
    /// How many distinct approvers a receipt for it needs, and who counts ([`quorum_of`]).
    quorum: Quorum,
}

/// The rules at `positions` of `rules`, or `None` when a position has no rule.
fn rules_at<'r>(rules: &'r [Rule], positions: &[usize]) -> Option<Vec<&'r Rule>> {
    positions.iter().map(|&i| rules.get(i)).collect()
}

impl Decision {
    /// The deny of a call whose shortlist names a rule the policy does not have (a bug):
    /// fail closed.
    fn inconsistent_shortlist() -> Decision {
        Decision {
            effect: Effect::Deny,
            rule: "internal".into(),
            reason: "airlock could not decide this call (an internal error); denied".into(),
            irreversible: false,
            irreversible_reasons: Vec::new(),
            class: None,
            vends_credentials: false,
            quorum: Quorum::default(),
        }
    }

    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// The deciding rule's name (`default` when none matched).
    pub fn rule(&self) -> &str {
        &self.rule
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Any matching rule says the call cannot be undone.
    pub fn irreversible(&self) -> bool {
        self.irreversible
    }

    /// Why it cannot be undone.
    pub fn irreversible_reasons(&self) -> &[String] {
        &self.irreversible_reasons
    }

    /// The built-in class of the deciding rule, when it is a catalogue rule.
    pub fn class(&self) -> Option<&'static str> {
        self.class
    }

    /// A `credential-vending` rule matched and was not overridden.
    pub fn vends_credentials(&self) -> bool {
        self.vends_credentials
    }

    /// How many distinct approvers a receipt for it needs, and who counts.
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub mode: Mode,
    pub rules: Vec<Rule>,
    pub builtin: bool,
    /// `[approval] irreversible_quorum`: the approvers an irreversible call needs (0 and 1
    /// both mean one).
    pub irreversible_quorum: u32,
}

/// The quorum of a call that needs a receipt, from the matching rules that require one: the
/// most approvals any of them asks for (a rule's `approvals`; `irreversible_quorum` for a
/// rule marked irreversible, the catalogue's list of what cannot be undone), and only the
/// approvers every rule that names some allows.
fn quorum_of(matching: &[&Rule], irreversible_quorum: u32) -> Quorum {
    let gating = matching
        .iter()
        .filter(|r| r.effect == Effect::RequireReceipt);
    let mut quorum = Quorum::default();
    for r in gating {
        let mut wanted = r.approvals.unwrap_or(1);
        if r.irreversible {
            wanted = wanted.max(irreversible_quorum);
        }
        quorum.approvals = quorum.approvals.max(wanted);
        if let Some(names) = &r.approvers {
            quorum.approvers = Some(match quorum.approvers.take() {
                None => names.clone(),
                Some(so_far) => so_far.into_iter().filter(|n| names.contains(n)).collect(),
            });
        }
    }
    quorum
}

impl Rule {
    /// The cheap, selective tests first (most rules fail on the action).
    pub fn matches(&self, call: &AwsCall, agent: &str, environment: &str) -> bool {
        self.matches_who_and_what(&call.action(), agent, environment)
            && self.matches_what_it_acts_on(call, &ResourceKeys::default())
    }

    /// The tests of [`Rule::matches`] beyond the who and what: resources, `when` and the
    /// typed check, which read the call itself (never kept from one call to another).
    fn matches_what_it_acts_on(&self, call: &AwsCall, keys: &ResourceKeys) -> bool {
        self.matches_resource_keys(call, keys) && self.matches_parameters(call)
    }

    /// The agent test of [`Rule::matches`]: agents whose names pass the same rules' agent
    /// globs are one class to the policy (`shortlist`).
    fn matches_agent(&self, agent: &str) -> bool {
        self.agents.iter().any(|g| glob_match(g, agent, false))
    }

    /// The action, environment and agent tests of [`Rule::matches`].
    fn matches_who_and_what(&self, action: &str, agent: &str, environment: &str) -> bool {
        self.actions.iter().any(|g| glob_match(g, action, true))
            && self
                .environments
                .iter()
                .any(|g| glob_match(g, environment, false))
            && self.matches_agent(agent)
    }

    /// The parameter tests of [`Rule::matches`]: `when` and the catalogue's typed check.
    fn matches_parameters(&self, call: &AwsCall) -> bool {
        self.when.iter().all(|(k, want)| {
            // A key with `*` matches any parameter it fits (`*Expiration*`).
            call.params
                .iter()
                .filter(|(name, _)| {
                    if k.contains('*') {
                        glob_match(k, name, false)
                    } else {
                        *name == k
                    }
                })
                .any(|(_, have)| value_matches(want, have))
        }) && self.check.is_none_or(|c| c.holds(call))
    }

    /// Whether this rule sets `catalogue_rule` aside (it names the rule or its class).
    fn overrides_rule(&self, catalogue_rule: &Rule) -> bool {
        self.overrides.iter().any(|o| {
            *o == catalogue_rule.name
                || catalogue_rule
                    .class
                    .is_some_and(|c| o.strip_prefix("builtin:") == Some(c))
        })
    }

    /// [`Rule::matches_resources`] for a call known only by what a receipt binds: a
    /// resource written as its ARN has lost its `member=value` form, so a glob in that
    /// form may match it (and is taken to).
    fn may_match_resources(&self, call: &AwsCall) -> bool {
        self.matches_resources(call)
            || call
                .resources
                .iter()
                .any(|r| r.arn.is_some() && self.resources.iter().any(|g| !g.starts_with("arn:")))
    }

    /// [`Rule::may_match_resources`] for a call whose resources are known only as far as
    /// their container (a plan entry for a bucket's objects, keys unknown): a glob may also
    /// match anything under a container's ARN (`arn:aws:s3:::data/secret/*` under
    /// `arn:aws:s3:::data`), taken to when its text before the first wildcard agrees with
    /// `ARN/` as far as both go.
    fn may_match_within(&self, call: &AwsCall) -> bool {
        self.may_match_resources(call)
            || call
                .resources
                .iter()
                .filter_map(|r| r.arn.as_deref())
                .any(|arn| {
                    let under = format!("{arn}/");
                    self.resources.iter().any(|g| {
                        let literal = &g[..g.find(['*', '?']).unwrap_or(g.len())];
                        literal.starts_with(&under) || under.starts_with(literal)
                    })
                })
    }

    /// Any resource glob matches a resource's ARN or its `member=value`.
    fn matches_resources(&self, call: &AwsCall) -> bool {
        self.matches_resource_keys(call, &ResourceKeys::default())
    }

    /// [`Rule::matches_resources`] with the call's `member=value` keys already made.
    fn matches_resource_keys(&self, call: &AwsCall, keys: &ResourceKeys) -> bool {
        self.resources.iter().any(|g| g == "*")
            || call.resources.iter().zip(keys.get(call)).any(|(r, key)| {
                self.resources.iter().any(|g| {
                    glob_match(g, key, false)
                        || r.arn
                            .as_deref()
                            .is_some_and(|arn| glob_match(g, arn, false))
                })
            })
    }
}

/// The `member=value` of each of a call's resources, made once per decision (on first use)
/// rather than once per rule.
#[derive(Default)]
struct ResourceKeys(std::cell::OnceCell<Vec<String>>);

impl ResourceKeys {
    /// The keys, in the order of `call.resources` (always the one call they are made for).
    fn get(&self, call: &AwsCall) -> &[String] {
        self.0.get_or_init(|| {
            call.resources
                .iter()
                .map(|r| format!("{}={}", r.member, r.value))
                .collect()
        })
    }
}

/// Whether a parameter value satisfies a condition: numbers compare as numbers (AWS reads
/// `00` and `+0` as `0`), `true`/`false` without regard to case, the rest as globs.
fn value_matches(want: &str, have: &str) -> bool {
    let number = |s: &str| -> Option<f64> {
        let t = s.trim();
        (!t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)))
        .then(|| t.parse::<f64>().ok())
        .flatten()
    };
    if let (Some(w), Some(h)) = (number(want), number(have)) {
        return w == h;
    }
    let boolean = want.eq_ignore_ascii_case("true") || want.eq_ignore_ascii_case("false");
    glob_match(want, have.trim(), boolean)
}

impl Policy {
    /// Every matching rule (config first, then the catalogue, less the catalogue rules a
    /// matching config rule overrides); the strongest effect wins, and among equals the
    /// first.
    pub fn decide(&self, call: &AwsCall, agent: &str, environment: &str) -> Decision {
        let shortlist = Shortlist::of(self, &call.action(), agent, environment);
        self.decide_among(call, &shortlist)
    }

    /// [`Policy::decide`] over the rules of `shortlist`: those of this policy whose action,
    /// environment and agent match the call's ([`shortlist`]).
    fn decide_among(&self, call: &AwsCall, shortlist: &Shortlist) -> Decision {
        let catalogue = if self.builtin {
            builtin::rules()
        } else {
            &[][..]
        };
        let keys = ResourceKeys::default();
        let candidates = shortlist.config_candidates(&self.rules, call, &keys);
        // A position with no rule is a bug (a shortlist of another policy): decided as a
        // deny rather than by the rules that happen to be found.
        let (Some(config_rules), Some(catalogue_rules)) = (
            rules_at(&self.rules, &candidates),
            rules_at(catalogue, &shortlist.catalogue),
        ) else {
            debug_assert!(false, "a shortlist names a rule the policy does not have");
            tracing::error!(
                action = %call.action(),
                "a kept shortlist names a rule the policy does not have; the call is denied"
            );
            return Decision::inconsistent_shortlist();
        };
        let mut matching: Vec<&Rule> = config_rules
            .into_iter()
            .filter(|r| r.matches_what_it_acts_on(call, &keys))
            .collect();
        let overriding: Vec<&Rule> = matching
            .iter()
            .filter(|r| !r.overrides.is_empty())
            .copied()
            .collect();
        matching.extend(catalogue_rules.into_iter().filter(|r| {
            r.matches_what_it_acts_on(call, &keys)
                && !overriding.iter().any(|o| o.overrides_rule(r))
        }));
        let mut irreversible_reasons: Vec<String> = matching
            .iter()
            .filter(|r| r.irreversible && r.effect != Effect::Allow)
            .map(|r| r.reason.clone().unwrap_or_else(|| r.name.clone()))
            .collect();
        irreversible_reasons.dedup();
        let irreversible = !irreversible_reasons.is_empty();
        let vends_credentials = matching
            .iter()
            .any(|r| r.class == Some(builtin::CREDENTIAL_VENDING));
        let Some(strongest) = matching.iter().map(|r| r.effect).max() else {
            return Decision {
                effect: Effect::Allow,
                rule: "default".into(),
                reason: "no rule matches; allowed".into(),
                irreversible,
                irreversible_reasons,
                class: None,
                vends_credentials,
                quorum: Quorum::default(),
            };
        };
        let quorum = if strongest == Effect::RequireReceipt {
            quorum_of(&matching, self.irreversible_quorum)
        } else {
            Quorum::default()
        };
        let rule = matching.iter().find(|r| r.effect == strongest).copied();
        let (name, reason) = match rule {
            Some(r) => (
                r.name.clone(),
                r.reason
                    .clone()
                    .unwrap_or_else(|| format!("rule {} ({})", r.name, r.effect.as_str())),
            ),
            None => ("default".into(), String::new()),
        };
        Decision {
            effect: strongest,
            rule: name,
            reason,
            irreversible,
            irreversible_reasons,
            class: rule.and_then(|r| r.class),
            vends_credentials,
            quorum,
        }
    }
}

impl Policy {
    /// The most approvers a receipt for `call` can need under this policy when only what a
    /// receipt binds is known (its parameters are not: a receipt carries their digest): the
    /// quorum over every rule, config or catalogue, whose action, resources, environment
    /// and agent match, whatever its parameter conditions say and whatever overrides it.
    /// An upper bound of what [`Policy::decide`] would require, so a receipt that meets it
    /// meets the config's quorum for the call it answers.
    pub fn quorum_bound(&self, call: &AwsCall, agent: &str, environment: &str) -> Quorum {
        self.bound(call, agent, environment, Rule::may_match_resources)
    }

    /// [`Policy::quorum_bound`] for a call whose resources are containers of what it acts on
    /// (a plan entry whose object keys the plan cannot know): rules for anything under
    /// them count too.
    pub fn quorum_bound_within(&self, call: &AwsCall, agent: &str, environment: &str) -> Quorum {
        self.bound(call, agent, environment, Rule::may_match_within)
    }

    fn bound(
        &self,
        call: &AwsCall,
        agent: &str,
        environment: &str,
        may_match: fn(&Rule, &AwsCall) -> bool,
    ) -> Quorum {
        let catalogue = if self.builtin {
            builtin::rules()
        } else {
            &[][..]
        };
        let action = call.action();
        let possible: Vec<&Rule> = self
            .rules
            .iter()
            .chain(catalogue)
            .filter(|r| r.matches_who_and_what(&action, agent, environment) && may_match(r, call))
            .collect();
        quorum_of(&possible, self.irreversible_quorum)
    }
}

/// What a denied agent is told: the rule and why, and, for a built-in class, the exact
/// rule that would allow this call for this agent (a deny is never approvable).
pub fn refusal(decision: &Decision, action: &str, agent: &str, environment: &str) -> String {
    let mut message = format!(
        "airlock: {action} (environment {environment}) is denied by rule {}: {}. A denied call is not approvable",
        decision.rule, decision.reason
    );
    if let Some(class) = decision.class {
        message.push_str(&format!(
            ". To allow it for this agent only, add to airlock's config: [[rule]] name = \"allow-{agent}-{op}\" effect = \"allow\" agents = [\"{agent}\"] actions = [\"{action}\"] overrides = [\"builtin:{class}\"]",
            op = action.rsplit(':').next().unwrap_or(action),
        ));
    }
    message
}

#[cfg(test)]
mod tests;
