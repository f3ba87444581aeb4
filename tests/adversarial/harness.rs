//! The real airlock server, in-process, on port 0, in front of the recording stub; and a
//! client that speaks raw bytes over TLS so a test can send exactly what an attacker would.

use super::sign::{amz_date, sha256_hex, Signing};
use super::stub::Stub;
use airlock::config::Config;
use airlock::credentials::RealCredentials;
use airlock::receipt::ApproverKey;
use airlock::state::agents::AgentRecord;
use airlock::store::{Opener, Store};
use aws_credential_types::provider::SharedCredentialsProvider;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How long any single exchange may take before the test calls it a hang.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub const REGION: &str = "eu-west-1";

#[derive(Clone)]
pub struct Agent {
    pub name: String,
    pub key: String,
    pub secret: String,
}

pub struct Harness {
    /// Keeps the config, certificates and state alive for the test.
    _dir: tempfile::TempDir,
    pub stub: Stub,
    pub port: u16,
    pub approvals_port: u16,
    pub agent: Agent,
    pub config: Config,
    pub approver: ApproverKey,
    /// The PostgreSQL database this airlock keeps its state in (a fresh one per harness),
    /// when `AIRLOCK_TEST_DATABASE_URL` names a server; `None`: the files in `[state] dir`.
    pub database_url: Option<String>,
    ca: Vec<CertificateDer<'static>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// Options for a harness.
pub struct Options {
    pub max_buffered_body_bytes: u64,
    pub extra: String,
    /// `(section, "key = value")`: replaces the harness's own setting of that key in that
    /// section, or adds it there (`("limits", "max_connections = 2")`).
    pub set: Vec<(&'static str, &'static str)>,
    /// `[upstream] endpoint` instead of the recording stub (a test's own upstream, which
    /// must answer airlock's GetCallerIdentity itself: the harness does not wait for it).
    pub endpoint: Option<String>,
    /// `[upstream] response_timeout_secs`.
    pub response_timeout_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_buffered_body_bytes: 64 * 1024,
            extra: String::new(),
            set: Vec::new(),
            endpoint: None,
            response_timeout_secs: 10,
        }
    }
}

/// `text` with `line` (`key = value`) set in `[section]`.
fn set_in_section(text: &str, section: &str, line: &str) -> String {
    let header = format!("[{section}]");
    let key = line.split('=').next().unwrap_or("").trim();
    let mut out: Vec<String> = Vec::new();
    let mut inside = false;
    let mut done = false;
    for l in text.lines() {
        if l.starts_with('[') {
            if inside && !done {
                out.push(line.to_string());
                done = true;
            }
            inside = l.trim() == header;
        }
        let same_key = l.split('=').next().map(str::trim) == Some(key);
        if inside && !done && same_key && !l.starts_with('[') {
            out.push(line.to_string());
            done = true;
            continue;
        }
        out.push(l.to_string());
    }
    assert!(done || inside, "the harness config has no [{section}]");
    if !done {
        out.push(line.to_string());
    }
    out.join("\n") + "\n"
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Harness {
        let stub = Stub::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let approver = ApproverKey::generate("alice").expect("approver key");
        let text = format!(
            r#"
[listen]
proxy = "127.0.0.1:0"
approvals = "127.0.0.1:0"

[tls]
dir = "../certs"

[state]
dir = "../state"

[upstream]
endpoint = "{endpoint}"
connect_timeout_secs = 5
response_timeout_secs = {response_timeout}

[limits]
max_buffered_body_bytes = {max_body}
max_chunk_bytes = 65536
header_read_timeout_secs = 5
max_connections = 256

[approval]
hold_seconds = 0

[notify]
desktop = false

[[approver]]
name = "alice"
public_key = "{public}"
{extra}
"#,
            endpoint = options
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", stub.port())),
            response_timeout = options.response_timeout_secs,
            max_body = options.max_buffered_body_bytes,
            public = approver.public().config_value(),
            extra = options.extra,
        );
        let text = options
            .set
            .iter()
            .fold(text, |t, (section, line)| set_in_section(&t, section, line));
        let database_url = fresh_database().await;
        let text = match &database_url {
            Some(url) => set_in_section(&text, "state", &format!("database_url = \"{url}\"")),
            None => text,
        };
        let config_path = dir.path().join("config/airlock.toml");
        std::fs::create_dir_all(config_path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&config_path, &text).expect("write config");
        // The text must parse on its own too (the path form the brief asks for).
        Config::parse(&config_path, &text).expect("config parses");
        let (config, _) = airlock::init::init(&config_path).expect("init");

        if let Some(url) = &database_url {
            let pool = airlock::store::postgres::pool(&airlock::secret::Secret::new(url.as_str()))
                .expect("pool");
            airlock::store::postgres::migrate(&pool)
                .await
                .expect("migrate");
        }
        let record = open_store(&config)
            .await
            .identities()
            .add_agent("agent-1")
            .await
            .expect("add agent");
        let agent = Agent {
            name: record.name.clone(),
            key: record.access_key_id.clone(),
            secret: record.secret_access_key.expose().to_string(),
        };

        let ca_pem = std::fs::read(config.ca_cert()).expect("ca.pem");
        let ca: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut ca_pem.as_slice())
            .collect::<Result<_, _>>()
            .expect("parse ca.pem");

        let proxy_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let approvals_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind approvals");
        let port = proxy_listener.local_addr().expect("addr").port();
        let approvals_port = approvals_listener.local_addr().expect("addr").port();
        let credentials = RealCredentials::with_provider(
            Some(SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new(
                    "AKIAREALKEY",
                    "realsecret",
                    None,
                    None,
                    "test",
                ),
            )),
            Duration::from_secs(300),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = config.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.await;
            };
            if let Err(e) = airlock::serve::run(
                served,
                proxy_listener,
                approvals_listener,
                credentials,
                shutdown,
            )
            .await
            {
                panic!("serve failed: {e}");
            }
        });

        let harness = Harness {
            _dir: dir,
            stub,
            port,
            approvals_port,
            agent,
            config,
            approver,
            database_url,
            ca,
            _shutdown: tx,
        };
        if harness.database_url.is_some() {
            harness.wait_until_healthy().await;
        }
        if options.endpoint.is_some() {
            return harness;
        }
        // airlock asks the upstream for its own account once at start; wait for it, then
        // start every test from an empty record.
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        while harness.stub.count() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "airlock never asked the stub for its account"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A first request makes sure the account is settled before tests look at ARNs.
        tokio::time::sleep(Duration::from_millis(20)).await;
        harness.stub.clear();
        harness
    }

    /// Waits until `/healthz` answers 200: on PostgreSQL, `serve` reaches the database in
    /// the background and refuses gated calls until it has (its audit spool drained).
    async fn wait_until_healthy(&self) {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            if self.healthz_status().await == Some(200) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "airlock's /healthz never answered 200 on PostgreSQL"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The status `/healthz` on the approvals port answers with, if it answers.
    async fn healthz_status(&self) -> Option<u16> {
        let exchange = async {
            let mut tcp = TcpStream::connect(("127.0.0.1", self.approvals_port))
                .await
                .ok()?;
            let request = format!(
                "GET /healthz HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
                self.approvals_port
            );
            tcp.write_all(request.as_bytes()).await.ok()?;
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).await.ok()?;
            let text = String::from_utf8_lossy(&answer);
            text.split(' ').nth(1)?.parse().ok()
        };
        tokio::time::timeout(IO_TIMEOUT, exchange)
            .await
            .ok()
            .flatten()
    }

    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    #[allow(dead_code)] // tests/faults.rs
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.config.state_dir.clone()
    }

    pub fn tls_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone()).expect("add ca");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    pub async fn connect(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect to airlock");
        let connector = TlsConnector::from(self.tls_config(alpn));
        let name = ServerName::try_from("localhost").expect("server name");
        tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake")
    }

    /// Sends raw bytes on a fresh HTTP/1.1 connection and reads one response.
    pub async fn send(&self, bytes: &[u8]) -> Resp {
        self.send_expecting(bytes, 1)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(Resp::none)
    }

    /// Sends raw bytes and reads up to `n` responses (pipelining), stopping at close.
    pub async fn send_expecting(&self, bytes: &[u8], n: usize) -> Vec<Resp> {
        let mut tls = self.connect(&[b"http/1.1"]).await;
        tls.write_all(bytes).await.expect("write request");
        tls.flush().await.expect("flush");
        read_responses(&mut tls, n).await
    }

    /// Sends a request in pieces, pausing between them (so the server sees them as
    /// separate reads), and reads one response.
    pub async fn send_pieces(&self, pieces: &[Vec<u8>], pause: Duration) -> Resp {
        let mut tls = self.connect(&[b"http/1.1"]).await;
        for piece in pieces {
            if tls.write_all(piece).await.is_err() {
                break;
            }
            let _ = tls.flush().await;
            tokio::time::sleep(pause).await;
        }
        read_responses(&mut tls, 1)
            .await
            .into_iter()
            .next()
            .unwrap_or_else(Resp::none)
    }

    pub async fn send_call(&self, call: &Call) -> Resp {
        self.send(&call.sign().to_bytes()).await
    }

    /// A call of the agent to a service, signed now.
    pub fn call(&self, service: &str, method: &str, path: &str) -> Call {
        Call::new(&self.host(), &self.agent, service, method, path)
    }

    /// A query-protocol (or ec2) POST with a form body.
    pub fn query(&self, service: &str, form: &str) -> Call {
        self.call(service, "POST", "/").form(form)
    }

    /// A JSON-protocol POST with `X-Amz-Target`.
    pub fn json(&self, service: &str, target: &str, body: &str) -> Call {
        let mut c = self.call(service, "POST", "/");
        c.headers
            .push(("Content-Type".into(), "application/x-amz-json-1.0".into()));
        c.headers.push(("X-Amz-Target".into(), target.into()));
        c.body = body.as_bytes().to_vec();
        c
    }

    /// An S3 call with `x-amz-content-sha256` of its body.
    pub fn s3(&self, method: &str, path: &str, query: &str) -> Call {
        let mut c = self.call("s3", method, path);
        c.query = query.into();
        c
    }

    /// A known-good call: sts GetCallerIdentity, which must be forwarded.
    pub fn harmless(&self) -> Call {
        self.query("sts", "Action=GetCallerIdentity&Version=2011-06-15")
    }

    /// The server still answers a good call (no panic took it down), and that call reaches
    /// the upstream. Leaves one record in the stub, which it removes again.
    pub async fn assert_alive(&self) {
        let before = self.stub.count();
        let r = self.send_call(&self.harmless()).await;
        assert_eq!(r.status, 200, "airlock no longer serves a good call: {r:?}");
        assert!(
            r.body.contains("123456789012"),
            "the good call did not reach the stub: {r:?}"
        );
        assert_eq!(self.stub.count(), before + 1);
    }

    /// Nothing reached the upstream.
    pub fn assert_untouched(&self) {
        let seen = self.stub.requests();
        assert!(
            seen.is_empty(),
            "the upstream received {} request(s): {:#?}",
            seen.len(),
            seen
        );
    }

    /// Approves every pending approval with the configured approver's key (as
    /// `airlock approve ID --key FILE` does).
    pub async fn approve_all_pending(&self) -> Vec<String> {
        use airlock::receipt::{self, Binding, Decision, ReceiptBody, Validity};
        use airlock::state::approvals::Status;
        let store = self.store().await;
        let mut ids = Vec::new();
        for pending in store
            .list_approvals(Some(0))
            .await
            .expect("list approvals")
            .into_iter()
            .filter(|a| a.status == Status::Pending)
        {
            let binding = Binding::of(&pending.call, &pending.agent, &pending.environment);
            let mut validity = Validity::starting(OffsetDateTime::now_utc());
            validity.ttl = self.config.approval.receipt_ttl;
            validity.uses = self.config.approval.uses;
            let body = ReceiptBody::new(
                &binding,
                &pending.id,
                Decision::Approve,
                &self.approver.public(),
                validity,
            );
            let signed = receipt::sign(body, &self.approver).expect("sign receipt");
            let trusted = store.trusted_keys().await.expect("trusted keys");
            let recorded = airlock::approvals::quorum::record(&*store, &trusted, signed)
                .await
                .expect("decide");
            ids.push(recorded.receipt_id);
        }
        ids
    }

    /// The store this airlock keeps its state in, as the commands open it.
    pub async fn store(&self) -> Arc<dyn Store> {
        open_store(&self.config).await
    }

    /// A new agent, added as `airlock agent add` does, once `serve` knows it (at once with
    /// the files; on PostgreSQL `serve` follows the agents, within moments).
    pub async fn add_agent(&self, name: &str) -> AgentRecord {
        let record = self
            .store()
            .await
            .identities()
            .add_agent(name)
            .await
            .expect("add agent");
        if self.database_url.is_some() {
            self.wait_until_known(&record.access_key_id).await;
        }
        record
    }

    /// Waits until `serve` tells a wrong signature under `access_key_id` from an unknown
    /// key (neither reaches the upstream).
    async fn wait_until_known(&self, access_key_id: &str) {
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            let mut probe = self.harmless();
            probe.access_key = access_key_id.to_string();
            probe.secret = "not-the-agents-secret".to_string();
            let r = self.send_call(&probe).await;
            if r.body.contains("SignatureDoesNotMatch") {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "serve never learned of agent key {access_key_id}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn receipt_json(&self, receipt_id: &str) -> String {
        let bytes = self
            .store()
            .await
            .read_receipt(receipt_id)
            .await
            .expect("receipt");
        String::from_utf8(bytes).expect("utf8")
    }

    pub async fn pending_count(&self) -> usize {
        use airlock::state::approvals::Status;
        self.store()
            .await
            .list_approvals(Some(0))
            .await
            .expect("list approvals")
            .into_iter()
            .filter(|a| a.status == Status::Pending)
            .count()
    }

    /// The single-use ledger's events for one key (a receipt id), in order: `ledger.jsonl`,
    /// or the database's `airlock_ledger_events`.
    #[allow(dead_code)] // tests/faults.rs
    pub async fn ledger_events(&self, key: &str) -> Vec<String> {
        let Some(url) = &self.database_url else {
            let text =
                std::fs::read_to_string(self.state_dir().join("ledger.jsonl")).unwrap_or_default();
            return text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["receipt"] == key)
                .map(|v| v["event"].as_str().unwrap_or("").to_string())
                .collect();
        };
        query_strings(
            url,
            "SELECT event FROM airlock_ledger_events WHERE key = $1 ORDER BY id",
            key,
        )
        .await
    }

    /// Every record of the audit chain, in order, as stored (one JSON object each): all the
    /// log's segments, or the database's `airlock_audit`.
    pub async fn audit_records(&self) -> Vec<String> {
        let Some(url) = &self.database_url else {
            let records = airlock::audit::last_records(&self.config.state_dir, usize::MAX)
                .map(|(records, _)| records)
                .unwrap_or_default();
            return records
                .iter()
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .collect();
        };
        query_strings(
            url,
            "SELECT record FROM airlock_audit WHERE $1 = $1 ORDER BY seq",
            "",
        )
        .await
    }
}

async fn open_store(config: &Config) -> Arc<dyn Store> {
    airlock::store::open(Arc::new(config.clone()), Opener::Command)
        .await
        .expect("the store")
}

/// The text column of each row `sql` (one `$1` parameter) selects.
async fn query_strings(url: &str, sql: &str, parameter: &str) -> Vec<String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
        .query(sql, &[&parameter])
        .await
        .expect("query the test database")
        .iter()
        .map(|row| row.get::<_, String>(0))
        .collect()
}

/// With `AIRLOCK_TEST_DATABASE_URL` (an administrator's URL to a running PostgreSQL, as
/// `scripts/test-postgres` sets it): a database of this harness's own, created now, and its
/// URL. Without it, `None`: the file store.
async fn fresh_database() -> Option<String> {
    let admin = std::env::var("AIRLOCK_TEST_DATABASE_URL").ok()?;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "airlock_suite_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to AIRLOCK_TEST_DATABASE_URL");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the harness's database");
    Some(with_database(&admin, &name))
}

/// `url` naming database `name` instead of its own (`postgres://u@h:p/db?opts`).
fn with_database(url: &str, name: &str) -> String {
    let (base, options) = url.split_once('?').unwrap_or((url, ""));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    if options.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{options}")
    }
}

/// When the suites run on PostgreSQL (`AIRLOCK_TEST_DATABASE_URL` set), says why a test
/// that needs what only the file store has is skipped there, and returns true.
#[allow(dead_code)] // tests/faults.rs
pub fn file_store_only(why: &str) -> bool {
    if std::env::var_os("AIRLOCK_TEST_DATABASE_URL").is_some() {
        eprintln!("SKIPPED on PostgreSQL: {why}");
        return true;
    }
    false
}

/// How a call states its payload.
#[derive(Clone, Debug)]
pub enum Payload {
    /// No `x-amz-content-sha256`: the signature covers `sha256(body)`.
    FromBody,
    /// `x-amz-content-sha256: sha256(body)`, signed.
    Sha,
    /// `x-amz-content-sha256` with this value, signed; the canonical payload line is it too.
    Literal(String),
}

/// A request before signing.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    /// As on the wire.
    pub path: String,
    /// As on the wire, without `?`.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub service: String,
    pub region: String,
    pub time: OffsetDateTime,
    pub payload: Payload,
    /// Header names (lower case) sent but left out of the signature.
    pub unsigned: Vec<String>,
    pub host: String,
    pub access_key: String,
    pub secret: String,
    /// Add `Content-Length` for the body.
    pub content_length: bool,
    /// Sign `content-length` (as the JS and Go SDKs do).
    pub sign_content_length: bool,
}

impl Call {
    /// A call of `agent` to a service at `host`, signed now.
    pub fn new(host: &str, agent: &Agent, service: &str, method: &str, path: &str) -> Call {
        Call {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
            service: service.into(),
            region: REGION.into(),
            time: OffsetDateTime::now_utc(),
            payload: if service == "s3" {
                Payload::Sha
            } else {
                Payload::FromBody
            },
            unsigned: Vec::new(),
            host: host.into(),
            access_key: agent.key.clone(),
            secret: agent.secret.clone(),
            content_length: true,
            sign_content_length: false,
        }
    }

    /// A form body (query and ec2 protocols).
    pub fn form(mut self, form: &str) -> Self {
        self.headers.push((
            "Content-Type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ));
        self.body = form.as_bytes().to_vec();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    pub fn signing_headers(&self) -> (Vec<(String, String)>, Vec<String>, String) {
        let date = amz_date(self.time);
        let mut headers: Vec<(String, String)> = vec![("Host".into(), self.host.clone())];
        headers.push(("X-Amz-Date".into(), date.clone()));
        let payload_hash = match &self.payload {
            Payload::FromBody => sha256_hex(&self.body),
            Payload::Sha => {
                let h = sha256_hex(&self.body);
                headers.push(("x-amz-content-sha256".into(), h.clone()));
                h
            }
            Payload::Literal(v) => {
                headers.push(("x-amz-content-sha256".into(), v.clone()));
                v.clone()
            }
        };
        headers.extend(self.headers.iter().cloned());
        if self.content_length
            && (!self.body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT"))
        {
            headers.push(("Content-Length".into(), self.body.len().to_string()));
        }
        let mut signed: Vec<String> = headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .filter(|k| !self.unsigned.contains(k))
            .filter(|k| self.sign_content_length || k != "content-length")
            .collect();
        signed.sort();
        signed.dedup();
        (headers, signed, payload_hash)
    }

    /// Signs with the Authorization header.
    pub fn sign(&self) -> Wire {
        let (mut headers, signed, payload_hash) = self.signing_headers();
        let date = amz_date(self.time);
        let s = Signing {
            access_key: &self.access_key,
            secret: &self.secret,
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &headers,
            signed: &signed,
            payload_hash: &payload_hash,
            date: &date,
            region: &self.region,
            service: &self.service,
            presigned: false,
        };
        let authorization = s.authorization();
        let signature = s.signature();
        let key = s.key();
        let scope = s.scope();
        headers.insert(1, ("Authorization".into(), authorization));
        Wire {
            method: self.method.clone(),
            target: if self.query.is_empty() {
                self.path.clone()
            } else {
                format!("{}?{}", self.path, self.query)
            },
            headers,
            body: self.body.clone(),
            signature,
            key,
            scope,
            date,
        }
    }

    /// Signs as a presigned URL (`X-Amz-*` in the query, `host` the only signed header).
    pub fn presign(&self, expires: u64) -> Wire {
        let date = amz_date(self.time);
        let scope = format!(
            "{}/{}/{}/aws4_request",
            &date[..8],
            self.region,
            self.service
        );
        let mut query = self.query.clone();
        let presign = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}%2F{}&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
            self.access_key,
            scope.replace('/', "%2F")
        );
        if query.is_empty() {
            query = presign;
        } else {
            query = format!("{query}&{presign}");
        }
        let headers = vec![("Host".to_string(), self.host.clone())];
        let signed = vec!["host".to_string()];
        let s = Signing {
            access_key: &self.access_key,
            secret: &self.secret,
            method: &self.method,
            path: &self.path,
            query: &query,
            headers: &headers,
            signed: &signed,
            payload_hash: "UNSIGNED-PAYLOAD",
            date: &date,
            region: &self.region,
            service: &self.service,
            presigned: true,
        };
        let signature = s.signature();
        let key = s.key();
        let mut headers = headers;
        if !self.body.is_empty() {
            headers.push(("Content-Length".into(), self.body.len().to_string()));
        }
        Wire {
            method: self.method.clone(),
            target: format!("{}?{query}&X-Amz-Signature={signature}", self.path),
            headers,
            body: self.body.clone(),
            signature,
            key,
            scope,
            date,
        }
    }
}

/// A signed request, ready to go on the wire (and to be tampered with).
#[derive(Clone, Debug)]
pub struct Wire {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub signature: String,
    pub key: [u8; 32],
    pub scope: String,
    pub date: String,
}

impl Wire {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Adds a header after signing.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Removes every header of this name.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    /// Replaces the body after signing, with a Content-Length that fits it.
    pub fn with_body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
        self.headers
            .push(("Content-Length".into(), self.body.len().to_string()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One response as the client read it. `status` is 0 when the connection closed first.
#[derive(Clone, Debug, Default)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub body_bytes: Vec<u8>,
}

/// The text pairs of a CBOR map of text strings (what an rpc-v2-cbor error body is).
fn cbor_text_map(b: &[u8]) -> Vec<(String, String)> {
    fn head(b: &[u8], pos: &mut usize) -> Option<(u8, usize)> {
        let first = *b.get(*pos)?;
        *pos += 1;
        let (major, info) = (first >> 5, first & 31);
        let len = match info {
            0..=23 => info as usize,
            24 => {
                *pos += 1;
                *b.get(*pos - 1)? as usize
            }
            25 => {
                *pos += 2;
                u16::from_be_bytes([*b.get(*pos - 2)?, *b.get(*pos - 1)?]) as usize
            }
            26 => {
                *pos += 4;
                u32::from_be_bytes(b.get(*pos - 4..*pos)?.try_into().ok()?) as usize
            }
            _ => return None,
        };
        Some((major, len))
    }
    fn text(b: &[u8], pos: &mut usize) -> Option<String> {
        let (major, len) = head(b, pos)?;
        if major != 3 {
            return None;
        }
        let s = String::from_utf8_lossy(b.get(*pos..*pos + len)?).into_owned();
        *pos += len;
        Some(s)
    }
    let mut pos = 0;
    let mut out = Vec::new();
    let Some((5, n)) = head(b, &mut pos) else {
        return out;
    };
    for _ in 0..n {
        let (Some(k), Some(v)) = (text(b, &mut pos), text(b, &mut pos)) else {
            break;
        };
        out.push((k, v));
    }
    out
}

impl Resp {
    pub fn none() -> Resp {
        Resp::default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The AWS error code: `<Code>` (XML shapes), `__type` (JSON shapes, and the CBOR map
    /// of rpc-v2-cbor).
    pub fn code(&self) -> String {
        if self.header("content-type") == Some("application/cbor") {
            return cbor_text_map(self.body_bytes.as_slice())
                .into_iter()
                .find(|(k, _)| k == "__type")
                .map(|(_, v)| v)
                .unwrap_or_default();
        }
        if let Some(rest) = self.body.split("<Code>").nth(1) {
            return rest.split("</Code>").next().unwrap_or("").to_string();
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.body) {
            if let Some(t) = v.get("__type").and_then(|t| t.as_str()) {
                return t.to_string();
            }
        }
        String::new()
    }

    pub fn message(&self) -> String {
        if let Some(rest) = self.body.split("<Message>").nth(1) {
            return rest.split("</Message>").next().unwrap_or("").to_string();
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&self.body) {
            if let Some(t) = v.get("message").and_then(|t| t.as_str()) {
                return t.to_string();
            }
        }
        String::new()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads up to `n` HTTP/1.1 responses; stops early at close, error or timeout.
pub async fn read_responses<S: tokio::io::AsyncRead + Unpin>(io: &mut S, n: usize) -> Vec<Resp> {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut eof = false;
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    // Reads more; false at EOF, error or timeout.
    async fn more<S: tokio::io::AsyncRead + Unpin>(
        io: &mut S,
        buf: &mut Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> bool {
        let mut chunk = [0u8; 16384];
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(k)) => {
                buf.extend_from_slice(&chunk[..k]);
                true
            }
            Err(_) => panic!("airlock did not answer within {IO_TIMEOUT:?} (a hang)"),
        }
    }
    while out.len() < n {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break Some(i);
            }
            if eof || !more(io, &mut buf, deadline).await {
                eof = true;
                if find(&buf, b"\r\n\r\n").is_none() {
                    break None;
                }
            }
        };
        let Some(head_end) = head_end else { break };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        if (100..200).contains(&status) {
            continue; // 100 Continue and friends
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body: Vec<u8> =
            if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
                while buf.len() < len {
                    if !more(io, &mut buf, deadline).await {
                        break;
                    }
                }
                let take = len.min(buf.len());
                buf.drain(..take).collect()
            } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                let mut body = Vec::new();
                loop {
                    let line_end = loop {
                        if let Some(i) = find(&buf, b"\r\n") {
                            break Some(i);
                        }
                        if !more(io, &mut buf, deadline).await {
                            break None;
                        }
                    };
                    let Some(line_end) = line_end else { break };
                    let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                    let size =
                        usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                            .unwrap_or(0);
                    buf.drain(..line_end + 2);
                    if size == 0 {
                        // Trailers, then the empty line.
                        loop {
                            if let Some(i) = find(&buf, b"\r\n") {
                                buf.drain(..i + 2);
                                if i == 0 {
                                    break;
                                }
                                continue;
                            }
                            if !more(io, &mut buf, deadline).await {
                                break;
                            }
                        }
                        break;
                    }
                    while buf.len() < size + 2 {
                        if !more(io, &mut buf, deadline).await {
                            break;
                        }
                    }
                    let take = size.min(buf.len());
                    body.extend(buf.drain(..take));
                    let crlf = 2.min(buf.len());
                    buf.drain(..crlf);
                }
                body
            } else if status == 204 || status == 304 {
                Vec::new()
            } else {
                // Until close.
                while more(io, &mut buf, deadline).await {}
                eof = true;
                std::mem::take(&mut buf)
            };
        out.push(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            body_bytes: body,
        });
    }
    out
}
