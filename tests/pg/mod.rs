//! A private PostgreSQL cluster for the tests that need a real database (`team_store`,
//! `team_plans`): made with `initdb` in a temporary directory, started with `pg_ctl` on a
//! free loopback port, stopped and removed on drop (as the `postgres` OS user when the tests
//! run as root: PostgreSQL refuses to run as root). Without PostgreSQL's binaries a test
//! says so and passes, unless `CI` is set: then it fails. Also: replicas (migrated stores
//! over pools of their own) and an airlock config naming the database.

#![allow(dead_code, clippy::expect_used)]

use airlock::secret::Secret;
use airlock::store::postgres::{self, PgStore};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

/// Where PostgreSQL's server binaries are: `PATH`, `/usr/local/bin`, then Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest first).
pub fn postgres_bin_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    candidates.push(PathBuf::from("/usr/local/bin"));
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .collect();
        versions.sort();
        versions.reverse();
        candidates.extend(versions);
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A private PostgreSQL cluster, stopped and removed on drop.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    /// None (with a note) when PostgreSQL is not installed and `CI` is not set.
    pub fn start() -> Option<Cluster> {
        let Some(bin) = postgres_bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and PostgreSQL's initdb/pg_ctl are not installed (apt-get install postgresql)"
            );
            eprintln!("SKIPPED: PostgreSQL's initdb/pg_ctl are not installed");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        if is_root() {
            let (uid, gid) = postgres_user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let out = run_as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                path_str(&data),
                "-U",
                "airlock",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        let port = free_port();
        let cluster = Cluster { bin, dir, port };
        cluster.pg_ctl_start();
        Some(cluster)
    }

    pub fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            path_str(self.dir.path())
        );
        let log = self.dir.path().join("postgres.log");
        let out = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.dir.path().join("data")),
                "-l",
                path_str(&log),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `pg_ctl stop` in `mode` (`fast`, or `immediate` at the end).
    pub fn pg_ctl_stop(&self, mode: &str) -> Output {
        run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                path_str(&self.dir.path().join("data")),
                "-m",
                mode,
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://airlock@127.0.0.1:{}/{database}", self.port)
    }

    /// A fresh database in the cluster.
    pub async fn database(&self, name: &str) -> String {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the cluster");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        self.url(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort: the directory is removed after, whatever happened.
        let _ = self.pg_ctl_stop("immediate");
    }
}

pub fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id");
        assert!(
            out.status.success(),
            "no `postgres` OS user (scripts/test creates it): {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root.
pub fn run_as_postgres(program: &Path, args: &[&str]) -> Output {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args).current_dir("/");
    command.output().expect("run a PostgreSQL binary")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A migrated store over its own pool: one replica's view of the database.
pub async fn replica(url: &str) -> Arc<PgStore> {
    let pool = postgres::pool(&Secret::new(url)).expect("pool");
    postgres::migrate(&pool).await.expect("migrate");
    Arc::new(PgStore::new(pool))
}

/// An airlock config (from `airlock init`) whose `[state] database_url` is `url`.
pub fn config_with_database(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("config/airlock.toml");
    airlock::init::init(&path).expect("init");
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replacen(
        "[state]\n",
        &format!("[state]\ndatabase_url = \"{url}\"\n"),
        1,
    );
    assert!(
        text.contains("database_url"),
        "no [state] section in the config"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

pub fn airlock(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("AIRLOCK_DATABASE_URL")
        .output()
        .expect("run airlock")
}

/// A replica that also listens for approvals decided on the others.
pub async fn listening_replica(url: &str) -> Arc<PgStore> {
    let pool = postgres::pool(&Secret::new(url)).expect("pool");
    postgres::migrate(&pool).await.expect("migrate");
    Arc::new(
        PgStore::new(pool)
            .listen(&Secret::new(url))
            .expect("listen"),
    )
}

/// An enrolled passkey of `name` with a fresh P-256 key, as the enrollment page stores it.
pub fn passkey_record(name: &str, credential: &[u8]) -> airlock::state::trust::PasskeyRecord {
    use base64::Engine as _;
    let signing = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let key = airlock::receipt::PasskeyKey::Es256(*signing.verifying_key());
    let public =
        airlock::receipt::PasskeyPublic::new(name, credential.to_vec(), key.clone(), "localhost")
            .expect("passkey");
    airlock::state::trust::PasskeyRecord {
        name: name.into(),
        key_id: public.key_id().as_str().into(),
        credential_id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential),
        public_key: key.encode(),
        rp_id: "localhost".into(),
        origin: "http://localhost:8444".into(),
        sign_count: 0,
        created_at: "2026-12-05T12:00:00Z".into(),
    }
}
