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
pub mod error;
pub mod forward;
pub mod resign;

use crate::config::Config;
use crate::credentials::RealCredentials;
use crate::sigv4::{Scope, SigningKey};
use crate::state::agents::{Agent, AgentRegistry};
use body::ProxyBody;
use dashmap::DashMap;
use error::Shape;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    pub config: Config,
    pub agents: Arc<AgentRegistry>,
    pub credentials: Arc<RealCredentials>,
    pub client: forward::Client,
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
    ) -> Result<Arc<Self>, error::ProxyError> {
        let client = forward::client(&config.upstream)?;
        Ok(Arc::new(Proxy {
            config,
            agents,
            credentials,
            client,
            keys: DashMap::new(),
        }))
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
pub async fn handle(proxy: Arc<Proxy>, req: http::Request<Incoming>) -> http::Response<ProxyBody> {
    let started = Instant::now();
    let request_id = request_id();
    let shape = Shape::of(req.headers(), req.uri().query());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut agent_name = None;

    let result = async {
        let verified = authenticate::authenticate(&proxy, req, &shape).await?;
        agent_name = Some(verified.agent.name.clone());
        let signed = resign::resign(&proxy, verified).await?;
        forward::forward(&proxy.client, &proxy.config.upstream, signed, &shape).await
    }
    .await;

    let service = shape.service.as_deref().unwrap_or("-");
    let agent = agent_name.as_deref().unwrap_or("-");
    let latency_ms = started.elapsed().as_millis() as u64;
    match result {
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
            tracing::info!(%agent, %service, %method, %path, status, latency_ms, %upstream_id, "forwarded");
            forwarded.response
        }
        Err(e) => {
            tracing::info!(%agent, %service, %method, %path, status = e.status.as_u16(), latency_ms, code = e.code, origin = ?e.origin, reason = %e.message, %request_id, "refused");
            e.into_response(&shape, &request_id, method == http::Method::HEAD)
        }
    }
}
