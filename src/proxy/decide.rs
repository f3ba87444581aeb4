//! Phase 4, decide: what the policy says of this call for this agent in its environment
//! (the pure `crate::policy`), with a CloudFormation change set read first when the rule
//! `builtin:change-set-removals` alone decides (see `proxy::changeset`). Deciding only
//! decides: a call that needs a receipt goes on to `redeem`, which finds it or holds it.
//!
//! The result, [`Decided`], is made only here, and `redeem` takes nothing else: a call
//! reaches the approval store only as the policy decided it.

use super::error::{Cause, ProxyError};
use super::Proxy;
use crate::identify::AwsCall;
use crate::policy::builtin::CHANGE_SET_REMOVALS;
use crate::policy::{Decision, Effect, Mode};
use std::sync::Arc;

/// Where the call goes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Allowed (or shadow mode): re-sign and forward.
    Forward,
    /// It needs a receipt: `redeem`.
    Redeem,
}

/// The policy's decision on one call, and the call as decided.
pub struct Decided {
    /// The call, with what a change set read added to its resources.
    call: AwsCall,
    /// The agent the call was decided for (what a receipt binds with the call).
    agent: String,
    environment: String,
    decision: Decision,
    /// The change set was read to decide (its findings are the decision's reason).
    read_change_set: bool,
    next: Result<Next, ProxyError>,
}

impl Decided {
    /// The call as decided: what a receipt binds, the page shows and the audit records.
    pub fn call(&self) -> &AwsCall {
        &self.call
    }

    pub fn agent(&self) -> &str {
        &self.agent
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// The call and its environment, handed over once the call is done with (for its record).
    pub fn into_call_and_environment(self) -> (AwsCall, String) {
        (self.call, self.environment)
    }

    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Forward, redeem, or the refusal of a policy `deny`.
    pub fn next(&self) -> Result<Next, ProxyError> {
        self.next.clone()
    }

    /// A refusal on the way to a receipt, with what was read of the change set when that is
    /// what the agent must know.
    pub(crate) fn explain(&self, mut e: ProxyError) -> ProxyError {
        if self.read_change_set && e.cause != Cause::Other {
            e.message
                .push_str(&format!(" Why: {}.", self.decision.reason()));
        }
        e
    }
}

/// Decides `agent`'s `call`, made in `account` (none: airlock's own).
pub(crate) async fn decide(
    proxy: &Arc<Proxy>,
    call: AwsCall,
    agent: &str,
    account: Option<&crate::accounts::Account>,
) -> Decided {
    let environment = proxy
        .config
        .environment_of(call.account.as_deref(), &call.region);
    let decision = proxy.policy_decision(&call, agent, &environment);
    // The change-set rule decides once the change set is read, and only when nothing else
    // already asks for a receipt (then it is the rule that decided). What was read joins
    // the call (and so the receipt's binding, the page and the audit record).
    let read_change_set = decision.class() == Some(CHANGE_SET_REMOVALS)
        && decision.effect() == Effect::RequireReceipt
        && proxy.config.policy.mode == Mode::Enforce;
    let (call, decision) = if read_change_set {
        let reading = super::changeset::read(proxy, &call, account, agent).await;
        let (read_call, read_decision) =
            crate::policy::changeset::apply(&call, &decision, &reading);
        tracing::info!(%agent, action = %call.action(), effect = read_decision.effect().as_str(), reason = %read_decision.reason(), "change set read");
        (read_call, read_decision)
    } else {
        (call, decision)
    };
    // Credentials handed to an agent cannot be taken back, so shadow mode does not forward
    // the calls that vend them either.
    let enforced = proxy.config.policy.mode == Mode::Enforce
        || (decision.effect() == Effect::Deny && decision.vends_credentials());
    let next = match (decision.effect(), enforced) {
        (Effect::Allow, _) => Ok(Next::Forward),
        (Effect::Deny, true) => Err(ProxyError::access_denied(
            Cause::DeniedByPolicy,
            crate::policy::refusal(&decision, &call.action(), agent, &environment),
        )),
        (_, false) => {
            tracing::warn!(%agent, %environment, action = %call.action(), effect = decision.effect().as_str(), rule = %decision.rule(), "shadow mode: would have been gated; forwarded");
            Ok(Next::Forward)
        }
        (Effect::RequireReceipt, true) => Ok(Next::Redeem),
    };
    Decided {
        call,
        agent: agent.to_owned(),
        environment,
        decision,
        read_change_set,
        next,
    }
}
