//! The proxy: one request's path through named phases.
//!
//! ```text
//!  accept ──► authenticate ──► resign ──► forward ──► response
//!  (TLS,       (VerifiedRequest) (real      (pooled,
//!   HTTP/1.1,                     creds)     streamed)
//!   h2, limits)        │             │           │
//!                      └─────────────┴───────────┴──► error::ProxyError ──► AWS-shaped response
//! ```
//!
//! Each phase takes the value the previous one made, so the order is enforced by types:
//! only `authenticate` makes a `VerifiedRequest`, and only a `VerifiedRequest` can be
//! re-signed. Failures become responses in one place, [`error`].

pub mod accept;
pub mod authenticate;
pub mod body;
pub mod caller;
pub mod changeset;
pub mod error;
pub mod forward;
pub mod outcome;
pub mod own;
pub mod plan;
pub mod redeem;
pub mod resign;

use crate::config::Config;
use crate::credentials::RealCredentials;
use crate::sigv4::{Scope, SigningKey};
use crate::state::agents::{Agent, AgentRegistry};
use crate::state::approvals::ApprovalStore;
use crate::state::ledger::Ledger;
use body::ProxyBody;
use dashmap::DashMap;
use error::Shape;
use hyper::body::Incoming;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    pub config: Config,
    pub agents: Arc<AgentRegistry>,
    pub credentials: Arc<RealCredentials>,
    pub client: forward::Client,
    pub approvals: ApprovalStore,
    pub ledger: Ledger,
    pub audit: crate::audit::AuditLog,
    /// Slots for calls held while a human decides (`[approval] max_held`).
    pub held: Arc<tokio::sync::Semaphore>,
    /// Woken whenever this process decides an approval (the page), so held calls go on at once.
    pub approvals_changed: tokio::sync::Notify,
    /// One lock per receipt: identical calls under one receipt go one at a time.
    receipt_locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// The approval page's bound port, for links.
    approvals_port: AtomicU16,
    /// The account of the real credentials (GetCallerIdentity), once known.
    account: std::sync::RwLock<Option<String>>,
    /// When STS was last asked, so an unknown account is not asked for on every call.
    /// Held while STS is being asked, so concurrent calls wait for one answer.
    account_asked: tokio::sync::Mutex<Option<Instant>>,
    /// Derived signing keys by (access key id, scope): one HMAC chain per day, region and service.
    keys: DashMap<(String, Scope), SigningKey>,
}

/// Signing keys cached at most; past this the cache starts over.
const MAX_CACHED_KEYS: usize = 4096;

impl Proxy {
    pub fn new(
        config: Config,
        agents: Arc<AgentRegistry>,
        credentials: Arc<RealCredentials>,
    ) -> Result<Arc<Self>, String> {
        let client = forward::client(&config.upstream).map_err(|e| e.message)?;
        let approvals = ApprovalStore::open(&config.state_dir).map_err(|e| e.to_string())?;
        let ledger = Ledger::open(&config.state_dir).map_err(|e| e.to_string())?;
        let audit = crate::audit::AuditLog::start(&config.state_dir).map_err(|e| e.to_string())?;
        // The keys receipts may be signed with are read per gated call (a passkey enrolled
        // while serving counts at once); checked here so a bad set fails at start.
        redeem::trusted_keys(&config)?;
        let approvals_port = AtomicU16::new(config.approvals_addr.port());
        let held = Arc::new(tokio::sync::Semaphore::new(config.approval.max_held));
        Ok(Arc::new(Proxy {
            config,
            agents,
            credentials,
            client,
            approvals,
            ledger,
            audit,
            held,
            approvals_changed: tokio::sync::Notify::new(),
            receipt_locks: DashMap::new(),
            approvals_port,
            account: std::sync::RwLock::new(None),
            account_asked: tokio::sync::Mutex::new(None),
            keys: DashMap::new(),
        }))
    }

    pub fn set_approvals_port(&self, port: u16) {
        self.approvals_port.store(port, Ordering::Relaxed);
    }

    pub fn approvals_port(&self) -> u16 {
        self.approvals_port.load(Ordering::Relaxed)
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
        let id = (agent.access_key_id.clone(), scope.clone());
        if let Some(k) = self.keys.get(&id) {
            return *k;
        }
        if self.keys.len() >= MAX_CACHED_KEYS {
            self.keys.clear();
        }
        let key = authenticate::derive_key(agent, scope);
        self.keys.insert(id, key);
        key
    }
}

fn request_id() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("AIRLOCK{n:016X}")
}

/// One request, start to finish. Never fails: every error is rendered as a response.
/// What one request became, for the log line and the audit record.
#[derive(Default)]
struct Trace {
    agent: Option<String>,
    call: Option<crate::identify::AwsCall>,
    environment: Option<String>,
    effect: Option<&'static str>,
    rule: Option<String>,
    receipt: Option<(String, String)>,
}

/// One request, start to finish. Never fails: every error is rendered as a response.
pub async fn handle(proxy: Arc<Proxy>, req: http::Request<Incoming>) -> http::Response<ProxyBody> {
    let started = Instant::now();
    let request_id = request_id();
    let shape = Shape::of(req.headers(), req.uri().query());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut trace = Trace::default();

    let result = async {
        accept::check_header_limits(&proxy.config.limits, &req)?;
        let verified = authenticate::authenticate(&proxy, req, &shape).await?;
        trace.agent = Some(verified.agent.name.clone());
        let call = identify(&proxy, &verified).await?;
        trace.call = Some(call.clone());
        let authorization = decide(&proxy, &call, &verified.agent.name, &mut trace).await?;
        let signed = resign::resign(&proxy, verified, &call).await?;
        let forwarded =
            forward::forward(&proxy.client, &proxy.config.upstream, signed, &shape).await;
        if let Some(a) = authorization {
            trace.receipt = Some((a.receipt_id.clone(), a.approver.clone()));
            a.finish(&proxy, &forwarded);
        }
        forwarded
    }
    .await;

    let service = shape.service.as_deref().unwrap_or("-");
    let agent = trace.agent.as_deref().unwrap_or("-");
    let operation = trace
        .call
        .as_ref()
        .map(|c| c.action())
        .unwrap_or_else(|| "-".into());
    let latency_ms = started.elapsed().as_millis() as u64;
    let event = outcome::Outcome::of(&result, trace.receipt.is_some()).event();
    let mut record = crate::audit::record(event);
    record.insert("request_id".into(), serde_json::json!(request_id));
    record.insert("agent".into(), serde_json::json!(trace.agent));
    record.insert(
        "service".into(),
        serde_json::json!(trace
            .call
            .as_ref()
            .map(|c| c.service.clone())
            .or(shape.service.clone())),
    );
    record.insert(
        "action".into(),
        serde_json::json!(trace.call.as_ref().map(|c| c.action())),
    );
    if let Some(c) = &trace.call {
        let resources: Vec<String> = c
            .resources
            .iter()
            .map(crate::receipt::Binding::resource_name)
            .collect();
        record.insert("resources".into(), serde_json::json!(resources));
        record.insert("region".into(), serde_json::json!(c.region));
        record.insert("account".into(), serde_json::json!(c.account));
    }
    record.insert("environment".into(), serde_json::json!(trace.environment));
    record.insert("decision".into(), serde_json::json!(trace.effect));
    record.insert("rule".into(), serde_json::json!(trace.rule));
    record.insert(
        "receipt".into(),
        serde_json::json!(trace.receipt.as_ref().map(|r| r.0.clone())),
    );
    record.insert(
        "approver".into(),
        serde_json::json!(trace.receipt.as_ref().map(|r| r.1.clone())),
    );
    record.insert("latency_ms".into(), serde_json::json!(latency_ms));
    let response = match result {
        Ok(forwarded) => {
            let status = forwarded.response.status().as_u16();
            let upstream_id = forwarded
                .response
                .headers()
                .get("x-amz-request-id")
                .or_else(|| forwarded.response.headers().get("x-amzn-requestid"))
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            tracing::info!(%agent, %service, %operation, %method, %path, status, latency_ms, %upstream_id, outcome = event, "forwarded");
            record.insert("upstream_status".into(), serde_json::json!(status));
            record.insert("aws_request_id".into(), serde_json::json!(upstream_id));
            forwarded.response
        }
        Err(e) => {
            tracing::info!(%agent, %service, %operation, %method, %path, status = e.status.as_u16(), latency_ms, code = e.code, origin = ?e.origin, reason = %e.message, %request_id, outcome = event, "refused");
            record.insert("status".into(), serde_json::json!(e.status.as_u16()));
            record.insert("code".into(), serde_json::json!(e.code));
            record.insert("reason".into(), serde_json::json!(e.message));
            e.into_response(&shape, &request_id, method == http::Method::HEAD)
        }
    };
    // Every record is written before the agent hears back, so no crash of airlock loses
    // the record of an answered call; a spent receipt's is also fsynced first (the rest
    // within a second). A record that cannot be written does not hold the answer back;
    // the writer has said why, and calls that need a receipt are refused until it can
    // write again.
    if trace.receipt.is_some() {
        if !proxy.audit.write_durable(record).await {
            tracing::error!("the audit record of a receipt use could not be written");
        }
    } else {
        proxy.audit.write(record);
    }
    response
}

/// Phase 3, identify: the verified request as an AWS call. Anything that matches no
/// operation of its service is refused, never forwarded as "unknown".
async fn identify(
    proxy: &Proxy,
    v: &authenticate::VerifiedRequest,
) -> Result<crate::identify::AwsCall, error::ProxyError> {
    let account = proxy.account().await;
    let body = match &v.body {
        authenticate::VerifiedBody::Full { content, .. } => Some(content.as_ref()),
        authenticate::VerifiedBody::Stream { .. } => None,
    };
    let request = crate::identify::Request {
        signing_name: &v.scope.service,
        region: &v.scope.region,
        method: v.method.as_str(),
        path: &v.path,
        query: &v.query,
        headers: &v.headers,
        host: &v.host,
        body,
        account: account.as_deref(),
    };
    crate::identify::identify(&request)
        .map_err(|e| error::ProxyError::unidentified(e.code, e.message))
}

/// Phase 4 and 5, decide and redeem: allow, refuse, or demand a receipt.
async fn decide(
    proxy: &Arc<Proxy>,
    call: &crate::identify::AwsCall,
    agent: &str,
    trace: &mut Trace,
) -> Result<Option<redeem::Authorization>, error::ProxyError> {
    use crate::policy::builtin::CHANGE_SET_REMOVALS;
    use crate::policy::changeset::apply;
    use crate::policy::{Effect, Mode};
    let environment = proxy
        .config
        .environment_of(call.account.as_deref(), &call.region);
    let decision = proxy.config.policy.decide(call, agent, &environment);
    // The change-set rule decides once the change set is read, and only when nothing else
    // already asks for a receipt (then it is the rule that decided). What was read joins
    // the call (and so the receipt's binding, the page and the audit record).
    let read_change_set = decision.class == Some(CHANGE_SET_REMOVALS)
        && decision.effect == Effect::RequireReceipt
        && proxy.config.policy.mode == Mode::Enforce;
    let mut bound = None;
    let decision = if read_change_set {
        let reading = self::changeset::read(proxy, call).await;
        let (read_call, read_decision) = apply(call, &decision, &reading);
        tracing::info!(%agent, action = %call.action(), effect = read_decision.effect.as_str(), reason = %read_decision.reason, "change set read");
        trace.call = Some(read_call.clone());
        bound = Some(read_call);
        read_decision
    } else {
        decision
    };
    let call = bound.as_ref().unwrap_or(call);
    trace.environment = Some(environment.clone());
    trace.effect = Some(decision.effect.as_str());
    trace.rule = Some(decision.rule.clone());
    // Credentials handed to an agent cannot be taken back, so shadow mode does not forward
    // the calls that vend them either.
    let enforced = proxy.config.policy.mode == Mode::Enforce
        || (decision.effect == Effect::Deny && decision.vends_credentials);
    match (decision.effect, enforced) {
        (Effect::Allow, _) => Ok(None),
        (Effect::Deny, true) => Err(error::ProxyError::access_denied(
            error::Cause::DeniedByPolicy,
            crate::policy::refusal(&decision, &call.action(), agent, &environment),
        )),
        (_, false) => {
            tracing::warn!(%agent, %environment, action = %call.action(), effect = decision.effect.as_str(), rule = %decision.rule, "shadow mode: would have been gated; forwarded");
            Ok(None)
        }
        (Effect::RequireReceipt, true) => {
            redeem::redeem(proxy, call, agent, &environment, &decision)
                .await
                .map(Some)
                .map_err(|mut e| {
                    // What airlock read of the change set is what the agent must know.
                    if read_change_set && e.cause != error::Cause::Other {
                        e.message.push_str(&format!(" Why: {}.", decision.reason));
                    }
                    e
                })
        }
    }
}
