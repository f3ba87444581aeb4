//! The credentials a call is re-signed with: airlock's own, or, for a key bound to an
//! `[[account]]`, a session in that account (see [`crate::accounts`]).
//!
//! A role is assumed with airlock's own credentials; each session belongs to one (account,
//! agent, approval), so the target account's CloudTrail names the agent (`SourceIdentity`,
//! tag `airlock:agent`) and the receipt a call was made under (tag `airlock:approval`). A
//! profile's credentials are the profile's, one cache per account. Every session sits in a
//! [`CredentialCache`] and is refreshed ahead of its expiry, as airlock's own credentials
//! are. A refusal is cached for a short while too, so a role that cannot be assumed is not
//! asked for on every call.

use super::error::ProxyError;
use super::Proxy;
use crate::accounts::{
    assume_role_form, caller_identity_form, check_caller_identity, read_assume_role, sts_region,
    Account, Route, Unreachable,
};
use crate::credentials::CredentialCache;
use crate::secret::Secret;
use crate::state::agents::Agent;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use dashmap::DashMap;
use std::sync::Arc;

/// Sessions held at most; past this the per-approval ones are dropped first.
const MAX_SESSIONS: usize = 1024;

/// Who a session is for: (account name, agent name, receipt id).
type SessionKey = (String, String, Option<String>);

/// Every account session airlock holds.
#[derive(Default)]
pub struct Sessions {
    roles: DashMap<SessionKey, Arc<CredentialCache<Unreachable>>>,
    profiles: DashMap<String, Arc<CredentialCache<Unreachable>>>,
}

/// The account the agent's key acts in: `None` for a key of airlock's own account. A key
/// issued for another id than the account's configured one has no route.
pub fn account_of<'a>(proxy: &'a Proxy, agent: &Agent) -> Result<Option<&'a Account>, ProxyError> {
    bound_account(&proxy.config.accounts, agent).map_err(|e| ProxyError::account_unreachable(&e))
}

fn bound_account<'a>(
    accounts: &'a [Account],
    agent: &Agent,
) -> Result<Option<&'a Account>, Unreachable> {
    let Some(name) = &agent.account else {
        return Ok(None);
    };
    let account = accounts
        .iter()
        .find(|a| &a.name == name)
        .ok_or_else(|| Unreachable::no_route(&agent.name, name))?;
    match &agent.account_id {
        Some(bound) if bound != &account.id => {
            Err(Unreachable::id_changed(&agent.name, account, bound))
        }
        _ => Ok(Some(account)),
    }
}

/// The credentials to sign `agent`'s call with, in `account` (airlock's own without one),
/// under the receipt `approval` if any.
pub async fn credentials(
    proxy: &Proxy,
    account: Option<&Account>,
    agent: &str,
    approval: Option<&str>,
) -> Result<Credentials, ProxyError> {
    let Some(account) = account else {
        return proxy
            .credentials
            .get()
            .await
            .map_err(|e| ProxyError::no_credentials(&e.0));
    };
    let result = match &account.route {
        Route::Role { .. } => role_session(proxy, account, agent, approval).get().await,
        Route::Profile(profile) => profile_credentials(proxy, account, profile).get().await,
    };
    result.map_err(|e| {
        tracing::warn!(account = %account.name, %agent, reason = %e, "account unreachable");
        ProxyError::account_unreachable(&e)
    })
}

fn role_session(
    proxy: &Proxy,
    account: &Account,
    agent: &str,
    approval: Option<&str>,
) -> Arc<CredentialCache<Unreachable>> {
    let sessions = &proxy.sessions.roles;
    let key = (
        account.name.clone(),
        agent.to_string(),
        approval.map(str::to_string),
    );
    if let Some(cache) = sessions.get(&key) {
        return Arc::clone(&cache);
    }
    if sessions.len() >= MAX_SESSIONS {
        sessions.retain(|k, _| k.2.is_none());
        if sessions.len() >= MAX_SESSIONS {
            sessions.clear();
        }
    }
    let client = proxy.client.clone();
    let base = Arc::clone(&proxy.credentials);
    // STS of the role's own partition (a role is assumable only there).
    let sts = match &account.route {
        Route::Role { arn, .. } => sts_region(crate::aws::model(), arn),
        Route::Profile(_) => Ok("us-east-1".to_string()),
    }
    .and_then(|region| super::resign::endpoint_of(proxy, "sts", &region));
    let account = account.clone();
    let (agent, approval) = (key.1.clone(), key.2.clone());
    let cache = CredentialCache::with_fetcher(
        move || {
            let (client, base, sts, account) = (
                client.clone(),
                Arc::clone(&base),
                sts.clone(),
                account.clone(),
            );
            let (agent, approval) = (agent.clone(), approval.clone());
            Box::pin(async move {
                let Route::Role { arn, external_id } = &account.route else {
                    return Err(Unreachable::role_refused(
                        &account,
                        "it is not reached by a role",
                    ));
                };
                let sts = sts.map_err(|e| Unreachable::sts_unreachable(&account, &e))?;
                let source = base
                    .get()
                    .await
                    .map_err(|e| Unreachable::source_expired(&account, &e.0))?;
                let form = assume_role_form(
                    arn,
                    external_id.as_ref().map(Secret::expose),
                    &agent,
                    approval.as_deref(),
                );
                let answer =
                    super::own::query_call_as(&client, source, &sts, "sts", &form, "AssumeRole")
                        .await
                        .map_err(|e| Unreachable::sts_unreachable(&account, &e))?;
                let session = read_assume_role(&account, answer.status.as_u16(), &answer.body)?;
                tracing::info!(account = %account.name, %agent, approval = ?approval, "assumed the account's role");
                Ok(Credentials::new(
                    session.access_key_id,
                    session.secret_access_key.expose(),
                    Some(session.session_token.expose().to_string()),
                    Some(session.expires),
                    "airlock-assume-role",
                ))
            })
        },
        proxy.config.credentials.refresh_ahead,
    );
    Arc::clone(sessions.entry(key).or_insert(cache).value())
}

/// The profile's credentials, checked after every fetch with `GetCallerIdentity` to be the
/// configured account's: otherwise calls identified, matched and receipt-bound as that
/// account would land in another.
fn profile_credentials(
    proxy: &Proxy,
    account: &Account,
    profile: &str,
) -> Arc<CredentialCache<Unreachable>> {
    if let Some(cache) = proxy.sessions.profiles.get(&account.name) {
        return Arc::clone(&cache);
    }
    // The profile alone, never the environment's keys (which would be airlock's own).
    let provider = SharedCredentialsProvider::new(
        aws_config::profile::ProfileFileCredentialsProvider::builder()
            .profile_name(profile)
            .build(),
    );
    let client = proxy.client.clone();
    let sts = super::resign::endpoint_of(proxy, "sts", "us-east-1");
    let checked = account.clone();
    let cache = CredentialCache::with_fetcher(
        move || {
            let (client, provider, sts, account) = (
                client.clone(),
                provider.clone(),
                sts.clone(),
                checked.clone(),
            );
            Box::pin(async move {
                let creds = crate::credentials::from_provider(Some(&provider))
                    .await
                    .map_err(|e| Unreachable::role_refused(&account, &e.0))?;
                let sts = sts.map_err(|e| Unreachable::sts_unreachable(&account, &e))?;
                let answer = super::own::query_call_as(
                    &client,
                    creds.clone(),
                    &sts,
                    "sts",
                    &caller_identity_form(),
                    "GetCallerIdentity",
                )
                .await
                .map_err(|e| Unreachable::sts_unreachable(&account, &e))?;
                check_caller_identity(&account, answer.status.as_u16(), &answer.body)?;
                Ok(creds)
            })
        },
        proxy.config.credentials.refresh_ahead,
    );
    Arc::clone(
        proxy
            .sessions
            .profiles
            .entry(account.name.clone())
            .or_insert(cache)
            .value(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{validate, AccountEntry, UnreachableKind};

    #[test]
    fn a_key_is_bound_to_the_account_id_it_was_issued_for() {
        let accounts = validate(&[AccountEntry {
            name: "prod".into(),
            id: "222222222222".into(),
            role_arn: Some("arn:aws:iam::222222222222:role/airlock".into()),
            external_id: None,
            profile: None,
        }])
        .unwrap();
        let agent = |account: Option<&str>, id: Option<&str>| Agent {
            name: "claude".into(),
            access_key_id: "AIRLOCKX".into(),
            secret: Secret::new("s"),
            account: account.map(str::to_string),
            account_id: id.map(str::to_string),
        };
        let found = |a: &Agent| bound_account(&accounts, a).map(|o| o.map(|a| a.id.clone()));
        assert_eq!(found(&agent(None, None)), Ok(None));
        assert_eq!(
            found(&agent(Some("prod"), Some("222222222222"))),
            Ok(Some("222222222222".into()))
        );
        // Records written before ids were kept are bound by name.
        assert_eq!(
            found(&agent(Some("prod"), None)),
            Ok(Some("222222222222".into()))
        );
        let moved = found(&agent(Some("prod"), Some("111111111111"))).unwrap_err();
        assert_eq!(moved.kind, UnreachableKind::NoRoute);
        assert!(
            moved.message.contains("issued for account 111111111111")
                && moved.message.contains("is now 222222222222"),
            "{}",
            moved.message
        );
        let gone = found(&agent(Some("staging"), None)).unwrap_err();
        assert_eq!(gone.kind, UnreachableKind::NoRoute);
    }
}
