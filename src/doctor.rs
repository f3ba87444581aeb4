//! `airlock doctor`: every way the agent's user could get around airlock on this host.
//!
//! Run from the agent's seat (as its user), or as root with `--agent-user NAME`. Access is
//! judged by mode bits with the same rules `serve` applies to itself ([`crate::access`]): as
//! the agent's uid and groups (from `/etc/passwd` and `/etc/group` with `--agent-user`), so
//! root sees what the agent would. Each finding names the path or setting and one fix.
//!
//! Not checked (and said so in every report): network sources of real credentials (an
//! instance or container metadata endpoint the agent could reach), `sudo` rules beyond group
//! membership, ACLs and MAC policies; and, with `--agent-user`, the agent's environment.

use crate::access::host::{self, Account};
use crate::access::{can_read, can_write, can_write_through, fix, holder, Need, Who};
use crate::config::Config;
use std::path::{Path, PathBuf};

/// One way around airlock, and what to do about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    /// A stable name for the kind of finding.
    pub check: &'static str,
    pub path: Option<PathBuf>,
    pub problem: String,
    pub fix: String,
}

/// What doctor found for one agent user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub user: String,
    pub uid: u32,
    pub config: PathBuf,
    pub findings: Vec<Finding>,
    /// What was not (or could not be) checked.
    pub notes: Vec<String>,
}

/// The proxy-only access key ids airlock issues start with this.
const AGENT_KEY_PREFIX: &str = "AIRLOCK";

/// Files larger than this are not AWS config or key files.
const MAX_READ: u64 = 1 << 20;

/// Docker's sockets: whoever can use one can read any container's volumes.
const DOCKER_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/docker.sock"];

/// Groups whose members can usually become root.
const ADMIN_GROUPS: [&str; 4] = ["sudo", "wheel", "admin", "root"];

/// Environment variables that point AWS clients at real credentials.
const CREDENTIAL_SOURCES: [&str; 4] = [
    "AWS_SESSION_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
];

const SEPARATE_USER: &str =
    "run airlock as its own user (deploy/systemd/airlock.service) or in a container (docker-compose.yml)";

struct Doctor<'a> {
    agent: &'a Account,
    names: crate::access::Names,
    report: Report,
}

impl Doctor<'_> {
    fn who(&self) -> Who<'_> {
        Who::User(&self.agent.principal)
    }

    fn found(&mut self, check: &'static str, path: Option<&Path>, problem: String, fix: String) {
        self.report.findings.push(Finding {
            check,
            path: path.map(Path::to_path_buf),
            problem,
            fix,
        });
    }

    /// airlock's config, state, certificates and keys, as the agent could reach them.
    fn airlock_files(&mut self, config: &Config) {
        for (label, path, need) in host::airlock_paths(config) {
            // A path the agent cannot even stat is out of its reach; as root, stat works.
            let Ok(routes) = host::routes(&path) else {
                continue;
            };
            if let Some(g) = can_write_through(&routes, self.who()) {
                self.found(
                    "airlock-file-writable",
                    Some(&path),
                    format!(
                        "the agent's user can change airlock's {label} {} (as {})",
                        path.display(),
                        holder(&g, &self.names)
                    ),
                    fix_for(&g),
                );
            }
            if need == Need::Secret {
                if let Some(g) = can_read(&routes.real, self.who()) {
                    self.found(
                        "airlock-secret-readable",
                        Some(&path),
                        format!(
                            "the agent's user can read airlock's {label} {} (as {})",
                            path.display(),
                            holder(&g, &self.names)
                        ),
                        fix_for(&g),
                    );
                }
            }
        }
    }

    /// The airlock binary this doctor runs from (normally the one `serve` runs): whoever can
    /// replace it runs their own code as airlock at the next start.
    fn binary(&mut self) {
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let Ok(routes) = host::routes(&exe) else {
            return;
        };
        if let Some(g) = can_write_through(&routes, self.who()) {
            self.found(
                "airlock-binary-writable",
                Some(&exe),
                format!(
                    "the agent's user can replace the airlock binary {} (as {})",
                    exe.display(),
                    holder(&g, &self.names)
                ),
                format!(
                    "install airlock where only root can write (/usr/local/bin): {}",
                    fix_for(&g)
                ),
            );
        }
    }

    /// Approver private keys (`airlock keygen` files) the agent could read or replace, in the
    /// usual places: every user's `~/.airlock`, `/etc/airlock`, beside the config and the
    /// certificates. (The state dir is judged as a whole: its keys are airlock's.)
    fn approver_keys(&mut self, config: &Config) {
        let mut dirs: Vec<PathBuf> = host::homes()
            .into_iter()
            .map(|h| h.join(".airlock"))
            .collect();
        dirs.extend([
            PathBuf::from("/etc/airlock"),
            config
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            config.tls_dir.clone(),
        ]);
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if !read_small(&path).is_some_and(|b| is_approver_key(&b)) {
                    continue;
                }
                let Ok(chain) = host::chain(&path) else {
                    continue;
                };
                if let Some(g) =
                    can_read(&chain, self.who()).or_else(|| can_write(&chain, self.who()))
                {
                    self.found(
                        "approver-key",
                        Some(&path),
                        format!(
                            "the agent's user can read or replace the approver key {} (as {})",
                            path.display(),
                            holder(&g, &self.names)
                        ),
                        format!(
                            "keep approver keys where only their holder can read them: {}",
                            fix_for(&g)
                        ),
                    );
                }
            }
        }
    }

    /// Long-lived or cached AWS credentials in the AWS files of `home`.
    fn aws_files(&mut self, home: &Path, extra: &[PathBuf]) {
        let aws = home.join(".aws");
        let mut files = vec![aws.join("credentials"), aws.join("config")];
        files.extend(extra.iter().cloned());
        for path in files {
            let Some(text) = self.readable_text(&path) else {
                continue;
            };
            if let Some(key) = static_key_in(&text) {
                self.found(
                    "aws-static-keys",
                    Some(&path),
                    format!("{} holds an AWS access key ({key}) the agent's user can read", path.display()),
                    "remove it from the agent's reach: airlock holds the real credentials; give the agent only `airlock agent add` output".into(),
                );
            }
            if text
                .lines()
                .any(|l| ini_key(l) == Some("credential_process"))
            {
                self.found(
                    "aws-credential-process",
                    Some(&path),
                    format!(
                        "{} has a credential_process the agent's user can run for real credentials",
                        path.display()
                    ),
                    "move that profile to airlock's own user".into(),
                );
            }
        }
        for cache in [aws.join("sso").join("cache"), aws.join("cli").join("cache")] {
            let Ok(entries) = std::fs::read_dir(&cache) else {
                continue;
            };
            let readable = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .filter(|p| host::chain(p).is_ok_and(|c| can_read(&c, self.who()).is_some()))
                .count();
            if readable > 0 {
                self.found(
                    "aws-cached-credentials",
                    Some(&cache),
                    format!("{} holds {readable} cached AWS token or credential file(s) the agent's user can read", cache.display()),
                    "log in (aws sso login) as airlock's user, not the agent's; delete this cache".into(),
                );
            }
        }
    }

    /// A file's text, when the agent's user can read it.
    fn readable_text(&self, path: &Path) -> Option<String> {
        let chain = host::chain(path).ok()?;
        can_read(&chain, self.who())?;
        read_small(path).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// `airlock serve` processes the agent's user could signal, restart or inspect.
    fn serve_processes(&mut self, serving: &[host::ServeProcess]) {
        for p in serving.iter().filter(|p| p.uid == self.agent.principal.uid) {
            self.found(
                "serve-same-user",
                None,
                format!("airlock serve (pid {}) runs as uid {}: the agent's user can kill it, restart it with another config, or inspect it", p.pid, p.uid),
                SEPARATE_USER.into(),
            );
        }
    }

    /// Groups that give the agent's user the host: docker, sudo.
    fn groups_and_sockets(&mut self) {
        let names = self.agent.group_names.clone();
        if names.iter().any(|g| g == "docker") {
            self.found(
                "docker-group",
                None,
                "the agent's user is in the docker group: it can read any container's volumes and environment, airlock's included".into(),
                format!("gpasswd -d {} docker", self.agent.name),
            );
        }
        for socket in DOCKER_SOCKETS {
            let Ok(chain) = host::chain(Path::new(socket)) else {
                continue;
            };
            if let Some(g) = can_write(&chain, self.who()) {
                self.found(
                    "docker-socket",
                    Some(Path::new(socket)),
                    format!(
                        "the agent's user can use the Docker socket {socket} (as {})",
                        holder(&g, &self.names)
                    ),
                    fix_for(&g),
                );
            }
        }
        for g in names.iter().filter(|g| ADMIN_GROUPS.contains(&g.as_str())) {
            self.found(
                "admin-group",
                None,
                format!("the agent's user is in the {g} group: if it can become root, it can read everything airlock holds"),
                format!("gpasswd -d {} {g}", self.agent.name),
            );
        }
    }

    /// airlock's CA without name constraints: its key, if it leaked, signs for any site.
    fn ca_constraints(&mut self, config: &Config) {
        let ca = config.ca_cert();
        let Ok(pem) = std::fs::read_to_string(&ca) else {
            return;
        };
        if let Ok(false) = crate::connect::ca::is_name_constrained(&pem) {
            self.found(
                "ca-unconstrained",
                Some(&ca),
                "airlock's CA is not name-constrained: whoever got its key could sign certificates for any site, which every client trusting it would accept".into(),
                format!("airlock init --rotate-ca --config {}", config.path.display()),
            );
        }
    }

    /// The agent's own environment: real credentials, and the endpoint and CA pointing at airlock.
    fn environment(&mut self, env: &[(String, String)], config: &Config) {
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if let Some(id) = get("AWS_ACCESS_KEY_ID").filter(|id| !id.starts_with(AGENT_KEY_PREFIX)) {
            self.found(
                "env-credentials",
                None,
                format!("AWS_ACCESS_KEY_ID in the environment is a real AWS key ({}), not one of airlock's", masked(id)),
                "unset it; use the variables `airlock agent add` prints".into(),
            );
        }
        for k in CREDENTIAL_SOURCES.iter().filter(|k| get(k).is_some()) {
            self.found(
                "env-credentials",
                None,
                format!("{k} is set: it leads AWS clients to real credentials"),
                format!("unset {k}"),
            );
        }
        // Never the value: it may be the database's password.
        for (k, _) in env.iter().filter(|(k, _)| leads_to_the_database(k)) {
            self.found(
                "env-database",
                None,
                format!("{k} is set: it can lead to airlock's database, and whoever can write that database can approve calls and issue receipts"),
                format!("unset {k}: airlock's database credentials must never reach an agent (`airlock exec` drops it)"),
            );
        }
        let via_connect = config.connect_addr.is_some()
            && ["HTTPS_PROXY", "https_proxy"].iter().any(|k| {
                get(k).is_some_and(|v| {
                    let port = config.listening().connect.map(|a| a.port());
                    port.is_some_and(|p| v.trim_end_matches('/').ends_with(&format!(":{p}")))
                })
            });
        match get("AWS_ENDPOINT_URL") {
            None if via_connect => {}
            None => self.found(
                "env-endpoint",
                None,
                "AWS_ENDPOINT_URL is not set: AWS clients go straight to AWS, not through airlock"
                    .into(),
                "set the variables `airlock agent add` prints".into(),
            ),
            Some(url) if !points_at_airlock(url, config) => self.found(
                "env-endpoint",
                None,
                format!("AWS_ENDPOINT_URL={url} is not airlock's proxy"),
                "set the variables `airlock agent add` prints".into(),
            ),
            Some(_) => {}
        }
        for (k, v) in env
            .iter()
            .filter(|(k, _)| k.starts_with("AWS_ENDPOINT_URL_"))
        {
            if !points_at_airlock(v, config) {
                self.found(
                    "env-endpoint",
                    None,
                    format!("{k}={v} sends that service past airlock"),
                    format!("unset {k}"),
                );
            }
        }
        let ca = config.ca_cert();
        match get("AWS_CA_BUNDLE") {
            Some(bundle) if same_file_or_bytes(Path::new(bundle), &ca) => {}
            other => self.found(
                "env-ca",
                None,
                format!(
                    "AWS_CA_BUNDLE is {}, not airlock's CA {}",
                    other
                        .map(|b| format!("{b:?}"))
                        .unwrap_or_else(|| "not set".into()),
                    ca.display()
                ),
                format!("export AWS_CA_BUNDLE={}", ca.display()),
            ),
        }
    }
}

/// The variables of [`crate::config::reaches_the_database`] that can carry the database's
/// credentials or name where they are: the database URL and libpq's `PG*`. (airlock's other
/// `AIRLOCK_*` variables, `AIRLOCK_LOG`, say nothing about the database.)
fn leads_to_the_database(name: &str) -> bool {
    crate::config::reaches_the_database(name)
        && (!name.starts_with("AIRLOCK_") || name == crate::config::DATABASE_URL_ENV)
}

/// The fix for a grant, as the agent's access is taken away (keep airlock's own).
fn fix_for(g: &crate::access::Grant) -> String {
    match g.class {
        crate::access::Class::Owner(_) => {
            format!("{SEPARATE_USER}; airlock's files belong to that user, not the agent's")
        }
        // Taking read (and search) away takes everything: the agent has no business there.
        _ => fix(g, 0, false, &crate::access::Names::default()),
    }
}

/// `AKIA…` shown as its first four and last two characters.
fn masked(id: &str) -> String {
    match (
        id.get(..4),
        id.len().checked_sub(2).and_then(|i| id.get(i..)),
    ) {
        (Some(a), Some(b)) if id.len() > 8 => format!("{a}…{b}"),
        _ => "…".into(),
    }
}

/// The key of an INI `key = value` line, lowercased and trimmed.
fn ini_key(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    (!k.starts_with('#') && !k.starts_with(';')).then_some(k)
}

/// The first `aws_access_key_id` in an AWS config or credentials file that is not one of
/// airlock's proxy-only keys, masked.
fn static_key_in(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        let v = v.trim();
        (k.trim().eq_ignore_ascii_case("aws_access_key_id")
            && !v.is_empty()
            && !v.starts_with(AGENT_KEY_PREFIX))
        .then(|| masked(v))
    })
}

/// Is this an `airlock keygen` private key file, locked or not (any version of either
/// format)? A locked one the agent can read is still a finding: its passphrase can be
/// guessed offline.
fn is_approver_key(bytes: &[u8]) -> bool {
    use crate::receipt::keys::{KEY_FILE_FORMAT, LOCKED_KEY_FILE_FORMAT};
    let family = |format: &'static str| format.split('/').next().unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("format")?.as_str().map(|f| {
                let have = f.split('/').next();
                have == Some(family(KEY_FILE_FORMAT))
                    || have == Some(family(LOCKED_KEY_FILE_FORMAT))
            })
        })
        .unwrap_or(false)
}

/// A regular file's bytes, if it is small and this process can read it.
fn read_small(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_READ {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(MAX_READ).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Do two paths name the same file, or files with the same bytes?
fn same_file_or_bytes(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) if x == y => true,
        _ => matches!((read_small(a), read_small(b)), (Some(x), Some(y)) if x == y),
    }
}

/// Is `url` airlock's proxy: its `[listen] public_url`, or https on a loopback host (on the
/// configured port, when the config fixes one)?
fn points_at_airlock(url: &str, config: &Config) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    if let Some(public) = &config.public_url {
        return url.trim_end_matches('/') == public.base();
    }
    let loopback = matches!(
        uri.host(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    );
    let port_ok =
        config.proxy_addr.port() == 0 || uri.port_u16().unwrap_or(443) == config.proxy_addr.port();
    uri.scheme_str() == Some("https") && loopback && port_ok
}

/// Where the config of the protected setup lives (deploy/systemd/airlock.toml is installed there).
const SYSTEM_CONFIG: &str = "/etc/airlock/airlock.toml";

/// The config to judge: `given` if it exists, else that of a running `serve` (started with an
/// absolute `--config`), else the system-wide one.
fn find_config(given: &Path, serving: &[host::ServeProcess], notes: &mut Vec<String>) -> PathBuf {
    if given.exists() {
        return given.to_path_buf();
    }
    let found = serving
        .iter()
        .filter_map(|p| p.config.clone())
        .chain([PathBuf::from(SYSTEM_CONFIG)])
        .find(|c| c.is_absolute() && c.exists());
    match found {
        Some(c) => {
            notes.push(format!(
                "{} does not exist; judged {} instead",
                given.display(),
                c.display()
            ));
            c
        }
        None => given.to_path_buf(),
    }
}

/// Runs every check for `agent`. `env` is the agent's environment when doctor runs as the
/// agent (`None` with `--agent-user`: another process's environment is not ours to read).
pub fn examine(agent: &Account, config_path: &Path, env: Option<&[(String, String)]>) -> Report {
    let mut d = Doctor {
        agent,
        names: host::names(),
        report: Report {
            user: agent.name.clone(),
            uid: agent.principal.uid,
            config: config_path.to_path_buf(),
            findings: Vec::new(),
            notes: Vec::new(),
        },
    };
    if agent.principal.uid == 0 {
        // Everything else about files, processes and groups follows from this one.
        d.found(
            "agent-is-root",
            None,
            "the agent runs as root: it can read and change everything airlock holds".into(),
            "run the agent as an ordinary user".into(),
        );
    }
    let as_user = agent.principal.uid != 0;
    let serving = host::serve_processes();
    let config_path = &find_config(config_path, &serving, &mut d.report.notes);
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            // Unreadable to the agent is as it should be; judge the default layout beside it.
            d.report.notes.push(format!(
                "could not read the config ({e}); checked the default layout next to it (pass --config to name the config `serve` uses)"
            ));
            match Config::parse(config_path, crate::config::EXAMPLE) {
                Ok(c) => c,
                Err(e) => {
                    d.report.notes.push(format!("no layout to check: {e}"));
                    return d.report;
                }
            }
        }
    };
    d.report.config = config.path.clone();
    d.ca_constraints(&config);
    if as_user {
        d.airlock_files(&config);
        d.binary();
        d.approver_keys(&config);
        d.serve_processes(&serving);
    }
    if serving.is_empty() {
        d.report.notes.push("no airlock serve process is visible here (it may run in a container or another PID namespace)".into());
    }
    let mut homes = vec![agent.home.clone()];
    for p in &serving {
        if let Some(a) = host::account_of_uid(p.uid) {
            homes.push(a.home);
        }
    }
    homes.sort();
    homes.dedup();
    let extra: Vec<PathBuf> = env
        .unwrap_or_default()
        .iter()
        .filter(|(k, _)| k == "AWS_SHARED_CREDENTIALS_FILE" || k == "AWS_CONFIG_FILE")
        .map(|(_, v)| PathBuf::from(v))
        .collect();
    for home in &homes {
        d.aws_files(home, &extra);
    }
    if as_user {
        d.groups_and_sockets();
    }
    match env {
        Some(env) => d.environment(env, &config),
        None => d.report.notes.push(
            "the agent's environment was not checked (run `airlock doctor` in the agent's own shell for that)".into(),
        ),
    }
    d.report.notes.push(
        "not checked: instance or container metadata endpoints the agent could reach over the network, sudo rules, ACLs".into(),
    );
    d.report
}

impl Report {
    /// The human-readable report: one line per finding and one line with its fix.
    pub fn render(&self) -> String {
        let mut out = format!(
            "airlock doctor: as user {} (uid {}), config {}\n",
            self.user,
            self.uid,
            self.config.display()
        );
        for f in &self.findings {
            out.push_str(&format!(
                "FOUND [{}] {}\n  fix: {}\n",
                f.check, f.problem, f.fix
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        match self.findings.len() {
            0 => out.push_str("no way around airlock found\n"),
            n => out.push_str(&format!("{n} way(s) around airlock found\n")),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_keys_are_found_unless_they_are_airlocks() {
        let file =
            "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = x\n";
        assert_eq!(static_key_in(file).as_deref(), Some("AKIA…LE"));
        assert_eq!(static_key_in("[a]\naws_access_key_id=AIRLOCKABC\n"), None);
        assert_eq!(static_key_in("[a]\nregion = us-west-2\n"), None);
        assert_eq!(
            ini_key("credential_process = /bin/x"),
            Some("credential_process")
        );
        assert_eq!(ini_key("# credential_process = /bin/x"), None);
    }

    #[test]
    fn approver_key_files_are_recognised_by_their_format() {
        assert!(is_approver_key(
            br#"{"format":"airlock-ed25519-key/1","seed":"x"}"#
        ));
        assert!(is_approver_key(br#"{"format":"airlock-ed25519-key/2"}"#));
        assert!(is_approver_key(
            br#"{"format":"airlock-ed25519-key-locked/1","name":"alice"}"#
        ));
        assert!(!is_approver_key(br#"{"format":"other"}"#));
        assert!(!is_approver_key(b"[default]\n"));
    }

    #[test]
    fn groups_and_the_environment_are_judged_and_unreachable_files_are_not_findings() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config/airlock.toml");
        crate::init::init(&config).unwrap();
        let agent = Account {
            name: "someone".into(),
            home: dir.path().join("home"),
            principal: crate::access::Principal {
                uid: 54321,
                gids: vec![54321],
            },
            group_names: vec!["someone".into(), "docker".into()],
        };
        let env: Vec<(String, String)> = [
            ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
            ("AWS_ENDPOINT_URL", "https://sts.amazonaws.com"),
            ("AWS_ENDPOINT_URL_S3", "https://localhost:8443"),
            ("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let report = examine(&agent, &config, Some(&env));
        let checks: Vec<&str> = report.findings.iter().map(|f| f.check).collect();
        assert_eq!(
            checks,
            ["docker-group", "env-credentials", "env-endpoint", "env-ca"],
            "{report:#?}"
        );
        assert!(!format!("{report:?}").contains("AKIAIOSFODNN7EXAMPLE"));
        // Pointed at airlock, with its CA and no real key: nothing but the docker group.
        let ca = config.parent().unwrap().join("../certs/ca.pem");
        let good: Vec<(String, String)> = vec![
            ("AWS_ACCESS_KEY_ID".into(), "AIRLOCKEXAMPLE".into()),
            ("AWS_ENDPOINT_URL".into(), "https://localhost:8443".into()),
            ("AWS_CA_BUNDLE".into(), ca.display().to_string()),
        ];
        let report = examine(&agent, &config, Some(&good));
        let checks: Vec<&str> = report.findings.iter().map(|f| f.check).collect();
        assert_eq!(checks, ["docker-group"], "{report:#?}");
        // The database's credentials in the agent's shell: one finding each, never the value.
        let mut with_db = good.clone();
        with_db.extend(
            [
                (
                    "AIRLOCK_DATABASE_URL",
                    "postgres://airlock:hunter2@db/airlock",
                ),
                ("PGPASSWORD", "hunter2"),
                ("AIRLOCK_LOG", "debug"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let report = examine(&agent, &config, Some(&with_db));
        let named: Vec<&str> = report
            .findings
            .iter()
            .filter(|f| f.check == "env-database")
            .map(|f| f.problem.split(' ').next().unwrap_or_default())
            .collect();
        assert_eq!(named, ["AIRLOCK_DATABASE_URL", "PGPASSWORD"], "{report:#?}");
        assert!(!format!("{report:?}").contains("hunter2"));
    }

    #[test]
    fn the_endpoint_must_be_airlocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("airlock.toml");
        let config = Config::parse(&path, crate::config::EXAMPLE).unwrap();
        assert!(points_at_airlock("https://localhost:8443", &config));
        assert!(points_at_airlock("https://127.0.0.1:8443/", &config));
        assert!(!points_at_airlock("https://localhost:9999", &config));
        assert!(!points_at_airlock("http://localhost:8443", &config));
        assert!(!points_at_airlock(
            "https://rds.us-west-2.amazonaws.com",
            &config
        ));
    }
}
