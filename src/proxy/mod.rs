//! The proxy: one request's path through named phases, one file each, in this order.
//!
//! ```text
//!  1 accept ─► 2 authenticate ─► 3 identify ─► 4 decide ─► 5 redeem ─► 6 resign ─► 7 forward
//!  (TLS, h1,    VerifiedRequest   AwsCall       Decided     Authorization SignedRequest response
//!   h2, limits)                                 (only when the decision needs a receipt)
//!        │            │              │            │            │            │           │
//!        └────────────┴──────────────┴────────────┴────────────┴────────────┴───────────┴─► outcome
//! ```
//!
//! Each phase takes the value the previous one made, so the order is enforced by types:
//! only `authenticate` makes a `VerifiedRequest`, only `decide` a `Decided` (which `redeem`
//! takes), only `redeem` an `Authorization`, only `resign` a `SignedRequest` (which
//! `forward` takes). Every request ends in [`outcome`]: one typed outcome that makes the
//! answer (refusals in the protocol's shape, [`error`]) and the call's audit record.
//!
//! [`Proxy`] holds what the path needs to reach AWS (the upstream client, the agents, their
//! signing keys, the real credentials); what a receipt needs is the [`Gate`]'s.

pub mod accept;
pub mod assume;
pub mod authenticate;
pub mod body;
pub mod caller;
pub mod changeset;
#[cfg(test)]
mod cost_tests;
pub mod decide;
pub mod error;
pub mod forward;
pub mod identify;
pub mod outcome;
pub mod own;
pub mod plan;
pub mod redeem;
pub mod request_id;
pub mod resign;

use crate::config::Config;
use crate::credentials::RealCredentials;
use crate::gate::Gate;
use crate::metrics::{timed, Phase};
use crate::sigv4::key_cache::KeyCache;
use crate::sigv4::{Scope, SigningKey};
use crate::state::agents::{Agent, AgentRegistry};
use body::ProxyBody;
use error::Shape;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    pub config: Arc<Config>,
    /// The approvals, ledger and audit log a gated call is redeemed against.
    pub gate: Arc<Gate>,
    pub agents: Arc<AgentRegistry>,
    pub credentials: Arc<RealCredentials>,
    pub client: forward::Client,
    /// The account of the real credentials (GetCallerIdentity), once known.
    account: std::sync::RwLock<Option<String>>,
    /// When STS was last asked, so an unknown account is not asked for on every call.
    /// Held while STS is being asked, so concurrent calls wait for one answer.
    account_asked: tokio::sync::Mutex<Option<Instant>>,
    /// The agents' signing keys: one HMAC chain per agent, day, region and service.
    keys: KeyCache,
    /// Sessions in the `[[account]]`s agents are bound to.
    sessions: assume::Sessions,
    /// The config's policy, deciding with the rules that can match each (action,
    /// environment, agent class) kept (`policy::shortlist`). Built from `config`'s very
    /// `Arc` (never another copy), so it decides by `config.policy`; decisions go through
    /// [`Proxy::policy_decision`], which checks that it still does.
    policy: crate::policy::shortlist::Shortlists<Config>,
}

impl Proxy {
    pub async fn new(
        config: Config,
        agents: Arc<AgentRegistry>,
        credentials: Arc<RealCredentials>,
    ) -> Result<Arc<Self>, String> {
        let client = forward::client(&config.upstream);
        let config = Arc::new(config);
        let gate = Arc::new(Gate::open(Arc::clone(&config)).await?);
        Ok(Arc::new(Proxy {
            gate,
            agents,
            credentials,
            client,
            account: std::sync::RwLock::new(None),
            account_asked: tokio::sync::Mutex::new(None),
            keys: KeyCache::default(),
            sessions: assume::Sessions::default(),
            policy: crate::policy::shortlist::Shortlists::new(Arc::clone(&config), |c| &c.policy),
            config,
        }))
    }

    /// What `config.policy` decides of `call`: through the kept shortlists, which were made
    /// for this very config; if `config` were ever another (a bug), by the policy itself,
    /// uncached, so no list kept for other rules can decide.
    pub(crate) fn policy_decision(
        &self,
        call: &crate::identify::AwsCall,
        agent: &str,
        environment: &str,
    ) -> crate::policy::Decision {
        if self.policy.is_for(&self.config) {
            return self.policy.decide(call, agent, environment);
        }
        debug_assert!(false, "the policy cache is for another config");
        tracing::error!("the policy cache is for another config; deciding without it");
        self.config.policy.decide(call, agent, environment)
    }

    /// The real credentials' account, asking STS once if it is not known yet.
    pub async fn account(&self) -> Option<String> {
        if let Some(a) = self
            .account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(a);
        }
        let mut asked = self.account_asked.lock().await;
        if let Some(a) = self
            .account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(a);
        }
        if asked.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(60)) {
            return None;
        }
        *asked = Some(Instant::now());
        match caller::caller_account(self).await {
            Ok(a) => {
                tracing::info!(account = %a, "airlock's own account");
                *self.account.write().unwrap_or_else(|p| p.into_inner()) = Some(a.clone());
                Some(a)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not learn airlock's own account");
                None
            }
        }
    }

    pub fn signing_key(&self, agent: &Agent, scope: &Scope) -> SigningKey {
        self.keys
            .key(&agent.access_key_id, agent.secret.expose(), scope.into())
    }
}

/// One request, start to finish. Never fails: every error is rendered as a response.
pub async fn handle(proxy: Arc<Proxy>, req: http::Request<Incoming>) -> http::Response<ProxyBody> {
    let started = Instant::now();
    let request_id = request_id::RequestId::new();
    let shape = Shape::of(req.headers(), req.uri().query());
    let method = req.method().clone();
    // For the log line: a view of the request's own bytes, not a copy of the path.
    let uri = req.uri().clone();
    let mut trace = outcome::Trace::default();

    // The metrics' `class` label, once decided.
    let mut class = None;
    let result = async {
        accept::check_header_limits(&proxy.config.limits, &req)?;
        accept::check_tunnel_host(&req)?;
        let verified = timed(
            Phase::Authenticate,
            authenticate::authenticate(&proxy, req, &shape),
        )
        .await?;
        trace.agent = Some(verified.agent.name.clone());
        // The agent outlives the request, which re-signing takes.
        let verified_agent = Arc::clone(&verified.agent);
        let agent = verified_agent.name.as_str();
        let account = assume::account_of(&proxy, &verified_agent)?;
        let call = timed(
            Phase::Identify,
            identify::identify(&proxy, &verified, account),
        )
        .await?;
        let decided = timed(Phase::Decide, decide::decide(&proxy, call, agent, account)).await;
        class = Some(
            decided
                .decision()
                .class()
                .unwrap_or(crate::metrics::NO_CLASS),
        );
        trace.effect = Some(decided.decision().effect().as_str());
        trace.rule = Some(decided.decision().rule().to_string());
        let forwarded = async {
            let authorization = match decided.next()? {
                decide::Next::Forward => None,
                decide::Next::Redeem => {
                    let signer = redeem::Signer {
                        access_key_id: &verified_agent.access_key_id,
                        shape: &shape,
                    };
                    let redeemed = redeem::redeem(&proxy.gate, &decided, signer);
                    Some(timed(Phase::Redeem, redeemed).await?)
                }
            };
            let receipt = authorization.as_ref().map(|a| a.receipt_id.as_str());
            let signed = async {
                let credentials = assume::credentials(&proxy, account, agent, receipt).await?;
                timed(
                    Phase::Resign,
                    resign::resign(&proxy, verified, decided.call(), credentials),
                )
                .await
            }
            .await;
            let signed = match signed {
                Ok(s) => s,
                Err(e) => {
                    // Nothing went upstream: the receipt's use goes back.
                    if let Some(a) = authorization {
                        a.release(&proxy.gate).await;
                    }
                    return Err(e);
                }
            };
            let forwarded = timed(
                Phase::Forward,
                forward::forward(&proxy.client, &proxy.config.upstream, signed, &shape),
            )
            .await;
            if let Some(a) = authorization {
                trace.receipt = Some((a.receipt_id.clone(), a.approver.clone()));
                a.finish(&proxy.gate, &forwarded).await;
            }
            forwarded
        }
        .await;
        // The call goes to its record as decided, handed over rather than copied.
        let (call, environment) = decided.into_call_and_environment();
        trace.call = Some(call);
        trace.environment = Some(environment);
        forwarded
    }
    .await;

    crate::metrics::call_answered(
        trace.call.as_ref().map(|c| c.service.as_str()),
        class,
        outcome::Outcome::of(&result, trace.receipt.is_some()).event(),
        outcome::upstream_error(&result),
    );
    let facts = outcome::RequestFacts {
        request_id,
        shape: &shape,
        method: &method,
        path: uri.path(),
        latency_ms: started.elapsed().as_millis() as u64,
    };
    let (response, record) = outcome::conclude(result, trace, &facts);
    // Every record is written before the agent hears back, so no crash of airlock loses
    // the record of an answered call; a spent receipt's is also fsynced first (the rest
    // within a second). A record that cannot be written does not hold the answer back;
    // the writer has said why, and calls that need a receipt are refused until it can
    // write again.
    if record.durable() {
        if !proxy
            .gate
            .store
            .audit_append_durable(record.into_fields())
            .await
        {
            tracing::error!("the audit record of a receipt use could not be written");
        }
    } else {
        proxy.gate.store.audit_append(record.into_fields()).await;
    }
    response
}
