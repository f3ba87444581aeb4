//! Reads a CloudFormation change set before `ExecuteChangeSet` or `UpdateStack` is decided
//! (the rule `builtin:change-set-removals`; the pure part, and why, is
//! [`crate::policy::changeset`]).
//!
//! These are airlock's own calls ([`super::own`]), signed with the credentials the call itself
//! would be signed with (airlock's own, or its session in the agent's `[[account]]`, see
//! [`super::assume`]) and sent to CloudFormation in the call's region (or `[upstream]
//! endpoint`):
//!
//! - `ExecuteChangeSet`: `DescribeChangeSet` with the call's own `ChangeSetName` and
//!   `StackName`, every page (at most [`MAX_PAGES`]).
//! - `UpdateStack`: `CreateChangeSet` of a preview (`airlock-preview-<random>`,
//!   `ChangeSetType=UPDATE`, the call's own template, parameters, capabilities, resource
//!   types, role and tags), `DescribeChangeSet` until CloudFormation has computed it (at most
//!   [`PREVIEW_DEADLINE`]), every page, then `DeleteChangeSet` of the preview, whatever
//!   happened. The preview runs in its own task, so an agent that hangs up does not leave
//!   it behind.
//!
//! Anything that goes wrong (an error answer, a timeout, a status other than complete, an
//! answer that does not read) is a [`Reading::Unreadable`]: the call needs a receipt.

use super::own::query_call_as;
use super::Proxy;
use crate::identify::AwsCall;
use crate::policy::changeset::{
    self, delete_request, describe_request, findings, preview_request, read_created, read_describe,
    ChangeSetPage, Plan, Reading, MAX_PAGES,
};
use std::sync::Arc;
use std::time::Duration;

/// How long CloudFormation may take to compute a preview.
pub const PREVIEW_DEADLINE: Duration = Duration::from_secs(30);
/// The pause between looks at a preview being computed.
const POLL_EVERY: Duration = Duration::from_millis(500);

/// Where the change set is read: the call's region, as the account the call acts in.
struct At {
    region: String,
    creds: aws_credential_types::Credentials,
}

/// What `call` (one of `policy::changeset::ACTIONS`) of `agent`, acting in `account` (none:
/// airlock's own), would change.
pub async fn read(
    proxy: &Arc<Proxy>,
    call: &AwsCall,
    account: Option<&crate::accounts::Account>,
    agent: &str,
) -> Reading {
    let at = match super::assume::credentials(proxy, account, agent, None).await {
        Ok(creds) => At {
            region: call.region.clone(),
            creds,
        },
        Err(e) => return Reading::Unreadable(e.message),
    };
    match changeset::plan(call) {
        Plan::FailClosed(why) => Reading::Unreadable(why),
        Plan::Describe {
            change_set_name,
            stack_name,
        } => match read_all(proxy, &at, &change_set_name, stack_name.as_deref()).await {
            Ok(page) if page.status == "CREATE_COMPLETE" => Reading::Read {
                change_set_id: page.change_set_id.clone(),
                changes: page.changes.len(),
                findings: findings(&page.changes),
            },
            Ok(page) => Reading::Unreadable(not_complete(&page)),
            Err(why) => Reading::Unreadable(why),
        },
        Plan::Preview { params } => {
            let proxy = Arc::clone(proxy);
            let task = tokio::spawn(async move { preview(&proxy, &at, &params).await });
            match task.await {
                Ok(reading) => reading,
                Err(e) => Reading::Unreadable(format!("the preview stopped: {e}")),
            }
        }
    }
}

fn not_complete(page: &ChangeSetPage) -> String {
    match &page.status_reason {
        Some(reason) => format!("the change set is {}: {reason}", page.status),
        None => format!("the change set is {}", page.status),
    }
}

/// Sends one CloudFormation call as airlock; an error answer is an error.
async fn ask(proxy: &Proxy, at: &At, form: &[(String, String)]) -> Result<bytes::Bytes, String> {
    let what = form
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.as_str())
        .unwrap_or("CloudFormation");
    let endpoint = super::resign::endpoint_of(proxy, "cloudformation", &at.region)?;
    let answer = query_call_as(
        &proxy.client,
        at.creds.clone(),
        &endpoint,
        "cloudformation",
        form,
        what,
    )
    .await?;
    if !answer.status.is_success() {
        return Err(match changeset::read_error(&answer.body) {
            Some(error) => format!("{what} answered {}: {error}", answer.status.as_u16()),
            None => format!("{what} answered {}", answer.status.as_u16()),
        });
    }
    Ok(answer.body)
}

/// The change set, every page when it is complete (only the first otherwise). Every page
/// must be of the same change set.
async fn read_all(
    proxy: &Proxy,
    at: &At,
    name: &str,
    stack: Option<&str>,
) -> Result<ChangeSetPage, String> {
    let first = read_describe(&ask(proxy, at, &describe_request(name, stack, None)).await?)?;
    if first.status != "CREATE_COMPLETE" {
        return Ok(first);
    }
    let mut whole = first;
    for _ in 1..MAX_PAGES {
        let Some(token) = whole.next_token.take() else {
            return Ok(whole);
        };
        let page =
            read_describe(&ask(proxy, at, &describe_request(name, stack, Some(&token))).await?)?;
        if page.change_set_id != whole.change_set_id || page.status != whole.status {
            return Err("the change set's pages disagree on which change set they are".into());
        }
        whole.changes.extend(page.changes);
        whole.next_token = page.next_token;
    }
    if whole.next_token.is_some() {
        return Err(format!("the change set has more than {MAX_PAGES} pages"));
    }
    Ok(whole)
}

/// Makes, reads and deletes a preview change set for an `UpdateStack`.
async fn preview(proxy: &Proxy, at: &At, params: &[(String, String)]) -> Reading {
    use rand::Rng;
    let name = format!("airlock-preview-{:016x}", rand::thread_rng().gen::<u64>());
    let created = match ask(proxy, at, &preview_request(params, &name)).await {
        Ok(body) => body,
        Err(why) => return Reading::Unreadable(format!("the preview could not be made: {why}")),
    };
    let id = match read_created(&created) {
        Ok(id) => id,
        // Made, but its id not read: it can only be deleted by name.
        Err(why) => {
            let stack = params.iter().find(|(k, _)| k == "StackName");
            if let Some((_, stack)) = stack {
                let mut form = delete_request(&name);
                form.push(("StackName".into(), stack.clone()));
                if let Err(e) = ask(proxy, at, &form).await {
                    tracing::warn!(change_set = %name, error = %e, "could not delete airlock's preview change set");
                }
            }
            return Reading::Unreadable(format!("the preview's answer does not read: {why}"));
        }
    };
    let reading = read_preview(proxy, at, &id).await;
    if let Err(why) = ask(proxy, at, &delete_request(&id)).await {
        tracing::warn!(change_set = %id, error = %why, "could not delete airlock's preview change set");
    }
    reading
}

async fn read_preview(proxy: &Proxy, at: &At, id: &str) -> Reading {
    let deadline = tokio::time::Instant::now() + PREVIEW_DEADLINE;
    loop {
        let page = match read_all(proxy, at, id, None).await {
            Ok(page) => page,
            Err(why) => return Reading::Unreadable(why),
        };
        match page.status.as_str() {
            "CREATE_COMPLETE" => {
                return Reading::Read {
                    change_set_id: None,
                    changes: page.changes.len(),
                    findings: findings(&page.changes),
                }
            }
            _ if page.has_no_changes() => {
                return Reading::Read {
                    change_set_id: None,
                    changes: 0,
                    findings: Vec::new(),
                }
            }
            "CREATE_PENDING" | "CREATE_IN_PROGRESS" => {}
            _ => return Reading::Unreadable(format!("preview: {}", not_complete(&page))),
        }
        if tokio::time::Instant::now() + POLL_EVERY >= deadline {
            return Reading::Unreadable(format!(
                "CloudFormation did not compute the preview within {} seconds",
                PREVIEW_DEADLINE.as_secs()
            ));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
