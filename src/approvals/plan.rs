//! The plan approval page (`/plans/ID`): everything a submitted Terraform plan destroys, seen
//! together before it runs, and one passkey touch that signs one plan receipt.
//!
//! The ceremony is the one single approvals use: `begin` builds the receipt body on the server
//! from the stored plan (never from the request) and hands out its hash as the challenge;
//! `/api/decide/finish` checks the assertion, countersigns and stores it ([`App::store_plan_receipt`]).
//! Everything shown came from a plan anyone may submit, so it is escaped like every page.

use super::ceremony::Ceremony;
use super::pages::{env_badge, esc, layout, receipt_controls, show};
use super::{html, json_response, page_refusal, refuse, App, Refusal};
use crate::describe::is_production;
use crate::plan::mapping::{Coverage, Destroyed};
use crate::plan::quorum;
use crate::plan::shared::Plans;
use crate::plan::store::{PlanRecord, PlanStatus, PlanStoreError};
use crate::proxy::body::ProxyBody;
use crate::receipt::{Decision, Receipt};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanBegin {
    plan: String,
    decision: Decision,
    passkey: String,
    ttl_secs: u64,
}

fn status_text(p: &PlanRecord, status: PlanStatus) -> String {
    let by = p.decided_by.as_deref().unwrap_or("an approver");
    match status {
        PlanStatus::Pending if !p.approved_by.is_empty() => format!(
            "{} — waiting for another approver (approved by {})",
            p.progress(),
            p.approved_by.join(", ")
        ),
        PlanStatus::Pending => "Waiting for a decision".into(),
        PlanStatus::Approved => {
            format!("Approved by {by}: its calls go through while the receipt is valid")
        }
        PlanStatus::Denied => format!("Denied by {by}"),
        PlanStatus::Spent => format!("Spent (approved by {by}): every covered call was made"),
        PlanStatus::Expired => format!("Expired (approved by {by}): it covers nothing more"),
    }
}

impl App {
    /// Where plans are kept (the files, or the database): the gate's.
    fn plans(&self) -> std::sync::Arc<dyn Plans> {
        self.gate.plans.plans()
    }

    async fn plan(&self, id: &str) -> Result<PlanRecord, Refusal> {
        match self.plans().get(id).await {
            Ok(p) => Ok(p),
            Err(PlanStoreError::NotFound(_)) => Err(refuse(
                StatusCode::NOT_FOUND,
                "There is no plan with this id.",
            )),
            Err(e) => Err(Self::internal(e)),
        }
    }

    pub(super) async fn plan_page(&self, id: &str) -> http::Response<ProxyBody> {
        let passkeys = self.passkey_choices().await;
        let page = self
            .plan(id)
            .await
            .and_then(|p| Ok((p, passkeys?)))
            .map(|(p, passkeys)| {
                render(
                    &p,
                    &passkeys,
                    &self.ttl_choices(),
                    &self.ceremonies.new_csrf(),
                )
            });
        match page {
            Ok(body) => html(StatusCode::OK, body),
            Err(r) => page_refusal(r),
        }
    }

    pub(super) async fn plan_status_json(&self, id: &str) -> http::Response<ProxyBody> {
        match self.plan(id).await {
            Ok(p) => json_response(
                StatusCode::OK,
                &json!({
                    "id": p.id,
                    "status": p.status_at(time::OffsetDateTime::now_utc()).as_str(),
                    "status_text": status_text(&p, p.status_at(time::OffsetDateTime::now_utc())),
                    "receipt_id": p.receipt_id,
                }),
            ),
            Err(r) => super::api_refusal(r),
        }
    }

    pub(super) async fn plan_begin(&self, req: PlanBegin) -> Result<Value, Refusal> {
        let (passkey, ttl) = self.decider(&req.passkey, req.ttl_secs).await?;
        let record = self.plan(&req.plan).await?;
        if record.status != PlanStatus::Pending {
            return Err(refuse(
                StatusCode::CONFLICT,
                format!("plan {} is no longer pending", record.id),
            ));
        }
        let plans = self.plans();
        if req.decision == Decision::Approve {
            quorum::may_approve(&*plans, &record, passkey.name())
                .await
                .map_err(|e| refuse(StatusCode::CONFLICT, e))?;
        }
        let body = quorum::body_to_sign(&*plans, &record, req.decision, &passkey, ttl)
            .await
            .map_err(|e| refuse(StatusCode::CONFLICT, e))?;
        let challenge = body.passkey_challenge().map_err(Self::internal)?;
        let id = self.ceremonies.start(Ceremony::Decide {
            bodies: vec![body],
            passkey: passkey.key_id().clone(),
            challenge,
            batch: Vec::new(),
        });
        Ok(json!({
            "ceremony": id,
            "count": 1,
            "publicKey": self.assertion_options(&passkey, &challenge),
        }))
    }

    /// Stores one approver's plan receipt the page just made and countersigned (from
    /// `decide_finish`): joined to the plan's quorum under way and checked against `trusted`
    /// exactly as `plan approve` does (`plan::quorum::record`).
    pub(super) async fn store_plan_receipt(
        &self,
        r: Receipt,
        trusted: &crate::receipt::TrustedKeys,
        approver: &str,
    ) -> Result<Value, String> {
        let recorded = quorum::record(&*self.plans(), trusted, r)
            .await
            .map_err(|e| e.to_string())?;
        let p = &recorded.plan;
        tracing::info!(plan = %p.id, receipt = %recorded.receipt_id, %approver, decision = %recorded.decision, progress = %p.progress(), calls = p.entries.len(), "plan decided with a passkey");
        for record in quorum::audit_records(&recorded, approver, "passkey") {
            self.gate.store.audit_append(record.into()).await;
        }
        if p.status == PlanStatus::Pending {
            let link =
                crate::plan::cli::page_link(&self.gate.config, self.gate.approvals_port(), &p.id);
            quorum::notify_again(&self.gate.config, p, &link);
        }
        let status = p.status_at(time::OffsetDateTime::now_utc());
        Ok(json!({
            "id": p.id,
            "status": status.as_str(),
            "status_text": status_text(p, status),
            "receipt_id": recorded.receipt_id,
            "calls": p.entries.len(),
        }))
    }
}

/// The page. Irreversible things first, then every destroyed resource by type with its calls,
/// then what is not covered, then the decision.
fn render(
    p: &PlanRecord,
    passkeys: &[(String, String)],
    ttl_choices: &[Duration],
    csrf: &str,
) -> String {
    let mut b = String::new();
    if p.environments.iter().any(|e| is_production(e)) {
        let _ = write!(
            b,
            "<div class=\"banner prod\" id=\"prod-banner\">PRODUCTION — environment {}</div>",
            show(&p.environment_label())
        );
    }
    let _ = write!(
        b,
        "<h1 id=\"action\">Terraform plan: destroys {} resource{}</h1>",
        p.destroyed.len(),
        if p.destroyed.len() == 1 { "" } else { "s" }
    );
    let irreversible: Vec<(&Destroyed, &String)> = p
        .destroyed
        .iter()
        .flat_map(|d| d.irreversible.iter().map(move |w| (d, w)))
        .collect();
    if !irreversible.is_empty() {
        b.push_str(
            "<section id=\"irreversible\" class=\"irreversible big\"><h2>IRREVERSIBLE</h2><ul>",
        );
        for (d, why) in irreversible {
            let _ = write!(
                b,
                "<li><code>{}</code>: {}</li>",
                show(&d.address),
                show(why)
            );
        }
        b.push_str("</ul></section>");
    }
    let needs = p.quorum_lines();
    if !needs.is_empty() {
        b.push_str("<section id=\"quorum\" class=\"quorum\"><h2>Several approvers</h2><ul>");
        for line in needs {
            let _ = write!(b, "<li>{}</li>", show(&line));
        }
        b.push_str("</ul></section>");
    }
    let status = p.status_at(time::OffsetDateTime::now_utc());
    let _ = write!(
        b,
        "<p id=\"status\" class=\"status {}\">{}</p>",
        status.as_str(),
        show(&status_text(p, status))
    );
    b.push_str("<dl class=\"facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(b, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    fact("Agent", show(&p.agent));
    fact(
        "Environment",
        p.environments
            .iter()
            .map(|e| env_badge(e))
            .collect::<Vec<_>>()
            .join(" "),
    );
    fact(
        "Plan created",
        show(p.plan_created_at.as_deref().unwrap_or("not in the plan")),
    );
    fact(
        "Plan digest",
        format!(
            "<code id=\"digest\">{}</code> ({}){}",
            esc(&p.digest),
            esc(p.digest_scope.as_str()),
            p.digest_scope.warning().map_or(String::new(), |w| format!(
                "<p id=\"digest-warning\" class=\"warning\">{}</p>",
                esc(w)
            ))
        ),
    );
    fact(
        "Terraform",
        show(p.terraform_version.as_deref().unwrap_or("unknown")),
    );
    fact("Submitted", esc(&p.submitted_at));
    fact("Calls covered", p.entries.len().to_string());
    if let Some(r) = &p.receipt_id {
        fact("Receipt", format!("<code>{}</code>", esc(r)));
    }
    b.push_str("</dl>");

    let mut types: Vec<&str> = p
        .destroyed
        .iter()
        .map(|d| d.resource_type.as_str())
        .collect();
    types.sort();
    types.dedup();
    b.push_str("<section id=\"destroyed\"><h2>What it destroys</h2>");
    for t in types {
        let _ = write!(b, "<h3 class=\"type\">{}</h3>", show(t));
        for d in p.destroyed.iter().filter(|d| d.resource_type == t) {
            resource_html(&mut b, d);
        }
    }
    b.push_str("</section>");

    let not_covered: Vec<(&Destroyed, &String)> = p
        .destroyed
        .iter()
        .filter_map(|d| match &d.coverage {
            Coverage::NotCovered { why } => Some((d, why)),
            _ => None,
        })
        .collect();
    if !not_covered.is_empty() {
        b.push_str("<section id=\"not-covered\" class=\"warning\"><h2>Not covered: its calls will be held one by one as today</h2><ul>");
        for (d, why) in not_covered {
            let _ = write!(
                b,
                "<li><code>{}</code>: {}</li>",
                show(&d.address),
                show(why)
            );
        }
        b.push_str("</ul></section>");
    }

    if p.status == PlanStatus::Pending {
        b.push_str("<section id=\"decide\"><h2>Decide</h2>");
        let covers = format!(
            "for the {} calls above, each once unless marked otherwise, by agent {} only",
            p.entries.len(),
            show(&p.agent)
        );
        let joining = !p.approved_by.is_empty();
        let (controls, disabled) = receipt_controls(ttl_choices, passkeys, &covers, joining);
        b.push_str(&controls);
        let _ = write!(
            b,
            "<p class=\"buttons\"><button type=\"button\" id=\"approve\" class=\"approve\"{disabled}>Approve the plan with passkey</button> \
             <button type=\"button\" id=\"deny\" class=\"deny\"{disabled}>Deny with passkey</button></p>\
             <p id=\"result\" role=\"status\"></p>\
             <p class=\"hint\">Without a passkey: <code>airlock plan approve {id} --key FILE</code>.</p></section>",
            id = esc(&p.id)
        );
    }
    let attrs = format!(" data-plan=\"{}\"", esc(&p.id));
    layout("Terraform plan", "plan", csrf, &attrs, &b)
}

fn resource_html(b: &mut String, d: &Destroyed) {
    let _ = write!(
        b,
        "<div class=\"resource destroyed\" data-address=\"{addr}\"><b>{addr_shown}</b>{replaced} id <code>{id}</code>",
        addr = esc(&d.address),
        addr_shown = show(&d.address),
        replaced = if d.replaced { " (replaced: its delete half)" } else { "" },
        id = show(d.id.as_deref().unwrap_or("unknown")),
    );
    if let Some(arn) = &d.arn {
        let _ = write!(b, "<div class=\"arn\">{}</div>", show(arn));
    }
    if !d.irreversible.is_empty() {
        b.push_str(" <span class=\"irreversible\">IRREVERSIBLE</span>");
    }
    match &d.coverage {
        Coverage::Covered { calls } => {
            b.push_str("<ul class=\"calls\">");
            for c in calls {
                let mut params: Vec<String> = c
                    .params
                    .iter()
                    .map(|(k, v)| format!("<code>{}</code>=<b>{}</b>", show(k), show(v)))
                    .collect();
                params.extend(
                    c.free
                        .iter()
                        .map(|f| format!("<code>{}</code>=<i>any (not in the plan)</i>", show(f))),
                );
                let uses = match c.uses {
                    Some(1) => String::new(),
                    Some(n) => format!(" — up to {n} calls"),
                    None => {
                        " — as many calls as the provider makes while the receipt is valid".into()
                    }
                };
                let note = c
                    .note
                    .as_deref()
                    .map(|n| format!("<div class=\"note\">{}</div>", show(n)))
                    .unwrap_or_default();
                let _ = write!(
                    b,
                    "<li class=\"call\"><code>{}:{}</code> {} ({}){uses}{note}</li>",
                    show(&c.service),
                    show(&c.operation),
                    params.join(" "),
                    show(&c.region),
                );
            }
            b.push_str("</ul>");
        }
        Coverage::StateOnly { why } => {
            let _ = write!(b, "<p class=\"note\">No AWS call: {}</p>", show(why));
        }
        Coverage::NotCovered { why } => {
            let _ = write!(
                b,
                "<p class=\"warning not-covered\">Not covered: {}</p>",
                show(why)
            );
        }
    }
    b.push_str("</div>");
}
