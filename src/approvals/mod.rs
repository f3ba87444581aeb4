//! The approval page (`[listen] approvals`): where a human sees exactly what a blocked call
//! would do, and approves or denies it with a passkey.
//!
//! # Why plain HTTP on loopback
//!
//! Browsers treat `http://localhost` as a secure context, so WebAuthn works there without a
//! certificate to trust, and the traffic never leaves the machine (the config refuses a
//! non-loopback address). Links use `localhost`, not `127.0.0.1`: WebAuthn needs a host name
//! as its relying-party id. Requests whose `Host` is not this listener are refused (DNS
//! rebinding), and pages reached through `127.0.0.1` are redirected to `localhost`.
//!
//! # Nothing here approves by itself
//!
//! The agent reads the approval link, can `curl` this port and can drive a browser. So:
//!
//! - A `GET` only shows. There are no sessions and no cookies: nothing a browser carries
//!   approves anything.
//! - Approving or denying is a WebAuthn ceremony, user verification required: `begin` builds
//!   the receipt bodies on the server from the stored approvals and hands out their hash as
//!   the challenge; `finish` takes the ceremony out (once, whatever the outcome), checks the
//!   assertion against an enrolled passkey (`receipt::webauthn`), the exact origin of this
//!   page and the passkey's counter, countersigns with airlock's own key ([`crate::state::trust`]) and
//!   stores each receipt (`Store::decide`, through the gate's store: the files, or
//!   PostgreSQL shared by every replica). A replayed assertion finds no ceremony;
//!   an assertion for another approval or another origin does not verify.
//! - Every `POST` must come from this page: its `Origin` is this page's origin, and it carries
//!   the page's CSRF token in `X-Airlock-CSRF` (which also forces a CORS preflight that this
//!   listener never grants). Bodies are small JSON documents with no unknown fields.
//! - Enrolling a passkey needs the one-time link that `airlock approver enroll` prints
//!   ([`enroll`]); once any passkey is enrolled, a new one waits until an enrolled approver
//!   confirms it here (`/enrollments/ID`) with an assertion over a challenge that binds it.
//!
//! # Layout
//!
//! [`pages`] renders HTML (everything escaped; invisible characters spelled out),
//! [`describe`] writes the plain-language line of what a call destroys, [`ceremony`] keeps
//! CSRF tokens and ceremonies in memory, [`crate::state::trust`] keeps airlock's key and the
//! passkeys, [`operations`] answers `/metrics` and `/healthz`.

pub mod ceremony;
pub mod enroll;
pub mod operations;
pub mod pages;
pub mod plan;
pub mod quorum;

use crate::gate::Gate;
use crate::proxy::body::{full, ProxyBody};
use crate::receipt::webauthn::{self, MAX_BATCH};
use crate::receipt::{
    self, ApproverKey, Binding, Decision, KeyId, PasskeyPublic, Receipt, ReceiptBody, Validity,
    WebAuthnAssertion,
};
use crate::state::approvals::{Approval, ApprovalError, Status};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine as _;
use ceremony::{Ceremonies, Ceremony};
use http::{header, Method, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest request body this listener reads.
const MAX_BODY: usize = 64 * 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Decided approvals the list shows.
const RECENT: usize = 25;
/// Shortest receipt lifetime on offer.
const MIN_TTL: Duration = Duration::from_secs(60);

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'; require-trusted-types-for 'script'";

/// The approval page's state, shared by all connections.
pub struct App {
    gate: Arc<Gate>,
    ceremonies: Ceremonies,
    /// airlock's own key, which countersigns passkey receipts (an error: why there is none).
    airlock_key: Result<ApproverKey, String>,
    /// `http://localhost:8444`: the one origin state-changing requests may come from.
    origin: String,
    /// `localhost:8444`: pages are served under this authority.
    authority: String,
    /// The WebAuthn relying-party id: the origin's host.
    rp_id: String,
    /// `Host` values this listener answers.
    hosts: Vec<String>,
}

/// Who sent a request, as a pending passkey records it.
struct Requester {
    remote_addr: String,
    user_agent: String,
}

/// A refused request: its status and a message for the person (or agent) who sent it.
struct Refusal {
    status: StatusCode,
    message: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// Every response this listener sends is made here, with the same security headers.
fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<bytes::Bytes>,
) -> http::Response<ProxyBody> {
    let mut resp = http::Response::new(full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let set = |h: &mut http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, http::HeaderValue::from_static(v));
    };
    set(h, "content-type", content_type);
    set(h, "content-security-policy", CSP);
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cache-control", "no-store");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(
        h,
        "permissions-policy",
        "publickey-credentials-get=(self), publickey-credentials-create=(self)",
    );
    resp
}

fn html(status: StatusCode, body: String) -> http::Response<ProxyBody> {
    respond(status, "text/html; charset=utf-8", body)
}

fn json_response(status: StatusCode, v: &Value) -> http::Response<ProxyBody> {
    respond(status, "application/json", v.to_string())
}

fn api_refusal(r: Refusal) -> http::Response<ProxyBody> {
    json_response(r.status, &json!({ "error": r.message }))
}

fn page_refusal(r: Refusal) -> http::Response<ProxyBody> {
    let title = r.status.canonical_reason().unwrap_or("Refused");
    html(r.status, pages::message_page(title, &r.message))
}

fn b64(bytes: &[u8]) -> String {
    BASE64URL.encode(bytes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBegin {
    decision: Decision,
    ids: Vec<String>,
    passkey: String,
    ttl_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBegin {
    /// The pending passkey's id.
    enrollment: String,
    confirm: bool,
    passkey: String,
}

/// The browser's answer to a `navigator.credentials.get` ceremony (decide or confirm).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssertionFinish {
    ceremony: String,
    credential_id: String,
    authenticator_data: String,
    client_data_json: String,
    signature: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollBegin {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollFinish {
    ceremony: String,
    credential_id: String,
    client_data_json: String,
    attestation_object: String,
}

impl App {
    pub fn new(gate: Arc<Gate>, port: u16) -> App {
        let config = &gate.config;
        // Worked out once, when the config was read.
        let page = config.approval_page(port);
        let authority = page.authority().to_owned();
        let rp_id = page.host().to_owned();
        if rp_id.parse::<std::net::IpAddr>().is_ok() || rp_id.starts_with('[') {
            tracing::warn!(%rp_id, "[approval] public_url names an IP address: browsers refuse passkeys there; use a host name such as localhost");
        }
        let mut hosts = vec![
            authority.clone(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        hosts.dedup();
        let airlock_key = crate::state::trust::ensure_airlock_key(&config.state_dir);
        if let Err(e) = &airlock_key {
            tracing::error!(error = %e, "airlock's own receipt key is unavailable: passkey approvals are refused until it is fixed");
        }
        App {
            ceremonies: Ceremonies::default(),
            airlock_key,
            origin: page.origin().to_owned(),
            authority,
            rp_id,
            hosts,
            gate,
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: http::Request<Incoming>,
        peer: std::net::SocketAddr,
    ) -> http::Response<ProxyBody> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("")
            .to_ascii_lowercase();
        if !self.hosts.contains(&host) {
            return respond(
                StatusCode::MISDIRECTED_REQUEST,
                "text/plain; charset=utf-8",
                "this is airlock's approval page; it answers only under its own host name\n",
            );
        }
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let is_page = matches!(
            segments.as_slice(),
            [""] | ["approvals", _] | ["enroll", _] | ["enrollments", _] | ["plans", _]
        );
        if req.method() == Method::GET && is_page && host != self.authority {
            // Passkeys need the host name, not the loopback address.
            let mut resp = respond(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
            if let Ok(v) = http::HeaderValue::from_str(&format!("{}{path}", self.origin)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return resp;
        }
        match (req.method().clone(), segments.as_slice()) {
            (Method::GET, [""] | ["approvals"]) => self.list_page().await,
            (Method::GET, ["healthz"]) => match operations::health(&self.gate).await {
                Ok(()) => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
                Err(why) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("unhealthy: {why}\n"),
                ),
            },
            (Method::GET, ["metrics"]) => respond(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                operations::metrics(&self.gate).await,
            ),
            (Method::GET, ["static", "app.js"]) => {
                respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
            }
            (Method::GET, ["static", "app.css"]) => {
                respond(StatusCode::OK, "text/css; charset=utf-8", APP_CSS)
            }
            (Method::GET, ["api", "approvals"]) => self.list_json().await,
            (Method::GET, ["api", "approvals", id]) => self.status_json(id).await,
            (Method::GET, ["approvals", id]) => self.approval_page(id).await,
            (Method::GET, ["plans", id]) => self.plan_page(id).await,
            (Method::GET, ["api", "plans", id]) => self.plan_status_json(id).await,
            (Method::GET, ["enroll", token]) => self.enroll_page(token).await,
            (Method::GET, ["enrollments", id]) => self.confirm_page(id).await,
            (Method::POST, ["api", "decide" | "enroll" | "confirm" | "plan", step])
                if matches!(*step, "begin" | "finish") =>
            {
                let kind = segments[1];
                let step = *step;
                match self.post(req, kind, step, peer).await {
                    Ok(v) => json_response(StatusCode::OK, &v),
                    Err(r) => {
                        tracing::warn!(%path, status = r.status.as_u16(), reason = %r.message, "approval page refused a request");
                        api_refusal(r)
                    }
                }
            }
            (
                _,
                [""]
                | ["approvals"]
                | ["approvals", _]
                | ["enroll", _]
                | ["enrollments", _]
                | ["plans", _]
                | ["api", ..]
                | ["static", _],
            ) => api_refusal(refuse(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
            _ => page_refusal(refuse(StatusCode::NOT_FOUND, "There is nothing here.")),
        }
    }

    /// The checks every state-changing request passes before its body is read.
    fn check_post(&self, req: &http::Request<Incoming>) -> Result<(), Refusal> {
        let headers = req.headers();
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if origin != Some(self.origin.as_str()) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "requests must come from the approval page itself (Origin {})",
                    self.origin
                ),
            ));
        }
        if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            if site != "same-origin" {
                return Err(refuse(StatusCode::FORBIDDEN, "cross-site request refused"));
            }
        }
        let json_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
        if !json_type {
            return Err(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send application/json",
            ));
        }
        let csrf = headers
            .get("x-airlock-csrf")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !self.ceremonies.csrf_ok(csrf) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "missing or expired page token: reload the page",
            ));
        }
        Ok(())
    }

    async fn post(
        &self,
        req: http::Request<Incoming>,
        kind: &str,
        step: &str,
        peer: std::net::SocketAddr,
    ) -> Result<Value, Refusal> {
        self.check_post(&req)?;
        let requester = Requester {
            remote_addr: peer.to_string(),
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(none)")
                .chars()
                .take(300)
                .collect(),
        };
        let body = http_body_util::Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| {
                refuse(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large or broken",
                )
            })?
            .to_bytes();
        fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, Refusal> {
            serde_json::from_slice(b)
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("bad request: {e}")))
        }
        match (kind, step) {
            ("decide", "begin") => self.decide_begin(parse(&body)?).await,
            ("decide", "finish") => self.decide_finish(parse(&body)?).await,
            ("confirm", "begin") => self.confirm_begin(parse(&body)?).await,
            ("confirm", "finish") => self.confirm_finish(parse(&body)?).await,
            ("enroll", "begin") => self.enroll_begin(parse(&body)?).await,
            ("enroll", "finish") => self.enroll_finish(parse(&body)?, requester).await,
            ("plan", "begin") => self.plan_begin(parse(&body)?).await,
            // A plan's ceremony finishes at /api/decide/finish, as every decision does.
            _ => Err(refuse(StatusCode::NOT_FOUND, "no such step")),
        }
    }

    fn internal(e: impl std::fmt::Display) -> Refusal {
        tracing::error!(error = %e, "approval page: cannot read or write state");
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "airlock cannot read or write its state; see its log",
        )
    }

    /// The trusted keys and the enrolled passkeys, read now from where the store keeps them.
    async fn passkeys(
        &self,
    ) -> Result<
        (
            receipt::TrustedKeys,
            Vec<crate::state::trust::PasskeyRecord>,
        ),
        Refusal,
    > {
        let trusted = self
            .gate
            .store
            .trusted_keys()
            .await
            .map_err(Self::internal)?;
        let records = self.identities().passkeys().await.map_err(Self::internal)?;
        Ok((trusted, records))
    }

    /// The enrolled passkeys as the pages offer them: (key id, label).
    async fn passkey_choices(&self) -> Result<Vec<(String, String)>, Refusal> {
        let records = self.identities().passkeys().await.map_err(Self::internal)?;
        Ok(records
            .iter()
            .map(|r| {
                let date = r.created_at.get(..10).unwrap_or(&r.created_at);
                (
                    r.key_id.clone(),
                    format!("{} — passkey enrolled {date} ({})", r.name, r.key_id),
                )
            })
            .collect())
    }

    /// Agents, passkeys and enrollments, where the store keeps them.
    fn identities(&self) -> &crate::store::identities::Identities {
        self.gate.store.identities()
    }

    /// An enrolled passkey by the id a page sent.
    fn enrolled_passkey(
        trusted: &receipt::TrustedKeys,
        wanted: &str,
    ) -> Result<PasskeyPublic, Refusal> {
        let wanted = KeyId::parse(wanted)
            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "not a passkey id"))?;
        trusted
            .passkeys()
            .find(|p| *p.key_id() == wanted)
            .cloned()
            .ok_or_else(|| refuse(StatusCode::FORBIDDEN, "no such enrolled passkey"))
    }

    /// The `publicKey` options of a `navigator.credentials.get` ceremony for `passkey`.
    fn assertion_options(&self, passkey: &PasskeyPublic, challenge: &[u8; 32]) -> Value {
        json!({
            "challenge": b64(challenge),
            "rpId": self.rp_id,
            "allowCredentials": [{"type": "public-key", "id": b64(passkey.credential_id())}],
            "userVerification": "required",
            "timeout": ceremony::WEBAUTHN_TIMEOUT_MS,
        })
    }

    /// Checks a finished assertion: by the still-enrolled `passkey`, over `challenge`, made on
    /// this page's origin, with a counter that went up. The trusted keys it was checked
    /// against, the passkey and the assertion.
    async fn check_assertion(
        &self,
        passkey: &KeyId,
        challenge: &[u8; 32],
        batch: Vec<String>,
        req: AssertionFinish,
    ) -> Result<(receipt::TrustedKeys, PasskeyPublic, WebAuthnAssertion), Refusal> {
        let (trusted, _) = self.passkeys().await?;
        let passkey: PasskeyPublic = trusted
            .passkeys()
            .find(|p| p.key_id() == passkey)
            .ok_or_else(|| refuse(StatusCode::FORBIDDEN, "the passkey is no longer enrolled"))?
            .clone();
        let assertion = WebAuthnAssertion {
            credential_id: req.credential_id,
            authenticator_data: req.authenticator_data,
            client_data_json: req.client_data_json,
            signature: req.signature,
            batch,
        };
        let facts = webauthn::verify_assertion(&assertion, &passkey, challenge)
            .map_err(|e| refuse(StatusCode::FORBIDDEN, format!("passkey refused: {e}")))?;
        if facts.origin != self.origin {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "passkey refused: made on {:?}, not on {}",
                    facts.origin, self.origin
                ),
            ));
        }
        self.identities()
            .advance_counter(passkey.key_id(), facts.sign_count)
            .await
            .map_err(|e| refuse(StatusCode::FORBIDDEN, format!("passkey refused: {e}")))?;
        Ok((trusted, passkey, assertion))
    }

    /// A started ceremony, taken out (it can be finished once).
    fn take_ceremony(&self, id: &str) -> Result<Ceremony, Refusal> {
        self.ceremonies.take(id).ok_or_else(|| {
            refuse(
                StatusCode::FORBIDDEN,
                "unknown, finished or expired ceremony: start again from the page",
            )
        })
    }

    /// Records a change to who may approve, on disk before the page answers.
    async fn audit_approver_change(&self, event: &str, approver: &str, key_id: &str, by: &str) {
        let record = crate::audit::approver_change(event, approver, key_id, by);
        if !self.gate.store.audit_append_durable(record.into()).await {
            tracing::error!("could not make the audit record of a passkey change durable");
        }
    }

    /// Receipt lifetimes on offer: the configured one, then shorter round ones.
    fn ttl_choices(&self) -> Vec<Duration> {
        let max = self.gate.config.approval.receipt_ttl;
        let mut out = vec![max];
        for s in [3600, 900, 300, 60] {
            let d = Duration::from_secs(s);
            if d < max && d >= MIN_TTL {
                out.push(d);
            }
        }
        out
    }

    async fn list(&self) -> Result<(Vec<Approval>, Vec<Approval>), Refusal> {
        let all = self
            .gate
            .store
            .list_approvals(Some(RECENT))
            .await
            .map_err(Self::internal)?;
        let (mut pending, decided): (Vec<_>, Vec<_>) =
            all.into_iter().partition(|a| a.status == Status::Pending);
        pending.reverse(); // oldest first: the order they arrived in
        let mut recent = decided;
        recent.sort_by(|a, b| {
            b.decided_at
                .as_deref()
                .unwrap_or(&b.last_seen_at)
                .cmp(a.decided_at.as_deref().unwrap_or(&a.last_seen_at))
        });
        recent.truncate(RECENT);
        Ok((pending, recent))
    }

    async fn list_page(&self) -> http::Response<ProxyBody> {
        let waiting = enroll::waiting_in(self.identities().enrollments().await);
        match self.list().await {
            Ok((pending, recent)) => html(
                StatusCode::OK,
                pages::list_page(&pending, &recent, &waiting, &self.ceremonies.new_csrf()),
            ),
            Err(r) => page_refusal(r),
        }
    }

    async fn list_json(&self) -> http::Response<ProxyBody> {
        match self.list().await {
            Ok((pending, recent)) => json_response(
                StatusCode::OK,
                &json!({
                    "pending": pending.iter().map(pages::row_json).collect::<Vec<_>>(),
                    "recent": recent.iter().map(pages::row_json).collect::<Vec<_>>(),
                }),
            ),
            Err(r) => api_refusal(r),
        }
    }

    async fn status_json(&self, id: &str) -> http::Response<ProxyBody> {
        match self.gate.store.get_approval(id).await {
            Ok(a) => json_response(StatusCode::OK, &pages::row_json(&a)),
            Err(ApprovalError::NotFound(_)) => {
                api_refusal(refuse(StatusCode::NOT_FOUND, "no such approval"))
            }
            Err(e) => api_refusal(Self::internal(e)),
        }
    }

    async fn approval_page(&self, id: &str) -> http::Response<ProxyBody> {
        let a = match self.gate.store.get_approval(id).await {
            Ok(a) => a,
            Err(ApprovalError::NotFound(_)) => {
                return page_refusal(refuse(
                    StatusCode::NOT_FOUND,
                    "There is no approval with this id.",
                ))
            }
            Err(e) => return page_refusal(Self::internal(e)),
        };
        let siblings: Vec<Approval> = if a.status == Status::Pending {
            match self.list().await {
                Ok((pending, _)) => pending
                    .into_iter()
                    .filter(|s| s.agent == a.agent && s.id != a.id)
                    .take(MAX_BATCH - 1)
                    .collect(),
                Err(r) => return page_refusal(r),
            }
        } else {
            Vec::new()
        };
        let passkeys = match self.passkey_choices().await {
            Ok(p) => p,
            Err(r) => return page_refusal(r),
        };
        let view = pages::ApprovalView {
            approval: &a,
            siblings: &siblings,
            passkeys: &passkeys,
            ttl_choices: &self.ttl_choices(),
            uses: self.gate.config.approval.uses,
            csrf: &self.ceremonies.new_csrf(),
        };
        html(StatusCode::OK, pages::approval_page(&view))
    }

    async fn enroll_page(&self, token: &str) -> http::Response<ProxyBody> {
        match enroll::find_link(&self.identities().enrollments().await, token) {
            Some(e) => {
                let expires = time::OffsetDateTime::from_unix_timestamp(e.expires_at)
                    .map(|t| crate::receipt::Timestamp::from_datetime(t).to_string())
                    .unwrap_or_default();
                html(
                    StatusCode::OK,
                    pages::enroll_page(&e.name, &expires, &self.ceremonies.new_csrf(), token),
                )
            }
            None => page_refusal(refuse(
                StatusCode::NOT_FOUND,
                "This enrollment link is not valid: it is unknown, was already used, or has expired. \
                 Run `airlock approver enroll NAME` for a new one.",
            )),
        }
    }

    /// What every decision needs before its ceremony starts: airlock's own key (to
    /// countersign), the enrolled passkey chosen, and a receipt lifetime on offer.
    async fn decider(
        &self,
        passkey: &str,
        ttl_secs: u64,
    ) -> Result<(PasskeyPublic, Duration), Refusal> {
        if let Err(e) = &self.airlock_key {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("airlock's own key is unavailable: {e}"),
            ));
        }
        let (trusted, _) = self.passkeys().await?;
        let passkey = Self::enrolled_passkey(&trusted, passkey)?;
        let ttl = Duration::from_secs(ttl_secs);
        if !self.ttl_choices().contains(&ttl) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "that receipt lifetime is not on offer",
            ));
        }
        Ok((passkey, ttl))
    }

    async fn decide_begin(&self, req: DecideBegin) -> Result<Value, Refusal> {
        let config = &self.gate.config;
        if req.ids.is_empty() || req.ids.len() > MAX_BATCH {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("decide 1 to {MAX_BATCH} calls at once"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if !req.ids.iter().all(|id| seen.insert(id.as_str())) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "an approval is listed twice",
            ));
        }
        let (passkey, ttl) = self.decider(&req.passkey, req.ttl_secs).await?;
        let mut approvals = Vec::with_capacity(req.ids.len());
        for id in &req.ids {
            let a = match self.gate.store.get_approval(id).await {
                Ok(a) => a,
                Err(ApprovalError::NotFound(_)) => {
                    return Err(refuse(StatusCode::NOT_FOUND, format!("no approval {id:?}")))
                }
                Err(e) => return Err(Self::internal(e)),
            };
            if a.status != Status::Pending {
                return Err(refuse(
                    StatusCode::CONFLICT,
                    format!("approval {id} is no longer pending"),
                ));
            }
            if req.decision == Decision::Approve {
                quorum::may_approve(&*self.gate.store, &a, passkey.name())
                    .await
                    .map_err(|e| refuse(StatusCode::CONFLICT, e))?;
            }
            approvals.push(a);
        }
        if approvals.iter().any(|a| a.agent != approvals[0].agent) {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "calls decided together must be of one agent",
            ));
        }
        let validity = Validity {
            issued_at: time::OffsetDateTime::now_utc(),
            ttl,
            uses: config.approval.uses,
        };
        let mut bodies: Vec<ReceiptBody> = Vec::with_capacity(approvals.len());
        for a in &approvals {
            let body = quorum::body_to_sign(
                &*self.gate.store,
                a,
                req.decision,
                (passkey.name(), passkey.key_id()),
                || {
                    let binding = Binding::of(&a.call, &a.agent, &a.environment);
                    ReceiptBody::new(&binding, &a.id, req.decision, &passkey, validity)
                },
            )
            .await
            .map_err(|e| refuse(StatusCode::CONFLICT, e.to_string()))?;
            bodies.push(body);
        }
        let hashes = bodies
            .iter()
            .map(|b| b.passkey_challenge())
            .collect::<Result<Vec<_>, _>>()
            .map_err(Self::internal)?;
        let (challenge, batch) = match hashes.as_slice() {
            [one] => (*one, Vec::new()),
            many => (
                webauthn::batch_challenge(many),
                many.iter().map(hex::encode).collect(),
            ),
        };
        let count = bodies.len();
        let id = self.ceremonies.start(Ceremony::Decide {
            bodies,
            passkey: passkey.key_id().clone(),
            challenge,
            batch,
        });
        Ok(json!({
            "ceremony": id,
            "count": count,
            "publicKey": self.assertion_options(&passkey, &challenge),
        }))
    }

    async fn decide_finish(&self, req: AssertionFinish) -> Result<Value, Refusal> {
        let Ceremony::Decide {
            bodies,
            passkey,
            challenge,
            batch,
        } = self.take_ceremony(&req.ceremony)?
        else {
            return Err(refuse(StatusCode::FORBIDDEN, "not a ceremony of this kind"));
        };
        let key = self.airlock_key.as_ref().map_err(|e| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("airlock's own key is unavailable: {e}"),
            )
        })?;
        let (trusted, passkey, assertion) = self
            .check_assertion(&passkey, &challenge, batch, req)
            .await?;

        let mut decided = Vec::new();
        let mut refused = Vec::new();
        for mut body in bodies {
            body.webauthn = Some(assertion.clone());
            let approval_id = body.approval_id.clone();
            let mut r = Receipt {
                body,
                signatures: Vec::new(),
                cosigners: Vec::new(),
            };
            if r.body.plan.is_some() {
                // A plan receipt: countersigned, then joined to the plan's quorum and checked
                // as `plan approve` does.
                let made = r
                    .countersign(key)
                    .map_err(|e| format!("the receipt does not verify: {e}"));
                let stored = match made {
                    Ok(()) => self.store_plan_receipt(r, &trusted, passkey.name()).await,
                    Err(e) => Err(e),
                };
                match stored {
                    Ok(v) => decided.push(v),
                    Err(e) => {
                        tracing::warn!(approval = %approval_id, error = %e, "a plan decision was not recorded");
                        refused.push(json!({"id": approval_id, "error": e}));
                    }
                }
                continue;
            }
            // Countersigned, then joined and checked as the proxy and `receipt verify` will.
            let recorded = match r.countersign(key) {
                Ok(()) => quorum::record(&*self.gate.store, &trusted, r).await,
                Err(e) => Err(ApprovalError::Refused(format!(
                    "the receipt does not verify: {e}"
                ))),
            };
            let recorded = match recorded {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(approval = %approval_id, error = %e, "a passkey decision was not recorded");
                    refused.push(json!({"id": approval_id, "error": e.to_string()}));
                    continue;
                }
            };
            let a = &recorded.approval;
            tracing::info!(
                approval = %a.id, receipt = %recorded.receipt_id, approver = %passkey.name(),
                decision = %recorded.decision, progress = %a.progress(),
                "decided with a passkey: {}", a.summary()
            );
            for record in quorum::audit_records(&recorded, passkey.name(), "passkey") {
                self.gate.store.audit_append(record.into()).await;
            }
            if a.status == Status::Pending {
                let link = self.gate.approval_link(&a.id);
                crate::notify::again(&self.gate.config, a, &link);
            }
            let row = pages::row_json(a);
            decided.push(json!({"id": a.id, "status": row["status"], "status_text": row["status_text"], "receipt_id": recorded.receipt_id}));
        }
        // The decisions are on disk before the approver is told.
        if !decided.is_empty() {
            if let Err(e) = self.gate.store.audit_sync().await {
                tracing::error!(error = %e, "could not sync the audit records of passkey decisions");
            }
        }
        // Each decision already woke the calls held on its approval (`Store::decide`).
        Ok(json!({ "decided": decided, "refused": refused }))
    }

    async fn enroll_begin(&self, req: EnrollBegin) -> Result<Value, Refusal> {
        let enrollments = self.identities().enrollments().await;
        let e = enroll::find_link(&enrollments, &req.token).ok_or_else(|| {
            refuse(
                StatusCode::FORBIDDEN,
                "this enrollment link is not valid (unknown, used or expired)",
            )
        })?;
        let (_, records) = self.passkeys().await?;
        let challenge = ceremony::random_bytes::<32>();
        let user_id = ceremony::random_bytes::<16>();
        let token_hash = enroll::token_hash(&req.token)
            .ok_or_else(|| refuse(StatusCode::FORBIDDEN, "not a token"))?;
        let id = self.ceremonies.start(Ceremony::Enroll {
            token_hash,
            name: e.name.clone(),
            challenge,
        });
        let exclude: Vec<Value> = records
            .iter()
            .map(|r| json!({"type": "public-key", "id": r.credential_id}))
            .collect();
        Ok(json!({
            "ceremony": id,
            "publicKey": {
                "challenge": b64(&challenge),
                "rp": {"id": self.rp_id, "name": "airlock"},
                "user": {"id": b64(&user_id), "name": e.name, "displayName": format!("{} (airlock approver)", e.name)},
                "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -8}],
                "authenticatorSelection": {"residentKey": "preferred", "userVerification": "required"},
                "attestation": "none",
                "excludeCredentials": exclude,
                "timeout": ceremony::WEBAUTHN_TIMEOUT_MS,
            },
        }))
    }

    async fn enroll_finish(&self, req: EnrollFinish, from: Requester) -> Result<Value, Refusal> {
        let Some(Ceremony::Enroll {
            token_hash,
            name,
            challenge,
        }) = self.ceremonies.take(&req.ceremony)
        else {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "unknown, finished or expired ceremony: open the link again",
            ));
        };
        let decode = |field: &'static str, s: &str| {
            BASE64URL
                .decode(s.as_bytes())
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, format!("{field} is not base64url")))
        };
        let client_data = decode("client_data_json", &req.client_data_json)?;
        let attestation = decode("attestation_object", &req.attestation_object)?;
        let credential_id = decode("credential_id", &req.credential_id)?;
        let reg = webauthn::verify_registration(
            &client_data,
            &attestation,
            &challenge,
            &self.origin,
            &self.rp_id,
        )
        .map_err(|e| refuse(StatusCode::FORBIDDEN, format!("passkey refused: {e}")))?;
        if reg.credential_id != credential_id {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "the credential id does not match the registration",
            ));
        }
        let record = crate::state::trust::PasskeyRecord {
            name: name.clone(),
            key_id: reg.key.key_id().as_str().to_owned(),
            credential_id: b64(&reg.credential_id),
            public_key: reg.key.encode(),
            rp_id: self.rp_id.clone(),
            origin: self.origin.clone(),
            sign_count: reg.sign_count,
            created_at: crate::state::approvals::now_rfc3339(),
        };
        record.public().map_err(Self::internal)?;
        let key_id = record.key_id.clone();
        // Once anyone has a passkey, a new one is an approval too: it waits for them.
        let gated = !self
            .identities()
            .passkeys()
            .await
            .map_err(Self::internal)?
            .is_empty();
        let pending = gated.then(|| enroll::PendingPasskey {
            id: ceremony::random_token(),
            passkey: record.clone(),
            registered_at: record.created_at.clone(),
            remote_addr: from.remote_addr,
            user_agent: from.user_agent,
            until: time::OffsetDateTime::now_utc()
                .unix_timestamp()
                .saturating_add(enroll::PENDING_TTL.as_secs() as i64),
        });
        let consumed = self
            .identities()
            .consume_enrollment(&token_hash, pending)
            .await
            .map_err(|e| refuse(StatusCode::FORBIDDEN, e))?;
        if consumed != name {
            return Err(Self::internal("an enrollment changed its name"));
        }
        if gated {
            tracing::warn!(approver = %name, %key_id, "passkey registered; it waits for an enrolled approver's confirmation on the approval page");
            self.audit_approver_change("passkey_pending", &name, &key_id, "enrollment link")
                .await;
            self.gate.approvals_decided();
            return Ok(json!({ "enrolled": name, "key_id": key_id, "pending": true }));
        }
        self.identities()
            .add_passkey(record)
            .await
            .map_err(|e| refuse(StatusCode::CONFLICT, e))?;
        tracing::info!(approver = %name, %key_id, "passkey enrolled");
        self.audit_approver_change("passkey_enrolled", &name, &key_id, "enrollment link")
            .await;
        Ok(json!({ "enrolled": name, "key_id": key_id, "pending": false }))
    }

    /// The page where an enrolled approver confirms or rejects a pending passkey.
    async fn confirm_page(&self, id: &str) -> http::Response<ProxyBody> {
        let Some(e) = enroll::find_waiting_in(self.identities().enrollments().await, id) else {
            return page_refusal(refuse(
                StatusCode::NOT_FOUND,
                "No passkey with this id is waiting for confirmation: it was confirmed, rejected or revoked, or it expired.",
            ));
        };
        let passkeys = match self.passkey_choices().await {
            Ok(p) => p,
            Err(r) => return page_refusal(r),
        };
        html(
            StatusCode::OK,
            pages::confirm_page(&e, &passkeys, &self.ceremonies.new_csrf()),
        )
    }

    async fn confirm_begin(&self, req: ConfirmBegin) -> Result<Value, Refusal> {
        let e = enroll::find_waiting_in(self.identities().enrollments().await, &req.enrollment)
            .ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    "no passkey with this id is waiting for confirmation",
                )
            })?;
        let Some(pending) = e.pending.as_ref() else {
            return Err(Self::internal("a waiting enrollment without its passkey"));
        };
        let (trusted, _) = self.passkeys().await?;
        let passkey = Self::enrolled_passkey(&trusted, &req.passkey)?;
        let challenge = enroll::confirm_challenge(&e, pending, req.confirm);
        let id = self.ceremonies.start(Ceremony::Confirm {
            enrollment: pending.id.clone(),
            new_key_id: pending.passkey.key_id.clone(),
            confirm: req.confirm,
            passkey: passkey.key_id().clone(),
            challenge,
        });
        Ok(json!({
            "ceremony": id,
            "publicKey": self.assertion_options(&passkey, &challenge),
        }))
    }

    async fn confirm_finish(&self, req: AssertionFinish) -> Result<Value, Refusal> {
        let Ceremony::Confirm {
            enrollment,
            new_key_id,
            confirm,
            passkey,
            challenge,
        } = self.take_ceremony(&req.ceremony)?
        else {
            return Err(refuse(StatusCode::FORBIDDEN, "not a ceremony of this kind"));
        };
        let (_, approver, _) = self
            .check_assertion(&passkey, &challenge, Vec::new(), req)
            .await?;
        // Settling and adding are one step for `approver revoke`.
        let (e, _) = self
            .identities()
            .settle_pending(enroll::Settlement {
                id: &enrollment,
                key_id: &new_key_id,
                confirmed: confirm,
                by: approver.name(),
            })
            .await
            .map_err(|e| refuse(StatusCode::CONFLICT, e))?;
        if confirm {
            tracing::info!(approver = %e.name, key_id = %new_key_id, confirmed_by = %approver.name(), "passkey enrolled after confirmation");
        } else {
            tracing::warn!(approver = %e.name, key_id = %new_key_id, rejected_by = %approver.name(), "pending passkey rejected");
        }
        let event = if confirm {
            "passkey_enrolled"
        } else {
            "passkey_rejected"
        };
        self.audit_approver_change(event, &e.name, &new_key_id, approver.name())
            .await;
        Ok(
            json!({ "name": e.name, "key_id": new_key_id, "confirmed": confirm, "by": approver.name() }),
        )
    }
}

/// Serves the approval page on `listener` until `shutdown` resolves, then drains (the
/// accept loop is [`crate::net`]'s).
pub async fn serve(listener: TcpListener, gate: Arc<Gate>, shutdown: impl Future<Output = ()>) {
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|_| gate.approvals_port());
    let app = Arc::new(App::new(gate, port));
    let caps = crate::net::Caps {
        connections: MAX_CONNECTIONS,
        overflow: 0,
    };
    crate::net::accept_loop(
        "approvals",
        listener,
        caps,
        shutdown,
        |tcp, peer, _, mut stop| {
            let app = Arc::clone(&app);
            async move {
                let service = service_fn(move |req| {
                    let app = Arc::clone(&app);
                    async move { Ok::<_, Infallible>(app.handle(req, peer).await) }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10));
                let conn = builder.serve_connection(TokioIo::new(tcp), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = stop.wait_for(|s| *s) => {}
                }
                // Shutting down: finish the request in flight, then close.
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        },
    )
    .await;
}
