//! Telling the human that a call is waiting: a line on airlock's terminal (logged by the
//! gate itself), an optional webhook (`[notify] webhook_url`, Slack-compatible JSON, retried
//! with backoff), and a desktop notification where `notify-send` exists.
//!
//! [`blocked`] is called on the request path, once per new approval. It returns at once:
//! the webhook and the desktop notification run in background tasks, so a slow or dead
//! receiver never holds up the proxy. Everything sent comes from the agent's request, so the
//! Slack text escapes Slack's control characters and the desktop text escapes markup.

use crate::config::{Config, Notify};
use crate::state::approvals::Approval;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use std::sync::OnceLock;
use std::time::Duration;

/// Attempts per webhook message, and the wait before the second (doubled each time after).
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// One attempt's limit (connect, send, answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

fn client() -> &'static crate::net::HttpsClient<Full<Bytes>> {
    static CLIENT: OnceLock<crate::net::HttpsClient<Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| crate::net::https_client(ATTEMPT_TIMEOUT))
}

/// Called once when a call first blocks. Returns at once (the work happens in the background).
pub fn blocked(config: &Config, approval: &Approval, link: &str) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(deliver(config.notify.clone(), Message::of(approval, link)));
}

/// Called when one approver of several has signed and the call waits for another: tells
/// them again, the same way. Outside a runtime (the CLI) it waits for the delivery, at most
/// [`AGAIN_LIMIT`].
pub fn again(config: &Config, approval: &Approval, link: &str) {
    send_again(config, Message::of(approval, link));
}

/// A Terraform plan whose quorum is under way, as [`plan_again`] tells of it.
pub struct PlanWaiting<'a> {
    pub id: &'a str,
    pub environment: &'a str,
    pub agent: &'a str,
    pub calls: usize,
    /// "1 of 2 approvals".
    pub progress: &'a str,
}

/// [`again`] for a Terraform plan whose quorum is under way.
pub fn plan_again(config: &Config, plan: &PlanWaiting<'_>, link: &str) {
    let production = crate::describe::is_production(plan.environment);
    let text = format!(
        "airlock: plan {} (environment {}, agent {}, {} calls) {} — waiting for another approver. Approve or deny: {link}",
        plan.id, plan.environment, plan.agent, plan.calls, plan.progress,
    );
    let visible = markup_escape(&crate::describe::visible(&text));
    let title = format!(
        "airlock: plan approval needed{}",
        if production { " (PRODUCTION)" } else { "" }
    );
    send_again(
        config,
        Message {
            id: plan.id.to_owned(),
            webhook: json!({
                "text": visible,
                "airlock": {
                    "plan_id": plan.id,
                    "environment": plan.environment,
                    "agent": plan.agent,
                    "progress": plan.progress,
                    "link": link,
                },
            }),
            desktop: (crate::describe::visible(&title), visible.clone()),
        },
    );
}

fn send_again(config: &Config, message: Message) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(deliver(config.notify.clone(), message));
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => {
            let id = message.id.clone();
            let work = deliver(config.notify.clone(), message);
            let bounded = async { tokio::time::timeout(AGAIN_LIMIT, work).await };
            if rt.block_on(bounded).is_err() {
                tracing::warn!(approval = %id, "notification not finished in time");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot notify: no runtime"),
    }
}

/// How long the CLI waits for [`again`]'s notifications.
const AGAIN_LIMIT: Duration = Duration::from_secs(15);

/// One notification on every channel: the webhook's JSON, the desktop's title and text.
struct Message {
    /// The approval's (or plan's) id, for logs.
    id: String,
    webhook: serde_json::Value,
    desktop: (String, String),
}

impl Message {
    fn of(approval: &Approval, link: &str) -> Message {
        Message {
            id: approval.id.clone(),
            webhook: slack_message(approval, link),
            desktop: desktop_message(approval, link),
        }
    }
}

async fn deliver(notify: Notify, message: Message) {
    let Message {
        id,
        webhook,
        desktop: (title, text),
    } = message;
    let to_webhook = async {
        if let Some(url) = notify.webhook_url.clone() {
            send_webhook(url, webhook.to_string(), &id).await;
        }
    };
    let desktop = async {
        if notify.desktop {
            if let Some(program) = find_in_path("notify-send") {
                notify_desktop(program, title, text).await;
            }
        }
    };
    tokio::join!(to_webhook, desktop);
}

/// For a call that needs several approvers: " (1 of 2 approvals — waiting for another
/// approver)"; empty otherwise.
fn quorum_note(a: &Approval) -> String {
    if a.quorum.approvals > 1 {
        format!(" ({} — waiting for another approver)", a.progress())
    } else {
        String::new()
    }
}

/// Slack's `mrkdwn` and `notify-send`'s body markup both treat `&`, `<` and `>` as control
/// characters: escape them.
fn markup_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What one blocked call looks like in Slack (or anything that takes `{"text": …}`).
pub fn slack_message(a: &Approval, link: &str) -> serde_json::Value {
    let production = crate::describe::is_production(&a.environment);
    let what = crate::describe::destroys(&a.call);
    let irreversible = if a.irreversible { " IRREVERSIBLE." } else { "" };
    let env = if production {
        format!("PRODUCTION ({})", a.environment)
    } else {
        a.environment.clone()
    };
    let text = format!(
        "airlock: approval needed for {} (environment {env}, agent {}){}.{irreversible} {what} Approve or deny: {link}",
        a.summary(),
        a.agent,
        quorum_note(a)
    );
    let e = |s: &str| markup_escape(&crate::describe::visible(s));
    let mrkdwn =
        format!(
        "*Approval needed:* `{}`\n*Environment:* {}{}\n*Agent:* {}\n{}{}\n<{}|Review and decide>",
        e(&a.summary()),
        e(&a.environment),
        if production { " :rotating_light: *PRODUCTION*" } else { "" },
        e(&a.agent),
        e(&what),
        if a.irreversible { "\n*IRREVERSIBLE*" } else { "" },
        markup_escape(link),
    );
    json!({
        "text": markup_escape(&crate::describe::visible(&text)),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}},
        ],
        "airlock": {
            "approval_id": a.id,
            "action": a.call.action(),
            "resources": a.call.resources.iter().map(|r| r.arn.clone().unwrap_or_else(|| r.value.clone())).collect::<Vec<_>>(),
            "environment": a.environment,
            "agent": a.agent,
            "irreversible": a.irreversible,
            "approvals": a.approved_by.len(),
            "quorum": a.quorum.approvals,
            "link": link,
        },
    })
}

async fn send_webhook(url: http::Uri, body: String, approval: &str) {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let request = http::Request::post(url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "airlock")
            .body(Full::new(Bytes::from(body.clone())));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "webhook: cannot build the request");
                return;
            }
        };
        let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, client().request(request)).await;
        let retry = match outcome {
            Ok(Ok(resp)) if resp.status().is_success() => {
                tracing::info!(%approval, attempt, "webhook delivered");
                return;
            }
            Ok(Ok(resp)) => {
                let status = resp.status();
                // A client error other than throttling will not get better by retrying.
                let retry =
                    status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
                tracing::warn!(%approval, attempt, %status, "webhook answered with an error");
                retry
            }
            Ok(Err(e)) => {
                tracing::warn!(%approval, attempt, error = %e, "webhook unreachable");
                true
            }
            Err(_) => {
                tracing::warn!(%approval, attempt, "webhook timed out");
                true
            }
        };
        if !retry || attempt == ATTEMPTS {
            break;
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
    tracing::warn!(%approval, "webhook not delivered; the approval is still on the page and in `airlock approvals`");
}

fn desktop_message(a: &Approval, link: &str) -> (String, String) {
    let production = crate::describe::is_production(&a.environment);
    let title = format!(
        "airlock: approval needed{}",
        if production { " (PRODUCTION)" } else { "" }
    );
    let text = format!(
        "{} — environment {}, agent {}{}{}\n{link}",
        a.summary(),
        a.environment,
        a.agent,
        if a.irreversible { ", IRREVERSIBLE" } else { "" },
        quorum_note(a)
    );
    (
        crate::describe::visible(&title),
        markup_escape(&crate::describe::visible(&text)),
    )
}

async fn notify_desktop(program: std::path::PathBuf, title: String, text: String) {
    let child = tokio::process::Command::new(program)
        .args([
            "--app-name=airlock",
            "--urgency=critical",
            "--",
            &title,
            &text,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    match child {
        Ok(mut c) => {
            if tokio::time::timeout(Duration::from_secs(10), c.wait())
                .await
                .is_err()
            {
                tracing::debug!("notify-send did not finish; stopped");
            }
        }
        Err(e) => tracing::debug!(error = %e, "notify-send could not start"),
    }
}

/// The first executable `name` on `PATH`.
fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{AwsCall, Resource};
    use crate::state::approvals::Status;
    use std::collections::BTreeMap;

    fn approval(env: &str, db: &str) -> Approval {
        let mut params = BTreeMap::new();
        params.insert("DBInstanceIdentifier".into(), db.into());
        params.insert("SkipFinalSnapshot".into(), "true".into());
        Approval {
            id: "abc".into(),
            status: Status::Pending,
            binding_key: "k".into(),
            call: AwsCall {
                service: "rds".into(),
                signing_name: "rds".into(),
                operation: "DeleteDBInstance".into(),
                region: "us-west-2".into(),
                account: None,
                resources: vec![Resource {
                    member: "DBInstanceIdentifier".into(),
                    value: db.into(),
                    arn: None,
                }],
                params,
            },
            agent: "terraform".into(),
            environment: env.into(),
            rule: "builtin:destructive-verb".into(),
            reason: "deletes".into(),
            irreversible: true,
            irreversible_reasons: vec!["no final snapshot".into()],
            created_at: "2026-02-26T12:00:00Z".into(),
            last_seen_at: "2026-02-26T12:00:00Z".into(),
            attempts: 1,
            receipt_id: None,
            decided_by: None,
            decided_at: None,
            quorum: Default::default(),
            approved_by: vec![],
        }
    }

    #[test]
    fn the_slack_message_names_the_call_the_environment_and_the_link() {
        let m = slack_message(
            &approval("prod", "tf-db"),
            "http://localhost:8444/approvals/abc",
        );
        let text = m["text"].as_str().expect("text");
        assert!(text.contains("rds:DeleteDBInstance on tf-db"), "{text}");
        assert!(text.contains("PRODUCTION (prod)"), "{text}");
        assert!(text.contains("IRREVERSIBLE"), "{text}");
        assert!(
            text.contains("http://localhost:8444/approvals/abc"),
            "{text}"
        );
        assert!(
            text.contains("SkipFinalSnapshot=true: no final snapshot"),
            "{text}"
        );
        assert_eq!(m["blocks"][0]["type"], "section");
    }

    #[test]
    fn agent_text_cannot_inject_slack_links_or_markup() {
        let m = slack_message(
            &approval("dev", "<http://evil|click>\u{202E}"),
            "http://l/approvals/abc",
        );
        let mrkdwn = m["blocks"][0]["text"]["text"].as_str().expect("mrkdwn");
        assert!(!mrkdwn.contains("<http://evil"), "{mrkdwn}");
        assert!(
            mrkdwn.contains("&lt;http://evil|click&gt;⟨U+202E⟩"),
            "{mrkdwn}"
        );
        let (_, text) = desktop_message(&approval("dev", "<b>x</b>"), "l");
        assert!(text.contains("&lt;b&gt;x&lt;/b&gt;"), "{text}");
    }
}
