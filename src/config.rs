//! The configuration file: read as a raw [`FileConfig`] (unknown keys refused), then
//! turned into a validated [`Config`]. An invalid file is reported with its path, the key
//! and the reason, before any port is bound.

use crate::secret::Secret;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The built-in example, which `airlock init` writes as the starting config.
pub const EXAMPLE: &str = include_str!("../config/airlock.example.toml");

/// The default config path, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/airlock.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: FileListen,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    state: FileState,
    #[serde(default)]
    upstream: FileUpstream,
    #[serde(default)]
    credentials: FileCredentials,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    policy: FilePolicy,
    #[serde(default)]
    approval: FileApproval,
    #[serde(default)]
    notify: FileNotify,
    #[serde(default)]
    audit: crate::audit::Settings,
    #[serde(default)]
    environment: Vec<Environment>,
    #[serde(default)]
    rule: Vec<crate::policy::Rule>,
    #[serde(default)]
    approver: Vec<ApproverEntry>,
    #[serde(default)]
    account: Vec<crate::accounts::AccountEntry>,
    #[serde(default)]
    connect: FileConnect,
}

/// `[connect]`: what the HTTPS_PROXY listener tunnels without reading.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConnect {
    passthrough: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FilePolicy {
    mode: crate::policy::Mode,
    builtin: bool,
}

impl Default for FilePolicy {
    fn default() -> Self {
        FilePolicy {
            mode: crate::policy::Mode::Enforce,
            builtin: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileApproval {
    receipt_ttl_secs: u64,
    uses: u32,
    public_url: Option<String>,
    hold_seconds: u64,
    max_held: usize,
    irreversible_quorum: u32,
}

impl Default for FileApproval {
    fn default() -> Self {
        FileApproval {
            receipt_ttl_secs: 900,
            uses: 1,
            public_url: None,
            hold_seconds: DEFAULT_HOLD_SECS,
            max_held: 64,
            irreversible_quorum: 1,
        }
    }
}

/// How long a blocked call waits for a human by default: under the 60-second read timeouts
/// of botocore (boto3, the AWS CLI), so the client never times out first.
pub const DEFAULT_HOLD_SECS: u64 = 45;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileNotify {
    webhook_url: Option<String>,
    desktop: Option<bool>,
}

/// `[[environment]]`: a name for a set of accounts and regions (globs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: String,
    pub accounts: Vec<String>,
    #[serde(default = "any_region")]
    pub regions: Vec<String>,
}

fn any_region() -> Vec<String> {
    vec!["*".into()]
}

/// `[[approver]]`: a person whose key may sign receipts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproverEntry {
    name: String,
    /// `ed25519:BASE64` (as `airlock keygen` prints it).
    public_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListen {
    proxy: String,
    approvals: String,
    public_url: Option<String>,
    /// The HTTPS_PROXY listener (plain HTTP, CONNECT only); off unless set.
    connect: Option<String>,
    /// airlock runs in a container whose ports are published on the host's loopback only.
    #[serde(default)]
    in_container: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    dir: String,
}

impl Default for FileTls {
    fn default() -> Self {
        FileTls {
            dir: "../certs".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileState {
    dir: String,
    /// PostgreSQL for the state replicas share (`crate::store`); `AIRLOCK_DATABASE_URL`
    /// takes its place so the password can stay out of the file.
    #[serde(default)]
    database_url: Option<Secret>,
}

impl Default for FileState {
    fn default() -> Self {
        FileState {
            dir: "../state".into(),
            database_url: None,
        }
    }
}

/// The environment variable that gives `[state] database_url` (it wins over the file).
pub const DATABASE_URL_ENV: &str = "AIRLOCK_DATABASE_URL";

/// Does this environment variable lead to airlock's database: `AIRLOCK_*`
/// (`AIRLOCK_DATABASE_URL`; airlock has no variable an agent's tools need), `DATABASE_URL`,
/// and libpq's `PG*` (`PGPASSWORD`, `PGPASSFILE`, `PGSERVICEFILE`, `PGSERVICE`, `PGHOST`,
/// `PGUSER`…: all of them, so no new one slips through)? Whoever can write the database can
/// approve calls and issue receipts: none of these is ever given to an agent
/// (`airlock exec`), and `airlock doctor` names each one it finds in the agent's shell.
pub fn reaches_the_database(name: &str) -> bool {
    name.starts_with("AIRLOCK_") || name == "DATABASE_URL" || name.starts_with("PG")
}

/// Does a `[state] database_url` hold a password (in its user info or a `password`
/// parameter)? One that cannot be parsed is taken to hold one (fail closed).
pub fn url_holds_password(url: &Secret) -> bool {
    url.expose()
        .parse::<tokio_postgres::Config>()
        .map_or(true, |c| c.get_password().is_some())
}

impl FileState {
    /// The database URL from the environment or the file, checked to name PostgreSQL.
    /// Never printed: it may hold a password.
    fn database_url(&self, check: &Check) -> Result<Option<Secret>, ConfigError> {
        let from_env = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(Secret::new);
        let Some(url) = from_env.or_else(|| self.database_url.clone()) else {
            return Ok(None);
        };
        let scheme_ok = ["postgres://", "postgresql://"]
            .iter()
            .any(|p| url.expose().starts_with(p));
        if !scheme_ok {
            return Err(check.err(
                "[state] database_url",
                "must be a postgres:// or postgresql:// URL (from the file or AIRLOCK_DATABASE_URL)".into(),
            ));
        }
        Ok(Some(url))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileUpstream {
    endpoint: Option<String>,
    connect_timeout_secs: u64,
    response_timeout_secs: u64,
}

impl Default for FileUpstream {
    fn default() -> Self {
        FileUpstream {
            endpoint: None,
            connect_timeout_secs: 10,
            response_timeout_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileCredentials {
    profile: Option<String>,
    refresh_ahead_secs: u64,
}

impl Default for FileCredentials {
    fn default() -> Self {
        FileCredentials {
            profile: None,
            refresh_ahead_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileLimits {
    max_buffered_body_bytes: u64,
    max_chunk_bytes: u64,
    max_header_bytes: u64,
    max_header_count: u64,
    header_read_timeout_secs: u64,
    idle_timeout_secs: u64,
    max_connections: u64,
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_buffered_body_bytes: 16 << 20,
            max_chunk_bytes: 16 << 20,
            // S3 itself takes 8 KiB of request headers; SDKs send well under 4 KiB.
            max_header_bytes: 32 << 10,
            max_header_count: 128,
            header_read_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_connections: 1024,
        }
    }
}

/// The longest any duration in the file may be, in seconds (a year).
const MAX_SECS: u64 = 365 * 24 * 3600;

/// The most `[limits] max_connections` may be (far past any file-descriptor limit).
pub const MAX_CONNECTIONS: u64 = 1_000_000;

/// A validated configuration. Paths are absolute.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub proxy_addr: SocketAddr,
    pub approvals_addr: SocketAddr,
    /// `[listen] connect`: the HTTPS_PROXY listener, when on.
    pub connect_addr: Option<SocketAddr>,
    /// `[connect] passthrough`: `host-glob[:port]` tunnelled unread.
    pub connect_passthrough: Vec<String>,
    /// `[listen] public_url`: the proxy's address as agents reach it (https).
    pub public_url: Option<PublicUrl>,
    pub tls_dir: PathBuf,
    pub state_dir: PathBuf,
    /// `[state] database_url` (or `AIRLOCK_DATABASE_URL`): PostgreSQL for what replicas
    /// share; none, the state dir's files alone.
    pub database_url: Option<Secret>,
    /// The config file itself holds a database password (`[state] database_url` with one,
    /// whatever the environment says): the file is then a secret, as the state dir is
    /// ([`crate::access::host::airlock_paths`]).
    pub database_password_in_file: bool,
    pub upstream: Upstream,
    pub credentials: CredentialsConfig,
    pub limits: Limits,
    pub policy: crate::policy::Policy,
    pub environments: Vec<Environment>,
    /// `[[approver]]`: parsed once; receipts are checked against these keys.
    pub approvers: Vec<crate::receipt::ApproverPublic>,
    /// `[[account]]`: the accounts agents can be bound to (none: airlock's own alone).
    pub accounts: Vec<crate::accounts::Account>,
    pub approval: Approval,
    pub notify: Notify,
    /// `[audit]`: segment size and retention of the audit log.
    pub audit: crate::audit::Settings,
}

#[derive(Debug, Clone)]
pub struct Notify {
    /// `[notify] webhook_url`: a Slack-compatible JSON POST per blocked call.
    pub webhook_url: Option<http::Uri>,
    /// `[notify] desktop`: `notify-send` where it exists (default on).
    pub desktop: bool,
}

#[derive(Debug, Clone)]
pub struct Approval {
    /// How long a blocked call waits for a decision before it gets the 403 (0: no wait).
    pub hold: Duration,
    /// Most calls held at once; more get the 403 at once.
    pub max_held: usize,
    /// How long a receipt is valid after it is granted.
    pub receipt_ttl: Duration,
    /// How many calls one receipt covers.
    pub uses: u32,
    /// The base of approval links (`{public_url}/approvals/{id}`); default
    /// `http://localhost:<approvals port>` (see [`Config::approval_page`]).
    pub public_url: Option<PublicUrl>,
}

/// A URL from the config, checked once (scheme, host; for a base or an endpoint no path
/// beyond `/` and no query), with what the code needs of it worked out once: the base
/// without a trailing `/`, the origin, the authority and the host (a WebAuthn RP ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    uri: http::Uri,
    base: String,
    origin: String,
    authority: String,
    host: String,
}

impl PublicUrl {
    /// Checks `text` as a URL of one of `schemes`, with a host; `bare` also refuses a path
    /// or a query.
    fn parse(text: &str, schemes: &[&str], bare: bool) -> Result<PublicUrl, String> {
        let uri: http::Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
        let shown = schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(" or ");
        let scheme = uri.scheme_str().unwrap_or("");
        let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
            return Err(format!("{text:?} must be an {shown} URL with a host"));
        };
        if !schemes.contains(&scheme) {
            return Err(format!("{text:?} must be an {shown} URL"));
        }
        let has_path = !(uri.path() == "/" || uri.path().is_empty());
        if bare && (has_path || uri.query().is_some()) {
            return Err(format!("{text:?} must be {shown} with a host and no path"));
        }
        Ok(PublicUrl {
            base: text.trim_end_matches('/').to_string(),
            origin: format!("{scheme}://{authority}"),
            authority: authority.as_str().to_string(),
            host: host.to_string(),
            uri,
        })
    }

    /// `http://localhost:<port>`.
    fn localhost(port: u16) -> PublicUrl {
        let authority = format!("localhost:{port}");
        let origin = format!("http://{authority}");
        PublicUrl {
            uri: http::Uri::try_from(origin.as_str()).unwrap_or_default(),
            base: origin.clone(),
            origin,
            authority,
            host: "localhost".into(),
        }
    }

    /// The URL as written, without a trailing `/`: the base that paths are appended to.
    pub fn base(&self) -> &str {
        &self.base
    }
    /// `scheme://host[:port]`, as a browser states its origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }
    /// `host[:port]`, as the `Host` header names it.
    pub fn authority(&self) -> &str {
        &self.authority
    }
    /// The host alone (for the approval page, the WebAuthn relying party id).
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }
}

/// The environment a call belongs to when no `[[environment]]` matches.
pub const DEFAULT_ENVIRONMENT: &str = "default";

impl Config {
    /// The first `[[environment]]` whose accounts and regions match.
    pub fn environment_of(&self, account: Option<&str>, region: &str) -> String {
        use crate::policy::glob::glob_match;
        self.environments
            .iter()
            .find(|e| {
                e.accounts
                    .iter()
                    .any(|a| glob_match(a, account.unwrap_or(""), false))
                    && e.regions.iter().any(|r| glob_match(r, region, false))
            })
            .map(|e| e.name.clone())
            .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_string())
    }

    /// Where the approval page is reached, for a page listening on `approvals_port`: its
    /// `[approval] public_url`, else `http://localhost:<port>` (`localhost`, not
    /// `127.0.0.1`: WebAuthn needs a host name as its relying party).
    pub fn approval_page(&self, approvals_port: u16) -> PublicUrl {
        match &self.approval.public_url {
            Some(url) => url.clone(),
            None => PublicUrl::localhost(approvals_port),
        }
    }

    /// The approval link for a pending call.
    pub fn approval_link(&self, approvals_port: u16, id: &str) -> String {
        format!(
            "{}/approvals/{id}",
            self.approval_page(approvals_port).base()
        )
    }

    /// Where a running (or the last) `serve` listens, from its record in the state dir;
    /// the configured addresses when there is none.
    pub fn listening(&self) -> crate::state::listen::Listening {
        crate::state::listen::Listening::read(&self.state_dir).unwrap_or(
            crate::state::listen::Listening {
                proxy: self.proxy_addr,
                approvals: self.approvals_addr,
                connect: self.connect_addr,
                pid: None,
            },
        )
    }

    /// Loads the config at `path` for a command, saying what to run when it does not exist.
    pub fn load_existing(path: &Path) -> Result<Config, String> {
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "{} does not exist; run `airlock init` first",
                    path.display()
                ))
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        Config::load(path).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// `[upstream] endpoint`: every service goes here instead of AWS.
    pub endpoint: Option<PublicUrl>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct CredentialsConfig {
    pub profile: Option<String>,
    pub refresh_ahead: Duration,
}

/// `[limits]`: each one answers with an AWS-shaped error or closes an idle connection;
/// none makes a client hang.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_buffered_body: usize,
    pub max_chunk: usize,
    /// Sum of name and value bytes over a request's headers.
    pub max_header_bytes: usize,
    /// Number of header fields in a request (a repeated name counts each time).
    pub max_header_count: usize,
    /// TLS handshake, and each request's headers (HTTP/1.1, also while idle between requests).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// A config problem: which file, which key, why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {key}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub key: String,
    pub reason: String,
}

impl Config {
    pub fn ca_cert(&self) -> PathBuf {
        self.tls_dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.tls_dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.tls_dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.tls_dir.join("server.key")
    }

    /// The endpoint URL agents are given, for a proxy bound on `port`.
    pub fn agent_endpoint(&self, port: u16) -> String {
        match &self.public_url {
            Some(url) => url.base().to_string(),
            None => format!("https://localhost:{port}"),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let check = Check {
            shown: path.display().to_string(),
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| check.err("(file)", format!("cannot read: {e}")))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let check = Check {
            shown: path.display().to_string(),
        };
        let raw: FileConfig = toml::from_str(text).map_err(|e| {
            let reason = e.message().to_string();
            let key = match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}")
                }
                None => "(syntax)".to_string(),
            };
            check.err(&key, reason)
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        let base = std::path::absolute(&base)
            .map_err(|e| check.err("(file)", format!("cannot resolve its directory: {e}")))?;
        let resolve = |p: &str| normalize(&base.join(p));
        let listen = raw.listen.validate(&check)?;
        raw.audit
            .check()
            .map_err(|(key, reason)| check.err(key, reason))?;
        Ok(Config {
            audit: raw.audit,
            path: normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())),
            proxy_addr: listen.proxy,
            approvals_addr: listen.approvals,
            connect_addr: listen.connect,
            connect_passthrough: raw.connect.validate(&check)?,
            public_url: listen.public_url,
            tls_dir: resolve(&raw.tls.dir),
            state_dir: resolve(&raw.state.dir),
            database_url: raw.state.database_url(&check)?,
            database_password_in_file: raw
                .state
                .database_url
                .as_ref()
                .is_some_and(url_holds_password),
            upstream: raw.upstream.validate(&check)?,
            credentials: CredentialsConfig {
                profile: raw.credentials.profile,
                refresh_ahead: Duration::from_secs(raw.credentials.refresh_ahead_secs),
            },
            limits: raw.limits.validate(&check)?,
            policy: crate::policy::Policy {
                mode: raw.policy.mode,
                rules: validate_rules(raw.rule, &check)?,
                builtin: raw.policy.builtin,
                irreversible_quorum: raw.approval.irreversible_quorum(&check)?,
            },
            environments: validate_environments(raw.environment, &check)?,
            approvers: validate_approvers(&raw.approver, &check)?,
            accounts: crate::accounts::validate(&raw.account)
                .map_err(|(key, why)| check.err(key, why))?,
            notify: raw.notify.validate(&check)?,
            approval: raw.approval.validate(&check)?,
        })
    }
}

/// The checks every section shares, each naming the file and the key when it fails.
struct Check {
    shown: String,
}

impl Check {
    fn err(&self, key: &str, reason: String) -> ConfigError {
        ConfigError {
            path: self.shown.clone(),
            key: key.to_string(),
            reason,
        }
    }

    /// A URL of one of `schemes` with a host (see [`PublicUrl::parse`]).
    fn url(
        &self,
        key: &str,
        text: &str,
        schemes: &[&str],
        bare: bool,
    ) -> Result<PublicUrl, ConfigError> {
        PublicUrl::parse(text, schemes, bare).map_err(|why| self.err(key, why))
    }

    fn addr(&self, key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
        v.parse().map_err(|_| {
            self.err(
                key,
                format!("{v:?} is not an address such as 127.0.0.1:8443"),
            )
        })
    }

    /// A duration of at least a second, capped so that `now + duration` can never
    /// overflow a clock.
    fn positive(&self, key: &str, v: u64) -> Result<Duration, ConfigError> {
        match v {
            0 => Err(self.err(key, "must be greater than 0".into())),
            v if v > MAX_SECS => Err(self.err(key, format!("must be at most {MAX_SECS} (a year)"))),
            v => Ok(Duration::from_secs(v)),
        }
    }

    fn size(&self, key: &str, v: u64, min: u64, max: u64) -> Result<usize, ConfigError> {
        if v < min {
            return Err(self.err(key, format!("must be at least {min}")));
        }
        if v > max {
            return Err(self.err(key, format!("must be at most {max}")));
        }
        usize::try_from(v).map_err(|_| self.err(key, "is too large".into()))
    }
}

/// `[listen]`, validated.
struct Listen {
    proxy: SocketAddr,
    approvals: SocketAddr,
    connect: Option<SocketAddr>,
    public_url: Option<PublicUrl>,
}

impl FileListen {
    fn validate(self, check: &Check) -> Result<Listen, ConfigError> {
        let proxy = check.addr("[listen] proxy", &self.proxy)?;
        let approvals = check.addr("[listen] approvals", &self.approvals)?;
        // In a container, loopback is the container's own: the page must listen on the
        // container's interface, and the port is published on the host's loopback instead.
        if !approvals.ip().is_loopback() && !self.in_container {
            return Err(check.err(
                "[listen] approvals",
                "the approval page serves plain HTTP and must listen on a loopback address (in a container published on the host's loopback only: in_container = true)".into(),
            ));
        }
        let connect = match &self.connect {
            None => None,
            Some(v) => Some(check.addr("[listen] connect", v)?),
        };
        if connect.is_some_and(|a| !a.ip().is_loopback()) && !self.in_container {
            return Err(check.err(
                "[listen] connect",
                "the HTTPS_PROXY listener serves plain HTTP and must listen on a loopback address"
                    .into(),
            ));
        }
        let public_url = match &self.public_url {
            None => None,
            Some(url) => Some(check.url("[listen] public_url", url, &["https"], false)?),
        };
        Ok(Listen {
            proxy,
            approvals,
            connect,
            public_url,
        })
    }
}

impl FileConnect {
    /// Each entry must name an IP address or end in at least two literal labels
    /// (`*.crates.io`, not `*.com`, `?*.io` or `*m`), so no glob reaches a whole top-level
    /// domain (or everything).
    fn validate(self, check: &Check) -> Result<Vec<String>, ConfigError> {
        let names_hosts = |g: &str| {
            let (host, _) = split_passthrough(g);
            if host.parse::<std::net::IpAddr>().is_ok() {
                return true;
            }
            let wild = host.rfind(['*', '?']);
            let suffix = wild.map_or(host, |i| &host[i + 1..]);
            let mut labels: Vec<&str> = suffix.split('.').collect();
            if wild.is_some() {
                labels.remove(0); // the label the wildcard is part of
            }
            labels.len() >= 2 && labels.iter().all(|l| !l.is_empty() && !l.contains(' '))
        };
        if let Some(bad) = self.passthrough.iter().find(|g| !names_hosts(g)) {
            return Err(check.err(
                "[connect] passthrough",
                format!("{bad:?} is too wide: each entry must be an IP address or end in at least two literal labels (\"*.crates.io\", not \"*.io\")"),
            ));
        }
        Ok(self.passthrough)
    }
}

impl FileUpstream {
    fn validate(self, check: &Check) -> Result<Upstream, ConfigError> {
        let endpoint = match &self.endpoint {
            None => None,
            Some(e) => Some(check.url("[upstream] endpoint", e, &["http", "https"], true)?),
        };
        Ok(Upstream {
            endpoint,
            connect_timeout: check
                .positive("[upstream] connect_timeout_secs", self.connect_timeout_secs)?,
            response_timeout: check.positive(
                "[upstream] response_timeout_secs",
                self.response_timeout_secs,
            )?,
        })
    }
}

impl FileLimits {
    fn validate(self, check: &Check) -> Result<Limits, ConfigError> {
        Ok(Limits {
            max_buffered_body: check.size(
                "[limits] max_buffered_body_bytes",
                self.max_buffered_body_bytes,
                1024,
                u64::MAX,
            )?,
            max_chunk: check.size(
                "[limits] max_chunk_bytes",
                self.max_chunk_bytes,
                8192,
                u64::MAX,
            )?,
            // Below 4 KiB a signed SDK request may not fit; above 1 MiB is no limit at all.
            max_header_bytes: check.size(
                "[limits] max_header_bytes",
                self.max_header_bytes,
                4096,
                1 << 20,
            )?,
            max_header_count: check.size(
                "[limits] max_header_count",
                self.max_header_count,
                32,
                4096,
            )?,
            header_read_timeout: check.positive(
                "[limits] header_read_timeout_secs",
                self.header_read_timeout_secs,
            )?,
            idle_timeout: check.positive("[limits] idle_timeout_secs", self.idle_timeout_secs)?,
            max_connections: check.size(
                "[limits] max_connections",
                self.max_connections,
                1,
                MAX_CONNECTIONS,
            )?,
        })
    }
}

impl FileNotify {
    fn validate(self, check: &Check) -> Result<Notify, ConfigError> {
        let webhook_url = match &self.webhook_url {
            None => None,
            Some(u) => Some(
                check
                    .url("[notify] webhook_url", u, &["http", "https"], false)?
                    .uri()
                    .clone(),
            ),
        };
        Ok(Notify {
            webhook_url,
            desktop: self.desktop.unwrap_or(true),
        })
    }
}

impl FileApproval {
    /// `[approval] irreversible_quorum`: 1 to [`MAX_QUORUM`](crate::receipt::quorum::MAX_QUORUM).
    fn irreversible_quorum(&self, check: &Check) -> Result<u32, ConfigError> {
        let max = crate::receipt::quorum::MAX_QUORUM;
        if !(1..=max).contains(&self.irreversible_quorum) {
            return Err(check.err(
                "[approval] irreversible_quorum",
                format!("must be 1 to {max}"),
            ));
        }
        Ok(self.irreversible_quorum)
    }

    fn validate(self, check: &Check) -> Result<Approval, ConfigError> {
        if self.uses == 0 {
            return Err(check.err("[approval] uses", "must be at least 1".into()));
        }
        let public_url = match &self.public_url {
            None => None,
            Some(url) => {
                Some(check.url("[approval] public_url", url, &["http", "https"], false)?)
            }
        };
        Ok(Approval {
            hold: match self.hold_seconds {
                0 => Duration::ZERO,
                v => check.positive("[approval] hold_seconds", v)?,
            },
            max_held: check.size(
                "[approval] max_held",
                self.max_held as u64,
                0,
                MAX_CONNECTIONS,
            )?,
            receipt_ttl: check.positive("[approval] receipt_ttl_secs", self.receipt_ttl_secs)?,
            uses: self.uses,
            public_url,
        })
    }
}

/// `[[environment]]`: names are unique and not empty, and each names an account.
fn validate_environments(
    environments: Vec<Environment>,
    check: &Check,
) -> Result<Vec<Environment>, ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for e in &environments {
        if e.name.is_empty() || !names.insert(e.name.clone()) {
            return Err(check.err(
                "[[environment]] name",
                format!("{:?} is empty or used twice", e.name),
            ));
        }
        if e.accounts.is_empty() {
            return Err(check.err(
                "[[environment]] accounts",
                format!("environment {:?} names no account", e.name),
            ));
        }
    }
    Ok(environments)
}

/// `[[rule]]`: unique names outside `builtin:`, actions shaped `service:Operation`, and
/// overrides that are narrow (see [`check_overrides`]).
fn validate_rules(
    rules: Vec<crate::policy::Rule>,
    check: &Check,
) -> Result<Vec<crate::policy::Rule>, ConfigError> {
    let mut rule_names = std::collections::BTreeSet::new();
    for r in &rules {
        if r.name.is_empty() || r.name.starts_with("builtin:") || !rule_names.insert(r.name.clone())
        {
            return Err(check.err(
                "[[rule]] name",
                format!("{:?} is empty, reserved (builtin:) or used twice", r.name),
            ));
        }
        if r.actions.is_empty() {
            return Err(check.err(
                "[[rule]] actions",
                format!("rule {:?} names no action", r.name),
            ));
        }
        for a in &r.actions {
            if a != "*" && !a.contains(':') {
                return Err(check.err(
                    "[[rule]] actions",
                    format!("rule {:?}: {a:?} must look like service:Operation", r.name),
                ));
            }
        }
        check_overrides(r).map_err(|(key, why)| check.err(key, why))?;
        check_quorum(r).map_err(|(key, why)| check.err(key, why))?;
    }
    Ok(rules)
}

/// `[[approver]]`: unique names, keys parsed (and kept) as Ed25519 public keys.
fn validate_approvers(
    approvers: &[ApproverEntry],
    check: &Check,
) -> Result<Vec<crate::receipt::ApproverPublic>, ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    let mut keys = Vec::with_capacity(approvers.len());
    for a in approvers {
        if a.name.is_empty() || !names.insert(a.name.clone()) {
            return Err(check.err(
                "[[approver]] name",
                format!("{:?} is empty or used twice", a.name),
            ));
        }
        let key =
            crate::receipt::ApproverPublic::from_config(&a.name, &a.public_key).map_err(|e| {
                check.err(
                    "[[approver]] public_key",
                    format!("approver {:?}: {e}", a.name),
                )
            })?;
        keys.push(key);
    }
    Ok(keys)
}

/// `approvals` and `approvers` belong on a rule that requires a receipt: a quorum of 1 to
/// [`MAX_QUORUM`](crate::receipt::quorum::MAX_QUORUM), and enough distinct names to meet it.
fn check_quorum(r: &crate::policy::Rule) -> Result<(), (&'static str, String)> {
    use crate::policy::Effect;
    let max = crate::receipt::quorum::MAX_QUORUM;
    if (r.approvals.is_some() || r.approvers.is_some()) && r.effect != Effect::RequireReceipt {
        return Err((
            "[[rule]] approvals",
            format!(
                "rule {:?}: approvals and approvers belong on a rule with effect = \"require_receipt\"",
                r.name
            ),
        ));
    }
    let approvals = r.approvals.unwrap_or(1);
    if !(1..=max).contains(&approvals) {
        return Err((
            "[[rule]] approvals",
            format!("rule {:?}: approvals must be 1 to {max}", r.name),
        ));
    }
    if let Some(names) = &r.approvers {
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        if names.iter().any(|n| n.is_empty()) || distinct.len() != names.len() {
            return Err((
                "[[rule]] approvers",
                format!("rule {:?}: a name is empty or listed twice", r.name),
            ));
        }
        if names.len() < approvals as usize {
            return Err((
                "[[rule]] approvers",
                format!(
                    "rule {:?}: {} approver(s) named, fewer than the {approvals} approvals it needs",
                    r.name,
                    names.len()
                ),
            ));
        }
    }
    Ok(())
}

/// A rule that overrides the catalogue must be narrow and explicit: it names built-in
/// classes or rules that exist, and exact agents and actions (no `*` or `?`), so no rule
/// lifts a built-in gate for every agent or a whole service by accident.
fn check_overrides(r: &crate::policy::Rule) -> Result<(), (&'static str, String)> {
    use crate::policy::builtin;
    if r.overrides.is_empty() {
        return Ok(());
    }
    for o in &r.overrides {
        let known = o.strip_prefix("builtin:").is_some_and(|name| {
            builtin::class(name).is_some() || builtin::rules().iter().any(|b| b.name == *o)
        });
        if !known {
            let classes: Vec<String> = builtin::CLASSES
                .iter()
                .map(|c| format!("builtin:{}", c.name))
                .collect();
            return Err((
                "[[rule]] overrides",
                format!(
                    "rule {:?}: {o:?} is no built-in class or rule (classes: {})",
                    r.name,
                    classes.join(", ")
                ),
            ));
        }
    }
    let wild = |s: &String| s.contains(['*', '?']);
    if r.agents.iter().any(wild) {
        return Err((
            "[[rule]] agents",
            format!(
                "rule {:?} overrides the catalogue, so it must name its agents exactly (no * or ?)",
                r.name
            ),
        ));
    }
    if r.actions.iter().any(wild) {
        return Err((
            "[[rule]] actions",
            format!(
                "rule {:?} overrides the catalogue, so it must name its actions exactly (no * or ?)",
                r.name
            ),
        ));
    }
    Ok(())
}

/// Removes `.` and `..` components lexically (the paths may not exist yet).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Splits a `[connect] passthrough` entry into its host glob and port glob: `host-glob`
/// (port 443), `host-glob:port` or `host-glob:*`; an IPv6 address loses its brackets, as
/// `connect::parse_authority` takes them off the host.
pub fn split_passthrough(glob: &str) -> (&str, &str) {
    let (host, port) = match glob.rsplit_once(':') {
        Some((h, p)) if p == "*" || (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) => {
            (h, p)
        }
        _ => (glob, "443"),
    };
    let v6 = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    (v6.unwrap_or(host), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_sets_audit_and_names_a_bad_value() {
        let path = Path::new("/nonexistent/config/airlock.toml");
        let example = Config::parse(path, EXAMPLE).unwrap();
        assert_eq!(example.audit.segment_bytes, 64 << 20);
        let text = EXAMPLE.replace(
            "segment_bytes = 67108864",
            "segment_bytes = 8192\nkeep_segments = 3",
        );
        let set = Config::parse(path, &text).unwrap();
        assert_eq!(
            (set.audit.segment_bytes, set.audit.keep_segments),
            (8192, Some(3))
        );
        let bad = EXAMPLE.replace("segment_bytes = 67108864", "segment_bytes = 10");
        let e = Config::parse(path, &bad).unwrap_err().to_string();
        assert!(
            e.contains("[audit] segment_bytes: must be at least 4096"),
            "{e}"
        );
    }

    #[test]
    fn the_example_is_valid_and_paths_are_relative_to_the_file() {
        let c = Config::parse(Path::new("/opt/x/config/airlock.toml"), EXAMPLE).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/opt/x/state"));
        assert_eq!(c.ca_cert(), PathBuf::from("/opt/x/certs/ca.pem"));
        assert_eq!(c.proxy_addr.port(), 8443);
        assert!(c.upstream.endpoint.is_none());
        assert_eq!(c.agent_endpoint(8443), "https://localhost:8443");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let p = Path::new("/c/airlock.toml");
        let bad_addr = EXAMPLE.replace("proxy = \"127.0.0.1:8443\"", "proxy = \"nowhere\"");
        let e = Config::parse(p, &bad_addr).unwrap_err().to_string();
        assert!(
            e.contains("/c/airlock.toml") && e.contains("[listen] proxy") && e.contains("nowhere"),
            "{e}"
        );
        let unknown = format!("{EXAMPLE}\n[extra]\nx = 1\n");
        let e = Config::parse(p, &unknown).unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("line"), "{e}");
        let endpoint = EXAMPLE.replace(
            "# endpoint = \"http://127.0.0.1:5000\"",
            "endpoint = \"ftp://x/y\"",
        );
        let e = Config::parse(p, &endpoint).unwrap_err().to_string();
        assert!(e.contains("[upstream] endpoint"), "{e}");
        let public = EXAMPLE.replace(
            "approvals = \"127.0.0.1:8444\"",
            "approvals = \"0.0.0.0:8444\"",
        );
        assert!(Config::parse(p, &public)
            .unwrap_err()
            .to_string()
            .contains("loopback"));
        // In a container whose ports the host publishes on its loopback, it may.
        let container = public.replace("# in_container = false", "in_container = true");
        assert!(Config::parse(p, &container).is_ok());
    }

    #[test]
    fn the_shipped_deployment_configs_are_valid() {
        for (name, text) in [
            ("systemd", include_str!("../deploy/systemd/airlock.toml")),
            ("docker", include_str!("../deploy/docker/airlock.toml")),
        ] {
            let c = Config::parse(Path::new("/etc/airlock/airlock.toml"), text)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.state_dir, Path::new("/var/lib/airlock/state"), "{name}");
            assert_eq!(c.tls_dir, Path::new("/var/lib/airlock/certs"), "{name}");
            assert_eq!(c.policy.mode, crate::policy::Mode::Enforce, "{name}");
            assert!(!c.notify.desktop, "{name}");
        }
    }

    #[test]
    fn a_quorum_is_checked_where_it_is_written() {
        let with = |extra: &str| {
            Config::parse(
                Path::new("/c/airlock.toml"),
                &format!("{EXAMPLE}\n{extra}\n"),
            )
            .map_err(|e| e.to_string())
        };
        let rule = |effect: &str, more: &str| {
            format!("[[rule]]\nname = \"r\"\neffect = \"{effect}\"\nactions = [\"rds:DeleteDBSnapshot\"]\n{more}")
        };
        let c = with(&rule(
            "require_receipt",
            "approvals = 2\napprovers = [\"alice\", \"bob\"]",
        ))
        .expect("valid");
        assert_eq!(c.policy.rules[0].approvals, Some(2));
        assert_eq!(c.policy.irreversible_quorum, 1);
        for (bad, key) in [
            (rule("allow", "approvals = 2"), "[[rule]] approvals"),
            (
                rule("require_receipt", "approvals = 0"),
                "[[rule]] approvals",
            ),
            (
                rule("require_receipt", "approvals = 17"),
                "[[rule]] approvals",
            ),
            (
                rule(
                    "require_receipt",
                    "approvals = 3\napprovers = [\"alice\", \"bob\"]",
                ),
                "[[rule]] approvers",
            ),
            (
                rule("require_receipt", "approvers = [\"alice\", \"alice\"]"),
                "[[rule]] approvers",
            ),
        ] {
            let e = with(&bad).expect_err("refused");
            assert!(e.contains(key), "{bad}: {e}");
        }
        let quorum = |n: &str| {
            EXAMPLE.replace(
                "irreversible_quorum = 1",
                &format!("irreversible_quorum = {n}"),
            )
        };
        let c = Config::parse(Path::new("/c/airlock.toml"), &quorum("2")).expect("valid");
        assert_eq!(c.policy.irreversible_quorum, 2);
        let e = Config::parse(Path::new("/c/airlock.toml"), &quorum("0")).expect_err("refused");
        assert!(
            e.to_string().contains("[approval] irreversible_quorum"),
            "{e}"
        );
    }

    #[test]
    fn an_override_must_name_a_class_and_exact_agents_and_actions() {
        let with = |rule: &str| {
            Config::parse(
                Path::new("/c/airlock.toml"),
                &format!("{EXAMPLE}\n[[rule]]\n{rule}\n"),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let base = "name = \"r\"\neffect = \"allow\"\nactions = [\"sts:AssumeRole\"]";
        assert_eq!(
            with(&format!(
                "{base}\nagents = [\"deployer\"]\noverrides = [\"builtin:credential-vending\"]"
            )),
            Ok(())
        );
        let every_agent = with(&format!(
            "{base}\noverrides = [\"builtin:credential-vending\"]"
        ))
        .unwrap_err();
        assert!(every_agent.contains("[[rule]] agents"), "{every_agent}");
        let glob_agent = with(&format!(
            "{base}\nagents = [\"deploy*\"]\noverrides = [\"builtin:credential-vending\"]"
        ))
        .unwrap_err();
        assert!(
            glob_agent.contains("must name its agents exactly"),
            "{glob_agent}"
        );
        let glob_action = with(
            "name = \"r\"\neffect = \"allow\"\nactions = [\"sts:*\"]\nagents = [\"d\"]\noverrides = [\"builtin:credential-vending\"]",
        )
        .unwrap_err();
        assert!(glob_action.contains("[[rule]] actions"), "{glob_action}");
        let unknown = with(&format!(
            "{base}\nagents = [\"d\"]\noverrides = [\"credential-vending\"]"
        ))
        .unwrap_err();
        assert!(unknown.contains("no built-in class or rule"), "{unknown}");
        // A single built-in rule may be named too.
        assert_eq!(
            with(&format!(
                "{base}\nagents = [\"d\"]\noverrides = [\"builtin:scale-to-zero\"]"
            )),
            Ok(())
        );
    }

    #[test]
    fn urls_and_approver_keys_are_kept_as_parsed() {
        let p = Path::new("/c/airlock.toml");
        let key = crate::receipt::ApproverKey::generate("alice")
            .unwrap()
            .public();
        let text = format!(
            "[listen]\nproxy = \"127.0.0.1:1\"\napprovals = \"127.0.0.1:2\"\n\
             public_url = \"https://airlock.example:8443/\"\n\
             [approval]\npublic_url = \"https://approve.example:9000/\"\n\
             [[approver]]\nname = \"alice\"\npublic_key = \"{}\"\n",
            key.config_value()
        );
        let c = Config::parse(p, &text).unwrap();
        assert_eq!(c.approvers, vec![key]);
        assert_eq!(c.agent_endpoint(1), "https://airlock.example:8443");
        let page = c.approval_page(2);
        assert_eq!(page.origin(), "https://approve.example:9000");
        assert_eq!(page.authority(), "approve.example:9000");
        assert_eq!(page.host(), "approve.example");
        assert_eq!(
            c.approval_link(2, "abc"),
            "https://approve.example:9000/approvals/abc"
        );
        // Without a public URL: localhost on the port the page listens on.
        let bare = "[listen]\nproxy = \"127.0.0.1:1\"\napprovals = \"127.0.0.1:2\"\n";
        let c = Config::parse(p, bare).unwrap();
        let page = c.approval_page(8444);
        assert_eq!(page.origin(), "http://localhost:8444");
        assert_eq!(page.host(), "localhost");
        assert_eq!(
            c.approval_link(8444, "x"),
            "http://localhost:8444/approvals/x"
        );
        // Every URL key goes through the same check, and says which key failed.
        for (key, line) in [
            ("[listen] public_url", "[listen]\nproxy = \"127.0.0.1:1\"\napprovals = \"127.0.0.1:2\"\npublic_url = \"http://x\"\n"),
            ("[approval] public_url", "[listen]\nproxy = \"127.0.0.1:1\"\napprovals = \"127.0.0.1:2\"\n[approval]\npublic_url = \"ftp://x\"\n"),
            ("[notify] webhook_url", "[listen]\nproxy = \"127.0.0.1:1\"\napprovals = \"127.0.0.1:2\"\n[notify]\nwebhook_url = \"/relative\"\n"),
        ] {
            let e = Config::parse(p, line).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        // A key that is not an Ed25519 public key is refused when the file is read.
        let bad = format!("{bare}[[approver]]\nname = \"bob\"\npublic_key = \"ed25519:AAAA\"\n");
        let e = Config::parse(p, &bad).unwrap_err().to_string();
        assert!(e.contains("[[approver]] public_key"), "{e}");
    }

    #[test]
    fn limits_default_to_sane_values() {
        let c = Config::parse(Path::new("/c/airlock.toml"), EXAMPLE).unwrap();
        assert_eq!(c.limits.max_header_bytes, 32 * 1024);
        assert_eq!(c.limits.max_header_count, 128);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.header_read_timeout, Duration::from_secs(30));
        assert_eq!(c.limits.max_connections, 1024);
        // The same defaults when the keys are left out.
        let bare = "[listen]\nproxy = \"127.0.0.1:1\"\napprovals = \"127.0.0.1:2\"\n";
        let b = Config::parse(Path::new("/c/airlock.toml"), bare).unwrap();
        assert_eq!(b.limits.max_header_bytes, c.limits.max_header_bytes);
        assert_eq!(b.limits.max_header_count, c.limits.max_header_count);
        assert_eq!(b.limits.idle_timeout, c.limits.idle_timeout);
    }

    #[test]
    fn zero_or_absurd_limits_are_refused_naming_the_key() {
        let p = Path::new("/c/airlock.toml");
        let with = |key: &str, value: &str| {
            let line = EXAMPLE
                .lines()
                .find(|l| l.starts_with(&format!("{key} =")))
                .unwrap_or_else(|| panic!("the example documents {key}"));
            EXAMPLE.replace(line, &format!("{key} = {value}"))
        };
        for (key, value, why) in [
            ("max_header_bytes", "0", "at least 4096"),
            ("max_header_bytes", "100", "at least 4096"),
            ("max_header_bytes", "1073741824", "at most 1048576"),
            ("max_header_count", "0", "at least 32"),
            ("max_header_count", "1000000", "at most 4096"),
            ("idle_timeout_secs", "0", "greater than 0"),
            ("idle_timeout_secs", "9223372036854775807", "at most"),
            ("header_read_timeout_secs", "0", "greater than 0"),
            ("header_read_timeout_secs", "99999999999", "at most"),
            ("max_connections", "0", "at least 1"),
            ("max_connections", "4294967296", "at most 1000000"),
            ("max_buffered_body_bytes", "10", "at least 1024"),
            ("connect_timeout_secs", "0", "greater than 0"),
            ("hold_seconds", "9223372036854775807", "at most"),
            ("max_held", "9223372036854775807", "at most"),
        ] {
            let e = Config::parse(p, &with(key, value)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(why), "{key} = {value}: {e}");
        }
        // Within range is fine, and 0 still means "answer at once" for the hold.
        let c = Config::parse(p, &with("max_header_count", "4096")).unwrap();
        assert_eq!(c.limits.max_header_count, 4096);
        let c = Config::parse(p, &with("hold_seconds", "0")).unwrap();
        assert!(c.approval.hold.is_zero());
    }
}
