//! Several AWS accounts behind one airlock (`[[account]]`), pure: what an account entry
//! means, the `sts:AssumeRole` form airlock sends to reach one, the reading of STS's answer,
//! and the reasons an account cannot be reached, each said so that a person can act on it.
//!
//! An agent's proxy key is bound to at most one account (`state/agents.json`); the proxy
//! (`proxy::assume`) turns the binding into credentials for that account. Without any
//! `[[account]]` nothing here is used: every call goes out with airlock's own credentials.
//!
//! Why the session carries the agent: CloudTrail in the target account records the
//! `SourceIdentity` and the session tags of an assumed-role session on every call made with
//! it, so the account's own logs say which agent acted and under which approval, even for
//! someone who never reads airlock's audit log. Sessions are therefore never shared between
//! agents, nor between a receipt's call and the agent's other calls.

use crate::secret::Secret;
use serde::Deserialize;
use std::time::SystemTime;

/// `[[account]]` as written in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    pub name: String,
    pub id: String,
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Secret enough not to print: a `{:?}` of the config never shows it.
    #[serde(default)]
    pub external_id: Option<Secret>,
    #[serde(default)]
    pub profile: Option<String>,
}

/// A validated account: its name (the agents' profile is `airlock-NAME`), its 12-digit id
/// (what `[[environment]] accounts` and receipts name) and how airlock reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub id: String,
    pub route: Route,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Assumed with airlock's own credentials through `sts:AssumeRole`.
    Role {
        arn: String,
        external_id: Option<Secret>,
    },
    /// A named profile of airlock's own AWS config (its credentials, SSO or role chain).
    Profile(String),
}

/// How long an assumed-role session lasts (STS's default and every role's minimum maximum).
pub const SESSION_SECS: u64 = 3600;

/// The AWS config profile an agent uses for an account.
pub fn profile_name(account: &str) -> String {
    format!("airlock-{account}")
}

/// Names for accounts (and so profiles): what agent names may be.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks every `[[account]]`; the error is the config key and the reason.
pub fn validate(entries: &[AccountEntry]) -> Result<Vec<Account>, (&'static str, String)> {
    let mut out: Vec<Account> = Vec::with_capacity(entries.len());
    for e in entries {
        if !valid_name(&e.name) {
            return Err((
                "[[account]] name",
                format!(
                    "{:?}: account names are 1 to 64 letters, digits, '.', '_' or '-'",
                    e.name
                ),
            ));
        }
        if out.iter().any(|a| a.name == e.name) {
            return Err(("[[account]] name", format!("{:?} is used twice", e.name)));
        }
        if e.id.len() != 12 || !e.id.bytes().all(|b| b.is_ascii_digit()) {
            return Err((
                "[[account]] id",
                format!(
                    "account {:?}: {:?} is not a 12-digit account id",
                    e.name, e.id
                ),
            ));
        }
        if let Some(other) = out.iter().find(|a| a.id == e.id) {
            return Err((
                "[[account]] id",
                format!(
                    "accounts {:?} and {:?} both name {}: one name per account, so a receipt and an environment mean one thing",
                    other.name, e.name, e.id
                ),
            ));
        }
        let route = match (&e.role_arn, &e.profile) {
            (Some(arn), None) => {
                let role_account = role_account(arn).ok_or_else(|| {
                    (
                        "[[account]] role_arn",
                        format!(
                            "account {:?}: {arn:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                            e.name
                        ),
                    )
                })?;
                if role_account != e.id {
                    return Err((
                        "[[account]] role_arn",
                        format!(
                            "account {:?}: the role {arn:?} is in account {role_account}, not {}",
                            e.name, e.id
                        ),
                    ));
                }
                if let Some(x) = &e.external_id {
                    let x = x.expose();
                    let ok = (2..=1224).contains(&x.len())
                        && x.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b"+=,.@:/-_".contains(&b)
                        });
                    if !ok {
                        return Err((
                            "[[account]] external_id",
                            format!("account {:?}: an external id is 2 to 1224 letters, digits or +=,.@:/-_", e.name),
                        ));
                    }
                }
                Route::Role {
                    arn: arn.clone(),
                    external_id: e.external_id.clone(),
                }
            }
            (None, Some(profile)) if e.external_id.is_none() => {
                if profile.is_empty() {
                    return Err((
                        "[[account]] profile",
                        format!("account {:?}: the profile name is empty", e.name),
                    ));
                }
                Route::Profile(profile.clone())
            }
            (None, Some(_)) => {
                return Err((
                    "[[account]] external_id",
                    format!(
                        "account {:?}: external_id goes with role_arn; a profile names its own",
                        e.name
                    ),
                ))
            }
            _ => {
                return Err((
                    "[[account]] role_arn",
                    format!(
                        "account {:?}: say how airlock reaches it with exactly one of role_arn or profile",
                        e.name
                    ),
                ))
            }
        };
        out.push(Account {
            name: e.name.clone(),
            id: e.id.clone(),
            route,
        });
    }
    Ok(out)
}

/// The account id in a role ARN (`arn:PARTITION:iam::ID:role/PATH/NAME`).
fn role_account(arn: &str) -> Option<&str> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", id, resource]
            if !partition.is_empty()
                && resource
                    .strip_prefix("role/")
                    .is_some_and(|name| !name.is_empty() && !name.ends_with('/')) =>
        {
            Some(id)
        }
        _ => None,
    }
}

/// The region whose STS assumes `arn`: the one of the role's partition (`arn:aws-cn:`,
/// `arn:aws-us-gov:`), as a role is only assumable in its own partition; `us-east-1` (the
/// global endpoint's) where the partition has it, else the partition's first region.
pub fn sts_region(model: &crate::aws::model::Model, arn: &str) -> Result<String, String> {
    let partition = arn.split(':').nth(1).unwrap_or_default();
    let regions = &model
        .partitions
        .iter()
        .find(|p| p.id == partition)
        .ok_or_else(|| {
            format!("the role {arn}'s partition {partition:?} is not one airlock knows")
        })?
        .regions;
    regions
        .iter()
        .find(|r| r.as_str() == "us-east-1")
        .or_else(|| regions.first())
        .cloned()
        .ok_or_else(|| format!("the partition {partition:?} has no region"))
}

/// The session name and source identity for an agent: its name (STS wants 2 to 64 of the
/// characters agent names are made of; a one-letter name is lengthened).
pub fn session_name(agent: &str) -> String {
    if agent.len() >= 2 {
        agent.to_string()
    } else {
        format!("agent-{agent}")
    }
}

/// The `sts:AssumeRole` form for `agent` acting in an account reached by `arn`, under the
/// receipt `approval` if any.
pub fn assume_role_form(
    arn: &str,
    external_id: Option<&str>,
    agent: &str,
    approval: Option<&str>,
) -> Vec<(String, String)> {
    let session = session_name(agent);
    let mut form: Vec<(String, String)> = vec![
        ("Action".into(), "AssumeRole".into()),
        ("Version".into(), "2011-06-15".into()),
        ("RoleArn".into(), arn.into()),
        ("RoleSessionName".into(), session.clone()),
        ("SourceIdentity".into(), session),
        ("DurationSeconds".into(), SESSION_SECS.to_string()),
        ("Tags.member.1.Key".into(), "airlock:agent".into()),
        ("Tags.member.1.Value".into(), agent.into()),
    ];
    if let Some(receipt) = approval {
        form.push(("Tags.member.2.Key".into(), "airlock:approval".into()));
        form.push(("Tags.member.2.Value".into(), receipt.into()));
    }
    if let Some(x) = external_id {
        form.push(("ExternalId".into(), x.into()));
    }
    form
}

/// Temporary credentials from an `AssumeRole` answer. Debug never shows the secrets.
#[derive(Debug)]
pub struct Session {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expires: SystemTime,
}

/// Why an account could not be reached. The message names the account and never holds a
/// credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub kind: UnreachableKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnreachableKind {
    /// The agent's key is bound to an account the config no longer names.
    NoRoute,
    /// STS refused the role (trust policy, permissions, external id, a malformed answer).
    RoleRefused,
    /// airlock's own credentials, the source of the session, are missing or expired.
    SourceExpired,
    /// STS could not be reached or did not answer in time.
    StsUnreachable,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// An account as the messages name it: `staging (111111111111)`.
pub fn shown(account: &Account) -> String {
    format!("{} ({})", account.name, account.id)
}

impl Unreachable {
    pub fn no_route(agent: &str, account: &str) -> Self {
        Unreachable {
            kind: UnreachableKind::NoRoute,
            message: format!(
                "airlock has no route to account {account:?}: the key of agent {agent:?} is bound to it, but the config names no [[account]] {account:?}. Add it back (name, id, role_arn or profile), or bind the agent to an account the config names."
            ),
        }
    }

    /// The key was issued for account `bound_id`, but the config's `[[account]] name` now
    /// has another id: the key is not carried over to it.
    pub fn id_changed(agent: &str, account: &Account, bound_id: &str) -> Self {
        Unreachable {
            kind: UnreachableKind::NoRoute,
            message: format!(
                "airlock has no route to account {:?} for agent {agent:?}: its key was issued for account {bound_id}, but the config's [[account]] {:?} is now {}. Put the id back, or revoke the agent and bind it again to the account the config names.",
                account.name, account.name, account.id
            ),
        }
    }

    pub fn source_expired(account: &Account, reason: &str) -> Self {
        Unreachable {
            kind: UnreachableKind::SourceExpired,
            message: format!(
                "airlock cannot reach account {}: its own AWS credentials, from which it assumes the account's role, are not usable: {reason}. Renew airlock's credentials (environment, profile, SSO or role) and retry.",
                shown(account)
            ),
        }
    }

    pub fn role_refused(account: &Account, why: &str) -> Self {
        let fix = match &account.route {
            Route::Role { arn, .. } => format!(
                "the role {arn} could not be assumed: {why}. Its trust policy must let airlock's own principal call sts:AssumeRole, sts:SetSourceIdentity and sts:TagSession (with the external id, if one is set)"
            ),
            Route::Profile(p) => format!("the profile {p:?} of airlock's AWS config gave no credentials: {why}"),
        };
        Unreachable {
            kind: UnreachableKind::RoleRefused,
            message: format!("airlock cannot reach account {}: {fix}.", shown(account)),
        }
    }

    /// The credentials a route gave are for another account than the configured `id`: a
    /// call made with them would land there, while being identified, matched against
    /// environments and bound to receipts as the configured one.
    pub fn wrong_account(account: &Account, found: &str) -> Self {
        let whose = match &account.route {
            Route::Role { arn, .. } => format!("the session of the role {arn} is"),
            Route::Profile(p) => format!("the profile {p:?}'s credentials are"),
        };
        Unreachable {
            kind: UnreachableKind::RoleRefused,
            message: format!(
                "airlock cannot reach account {}: {whose} for account {found}, not {}. Point the [[account]] at credentials of account {} (or correct its id).",
                shown(account),
                account.id,
                account.id
            ),
        }
    }

    pub fn sts_unreachable(account: &Account, why: &str) -> Self {
        Unreachable {
            kind: UnreachableKind::StsUnreachable,
            message: format!(
                "airlock cannot reach account {}: STS did not answer ({why}); retry later.",
                shown(account)
            ),
        }
    }
}

/// Reads STS's answer to `AssumeRole` (`status` and body). An error answer becomes the
/// reason it gives; codes that say airlock's own credentials are bad become
/// [`UnreachableKind::SourceExpired`].
pub fn read_assume_role(
    account: &Account,
    status: u16,
    body: &[u8],
) -> Result<Session, Unreachable> {
    let text = String::from_utf8_lossy(body);
    if !(200..300).contains(&status) {
        let code = element(&text, "Code").unwrap_or_default();
        let message = element(&text, "Message").unwrap_or_default();
        let why = match (code.is_empty(), message.is_empty()) {
            (true, _) => format!("STS answered {status}"),
            (false, true) => code.clone(),
            (false, false) => format!("{code}: {message}"),
        };
        return Err(match code.as_str() {
            "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "RequestExpired" => Unreachable::source_expired(account, &why),
            _ => Unreachable::role_refused(account, &why),
        });
    }
    let malformed = || Unreachable::role_refused(account, "STS's answer holds no credentials");
    // The session must be in the configured account (`arn:PARTITION:sts::ID:assumed-role/…`).
    let user = section(&text, "AssumedRoleUser").ok_or_else(malformed)?;
    let session_arn = element(user, "Arn").ok_or_else(malformed)?;
    let session_account = session_arn.split(':').nth(4).unwrap_or_default();
    if session_account != account.id {
        return Err(Unreachable::wrong_account(account, session_account));
    }
    let credentials = section(&text, "Credentials").ok_or_else(malformed)?;
    let field = |name: &str| element(credentials, name).ok_or_else(malformed);
    let expiration = field("Expiration")?;
    let expires =
        time::OffsetDateTime::parse(&expiration, &time::format_description::well_known::Rfc3339)
            .map_err(|_| malformed())?;
    Ok(Session {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: Secret::new(field("SecretAccessKey")?),
        session_token: Secret::new(field("SessionToken")?),
        expires: expires.into(),
    })
}

/// Reads STS's answer to `GetCallerIdentity` made with the credentials of `account`'s route:
/// they must be the configured account's.
pub fn check_caller_identity(
    account: &Account,
    status: u16,
    body: &[u8],
) -> Result<(), Unreachable> {
    let text = String::from_utf8_lossy(body);
    if !(200..300).contains(&status) {
        let code = element(&text, "Code").unwrap_or_else(|| format!("STS answered {status}"));
        return Err(Unreachable::role_refused(
            account,
            &format!("GetCallerIdentity with them failed ({code})"),
        ));
    }
    match caller_account(&text) {
        Some(found) if found == account.id => Ok(()),
        Some(found) => Err(Unreachable::wrong_account(account, &found)),
        None => Err(Unreachable::role_refused(
            account,
            "GetCallerIdentity with them gave no account",
        )),
    }
}

/// The `sts:GetCallerIdentity` form.
pub fn caller_identity_form() -> Vec<(String, String)> {
    vec![
        ("Action".into(), "GetCallerIdentity".into()),
        ("Version".into(), "2011-06-15".into()),
    ]
}

/// The 12-digit account of a `GetCallerIdentity` answer.
pub fn caller_account(answer: &str) -> Option<String> {
    element(answer, "Account").filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()))
}

/// The text between `<name>` and `</name>` (the first), entities decoded.
fn element(text: &str, name: &str) -> Option<String> {
    section(text, name).map(|s| {
        s.trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    })
}

fn section<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(&text[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, id: &str) -> AccountEntry {
        AccountEntry {
            name: name.into(),
            id: id.into(),
            role_arn: Some(format!("arn:aws:iam::{id}:role/airlock")),
            external_id: None,
            profile: None,
        }
    }

    #[test]
    fn accounts_are_validated_naming_the_key() {
        let ok = validate(&[
            entry("staging", "111111111111"),
            entry("prod", "222222222222"),
        ])
        .unwrap();
        assert_eq!(ok[1].name, "prod");
        let fails = |entries: Vec<AccountEntry>, key: &str, why: &str| {
            let (k, reason) = validate(&entries).unwrap_err();
            assert_eq!(k, key, "{reason}");
            assert!(reason.contains(why), "{reason}");
        };
        fails(
            vec![entry("a", "111111111111"), entry("a", "222222222222")],
            "[[account]] name",
            "twice",
        );
        fails(
            vec![entry("a", "111111111111"), entry("b", "111111111111")],
            "[[account]] id",
            "both name",
        );
        fails(
            vec![entry("bad name", "111111111111")],
            "[[account]] name",
            "letters",
        );
        fails(vec![entry("a", "1234")], "[[account]] id", "12-digit");
        let mut other = entry("a", "111111111111");
        other.role_arn = Some("arn:aws:iam::222222222222:role/x".into());
        fails(
            vec![other],
            "[[account]] role_arn",
            "is in account 222222222222",
        );
        let mut user = entry("a", "111111111111");
        user.role_arn = Some("arn:aws:iam::111111111111:user/x".into());
        fails(vec![user], "[[account]] role_arn", "not a role ARN");
        let mut both = entry("a", "111111111111");
        both.profile = Some("p".into());
        fails(vec![both], "[[account]] role_arn", "exactly one");
        let mut neither = entry("a", "111111111111");
        neither.role_arn = None;
        fails(vec![neither], "[[account]] role_arn", "exactly one");
        let mut profile = entry("a", "111111111111");
        profile.role_arn = None;
        profile.profile = Some("staging-admin".into());
        assert_eq!(
            validate(&[profile.clone()]).unwrap()[0].route,
            Route::Profile("staging-admin".into())
        );
        profile.external_id = Some(Secret::new("xyz"));
        fails(
            vec![profile],
            "[[account]] external_id",
            "goes with role_arn",
        );
        let mut external = entry("a", "111111111111");
        external.external_id = Some(Secret::new("bad id!"));
        fails(vec![external], "[[account]] external_id", "2 to 1224");
        let mut hidden = entry("a", "111111111111");
        hidden.external_id = Some(Secret::new("ext-do-not-print"));
        let shown = format!("{hidden:?} {:?}", validate(&[hidden.clone()]).unwrap());
        assert!(!shown.contains("ext-do-not-print"), "{shown}");
    }

    #[test]
    fn the_session_names_the_agent_and_the_approval() {
        let form = assume_role_form(
            "arn:aws:iam::111111111111:role/airlock",
            Some("ext-1"),
            "claude",
            Some("r-123"),
        );
        let get = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert_eq!(get("Action"), "AssumeRole");
        assert_eq!(get("RoleSessionName"), "claude");
        assert_eq!(get("SourceIdentity"), "claude");
        assert_eq!(get("ExternalId"), "ext-1");
        assert_eq!(get("Tags.member.1.Key"), "airlock:agent");
        assert_eq!(get("Tags.member.1.Value"), "claude");
        assert_eq!(get("Tags.member.2.Key"), "airlock:approval");
        assert_eq!(get("Tags.member.2.Value"), "r-123");
        let plain = assume_role_form("arn:aws:iam::111111111111:role/a", None, "x", None);
        assert!(plain
            .iter()
            .all(|(k, _)| k != "ExternalId" && k != "Tags.member.2.Key"));
        assert!(plain
            .iter()
            .any(|(k, v)| k == "SourceIdentity" && v == "agent-x"));
    }

    #[test]
    fn answers_are_read_and_refusals_named() {
        let account = validate(&[entry("prod", "222222222222")])
            .unwrap()
            .remove(0);
        let ok = b"<AssumeRoleResponse><AssumeRoleResult><AssumedRoleUser><Arn>arn:aws:sts::222222222222:assumed-role/airlock/claude</Arn></AssumedRoleUser><Credentials><AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>s3cr&amp;t</SecretAccessKey><SessionToken>tok</SessionToken><Expiration>2030-01-02T03:04:05Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>";
        let s = read_assume_role(&account, 200, ok).unwrap();
        assert_eq!(s.access_key_id, "ASIAX");
        assert_eq!(s.secret_access_key.expose(), "s3cr&t");
        assert_eq!(
            s.expires,
            SystemTime::from(time::macros::datetime!(2030-01-02 03:04:05 UTC))
        );
        let elsewhere =
            String::from_utf8_lossy(ok).replace("sts::222222222222", "sts::333333333333");
        let e = read_assume_role(&account, 200, elsewhere.as_bytes()).unwrap_err();
        assert_eq!(e.kind, UnreachableKind::RoleRefused);
        assert!(
            e.message
                .contains("is for account 333333333333, not 222222222222"),
            "{}",
            e.message
        );
        let denied = b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>not authorized to perform: sts:AssumeRole</Message></Error></ErrorResponse>";
        let e = read_assume_role(&account, 403, denied).unwrap_err();
        assert_eq!(e.kind, UnreachableKind::RoleRefused);
        assert!(
            e.message.contains("prod (222222222222)")
                && e.message.contains("arn:aws:iam::222222222222:role/airlock")
                && e.message.contains("AccessDenied: not authorized"),
            "{}",
            e.message
        );
        let expired = b"<ErrorResponse><Error><Code>ExpiredToken</Code><Message>The security token included in the request is expired</Message></Error></ErrorResponse>";
        let e = read_assume_role(&account, 403, expired).unwrap_err();
        assert_eq!(e.kind, UnreachableKind::SourceExpired);
        assert!(
            e.message.contains("Renew airlock's credentials"),
            "{}",
            e.message
        );
        let empty = read_assume_role(&account, 200, b"<x/>").unwrap_err();
        assert!(empty.message.contains("holds no credentials"));
        assert_eq!(
            Unreachable::no_route("claude", "prod").kind,
            UnreachableKind::NoRoute
        );
    }

    #[test]
    fn a_profile_for_another_account_is_refused() {
        let mut e = entry("sandbox", "333333333333");
        e.role_arn = None;
        e.profile = Some("sandbox-admin".into());
        let account = validate(&[e]).unwrap().remove(0);
        let answer = |id: &str| {
            format!("<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:iam::{id}:user/x</Arn><UserId>AIDA</UserId><Account>{id}</Account></GetCallerIdentityResult></GetCallerIdentityResponse>")
        };
        assert!(check_caller_identity(&account, 200, answer("333333333333").as_bytes()).is_ok());
        let e =
            check_caller_identity(&account, 200, answer("123456789012").as_bytes()).unwrap_err();
        assert_eq!(e.kind, UnreachableKind::RoleRefused);
        assert!(
            e.message.contains("sandbox (333333333333)")
                && e.message.contains("the profile \"sandbox-admin\"'s credentials are for account 123456789012, not 333333333333"),
            "{}",
            e.message
        );
        let denied =
            b"<ErrorResponse><Error><Code>InvalidClientTokenId</Code></Error></ErrorResponse>";
        let e = check_caller_identity(&account, 403, denied).unwrap_err();
        assert!(e.message.contains("InvalidClientTokenId"), "{}", e.message);
        assert!(check_caller_identity(&account, 200, b"<x/>").is_err());
    }

    #[test]
    fn sts_is_asked_in_the_roles_partition() {
        let model = crate::aws::model();
        let at = |arn: &str| {
            sts_region(model, arn).and_then(|r| {
                crate::aws::endpoint::resolve(model, "sts", &r)
                    .map(|e| (e.base, e.signing_region))
                    .map_err(|e| e.0)
            })
        };
        assert_eq!(
            at("arn:aws:iam::111111111111:role/a").unwrap(),
            (
                "https://sts.us-east-1.amazonaws.com".into(),
                "us-east-1".into()
            )
        );
        assert_eq!(
            at("arn:aws-cn:iam::111111111111:role/a").unwrap(),
            (
                "https://sts.cn-north-1.amazonaws.com.cn".into(),
                "cn-north-1".into()
            )
        );
        let (gov, region) = at("arn:aws-us-gov:iam::111111111111:role/a").unwrap();
        assert!(region.starts_with("us-gov-"), "{region}");
        assert_eq!(gov, format!("https://sts.{region}.amazonaws.com"));
        assert!(at("arn:aws-mars:iam::111111111111:role/a")
            .unwrap_err()
            .contains("not one airlock knows"));
    }
}
