//! `airlock exec AGENT -- CMD ARGS…`: run a command with that agent's environment, like
//! `aws-vault exec`, and nothing of the real credentials.
//!
//! The child gets:
//!
//! - the agent's proxy-only `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`;
//! - `AWS_ENDPOINT_URL`: the proxy of the running `serve` (its port from `state/listen.json`, [`crate::state::listen`]);
//!   or, with `[listen] connect`, none: `HTTPS_PROXY` (and `NO_PROXY` for loopback) instead
//!   (`connect::agent_env`);
//! - `AWS_CA_BUNDLE`: airlock's CA alone, for the AWS CLI and botocore;
//! - `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`: a bundle
//!   of the system's roots plus airlock's CA (`state/ca-bundle.pem`), so Go (Terraform), Node,
//!   Rust SDKs reach airlock and every other TLS connection of the command still works;
//! - `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE` pointing at `/dev/null`, and
//!   `AWS_EC2_METADATA_DISABLED=true`, so no SDK falls back to a profile or an instance role
//!   with real credentials.
//!
//! Every other `AWS_*` variable is removed (session tokens, profiles, roles, web identity,
//! container credentials, service-specific endpoint overrides…), except a few harmless
//! settings ([`KEPT`]). So is everything that reaches airlock's database ([`crate::config::reaches_the_database`]):
//! every `AIRLOCK_*` variable (`AIRLOCK_DATABASE_URL` holds its password; none is meant for
//! the agent), `DATABASE_URL`, and every `PG*` variable (libpq's password, password and
//! service files, host and user). Whoever can write that database can approve calls and
//! issue receipts, so its credentials must never reach an agent. The exit code is the
//! child's (128 + the signal that ended it).

pub mod profiles;

use crate::config::{reaches_the_database, Config};
use crate::state::agents::AgentRecord;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// `AWS_*` variables that carry no credential and no endpoint: kept.
const KEPT: &[&str] = &[
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_DEFAULT_OUTPUT",
    "AWS_PAGER",
    "AWS_CLI_AUTO_PROMPT",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_SDK_LOAD_CONFIG",
];

/// Where the system's CA roots usually are (Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine, macOS).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The variables the child runs with: `parent` filtered, then the agent's settings on top.
pub fn child_env(
    parent: impl IntoIterator<Item = (OsString, OsString)>,
    agent_env: &[(&'static str, String)],
    bundle: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            let aws_kept = !k.starts_with("AWS_") || KEPT.contains(&k.as_ref());
            aws_kept && !reaches_the_database(&k)
        })
        .collect();
    let bundle = bundle.as_os_str().to_owned();
    let mut set = |k: &str, v: OsString| {
        env.retain(|(name, _)| name != k);
        env.push((k.into(), v));
    };
    for (k, v) in agent_env {
        set(k, v.into());
    }
    for k in [
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ] {
        set(k, bundle.clone());
    }
    // An agent bound to accounts is given its profiles' file instead (see `run`).
    if !agent_env.iter().any(|(k, _)| *k == "AWS_CONFIG_FILE") {
        set("AWS_CONFIG_FILE", "/dev/null".into());
    }
    set("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into());
    set("AWS_EC2_METADATA_DISABLED", "true".into());
    env
}

/// The system roots (the first bundle found; the parent's `SSL_CERT_FILE` first) followed
/// by airlock's CA.
fn combined_bundle(config: &Config) -> Result<PathBuf, String> {
    let ca = config.ca_cert();
    let airlock_ca =
        std::fs::read(&ca).map_err(|e| format!("{}: {e} (run `airlock init`)", ca.display()))?;
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let system = from_env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .filter(|p| *p != ca)
        .find_map(|p| std::fs::read(&p).ok().filter(|b| !b.is_empty()));
    let mut out = system.unwrap_or_default();
    if !out.ends_with(b"\n") && !out.is_empty() {
        out.push(b'\n');
    }
    out.extend_from_slice(b"# airlock's CA\n");
    out.extend_from_slice(&airlock_ca);
    let path = config.state_dir.join("ca-bundle.pem");
    crate::state::write_atomic(&path, &out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// For an agent bound to accounts: its profiles written to `state/profiles/AGENT.config`
/// (0600), `AWS_CONFIG_FILE` pointing there, and `AWS_PROFILE` the parent's if it names one
/// of them, else the first account's. No key goes into the environment, where it would
/// outrank the profile.
fn profiles_env(
    config: &Config,
    agent: &str,
    records: &[AgentRecord],
) -> Result<Vec<(&'static str, String)>, String> {
    let profiles = profiles::Profiles::of(config, records);
    let dir = config.state_dir.join("profiles");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{agent}.config"));
    crate::state::write_atomic(&path, profiles.aws_config().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let names = profiles.names();
    let wanted = std::env::var("AWS_PROFILE").ok();
    let chosen = match wanted {
        Some(p) if names.contains(&p.as_str()) => p,
        Some(p) => {
            return Err(format!(
                "AWS_PROFILE={p} is not a profile of agent {agent} ({})",
                names.join(", ")
            ))
        }
        None => names.first().map(|n| n.to_string()).unwrap_or_default(),
    };
    let mut env = profiles.shared.clone();
    env.push(("AWS_CONFIG_FILE", path.display().to_string()));
    env.push(("AWS_PROFILE", chosen));
    Ok(env)
}

/// The environment an agent needs: its keys, and the endpoint and CA of the proxy (the
/// running `serve`'s port when it recorded one).
pub fn agent_env(config: &Config, agent: &AgentRecord) -> Vec<(&'static str, String)> {
    let port = config.listening().proxy.port();
    vec![
        ("AWS_ACCESS_KEY_ID", agent.access_key_id.clone()),
        (
            "AWS_SECRET_ACCESS_KEY",
            agent.secret_access_key.expose().to_string(),
        ),
        ("AWS_ENDPOINT_URL", config.agent_endpoint(port)),
        ("AWS_CA_BUNDLE", config.ca_cert().display().to_string()),
    ]
    .into_iter()
    .filter(|(k, _)| config.connect_addr.is_none() || *k != "AWS_ENDPOINT_URL")
    .chain(crate::connect::agent_env(
        config,
        combined_bundle(config).ok().as_deref(),
    ))
    .collect()
}

pub fn run(config_path: &Path, agent: &str, command: &[String]) -> Result<i32, String> {
    use std::os::unix::process::ExitStatusExt as _;
    let Some((program, args)) = command.split_first() else {
        return Err("nothing to run: airlock exec AGENT -- CMD ARGS…".into());
    };
    let config = Config::load_existing(config_path)?;
    // Only an active agent: a revoked one is not found.
    let records = crate::store::identities::run_blocking(&config, async |ids| {
        let agents = ids.agents().await?;
        agents.active_keys_of(agent).map_err(|e| e.to_string())
    })?;
    let agent_env = match records.as_slice() {
        [record] if record.account.is_none() => agent_env(&config, record),
        _ => profiles_env(&config, agent, &records)?,
    };
    let bundle = combined_bundle(&config)?;
    let env = child_env(std::env::vars_os(), &agent_env, &bundle);
    let status = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .status()
        .map_err(|e| format!("cannot run {program:?}: {e}"))?;
    Ok(status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_profiles_are_removed_and_the_agent_set() {
        let parent: Vec<(OsString, OsString)> = [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/h"),
            ("AWS_ACCESS_KEY_ID", "AKIAREAL"),
            ("AWS_SECRET_ACCESS_KEY", "real-secret"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("AWS_PROFILE", "admin"),
            ("AWS_DEFAULT_PROFILE", "admin"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.2/x",
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "x"),
            ("AWS_ENDPOINT_URL_S3", "https://s3.amazonaws.com"),
            ("AWS_CONFIG_FILE", "/home/h/.aws/config"),
            ("AWS_REGION", "eu-west-1"),
            ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"),
        ]
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
        let agent = vec![
            ("AWS_ACCESS_KEY_ID", "AIRLOCKAGENT".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "agent-secret".to_string()),
            ("AWS_ENDPOINT_URL", "https://localhost:8443".to_string()),
            ("AWS_CA_BUNDLE", "/a/certs/ca.pem".to_string()),
        ];
        let env = child_env(parent, &agent, Path::new("/a/state/ca-bundle.pem"));
        let get = |k: &str| -> Option<String> {
            let all: Vec<_> = env.iter().filter(|(n, _)| n == k).collect();
            assert!(all.len() <= 1, "{k} set twice");
            all.first().map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("AWS_ACCESS_KEY_ID").as_deref(), Some("AIRLOCKAGENT"));
        assert_eq!(
            get("AWS_SECRET_ACCESS_KEY").as_deref(),
            Some("agent-secret")
        );
        assert_eq!(
            get("AWS_ENDPOINT_URL").as_deref(),
            Some("https://localhost:8443")
        );
        assert_eq!(get("AWS_CA_BUNDLE").as_deref(), Some("/a/certs/ca.pem"));
        for k in [
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
        ] {
            assert_eq!(get(k).as_deref(), Some("/a/state/ca-bundle.pem"), "{k}");
        }
        assert_eq!(get("AWS_CONFIG_FILE").as_deref(), Some("/dev/null"));
        assert_eq!(
            get("AWS_SHARED_CREDENTIALS_FILE").as_deref(),
            Some("/dev/null")
        );
        assert_eq!(get("AWS_EC2_METADATA_DISABLED").as_deref(), Some("true"));
        assert_eq!(get("AWS_REGION").as_deref(), Some("eu-west-1"));
        assert_eq!(get("PATH").as_deref(), Some("/usr/bin"));
        for gone in [
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
        ] {
            assert_eq!(get(gone), None, "{gone}");
        }
        let all: String = env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        assert!(!all.contains("AKIAREAL") && !all.contains("real-secret"));
    }

    #[test]
    fn nothing_that_reaches_the_database_is_passed_on() {
        let parent: Vec<(OsString, OsString)> = [
            ("PATH", "/usr/bin"),
            ("HOME", "/home/h"),
            (
                "AIRLOCK_DATABASE_URL",
                "postgres://airlock:db-secret@db.internal/airlock",
            ),
            ("AIRLOCK_LOG", "debug"),
            ("DATABASE_URL", "postgres://airlock:db-secret@db/airlock"),
            ("PGPASSWORD", "db-secret"),
            ("PGPASSFILE", "/home/h/.pgpass"),
            ("PGSERVICEFILE", "/home/h/.pg_service.conf"),
            ("PGSERVICE", "airlock"),
            ("PGHOST", "db.internal"),
            ("PGUSER", "airlock"),
            ("PGSSLKEY", "/home/h/.postgresql/airlock.key"),
            // Look-alikes that are not the database's stay.
            ("GPG_AGENT_INFO", "/run/gpg"),
            ("MY_AIRLOCK_NOTE", "kept"),
        ]
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect();
        let env = child_env(parent, &[], Path::new("/a/state/ca-bundle.pem"));
        let names: Vec<String> = env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        for gone in [
            "AIRLOCK_DATABASE_URL",
            "AIRLOCK_LOG",
            "DATABASE_URL",
            "PGPASSWORD",
            "PGPASSFILE",
            "PGSERVICEFILE",
            "PGSERVICE",
            "PGHOST",
            "PGUSER",
            "PGSSLKEY",
        ] {
            assert!(!names.iter().any(|n| n == gone), "{gone} reached the child");
        }
        for kept in ["PATH", "HOME", "GPG_AGENT_INFO", "MY_AIRLOCK_NOTE"] {
            assert!(names.iter().any(|n| n == kept), "{kept} was dropped");
        }
        let all: String = env
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        assert!(!all.contains("db-secret"), "{all}");
    }
}
