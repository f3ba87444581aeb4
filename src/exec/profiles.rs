//! What an agent bound to accounts is given: an AWS config with one profile per account
//! (`airlock-staging`, `airlock-prod`), so it picks an account the way people already do,
//! with `AWS_PROFILE`. Each profile holds that account's proxy key and the settings of
//! `airlock agent add`'s environment that a profile can carry; the rest (identical for
//! every account) stays environment (`shared`).

use crate::accounts::profile_name;
use crate::config::Config;
use crate::state::agents::AgentRecord;

/// Environment variables of an agent's setup and the profile setting each one is.
const PROFILE_SETTINGS: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
    ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
    ("AWS_ENDPOINT_URL", "endpoint_url"),
    ("AWS_CA_BUNDLE", "ca_bundle"),
];

/// Environment variables as `airlock agent add` prints them.
pub type Variables = Vec<(&'static str, String)>;

/// An agent's profiles, one per bound account, and the variables every profile shares.
pub struct Profiles {
    /// (account, profile name, the account's environment as `agent add` prints it).
    pub profiles: Vec<(String, String, Variables)>,
    pub shared: Variables,
}

impl Profiles {
    /// `records` are the agent's keys, each bound to an account.
    pub fn of(config: &Config, records: &[AgentRecord]) -> Profiles {
        let mut shared = Vec::new();
        let profiles = records
            .iter()
            .filter_map(|r| {
                let account = r.account.clone()?;
                let env = super::agent_env(config, r);
                shared = env
                    .iter()
                    .filter(|(k, _)| !PROFILE_SETTINGS.iter().any(|(var, _)| var == k))
                    .cloned()
                    .collect();
                Some((account.clone(), profile_name(&account), env))
            })
            .collect();
        Profiles { profiles, shared }
    }

    /// The profile names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.profiles.iter().map(|(_, p, _)| p.as_str()).collect()
    }

    /// The AWS config file (INI) with one `[profile airlock-ACCOUNT]` each.
    pub fn aws_config(&self) -> String {
        let mut out = String::new();
        for (account, profile, env) in &self.profiles {
            out.push_str(&format!("# account {account}\n[profile {profile}]\n"));
            for (var, setting) in PROFILE_SETTINGS {
                if let Some((_, value)) = env.iter().find(|(k, _)| k == var) {
                    out.push_str(&format!("{setting} = {value}\n"));
                }
            }
            out.push('\n');
        }
        out
    }

    /// `agent add --json`: the profiles (each as the variables it stands for), the config
    /// text, and the shared variables.
    pub fn json(&self) -> serde_json::Value {
        let profiles: serde_json::Map<String, serde_json::Value> = self
            .profiles
            .iter()
            .map(|(account, profile, env)| {
                let mut vars: serde_json::Map<String, serde_json::Value> = env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone().into()))
                    .collect();
                vars.insert("account".into(), account.clone().into());
                (profile.clone(), serde_json::Value::Object(vars))
            })
            .collect();
        let shared: serde_json::Map<String, serde_json::Value> = self
            .shared
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone().into()))
            .collect();
        serde_json::json!({
            "profiles": profiles,
            "aws_config": self.aws_config(),
            "environment": shared,
        })
    }
}

/// `airlock agent add NAME --account A [--account B]`: binds the agent to the accounts the
/// config names and prints its AWS config (or, with `--json`, [`Profiles::json`]).
pub fn cmd_agent_add(
    config_path: &std::path::Path,
    name: &str,
    accounts: &[String],
    json: bool,
) -> Result<(), String> {
    let config = crate::config::Config::load_existing(config_path)?;
    let mut bound = Vec::with_capacity(accounts.len());
    for account in accounts {
        let Some(configured) = config.accounts.iter().find(|a| &a.name == account) else {
            let known: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
            return Err(format!(
                "the config names no [[account]] {account:?} (it names: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        bound.push((configured.name.clone(), configured.id.clone()));
    }
    let records = crate::store::identities::run_blocking(&config, async |ids| {
        ids.add_bound_agent(name, &bound).await
    })?;
    let profiles = Profiles::of(&config, &records);
    if json {
        println!("{}", profiles.json());
        return Ok(());
    }
    println!(
        "# The AWS config of agent {name}: save it (mode 0600) where AWS_CONFIG_FILE points and pick an account with AWS_PROFILE ({}).",
        profiles.names().join(", ")
    );
    for (k, v) in &profiles.shared {
        println!("# Also in the agent's environment: {k}={v}");
    }
    print!("{}", profiles.aws_config());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_profile_per_account_with_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[listen]\nproxy = \"127.0.0.1:8443\"\napprovals = \"127.0.0.1:8444\"\n[state]\ndir = \"{}\"\n",
            dir.path().display()
        );
        let config = Config::parse(&dir.path().join("airlock.toml"), &text).expect("config parses");
        let store = crate::state::agents::AgentStore::new(dir.path());
        let records = store
            .add_bound(
                "claude",
                &[
                    ("staging".into(), "111111111111".into()),
                    ("prod".into(), "222222222222".into()),
                ],
            )
            .unwrap();
        let p = Profiles::of(&config, &records);
        assert_eq!(p.names(), ["airlock-staging", "airlock-prod"]);
        let ini = p.aws_config();
        for r in &records {
            assert!(ini.contains(&format!("aws_access_key_id = {}", r.access_key_id)));
        }
        assert!(ini.contains("[profile airlock-prod]"));
        assert!(ini.contains("endpoint_url = https://localhost:8443"));
        assert!(ini.contains("ca_bundle = "));
        let json = p.json();
        assert_eq!(
            json["profiles"]["airlock-prod"]["AWS_ACCESS_KEY_ID"],
            records[1].access_key_id.as_str()
        );
        assert_eq!(json["profiles"]["airlock-prod"]["account"], "prod");
    }
}
