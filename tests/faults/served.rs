//! The real `airlock` binary under test: `init`, `keygen`, `agent add` and `approve` run as
//! a human would run them, and `serve` is started, stopped with SIGTERM, or killed with
//! SIGKILL at any moment, on the same state, as many times as a test likes.

use super::harness::{read_responses, Agent, Call, Resp};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub const BIN: &str = env!("CARGO_BIN_EXE_airlock");

/// How long `serve` may take to print its ready line or to exit.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Served {
    _dir: tempfile::TempDir,
    pub home: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
    approver_key: PathBuf,
    agent: Agent,
    /// `serve`'s stderr, appended to across restarts.
    log: PathBuf,
    child: Option<Child>,
    pub port: u16,
}

impl Served {
    /// A config (`[upstream] endpoint`, ports 0, nobody holding calls, `uses` per receipt),
    /// then `airlock init`, an approver's key trusted by the config, and one agent.
    pub fn new(endpoint: &str, uses: u32) -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_path_buf();
        let config = home.join("config/airlock.toml");
        std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
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
connect_timeout_secs = 2
response_timeout_secs = 10

[approval]
hold_seconds = 0
uses = {uses}

[notify]
desktop = false
"#
        );
        std::fs::write(&config, text).expect("write config");
        let mut served = Served {
            state: home.join("state"),
            approver_key: home.join("alice.key"),
            log: home.join("serve.log"),
            _dir: dir,
            home,
            config,
            agent: Agent {
                name: "agent-1".into(),
                key: String::new(),
                secret: String::new(),
            },
            child: None,
            port: 0,
        };
        served.cli_ok(&["init"]);
        let key = served.approver_key.display().to_string();
        let out = run(Command::new(BIN).args([
            "keygen",
            "--out",
            &key,
            "--name",
            "alice",
            // No terminal here: a plaintext key, as the flag says.
            "--insecure-plaintext-key",
        ]));
        assert!(out.status.success(), "keygen: {out:?}");
        let block = String::from_utf8_lossy(&out.stdout);
        let block: String = block
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut text = std::fs::read_to_string(&served.config).expect("config");
        text.push('\n');
        text.push_str(&block);
        std::fs::write(&served.config, text).expect("trust alice");
        let agent = served.cli_ok(&["agent", "add", "agent-1", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&agent).expect("agent add --json");
        served.agent.key = v["AWS_ACCESS_KEY_ID"].as_str().expect("key").to_string();
        served.agent.secret = v["AWS_SECRET_ACCESS_KEY"]
            .as_str()
            .expect("secret")
            .to_string();
        served
    }

    /// `airlock ARGS --config CONFIG`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let config = self.config.display().to_string();
        run(Command::new(BIN)
            .args(args)
            .args(["--config", &config])
            .current_dir(&self.home))
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "airlock {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `airlock serve` with only its own (fake) AWS credentials in its environment.
    fn spawn(&mut self) -> std::process::ChildStdout {
        assert!(self.child.is_none(), "serve is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .current_dir(&self.home)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("AWS_ACCESS_KEY_ID", "AKIAFAULTSREALKEY")
            .env("AWS_SECRET_ACCESS_KEY", "faults-real-secret")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent/airlock-faults/config")
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/airlock-faults/credentials",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn airlock serve");
        let stdout = child.stdout.take().expect("stdout");
        self.child = Some(child);
        stdout
    }

    /// Starts `serve` and waits for its ready line.
    pub fn start(&mut self) {
        let stdout = self.spawn();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("airlock listening proxy=https://") {
                        let addr = rest.split(' ').next().unwrap_or("");
                        self.port = addr
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.parse().ok())
                            .expect("port in the ready line");
                        return;
                    }
                }
                Err(_) => {
                    if let Some(status) = self.exited() {
                        panic!("serve exited with {status}:\n{}", self.log());
                    }
                    assert!(
                        Instant::now() < deadline,
                        "serve printed no ready line:\n{}",
                        self.log()
                    );
                }
            }
        }
    }

    /// Starts `serve` and waits for it to exit on its own (a start that must fail).
    pub fn start_expecting_exit(&mut self) -> ExitStatus {
        let _stdout = self.spawn();
        self.wait_exit(START_TIMEOUT)
            .unwrap_or_else(|| panic!("serve kept running:\n{}", self.log()))
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("serve is running").id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (to this process id only).
    pub fn terminate(&self) {
        let out = run(Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .env("PATH", std::env::var_os("PATH").unwrap_or_default()));
        assert!(out.status.success(), "kill -TERM: {out:?}");
    }

    /// Waits for `serve` to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything `serve` wrote to stderr so far (its log), across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log says `needle` (serve prints its ready line before it opens its
    /// state).
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the log never said {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The agent's keys, for calls signed anywhere (tasks of a test).
    pub fn agent(&self) -> Signer {
        Signer {
            host: format!("localhost:{}", self.port),
            agent: self.agent.clone(),
        }
    }

    /// A query-protocol POST of the agent, signed now.
    pub fn query(&self, service: &str, form: &str) -> Call {
        self.agent().query(service, form)
    }

    /// Sends a call on a fresh connection; `Resp::none()` when there was no (whole) answer
    /// head: airlock was not there, or died mid-call.
    pub async fn send(&self, call: &Call) -> Resp {
        send_to(self.port, &self.ca(), &call.sign().to_bytes()).await
    }

    pub fn ca(&self) -> Arc<rustls::ClientConfig> {
        let pem = std::fs::read(self.home.join("certs/ca.pem")).expect("ca.pem");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert: CertificateDer<'static> = cert.expect("ca cert");
            roots.add(cert).expect("add ca");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    /// `airlock approve ID --key alice.key`: the receipt id. Fails when the CLI does.
    pub fn approve(&self, approval_id: &str) -> Result<String, String> {
        let key = self.approver_key.display().to_string();
        let out = self.cli(&[
            "approve",
            approval_id,
            "--key",
            &key,
            "--insecure-plaintext-key",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
        }
        receipt_id_of(&stdout).ok_or(stdout)
    }

    /// The ledger's events, in order: (receipt id, event).
    pub fn ledger(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.state.join("ledger.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                (
                    v["receipt"].as_str().unwrap_or("").to_string(),
                    v["event"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// The audit log's records.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        audit_records(&self.state)
    }
}

/// The audit log's records, all segments, oldest first.
pub fn audit_records(state_dir: &std::path::Path) -> Vec<serde_json::Value> {
    let records = airlock::audit::last_records(state_dir, usize::MAX)
        .map(|(records, _)| records)
        .unwrap_or_default();
    records
        .iter()
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

/// What signs the agent's calls.
#[derive(Clone)]
pub struct Signer {
    host: String,
    agent: Agent,
}

impl Signer {
    /// A query-protocol POST with a form body.
    pub fn query(&self, service: &str, form: &str) -> Call {
        Call::new(&self.host, &self.agent, service, "POST", "/").form(form)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The receipt id in `airlock approve`'s output (`... (receipt ID, valid until ...)`).
fn receipt_id_of(stdout: &str) -> Option<String> {
    let rest = stdout.split("(receipt ").nth(1)?;
    Some(rest.split([',', ')']).next()?.to_string())
}

/// The approval id in a refusal's message (`airlock approve ID --key FILE`).
pub fn approval_id(r: &Resp) -> String {
    r.message()
        .split("airlock approve ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no approval id in {r:#?}"))
        .to_string()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run airlock")
}

/// Sends raw bytes over TLS to 127.0.0.1:`port` and reads one response.
pub async fn send_to(port: u16, tls: &Arc<rustls::ClientConfig>, bytes: &[u8]) -> Resp {
    let io = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let name = ServerName::try_from("localhost").ok()?;
        let mut tls = TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .ok()?;
        tls.write_all(bytes).await.ok()?;
        tls.flush().await.ok()?;
        read_responses(&mut tls, 1).await.into_iter().next()
    };
    io.await.unwrap_or_else(Resp::none)
}
