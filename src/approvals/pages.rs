//! The HTML of the approval pages, rendered on the server. Pure: strings in, HTML out.
//!
//! Almost everything shown comes from the agent's request (resource names, parameters), so
//! every value is escaped ([`esc`]), and characters that could make one text look like
//! another (controls, bidi overrides, zero-width characters) are shown as `⟨U+202E⟩`
//! ([`visible`](crate::describe::visible)). Scripts and styles are separate files (`/static/…`) so the
//! Content-Security-Policy can forbid every inline script.

use super::enroll::Enrollment;
use crate::describe::{self, is_production, visible};
use crate::state::approvals::{Approval, Status};
use serde_json::json;
use std::fmt::Write as _;
use std::time::Duration;

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An agent-supplied value, made visible and escaped.
pub(crate) fn show(s: &str) -> String {
    esc(&visible(s))
}

pub(crate) fn layout(title: &str, page: &str, csrf: &str, extra_attrs: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{title} · airlock</title>\
         <link rel=\"stylesheet\" href=\"/static/app.css\">\
         <script src=\"/static/app.js\" defer></script></head>\
         <body data-page=\"{page}\" data-csrf=\"{csrf}\"{extra_attrs}>\
         <header><a class=\"brand\" href=\"/\">airlock</a><span>approvals</span></header>\
         <main>{body}</main></body></html>\n",
        title = esc(title),
        page = esc(page),
        csrf = esc(csrf),
    )
}

/// A duration as people say it: "15 minutes", "1 hour", "90 seconds".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if s.is_multiple_of(3600) && s >= 3600 {
        plural(s / 3600, "hour")
    } else if s.is_multiple_of(60) && s >= 60 {
        plural(s / 60, "minute")
    } else {
        plural(s, "second")
    }
}

fn targets(a: &Approval) -> String {
    a.call
        .resources
        .iter()
        .map(|r| r.value.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn status_text(a: &Approval) -> String {
    let by = a.decided_by.as_deref().unwrap_or("an approver");
    match a.status {
        Status::Pending if a.quorum.approvals > 1 && !a.approved_by.is_empty() => {
            format!("{} — waiting for another approver", a.progress())
        }
        Status::Pending if a.quorum.approvals > 1 => format!(
            "Waiting for a decision ({} approvers needed)",
            a.quorum.approvals
        ),
        Status::Pending => "Waiting for a decision".into(),
        Status::Approved => format!("Approved by {by}"),
        Status::Denied => format!("Denied by {by}"),
        Status::Closed => match a.decided_by {
            Some(_) => format!("Closed (decided by {by})"),
            None => "Closed".into(),
        },
    }
}

fn status_class(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Approved => "approved",
        Status::Denied => "denied",
        Status::Closed => "closed",
    }
}

/// One approval as the list's JSON (and the list page's script) shows it. Agent-supplied
/// strings are already made [`visible`]; the script inserts them as text, never as HTML.
pub fn row_json(a: &Approval) -> serde_json::Value {
    json!({
        "id": a.id,
        "status": status_class(a.status),
        "status_text": visible(&status_text(a)),
        "agent": visible(&a.agent),
        "environment": visible(&a.environment),
        "production": is_production(&a.environment),
        "action": visible(&a.call.action()),
        "targets": visible(&targets(a)),
        "destroys": visible(&describe::destroys(&a.call)),
        "irreversible": a.irreversible,
        "attempts": a.attempts,
        "created_at": a.created_at,
        "decided_at": a.decided_at,
        "link": format!("/approvals/{}", a.id),
    })
}

pub(crate) fn env_badge(environment: &str) -> String {
    let class = if is_production(environment) {
        "env prod"
    } else {
        "env"
    };
    format!("<span class=\"{class}\">{}</span>", show(environment))
}

fn list_row(a: &Approval) -> String {
    let irreversible = if a.irreversible {
        " <span class=\"irreversible\">IRREVERSIBLE</span>"
    } else {
        ""
    };
    format!(
        "<tr class=\"{status}\"><td>{env}</td><td>{agent}</td><td><a href=\"/approvals/{id}\">{action}</a>{irreversible}\
         <div class=\"destroys\">{destroys}</div></td><td>{status_text}</td><td>{created}</td></tr>",
        status = status_class(a.status),
        env = env_badge(&a.environment),
        agent = show(&a.agent),
        id = esc(&a.id),
        action = show(&a.call.action()),
        destroys = show(&describe::destroys(&a.call)),
        status_text = show(&status_text(a)),
        created = esc(&a.created_at),
    )
}

/// The list page: passkeys waiting for confirmation, pending and recent approvals; the
/// script keeps the approvals current.
pub fn list_page(
    pending: &[Approval],
    recent: &[Approval],
    waiting: &[Enrollment],
    csrf: &str,
) -> String {
    let mut body = String::new();
    if !waiting.is_empty() {
        body.push_str(
            "<section id=\"waiting-passkeys\" class=\"banner\"><h2>New passkeys waiting for your confirmation</h2><ul>",
        );
        for e in waiting {
            if let Some(p) = &e.pending {
                let _ = write!(
                    body,
                    "<li><a href=\"/enrollments/{id}\">{name}</a> — registered {at} from {from}</li>",
                    id = esc(&p.id),
                    name = show(&e.name),
                    at = esc(&p.registered_at),
                    from = show(&p.remote_addr),
                );
            }
        }
        body.push_str("</ul></section>");
    }
    let _ = write!(
        body,
        "<h1>Calls waiting for a decision <span id=\"pending-count\" class=\"count\">{}</span></h1>",
        pending.len()
    );
    let head = "<thead><tr><th>Environment</th><th>Agent</th><th>Call</th><th>Status</th><th>Since</th></tr></thead>";
    let _ = write!(body, "<table id=\"pending\">{head}<tbody>");
    for a in pending {
        body.push_str(&list_row(a));
    }
    body.push_str("</tbody></table>");
    let hidden = if pending.is_empty() { "" } else { " hidden" };
    let _ = write!(
        body,
        "<p id=\"none-pending\" class=\"empty\"{hidden}>No calls are waiting for approval.</p>"
    );
    let _ = write!(
        body,
        "<h2>Recent decisions</h2><table id=\"recent\">{head}<tbody>"
    );
    for a in recent {
        body.push_str(&list_row(a));
    }
    body.push_str("</tbody></table>");
    body.push_str(
        "<p class=\"hint\">This page updates itself. Opening a link approves nothing: approving \
         and denying need a passkey (or <code>airlock approve ID --key FILE</code>).</p>",
    );
    layout("Approvals", "list", csrf, "", &body)
}

/// The policy documents (rendered, with wildcards marked), what is attached or passed, and
/// the command a call runs: the parts of the parameters the approver must read.
fn what_it_grants_or_runs(a: &Approval) -> String {
    let mut b = String::new();
    let grants = describe::grants(&a.call);
    let escalation = crate::policy::builtin::class_of_rule(&a.rule)
        .is_some_and(|c| c.name == crate::policy::builtin::PRIVILEGE_ESCALATION);
    if escalation && !grants.is_empty() {
        b.push_str("<h2>Attached or passed</h2><dl class=\"facts\" id=\"grants\">");
        for (member, value) in grants {
            let value = if value.contains('*') || value.ends_with("/AdministratorAccess") {
                format!("<mark class=\"wildcard\">{}</mark>", show(value))
            } else {
                show(value)
            };
            let _ = write!(b, "<dt><code>{}</code></dt><dd>{value}</dd>", show(member));
        }
        b.push_str("</dl>");
    }
    for (member, document) in describe::policy_documents(&a.call) {
        let _ = write!(
            b,
            "<h2>Policy document <code>{m}</code></h2><pre class=\"policy\" id=\"policy-{id}\">",
            m = show(member),
            id = esc(&member.replace(|c: char| !c.is_ascii_alphanumeric(), "-"))
        );
        policy_html(&document, None, 0, &mut b);
        b.push_str("</pre>");
    }
    let remote = crate::policy::builtin::class_of_rule(&a.rule)
        .is_some_and(|c| c.name == crate::policy::builtin::REMOTE_EXECUTION);
    if let (true, Some(command)) = (remote, describe::command(&a.call)) {
        let _ = write!(
            b,
            "<h2>Command</h2><pre class=\"command\" id=\"command\">{}</pre>",
            command.lines().map(show).collect::<Vec<_>>().join("\n")
        );
    }
    b
}

/// Members of a policy statement whose wildcards widen what it grants or denies.
const WILDCARD_MEMBERS: &[&str] = &[
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Principal",
    "NotPrincipal",
    "AWS",
];

/// A policy document as indented JSON, every value escaped; a `*` in an action, resource
/// or principal is marked.
fn policy_html(v: &serde_json::Value, member: Option<&str>, depth: usize, out: &mut String) {
    use serde_json::Value;
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Object(m) => {
            out.push_str("{\n");
            for (i, (k, item)) in m.iter().enumerate() {
                let _ = write!(out, "{}\"{}\": ", pad(depth + 1), show(k));
                policy_html(item, Some(k), depth + 1, out);
                out.push_str(if i + 1 < m.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}}}", pad(depth));
        }
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                policy_html(item, member, depth + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}]", pad(depth));
        }
        Value::String(text) => {
            let quoted = format!("\"{}\"", show(text));
            if text.contains('*') && member.is_some_and(|m| WILDCARD_MEMBERS.contains(&m)) {
                let _ = write!(out, "<mark class=\"wildcard\">{quoted}</mark>");
            } else {
                out.push_str(&quoted);
            }
        }
        other => out.push_str(&esc(&other.to_string())),
    }
}

/// What the approval page needs besides the approval itself.
pub struct ApprovalView<'a> {
    pub approval: &'a Approval,
    /// Other pending calls of the same agent, to approve with the same touch.
    pub siblings: &'a [Approval],
    /// Enrolled passkeys: (key id, label).
    pub passkeys: &'a [(String, String)],
    /// Receipt lifetimes on offer, longest (the configured one) first.
    pub ttl_choices: &'a [Duration],
    pub uses: u32,
    pub csrf: &'a str,
}

/// The page of one approval: everything the call does, and the passkey buttons.
pub fn approval_page(v: &ApprovalView<'_>) -> String {
    let a = v.approval;
    let mut b = String::new();
    if is_production(&a.environment) {
        let _ = write!(
            b,
            "<div class=\"banner prod\" id=\"prod-banner\">PRODUCTION — environment {}</div>",
            show(&a.environment)
        );
    }
    let _ = write!(
        b,
        "<h1 id=\"action\">{}</h1><p class=\"destroys big\" id=\"destroys\">{}</p>",
        show(&a.call.action()),
        show(&describe::destroys(&a.call))
    );
    if a.irreversible {
        let why = if a.irreversible_reasons.is_empty() {
            "this cannot be undone".to_owned()
        } else {
            a.irreversible_reasons
                .iter()
                .map(|r| show(r))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = write!(
            b,
            "<p class=\"irreversible big\" id=\"irreversible\">IRREVERSIBLE: {why}.</p>"
        );
    }
    if let Some(class) = crate::policy::builtin::class_of_rule(&a.rule) {
        let _ = write!(
            b,
            "<p class=\"class-line big\" id=\"class-line\" data-class=\"{}\">{}</p>",
            esc(class.name),
            esc(class.line)
        );
    }
    let _ = write!(
        b,
        "<p id=\"status\" class=\"status {}\">{}</p>",
        status_class(a.status),
        show(&status_text(a))
    );

    b.push_str("<dl class=\"facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(b, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    fact("Agent", show(&a.agent));
    fact("Environment", env_badge(&a.environment));
    fact("Service", show(&a.call.service));
    fact("Operation", show(&a.call.operation));
    fact("Region", show(&a.call.region));
    fact(
        "Account",
        a.call
            .account
            .as_deref()
            .map(show)
            .unwrap_or_else(|| "unknown".into()),
    );
    let resources = if a.call.resources.is_empty() {
        "none named".to_owned()
    } else {
        a.call
            .resources
            .iter()
            .map(|r| {
                let arn = r
                    .arn
                    .as_deref()
                    .map(|arn| format!("<div class=\"arn\">{}</div>", show(arn)))
                    .unwrap_or_default();
                format!(
                    "<div class=\"resource\"><code>{}</code> = <b>{}</b>{arn}</div>",
                    show(&r.member),
                    show(&r.value)
                )
            })
            .collect()
    };
    fact("Resource", resources);
    fact(
        "Rule",
        format!("<code>{}</code> — {}", show(&a.rule), show(&a.reason)),
    );
    fact("First seen", esc(&a.created_at));
    fact("Attempts", a.attempts.to_string());
    if a.quorum.approvals > 1 {
        let who = if a.approved_by.is_empty() {
            "nobody yet".to_owned()
        } else {
            show(&a.approved_by.join(", "))
        };
        let counting = match &a.quorum.approvers {
            Some(names) => format!(" (only {} count)", show(&names.join(", "))),
            None => String::new(),
        };
        fact(
            "Approvers needed",
            format!(
                "<span id=\"quorum\">{} distinct{counting}; approved by {who}</span>",
                a.quorum.approvals
            ),
        );
    }
    if let Some(r) = &a.receipt_id {
        fact("Receipt", format!("<code>{}</code>", esc(r)));
    }
    b.push_str("</dl>");
    b.push_str(&what_it_grants_or_runs(a));

    let _ = write!(
        b,
        "<h2>Parameters ({})</h2><table class=\"params\" id=\"params\"><thead><tr><th>Name</th><th>Value</th></tr></thead><tbody>",
        a.call.params.len()
    );
    for (k, val) in &a.call.params {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td><pre>{}</pre></td></tr>",
            show(k),
            show(val)
        );
    }
    b.push_str("</tbody></table>");

    if a.status == Status::Pending {
        b.push_str(&decide_section(v));
    }
    let attrs = format!(" data-approval=\"{}\"", esc(&a.id));
    layout(&a.call.action(), "approval", v.csrf, &attrs, &b)
}

fn decide_section(v: &ApprovalView<'_>) -> String {
    let a = v.approval;
    let mut b = String::from("<section id=\"decide\"><h2>Decide</h2>");
    if !v.siblings.is_empty() {
        let _ = write!(
            b,
            "<fieldset id=\"batch\"><legend>Other calls of agent {} waiting now — tick to decide them with the same touch</legend>\
             <label class=\"all\"><input type=\"checkbox\" id=\"batch-all\"> all {}</label>",
            show(&a.agent),
            v.siblings.len()
        );
        for s in v.siblings {
            let irreversible = if s.irreversible {
                " <span class=\"irreversible\">IRREVERSIBLE</span>"
            } else {
                ""
            };
            let _ = write!(
                b,
                "<label class=\"sibling\"><input type=\"checkbox\" class=\"batch-item\" value=\"{id}\"> \
                 {env} <a href=\"/approvals/{id}\">{action}</a>{irreversible}<span class=\"destroys\">{destroys}</span></label>",
                id = esc(&s.id),
                env = env_badge(&s.environment),
                action = show(&s.call.action()),
                destroys = show(&describe::destroys(&s.call)),
            );
        }
        b.push_str("</fieldset>");
    }
    let covers = format!("for {} call{}", v.uses, if v.uses == 1 { "" } else { "s" });
    let joining = !a.approved_by.is_empty();
    let (controls, disabled) = receipt_controls(v.ttl_choices, v.passkeys, &covers, joining);
    b.push_str(&controls);
    let _ = write!(
        b,
        "<p class=\"buttons\"><button type=\"button\" id=\"approve\" class=\"approve\"{disabled}>Approve with passkey</button> \
         <button type=\"button\" id=\"deny\" class=\"deny\"{disabled}>Deny with passkey</button></p>\
         <p id=\"result\" role=\"status\"></p>\
         <p class=\"hint\">Without a passkey: <code>airlock approve {id} --key FILE</code> or \
         <code>airlock deny {id} --key FILE</code>.</p></section>",
        id = esc(&a.id)
    );
    b
}

/// The receipt's lifetime and the passkey to decide with, and the buttons' `disabled`
/// attribute (no passkey enrolled: nothing to decide with). `covers` ends the lifetime line.
/// Once a quorum is under way (`joining`), every further approver signs the first one's
/// body, window included: the lifetime is shown as fixed, not offered.
pub(crate) fn receipt_controls(
    ttl_choices: &[Duration],
    passkeys: &[(String, String)],
    covers: &str,
    joining: bool,
) -> (String, &'static str) {
    let mut b = String::new();
    b.push_str("<p class=\"controls\"><label>The receipt is valid for <select id=\"ttl\"");
    if joining {
        // The value is one on offer but not used: the window is the first approver's.
        let offered = ttl_choices.first().map_or(0, Duration::as_secs);
        let _ = write!(
            b,
            " disabled><option value=\"{offered}\" selected>the window the first approver chose</option></select></label>, {covers}.</p>"
        );
        return finish_controls(b, passkeys);
    }
    b.push('>');
    for (i, d) in ttl_choices.iter().enumerate() {
        let selected = if i == 0 { " selected" } else { "" };
        let _ = write!(
            b,
            "<option value=\"{}\"{selected}>{}</option>",
            d.as_secs(),
            human_duration(*d)
        );
    }
    let _ = write!(b, "</select></label>, {covers}.</p>");
    finish_controls(b, passkeys)
}

/// [`receipt_controls`]' passkey choice (or the note that none is enrolled).
fn finish_controls(mut b: String, passkeys: &[(String, String)]) -> (String, &'static str) {
    if passkeys.is_empty() {
        b.push_str(
            "<p class=\"warning\" id=\"no-passkey\">No passkey is enrolled yet. Run \
             <code>airlock approver enroll NAME</code> and open the link it prints.</p>",
        );
    } else {
        b.push_str("<p class=\"controls\"><label>Decide as <select id=\"passkey\">");
        for (id, label) in passkeys {
            let _ = write!(b, "<option value=\"{}\">{}</option>", esc(id), esc(label));
        }
        b.push_str("</select></label></p>");
    }
    let disabled = if passkeys.is_empty() { " disabled" } else { "" };
    (b, disabled)
}

/// The enrollment page of a valid link.
pub fn enroll_page(name: &str, expires: &str, csrf: &str, token: &str) -> String {
    let body = format!(
        "<h1>Register a passkey</h1><p>for approver <b id=\"enroll-name\">{name}</b>. \
         This link works once, until {expires}. Your device will ask for your PIN, fingerprint \
         or face: airlock accepts only passkeys that verify you.</p>\
         <p class=\"buttons\"><button type=\"button\" id=\"enroll\" class=\"approve\">Register passkey</button></p>\
         <p id=\"result\" role=\"status\"></p>",
        name = esc(name),
        expires = esc(expires),
    );
    let attrs = format!(" data-token=\"{}\"", esc(token));
    layout("Register a passkey", "enroll", csrf, &attrs, &body)
}

/// The page where an enrolled approver confirms or rejects a pending passkey: who asked for
/// it, when, and from where, then the passkey buttons.
pub fn confirm_page(e: &Enrollment, passkeys: &[(String, String)], csrf: &str) -> String {
    let mut b = String::new();
    let Some(p) = &e.pending else {
        return message_page("Not found", "This passkey is not waiting for confirmation.");
    };
    let _ = write!(
        b,
        "<h1>Confirm a new passkey for <b id=\"confirm-name\">{name}</b>?</h1>\
         <p class=\"big\">Once confirmed, this passkey can approve and deny calls, and confirm other passkeys. \
         Confirm only if you know this request is yours or your colleague's.</p>",
        name = show(&e.name)
    );
    b.push_str("<dl class=\"facts\" id=\"confirm-facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(b, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    fact("Approver", show(&e.name));
    fact("Link made", esc(&e.created_at));
    fact("Registered", esc(&p.registered_at));
    fact("From address", show(&p.remote_addr));
    fact("Browser", show(&p.user_agent));
    fact(
        "Passkey",
        format!("<code>{}</code>", esc(&p.passkey.key_id)),
    );
    b.push_str("</dl>");
    if passkeys.is_empty() {
        b.push_str("<p class=\"warning\">No passkey is enrolled to confirm with.</p>");
    } else {
        b.push_str("<p class=\"controls\"><label>Confirm as <select id=\"passkey\">");
        for (id, label) in passkeys {
            let _ = write!(b, "<option value=\"{}\">{}</option>", esc(id), esc(label));
        }
        b.push_str("</select></label></p>");
    }
    b.push_str(
        "<p class=\"buttons\"><button type=\"button\" id=\"confirm\" class=\"approve\">Confirm with passkey</button> \
         <button type=\"button\" id=\"reject\" class=\"deny\">Reject with passkey</button></p>\
         <p id=\"result\" role=\"status\"></p>",
    );
    let attrs = format!(" data-enrollment=\"{}\"", esc(&p.id));
    layout("Confirm a new passkey", "confirm", csrf, &attrs, &b)
}

/// A short page for errors and dead links.
pub fn message_page(title: &str, message: &str) -> String {
    let body = format!(
        "<h1>{}</h1><p>{}</p><p><a href=\"/\">All approvals</a></p>",
        esc(title),
        esc(message)
    );
    layout(title, "message", "", "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_and_shows_hidden_characters() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(visible("prod\u{202E}bd-dorp"), "prod⟨U+202E⟩bd-dorp");
        assert_eq!(visible("a\u{200B}b\n"), "a⟨U+200B⟩b⟨U+000A⟩");
        assert_eq!(visible("plain-db"), "plain-db");
    }

    fn approval(rule: &str, service: &str, operation: &str, params: &[(&str, &str)]) -> Approval {
        Approval {
            id: "a".repeat(26),
            status: Status::Pending,
            binding_key: String::new(),
            call: crate::identify::AwsCall {
                service: service.into(),
                signing_name: service.into(),
                operation: operation.into(),
                region: "us-east-1".into(),
                account: None,
                resources: vec![],
                params: params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
            agent: "agent".into(),
            environment: "prod".into(),
            rule: rule.into(),
            reason: String::new(),
            irreversible: false,
            irreversible_reasons: vec![],
            created_at: String::new(),
            last_seen_at: String::new(),
            attempts: 1,
            receipt_id: None,
            decided_by: None,
            decided_at: None,
            quorum: Default::default(),
            approved_by: vec![],
        }
    }

    #[test]
    fn an_escalation_shows_its_policy_with_wildcards_marked_and_an_execution_its_command() {
        let doc = r#"{"Statement":[{"Effect":"Allow","Action":["s3:GetObject","iam:*"],"Resource":"*"}]}"#;
        let a = approval(
            "builtin:privilege-escalation",
            "iam",
            "PutUserPolicy",
            &[("UserName", "agent"), ("PolicyDocument", doc)],
        );
        let html = what_it_grants_or_runs(&a);
        assert!(
            html.contains("<mark class=\"wildcard\">\"iam:*\"</mark>"),
            "{html}"
        );
        assert!(
            html.contains("\"Resource\": <mark class=\"wildcard\">\"*\"</mark>"),
            "{html}"
        );
        assert!(html.contains("\"s3:GetObject\""), "{html}");
        assert!(
            !html.contains("<mark class=\"wildcard\">\"s3:GetObject"),
            "{html}"
        );
        assert!(html.contains("id=\"grants\""), "{html}");
        let page = approval_page(&ApprovalView {
            approval: &a,
            siblings: &[],
            passkeys: &[],
            ttl_choices: &[Duration::from_secs(900)],
            uses: 1,
            csrf: "c",
        });
        assert!(
            page.contains("id=\"class-line\""),
            "the class's plain line is shown"
        );
        let run = approval(
            "builtin:remote-execution",
            "ssm",
            "SendCommand",
            &[("Parameters", r#"{"commands":["rm -rf /var/lib/<db>"]}"#)],
        );
        assert!(what_it_grants_or_runs(&run)
            .contains("<pre class=\"command\" id=\"command\">rm -rf /var/lib/&lt;db&gt;</pre>"));
    }

    #[test]
    fn a_further_approver_is_not_offered_a_window_of_their_own() {
        let choices = [Duration::from_secs(900), Duration::from_secs(300)];
        let passkeys = [("pk1".to_owned(), "alice's key".to_owned())];
        let (first, _) = receipt_controls(&choices, &passkeys, "for 1 call", false);
        assert!(
            first.contains("<option value=\"300\">5 minutes</option>"),
            "{first}"
        );
        assert!(!first.contains("disabled"), "{first}");
        let (later, disabled) = receipt_controls(&choices, &passkeys, "for 1 call", true);
        assert!(
            later.contains("<select id=\"ttl\" disabled><option value=\"900\" selected>the window the first approver chose</option></select>"),
            "{later}"
        );
        assert!(!later.contains("5 minutes"), "{later}");
        assert!(
            later.contains("Decide as <select id=\"passkey\">"),
            "{later}"
        );
        assert_eq!(disabled, "", "the buttons stay usable");
    }

    #[test]
    fn production_is_recognised() {
        assert!(is_production("prod"));
        assert!(is_production("eu-Production"));
        assert!(!is_production("staging"));
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_duration(Duration::from_secs(900)), "15 minutes");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(90)), "90 seconds");
        assert_eq!(human_duration(Duration::from_secs(60)), "1 minute");
    }
}
