//! The PostgreSQL store: the state several replicas share, each rule enforced by the
//! database rather than by one process's memory.
//!
//! - **The single-use ledger** is one row per receipt (or plan entry) with its `committed`
//!   and `reserved` counts. A use is reserved by one upsert whose update applies only while
//!   `committed + reserved < allowed`; PostgreSQL locks the row and re-checks the condition
//!   for every concurrent writer, so N replicas reserving the last use at once get exactly
//!   one success. Each event is also a row of `airlock_ledger_events`, in the same
//!   transaction. A reservation is never given back by anything but `release`: a replica
//!   killed mid-call leaves its use reserved, so it counts as used (fail closed, as the
//!   file ledger does after a crash). Each event's transaction commits durably even where
//!   the database's `synchronous_commit` is `off`.
//! - **The audit chain** is `airlock_audit`, one row per record (`seq`, and the record's
//!   exact line, whose SHA-256 the next record names). Appends take a transaction-scoped
//!   advisory lock, read the last record and insert the new ones after it, so records from
//!   every replica form one chain. [`verify_audit`] streams it and names the first bad
//!   record. Concurrent calls' records are group-committed ([`group`]): one appender task
//!   per replica appends whatever is queued in one transaction, and each call is answered
//!   once the transaction holding its record has committed: durable at commit for
//!   durable records, flushed within 0.6 s for the others (the appender's own session has
//!   `synchronous_commit = off`; every other write keeps the database's setting).
//! - **Approvals** (the request path's, and [`Store::decide`] for a decision) are rows of
//!   `airlock_approvals`: the approval's JSON record, its `status` beside it, and a unique
//!   index on `binding_key` over the rows not closed, so a blocked call finds or opens its
//!   approval in one statement and identical calls on every replica attach to one row. A
//!   decision is announced at commit (`NOTIFY`, the approval's id as the payload);
//!   [`PgStore::listen`] keeps a connection on `LISTEN` that wakes the calls held on that
//!   approval alone (all of them after the connection is made again), and held calls
//!   also look again every [`RESOLVED_POLL`]. Receipts are rows of `airlock_receipts`.
//!   The page and the CLI list, read and decide approvals through the same rows.
//! - **Submitted Terraform plans** are rows of `airlock_plans` ([`plans`]): decided with the
//!   row locked, every change announced in its transaction, followed by each replica's plan
//!   index.
//! - **The schema is versioned** (`airlock_schema`): [`migrate`] applies what is missing in
//!   one transaction under an advisory lock (`serve` at its first contact with the
//!   database, `airlock db migrate`), and refuses a database whose schema is newer than
//!   this airlock knows; `serve`'s keeper reads the version again every second, so a
//!   replica whose schema a newer airlock migrated stops serving gated calls.
//! - **When the database cannot be reached or written** (`serve`'s store, [`PgStore::open`]):
//!   `serve` starts anyway; every step that needs the database fails closed (the gate
//!   answers 503), while audit records go to an on-disk [`spool`] and are appended to the
//!   chain in order, exactly once, when it is back (`airlock_audit_spools`).
//! - **Connections** come from a pool (deadpool) with bounded waits, so a database that is
//!   down answers with an error within seconds, never a hang: each has TCP keepalives and
//!   `TCP_USER_TIMEOUT` (a silent peer ends it within about 15 s), and asks the server for
//!   `statement_timeout` (`serve`'s pool), `lock_timeout` and
//!   `idle_in_transaction_session_timeout` ([`pool`]), so a stuck lock or a client gone
//!   mid-transaction fails the step rather than hang it. An audit batch waits at most
//!   [`AUDIT_APPEND_WAIT`] for the chain's lock (its connection's `lock_timeout`), then
//!   its records go to the spool ([`group`]). TLS is rustls with the
//!   system's roots, used as the URL's `sslmode` says (tokio-postgres's rules); a database
//!   on another host must be asked for with `sslmode=require`, never plaintext
//!   ([`refuse_plaintext_to_another_host`]).
//!
//! - **Agents, passkeys, enrollment links and the replicas' own keys** are in
//!   [`identities`]; the revocation lookups read them.

use super::waiters::Waiters;
mod group;
use group::NotAppended;
pub mod identities;
pub mod plans;
pub mod spool;

use super::{BlockedCall, SignStep, Store};
use crate::audit::{AuditError, Fields, Position, Verified};
use crate::receipt::TrustedKeys;
use crate::secret::Secret;
use crate::state::approvals::{Approval, ApprovalError, Status};
use crate::state::ledger::LedgerError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use futures_util::{pin_mut, StreamExt, TryStreamExt};
use spool::{Spool, SpoolFile};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The newest schema this airlock knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Each version's statements, in order: `MIGRATIONS[n - 1]` takes the schema to version n.
const MIGRATIONS: &[&str] = &[
    // 1: the ledger, its events, the audit chain.
    "CREATE TABLE airlock_ledger (
        key text PRIMARY KEY,
        committed bigint NOT NULL DEFAULT 0 CHECK (committed >= 0),
        reserved bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE airlock_ledger_events (
        id bigserial PRIMARY KEY,
        key text NOT NULL,
        event text NOT NULL CHECK (event IN ('reserve', 'commit', 'release')),
        at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE airlock_audit (
        seq bigint PRIMARY KEY CHECK (seq >= 0),
        record text NOT NULL
    );",
    // 2: approvals and their receipts. At most one open (not closed) approval per call
    // identity: the unique key replicas find or create a blocked call's approval on.
    "CREATE TABLE airlock_approvals (
        id text PRIMARY KEY,
        binding_key text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'closed')),
        record jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE UNIQUE INDEX airlock_approvals_open ON airlock_approvals (binding_key)
        WHERE status <> 'closed';
    CREATE TABLE airlock_receipts (
        id text PRIMARY KEY,
        receipt bytea NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now()
    );",
    // 3: how many lines of each replica's audit spool are in the chain, updated in the
    // transaction that appends them, so a replay after a crash appends none twice.
    "CREATE TABLE airlock_audit_spools (
        spool text PRIMARY KEY,
        drained bigint NOT NULL CHECK (drained >= 0),
        updated_at timestamptz NOT NULL DEFAULT now()
    );",
    // 4: submitted Terraform plans (`plans.rs`). Self-contained: it needs no table of a
    // later migration, so migrations can be renumbered around it.
    plans::MIGRATION,
    // 5: agents, passkeys, enrollment links, the replicas' own keys (`identities.rs`).
    identities::MIGRATION,
];

/// The channel a decided approval's id is announced on (`NOTIFY`, sent at commit).
const RESOLVED_CHANNEL: &str = "airlock_approval_resolved";

/// How often a held call looks at its approval when no notification wakes it (the
/// listening connection is down, or a notification was lost).
const RESOLVED_POLL: Duration = Duration::from_secs(2);

/// How long the listener waits before connecting again after its connection ended.
const LISTEN_RETRY: Duration = Duration::from_secs(2);

/// The advisory lock every audit append takes (transaction-scoped): one chain.
pub const AUDIT_LOCK: i64 = 0x6169_726c_6f63_6b01;
/// The advisory lock migrations take: two replicas starting at once migrate once.
const MIGRATE_LOCK: i64 = 0x6169_726c_6f63_6b02;

/// How long a caller waits for a connection, or for one to be made, before the step fails
/// (and the gate closes for it).
const POOL_WAIT: Duration = Duration::from_secs(5);

/// How long a batch of audit records for allowed calls may wait for the chain's lock before
/// its records go to the spool instead (the calls they record are answered only once they
/// are written): the `lock_timeout` of the appender's own connection ([`group`]).
const AUDIT_APPEND_WAIT: Duration = Duration::from_secs(2);

/// At most this many connections per process.
const POOL_SIZE: usize = 16;

/// How often `serve`'s store tries again to reach the database (the schema check, the
/// spool's draining) while it cannot.
const RETRY: Duration = Duration::from_secs(1);

/// How often, at most, the log repeats that the database still cannot be reached.
const COMPLAIN_EVERY: Duration = Duration::from_secs(30);

/// Spooled records appended per transaction while draining.
const DRAIN_BATCH: usize = 500;

/// Why a step fails before the schema was checked.
const NOT_READY: &str = "PostgreSQL has not been reached since airlock started (its schema is not checked yet): refusing (fail closed)";

/// The connection pool for `url`, as `serve` and the short commands use it: every statement
/// bounded ([`STATEMENT_TIMEOUT`], besides the bounds of [`bulk_pool`]). Nothing is
/// connected until first use, so `serve` can start while the database is down.
pub fn pool(url: &Secret) -> Result<Pool, String> {
    pool_with(url, Some(STATEMENT_TIMEOUT))
}

/// A pool for the commands that read or write the whole state in long statements (`airlock
/// db import`/`export`, `audit verify` streaming the chain): no statement timeout, every
/// other bound of [`pool`].
pub fn bulk_pool(url: &Secret) -> Result<Pool, String> {
    pool_with(url, None)
}

fn pool_with(url: &Secret, statement_timeout: Option<Duration>) -> Result<Pool, String> {
    let manager = Manager::from_config(
        pooled_config(url, statement_timeout)?,
        tls()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .recycle_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|e| format!("cannot make the PostgreSQL connection pool: {e}"))
}

/// How long the server lets a statement of [`pool`] run before it cancels it (`serve`'s
/// statements touch a row, or append a batch of [`DRAIN_BATCH`] records).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the server lets a pooled connection wait for a lock (a row, or an advisory
/// lock such as the audit chain's) before the statement fails: a lock held by a stuck
/// client fails the step, and the gate closes for it, rather than hang the call.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server lets a pooled connection's transaction sit idle before it ends the
/// session, releasing its locks: airlock's transactions never wait on anything but the
/// database, so only a client that stopped (or lost its network) leaves one idle.
const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// [`connect_config`] for a pooled connection: TCP keepalives and `TCP_USER_TIMEOUT` as a
/// listening connection has them ([`keep_alive`]), so a statement on a connection whose
/// peer went silent fails within seconds; and the server's own bounds, sent as startup
/// options (`-c name=value`) before the URL's `options`, which win when they set the same.
fn pooled_config(
    url: &Secret,
    statement_timeout: Option<Duration>,
) -> Result<tokio_postgres::Config, String> {
    let mut pg = keep_alive(connect_config(url)?);
    let ms = |d: Duration| d.as_millis();
    let mut options = format!(
        "-c lock_timeout={} -c idle_in_transaction_session_timeout={}",
        ms(LOCK_TIMEOUT),
        ms(IDLE_IN_TRANSACTION_TIMEOUT)
    );
    if let Some(limit) = statement_timeout {
        options = format!("-c statement_timeout={} {options}", ms(limit));
    }
    if let Some(own) = pg.get_options() {
        options = format!("{options} {own}");
    }
    pg.options(&options);
    Ok(pg)
}

/// How to connect to `url` (a connect timeout and airlock's application name unless the
/// URL sets them), refused when it could reach another host without TLS
/// ([`refuse_plaintext_to_another_host`]). The error never holds the URL.
fn connect_config(url: &Secret) -> Result<tokio_postgres::Config, String> {
    let mut pg: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|e| format!("[state] database_url is not a PostgreSQL URL: {e}"))?;
    refuse_plaintext_to_another_host(&pg)?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(POOL_WAIT);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("airlock");
    }
    Ok(pg)
}

/// Is this TCP host this host: `localhost`, or a loopback address (127.0.0.0/8, `::1`,
/// and 127.x as an IPv4-mapped IPv6 address)?
fn is_loopback(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A database on another host is reached only over TLS: `sslmode=require` (the server's
/// certificate is then verified against the system's roots, by rustls, with the URL's host
/// name). `disable` would send everything in plaintext, and `prefer` (tokio-postgres's
/// default) falls back to plaintext whenever the server — or anyone on the way — answers
/// that it has no TLS. Each target is judged where the connection goes: its `hostaddr`
/// when the URL gives one, else its host. Plaintext stays allowed to this host alone.
fn refuse_plaintext_to_another_host(pg: &tokio_postgres::Config) -> Result<(), String> {
    use tokio_postgres::config::{Host, SslMode};
    if pg.get_ssl_mode() == SslMode::Require {
        return Ok(());
    }
    let (hosts, addrs) = (pg.get_hosts(), pg.get_hostaddrs());
    let remote = (0..hosts.len().max(addrs.len())).find_map(|i| {
        let name = match (addrs.get(i), hosts.get(i)) {
            (Some(ip), _) => ip.to_string(),
            (None, Some(Host::Tcp(name))) => name.clone(),
            // A Unix socket: this host.
            (None, _) => return None,
        };
        (!is_loopback(&name)).then_some(name)
    });
    match remote {
        None => Ok(()),
        Some(host) => Err(format!(
            "[state] database_url (or AIRLOCK_DATABASE_URL): the database is on another host ({host}) and the URL lets the connection go without TLS (sslmode {}): add `?sslmode=require` to the URL (`&sslmode=require` after other parameters); the server's certificate is then verified against the system's roots. Plaintext is allowed only to this host (localhost, 127.0.0.0/8, ::1, a Unix socket)",
            match pg.get_ssl_mode() {
                SslMode::Disable => "disable",
                _ => "prefer, which falls back to plaintext",
            }
        )),
    }
}

/// How long a connection may be idle before its first TCP keepalive probe, the time between
/// probes, and how many unanswered probes end it.
const KEEPALIVE: (Duration, Duration, u32) = (Duration::from_secs(5), Duration::from_secs(2), 3);

/// How long data sent on a connection may stay unacknowledged before it is given up
/// (`TCP_USER_TIMEOUT`, Linux; it also bounds the keepalive probes there).
const USER_TIMEOUT: Duration = Duration::from_secs(15);

/// TCP keepalives and `TCP_USER_TIMEOUT` on `pg` (over the URL's): without them a peer gone
/// silently (a dropped route, a crashed host) would leave a connection waiting for hours
/// (the system default is 2 h before the first probe), a listening one for notifications,
/// a pooled one for a statement's answer. With them, such a connection ends within about
/// [`USER_TIMEOUT`] (made again when listening; the step fails closed when pooled).
fn keep_alive(mut pg: tokio_postgres::Config) -> tokio_postgres::Config {
    let (idle, interval, retries) = KEEPALIVE;
    pg.keepalives(true)
        .keepalives_idle(idle)
        .keepalives_interval(interval)
        .keepalives_retries(retries)
        .tcp_user_timeout(USER_TIMEOUT);
    pg
}

/// [`connect_config`] for a connection that waits on `LISTEN`: it sends nothing for long
/// stretches, so it needs [`keep_alive`] most of all.
fn listen_config(url: &Secret) -> Result<tokio_postgres::Config, String> {
    Ok(keep_alive(connect_config(url)?))
}

/// rustls with the system's roots (`SSL_CERT_FILE` counts), for URLs whose `sslmode` asks
/// for TLS.
fn tls() -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A certificate the system store holds but rustls cannot use is skipped.
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS for PostgreSQL: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// What a database error is called in logs and errors: never the URL.
pub(crate) fn db_error(e: impl std::fmt::Display) -> String {
    format!("PostgreSQL: {e}")
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction (nothing changes if any step
/// fails), under an advisory lock. A schema newer than this airlock knows is refused: an
/// older airlock must not write to tables whose rules it does not know.
pub async fn migrate(pool: &Pool) -> Result<Migrated, String> {
    let mut client = pool.get().await.map_err(db_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(db_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS airlock_schema (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            version integer NOT NULL
        )",
    )
    .await
    .map_err(db_error)?;
    let from: i32 = tx
        .query_opt("SELECT version FROM airlock_schema", &[])
        .await
        .map_err(db_error)?
        .map_or(0, |row| row.get(0));
    refuse_newer(from)?;
    for (index, statements) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        tx.batch_execute(statements)
            .await
            .map_err(|e| db_error(format!("migration to version {}: {e}", index + 1)))?;
    }
    tx.execute(
        "INSERT INTO airlock_schema (version) VALUES ($1)
         ON CONFLICT (only_row) DO UPDATE SET version = EXCLUDED.version",
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(Migrated {
        from,
        to: SCHEMA_VERSION,
    })
}

/// What the refusal of a newer schema says (and how the keeper tells it from an outage).
const NEWER: &str = "newer than this airlock knows";

fn refuse_newer(version: i32) -> Result<(), String> {
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the database's schema is version {version}, {NEWER} ({SCHEMA_VERSION}); upgrade airlock (it refuses to write to a schema whose rules it does not know)"
        ));
    }
    Ok(())
}

/// The schema's version in the database (0: never migrated).
async fn schema_version(pool: &Pool) -> Result<i32, String> {
    let client = pool.get().await.map_err(db_error)?;
    let found = client
        .query_opt("SELECT version FROM airlock_schema", &[])
        .await;
    match found {
        Ok(row) => Ok(row.map_or(0, |r| r.get(0))),
        // No schema table at all: never migrated.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(0),
        Err(e) => Err(db_error(e)),
    }
}

/// The schema's version as found, refused unless it is exactly [`SCHEMA_VERSION`]: for
/// commands that read without migrating (`airlock audit verify`).
pub async fn check_schema(pool: &Pool) -> Result<(), String> {
    let version = schema_version(pool).await?;
    refuse_newer(version)?;
    if version < SCHEMA_VERSION {
        return Err(format!(
            "the database's schema is version {version}; run `airlock db migrate` (this airlock needs {SCHEMA_VERSION})"
        ));
    }
    Ok(())
}

/// The ledger, the audit chain and the request path's approvals in PostgreSQL.
pub struct PgStore {
    pool: Pool,
    /// The schema was found at [`SCHEMA_VERSION`] (or migrated to it): until then every
    /// step fails closed, so nothing is written to tables whose rules are not known.
    ready: Arc<AtomicBool>,
    /// The last audit append to the database failed.
    audit_failing: Arc<AtomicBool>,
    /// Where audit records wait while the database cannot take them (`serve`'s store).
    spool: Option<Arc<Spool>>,
    /// The group-commit appender, started at the first append (it needs a runtime).
    appender: std::sync::OnceLock<group::Appender>,
    /// The task that checks the schema on first contact and drains the spool.
    keeper: Option<tokio::task::AbortHandle>,
    /// The calls held on approvals, woken when theirs is decided (here, or on another
    /// replica: `NOTIFY` names it).
    waiters: Arc<Waiters>,
    /// The task that listens for other replicas' decisions, ended with the store.
    listener: Option<tokio::task::AbortHandle>,
    /// Agents, passkeys, enrollments and the replicas' keys.
    identities: super::identities::Identities,
    /// The config's `[[approver]]` keys ([`Self::with_approvers`]); `None`: receipts are
    /// refused (fail closed) rather than checked without them.
    approvers: Option<Vec<crate::receipt::ApproverPublic>>,
    /// `serve`'s store: the lock on its state dir's spool ([`spool::lock`]), released when
    /// the store is dropped.
    state_lock: Option<std::fs::File>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for task in [&self.listener, &self.keeper].into_iter().flatten() {
            task.abort();
        }
    }
}

fn ledger_error(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Io(
        "the ledger in PostgreSQL".into(),
        std::io::Error::other(e.to_string()),
    )
}

fn approval_error(e: impl std::fmt::Display) -> ApprovalError {
    ApprovalError::Io(
        "the approvals in PostgreSQL".into(),
        std::io::Error::other(e.to_string()),
    )
}

/// An approval as its row holds it.
pub(crate) fn from_record(record: String) -> Result<Approval, ApprovalError> {
    serde_json::from_str(&record)
        .map_err(|e| ApprovalError::Corrupt("an approval in PostgreSQL".into(), e))
}

pub(crate) fn to_record(a: &Approval) -> Result<String, ApprovalError> {
    serde_json::to_string(a)
        .map_err(|e| ApprovalError::Corrupt("an approval for PostgreSQL".into(), e))
}

/// The name the `status` column and the record give `status`.
pub(crate) fn status_name(status: Status) -> Result<String, ApprovalError> {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        Ok(other) => Err(ApprovalError::Refused(format!(
            "an approval status serialized as {other}"
        ))),
        Err(e) => Err(ApprovalError::Corrupt("an approval status".into(), e)),
    }
}

/// Writes `a` over its row (record and status together).
async fn update_approval(
    client: &impl tokio_postgres::GenericClient,
    a: &Approval,
) -> Result<(), ApprovalError> {
    let changed = client
        .execute(
            "UPDATE airlock_approvals SET record = $2::text::jsonb, status = $3, updated_at = now()
             WHERE id = $1",
            &[&a.id, &to_record(a)?, &status_name(a.status)?],
        )
        .await
        .map_err(approval_error)?;
    if changed == 0 {
        return Err(ApprovalError::NotFound(a.id.clone()));
    }
    Ok(())
}

/// One approval by id; with `lock`, its row locked until the transaction ends.
async fn approval_in(
    client: &impl tokio_postgres::GenericClient,
    id: &str,
    lock: bool,
) -> Result<Approval, ApprovalError> {
    let query = if lock {
        "SELECT record::text FROM airlock_approvals WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT record::text FROM airlock_approvals WHERE id = $1"
    };
    let row = client
        .query_opt(query, &[&id])
        .await
        .map_err(approval_error)?
        .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
    from_record(row.get(0))
}

/// A stored receipt's bytes.
async fn receipt_in(
    client: &impl tokio_postgres::GenericClient,
    receipt_id: &str,
) -> Result<Vec<u8>, ApprovalError> {
    let row = client
        .query_opt(
            "SELECT receipt FROM airlock_receipts WHERE id = $1",
            &[&receipt_id],
        )
        .await
        .map_err(approval_error)?
        .ok_or_else(|| ApprovalError::NotFound(format!("receipt {receipt_id}")))?;
    Ok(row.get(0))
}

/// Listens on `channel` until the connection ends. `heard` is called with `None` once the
/// `LISTEN` is in place (whatever was announced while nobody listened is to be looked at
/// now), and with each notification's payload (for approvals, the decided approval's id;
/// for plans, the changed plan's; for agents, nothing the follower reads).
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    channel: &str,
    heard: &(dyn Fn(Option<&str>) + Sync),
) -> Result<(), String> {
    let (client, mut connection) = config.connect(tls).await.map_err(db_error)?;
    let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    pin_mut!(messages);
    let statement = format!("LISTEN {channel}");
    let listen = client.batch_execute(&statement);
    pin_mut!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => {
                done.map_err(db_error)?;
                listening = true;
                heard(None);
            }
            message = messages.next() => match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => heard(Some(n.payload())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(db_error(e)),
                None => return Err("PostgreSQL closed the listening connection".into()),
            },
        }
    }
}

impl PgStore {
    /// A store over `pool`, whose schema the caller has migrated or checked.
    /// Held calls learn of decisions made elsewhere only by polling until [`Self::listen`].
    /// Without a spool, an audit record the database cannot take is lost (and logged);
    /// `serve` uses [`Self::open`].
    pub fn new(pool: Pool) -> PgStore {
        PgStore {
            ready: Arc::new(AtomicBool::new(true)),
            audit_failing: Arc::new(AtomicBool::new(false)),
            spool: None,
            appender: std::sync::OnceLock::new(),
            keeper: None,
            waiters: Arc::new(Waiters::default()),
            listener: None,
            identities: super::identities::Identities::Postgres(identities::PgIdentities::new(
                pool.clone(),
            )),
            pool,
            approvers: None,
            state_lock: None,
        }
    }

    /// `serve`'s store: made without reaching the database, so `serve` starts while it is
    /// down. A task of its own migrates the schema at the first successful contact
    /// (retried every second; every step fails closed until then), then drains the audit
    /// spool in `state_dir` (records left by an earlier run first, then this run's
    /// `serve_started`) and syncs it every second. It says in the log when the database
    /// cannot be reached and when it is back. The spool is this store's alone: another
    /// store (another `serve`) holding `state_dir`'s lock is refused ([`spool::lock`]).
    /// Needs a Tokio runtime.
    pub fn open(url: &Secret, state_dir: &std::path::Path) -> Result<PgStore, String> {
        // Before the spool is touched: another process's torn-looking last line is its
        // record being written.
        let state_lock = spool::lock(state_dir)?;
        let spool = Arc::new(Spool::open(state_dir)?);
        tracing::info!("the shared state is in PostgreSQL; reaching it in the background (calls that need a receipt are refused until it is reached)");
        if spool.waiting() {
            tracing::warn!(spool = %spool.dir().display(), "audit records from an earlier run wait in the spool: they are appended to the chain in PostgreSQL before any new one");
        }
        // Each start is a record, as with the file log: spooled, so it is the first of
        // this run to reach the chain.
        spool.append(&crate::audit::serve_started().into(), false)?;
        let mut store = PgStore::new(pool(url)?);
        store.ready.store(false, Ordering::SeqCst);
        let keeper = Keeper {
            pool: store.pool.clone(),
            spool: Arc::clone(&spool),
            ready: Arc::clone(&store.ready),
            audit_failing: Arc::clone(&store.audit_failing),
        };
        store.keeper = Some(tokio::spawn(keeper.run()).abort_handle());
        store.spool = Some(spool);
        store.state_lock = Some(state_lock);
        Ok(store)
    }

    /// A connection, once the schema is known to be this airlock's.
    async fn connection(&self) -> Result<deadpool_postgres::Object, String> {
        if !self.ready.load(Ordering::SeqCst) {
            return Err(NOT_READY.into());
        }
        self.pool.get().await.map_err(db_error)
    }

    /// The config's `[[approver]]` keys, trusted beside the passkeys and replicas' keys kept
    /// in the database.
    pub fn with_approvers(mut self, approvers: Vec<crate::receipt::ApproverPublic>) -> PgStore {
        self.approvers = Some(approvers);
        self
    }

    /// Listens on a connection of its own for approvals decided by any replica, so a held
    /// call goes on within moments of the decision (without it, within [`RESOLVED_POLL`]).
    /// The connection is made again when it ends. Needs a Tokio runtime.
    pub fn listen(mut self, url: &Secret) -> Result<PgStore, String> {
        let config = listen_config(url)?;
        let tls = tls()?;
        let waiters = Arc::clone(&self.waiters);
        let task = tokio::spawn(async move {
            // Said at most every COMPLAIN_EVERY while the database stays away.
            let mut said: Option<Instant> = None;
            loop {
                let heard = |payload: Option<&str>| match payload {
                    // A decision made while nobody listened is seen now.
                    None => waiters.wake_all(),
                    Some(id) => waiters.wake(id),
                };
                if let Err(e) = listen_once(&config, tls.clone(), RESOLVED_CHANNEL, &heard).await {
                    if said.is_none_or(|t| t.elapsed() >= COMPLAIN_EVERY) {
                        tracing::warn!(error = %e, "not listening for approvals decided on other replicas; held calls poll until the connection is back");
                        said = Some(Instant::now());
                    }
                }
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        });
        self.listener = Some(task.abort_handle());
        Ok(self)
    }

    /// One approval by id.
    pub async fn approval(&self, id: &str) -> Result<Approval, ApprovalError> {
        let client = self.connection().await.map_err(approval_error)?;
        approval_in(&**client, id, false).await
    }

    /// The pool, for commands and tests.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// How many times a decision (or a listening connection made again) woke calls held
    /// on this replica: a decision on an approval nobody here waits on wakes none.
    pub fn wakeups(&self) -> u64 {
        self.waiters.wakeups()
    }

    /// One ledger event in one transaction: `change` (an update or upsert of the key's row,
    /// returning a row when it applied) and the event row. `Ok(false)`: the row did not
    /// change (a use asked for when none is left).
    async fn ledger_event(
        &self,
        key: &str,
        event: &str,
        change: &str,
        allowed: Option<i64>,
    ) -> Result<bool, LedgerError> {
        let mut client = self.connection().await.map_err(ledger_error)?;
        let tx = client.transaction().await.map_err(ledger_error)?;
        // A use must survive a crash of the database once a call was let through on it.
        durable_commit(&tx).await.map_err(ledger_error)?;
        let changed = match allowed {
            Some(allowed) => tx.query_opt(change, &[&key, &allowed]).await,
            None => tx.query_opt(change, &[&key]).await,
        }
        .map_err(ledger_error)?
        .is_some();
        if !changed {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO airlock_ledger_events (key, event) VALUES ($1, $2)",
            &[&key, &event],
        )
        .await
        .map_err(ledger_error)?;
        tx.commit().await.map_err(ledger_error)?;
        Ok(true)
    }

    /// Appends records after the chain's last one, under the advisory lock.
    pub async fn append_audit(&self, records: &[Fields]) -> Result<(), String> {
        let mut client = self.connection().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        append_in(&tx, records).await?;
        tx.commit().await.map_err(db_error)
    }

    /// One record, to the database unless records wait in the spool (then behind them),
    /// and to the spool when the database cannot take it.
    async fn append_one(&self, record: Fields, durable: bool) -> bool {
        let Some(spool) = &self.spool else {
            return self.append_direct(record, durable).await.is_ok();
        };
        let record = if !spool.waiting() && self.ready.load(Ordering::SeqCst) {
            match self.append_direct(record, durable).await {
                Ok(()) | Err(NotAppended::Spooled) => return true,
                Err(NotAppended::Back(record)) => record,
                Err(NotAppended::Lost) => return false,
            }
        } else {
            record
        };
        let first = !spool.waiting();
        match spool.append(&record, durable) {
            Ok(()) => {
                if first {
                    tracing::warn!(spool = %spool.dir().display(), "PostgreSQL cannot take audit records now: they are kept in the spool and appended to the chain, in order, once it can; calls that need a receipt are refused (503) until then");
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "an audit record could not be written to PostgreSQL nor to the spool: it is lost");
                false
            }
        }
    }

    /// Appends one record to the database, grouped with concurrent ones ([`group`]); says
    /// when appending starts or stops failing, and what became of a record not appended.
    async fn append_direct(&self, record: Fields, durable: bool) -> Result<(), NotAppended> {
        let appender = self.appender.get_or_init(|| {
            group::Appender::start(
                self.pool.clone(),
                Arc::clone(&self.ready),
                self.spool.clone(),
            )
        });
        let result = appender.append(record, durable).await;
        let ok = result.is_ok();
        let was_failing = self.audit_failing.swap(!ok, Ordering::SeqCst);
        match result {
            Ok(()) => {
                if was_failing {
                    tracing::warn!("the audit chain in PostgreSQL can be written again; calls that need a receipt are served again");
                }
                Ok(())
            }
            Err((e, record)) => {
                if matches!(record, NotAppended::Lost) {
                    tracing::error!(error = %e, "an audit record could not be written to PostgreSQL: it is lost");
                } else if was_failing {
                    tracing::debug!(error = %e, "could not append an audit record to PostgreSQL");
                } else {
                    tracing::error!(error = %e, "could not append an audit record to PostgreSQL: calls that need a receipt are refused (fail closed) until it can");
                }
                Err(record)
            }
        }
    }
}

/// Makes `tx`'s commit wait for its WAL to be on disk when the database's
/// `synchronous_commit` is `off` (a setting an operator may choose for throughput): a
/// receipt's use and its record are durable before the call is answered, as in the file
/// store. Never weaker than the database's own setting: only `off` is raised.
pub(super) async fn durable_commit(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), String> {
    let raise = tx
        .prepare_cached(
            "SELECT set_config('synchronous_commit', 'on', true)
             WHERE current_setting('synchronous_commit') = 'off'",
        )
        .await
        .map_err(db_error)?;
    tx.execute(&raise, &[]).await.map_err(db_error)?;
    Ok(())
}

/// Appends records after the chain's last one, in `tx`, under the advisory lock (held to
/// the end of `tx`). The statements are prepared once per connection, and the lock and the
/// read of the last record go out together (the server runs them in order, so the read
/// sees the chain as the lock left it).
/// Returns where the chain ends after them.
async fn append_in(
    tx: &deadpool_postgres::Transaction<'_>,
    records: &[Fields],
) -> Result<Position, String> {
    let (lock, last, insert) = futures_util::future::try_join3(
        tx.prepare_cached("SELECT pg_advisory_xact_lock($1)"),
        tx.prepare_cached("SELECT record FROM airlock_audit ORDER BY seq DESC LIMIT 1"),
        tx.prepare_cached(INSERT_CHAIN_ROWS),
    )
    .await
    .map_err(db_error)?;
    let (_, last) =
        futures_util::future::try_join(tx.execute(&lock, &[&AUDIT_LOCK]), tx.query_opt(&last, &[]))
            .await
            .map_err(db_error)?;
    let position = match last {
        None => Position::genesis(),
        Some(row) => {
            let line: String = row.get(0);
            Position::after(line.as_bytes()).map_err(|e| e.to_string())?
        }
    };
    let rows = ChainRows::after(position, records)?;
    tx.execute(&insert, &[&rows.seqs, &rows.lines()])
        .await
        .map_err(db_error)?;
    Ok(rows.end)
}

/// Records linked after a position, as the rows that store them.
pub(super) struct ChainRows {
    pub seqs: Vec<i64>,
    text: String,
    /// Where the chain ends after them.
    pub end: Position,
}

impl ChainRows {
    pub fn after(position: Position, records: &[Fields]) -> Result<ChainRows, String> {
        let first_seq = position.next_seq;
        let mut out = Vec::new();
        let end = crate::audit::link(position, records, &mut out);
        let text = String::from_utf8(out).map_err(|e| e.to_string())?;
        let seqs = (0..records.len())
            .map(|i| i64::try_from(first_seq + i as u64).unwrap_or(i64::MAX))
            .collect();
        Ok(ChainRows { seqs, text, end })
    }

    pub fn lines(&self) -> Vec<&str> {
        self.text.lines().collect()
    }
}

const INSERT_CHAIN_ROWS: &str = "INSERT INTO airlock_audit (seq, record)
     SELECT * FROM unnest($1::bigint[], $2::text[])";

/// Stores records of the chain as they are, each at its `seq`.
pub(crate) async fn insert_chain_rows(
    client: &impl tokio_postgres::GenericClient,
    seqs: &[i64],
    lines: &[&str],
) -> Result<(), String> {
    client
        .execute(INSERT_CHAIN_ROWS, &[&seqs, &lines])
        .await
        .map_err(db_error)?;
    Ok(())
}

/// `serve`'s store's background work: the schema check on first contact, the spool's
/// draining, its `fdatasync` every second.
struct Keeper {
    pool: Pool,
    spool: Arc<Spool>,
    ready: Arc<AtomicBool>,
    audit_failing: Arc<AtomicBool>,
}

impl Keeper {
    async fn run(self) {
        let mut unreachable: Option<Instant> = None;
        let mut complained: Option<Instant> = None;
        loop {
            match self.step().await {
                Ok(()) => {
                    if let Some(since) = unreachable.take() {
                        tracing::warn!(down_for = ?since.elapsed(), "PostgreSQL can be reached again; calls that need a receipt are served again");
                    }
                    complained = None;
                }
                Err(e) => {
                    let now = Instant::now();
                    let since = *unreachable.get_or_insert(now);
                    if complained.is_none() && e.contains(NEWER) {
                        tracing::error!(error = %e, spool = %self.spool.dir().display(), "PostgreSQL's schema is newer than this airlock knows (a newer airlock migrated it): calls that need a receipt are refused (503) until this replica is upgraded; allowed calls are still served, their audit records kept in the spool");
                        complained = Some(now);
                    } else if complained.is_none() {
                        tracing::error!(error = %e, spool = %self.spool.dir().display(), "PostgreSQL cannot be reached or used: calls that need a receipt are refused (503) until it can; allowed calls are still served, their audit records kept in the spool and appended to the chain once it is back");
                        complained = Some(now);
                    } else if complained.is_some_and(|t| now.duration_since(t) >= COMPLAIN_EVERY) {
                        tracing::error!(error = %e, down_for = ?since.elapsed(), "PostgreSQL still cannot be reached or used; calls that need a receipt are refused (503)");
                        complained = Some(now);
                    }
                }
            }
            if let Err(e) = self.spool.sync() {
                tracing::error!(error = %e, "could not sync the audit spool");
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// The schema checked (migrated at first contact, its version read again on every
    /// later tick), then every waiting record appended. A schema that became newer than
    /// this airlock knows (a newer replica migrated it) closes the gate again: every step
    /// fails closed, as before first contact, until this airlock is upgraded.
    async fn step(&self) -> Result<(), String> {
        if self.ready.load(Ordering::SeqCst) {
            if let Err(e) = schema_version(&self.pool).await.and_then(refuse_newer) {
                if e.contains(NEWER) {
                    self.ready.store(false, Ordering::SeqCst);
                }
                return Err(e);
            }
        }
        if !self.ready.load(Ordering::SeqCst) {
            let migrated = migrate(&self.pool).await?;
            tracing::info!(
                from = migrated.from,
                to = migrated.to,
                "PostgreSQL reached; its schema is this airlock's"
            );
            self.ready.store(true, Ordering::SeqCst);
        }
        let mut appended = 0usize;
        while let Some(file) = self.spool.oldest()? {
            appended += drain(&self.pool, &file).await?;
            // Not removed when a record was added meanwhile: read again.
            self.spool.remove_drained(&file)?;
        }
        if appended > 0 {
            self.audit_failing.store(false, Ordering::SeqCst);
            tracing::warn!(
                records = appended,
                "the audit records kept in the spool are in the chain in PostgreSQL now"
            );
        }
        Ok(())
    }
}

/// Appends the lines of a spool file not yet in the chain, in order, a batch per
/// transaction; each transaction also counts them in `airlock_audit_spools`, so a replay
/// after a crash skips what is already in. Each commit is durable whatever the database's
/// `synchronous_commit` ([`durable_commit`]): the spool file is removed once drained, so
/// the database's copy must be on disk first. Returns how many were appended now.
async fn drain(pool: &Pool, file: &SpoolFile) -> Result<usize, String> {
    let mut appended = 0;
    loop {
        let mut client = pool.get().await.map_err(db_error)?;
        let tx = client.transaction().await.map_err(db_error)?;
        durable_commit(&tx).await?;
        // The chain's lock first: the count read here cannot change before commit.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .await
            .map_err(db_error)?;
        let done: i64 = tx
            .query_opt(
                "SELECT drained FROM airlock_audit_spools WHERE spool = $1",
                &[&file.id],
            )
            .await
            .map_err(db_error)?
            .map_or(0, |row| row.get(0));
        let done = usize::try_from(done).unwrap_or(usize::MAX);
        if done >= file.lines.len() {
            return Ok(appended);
        }
        let batch = &file.lines[done..file.lines.len().min(done + DRAIN_BATCH)];
        let records: Vec<Fields> = batch
            .iter()
            .enumerate()
            .map(|(i, line)| spooled_record(file, done + i, line))
            .collect();
        append_in(&tx, &records).await?;
        let drained = i64::try_from(done + batch.len()).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO airlock_audit_spools (spool, drained) VALUES ($1, $2)
             ON CONFLICT (spool) DO UPDATE SET drained = EXCLUDED.drained, updated_at = now()",
            &[&file.id, &drained],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        appended += batch.len();
    }
}

/// A spooled line as the record it was; a line that is not one (a damaged disk) becomes
/// a record saying so, so the chain shows the loss rather than stopping at it.
fn spooled_record(file: &SpoolFile, index: usize, line: &[u8]) -> Fields {
    Fields::from_bytes(line.to_vec()).unwrap_or_else(|e| {
        tracing::error!(spool = %file.id, line = index + 1, error = %e, "a line of the audit spool is not a record; the chain records its loss");
        let mut lost = crate::audit::record("audit_spool_line_unreadable");
        lost.insert("spool".into(), serde_json::json!(file.id));
        lost.insert("line".into(), serde_json::json!(index + 1));
        lost.into()
    })
}

/// Checks the chain in the database from its first record, streamed in `seq` order; the
/// error names the first bad record by its `seq`.
pub async fn verify_audit(pool: &Pool) -> Result<Verified, AuditError> {
    let io = |e: String| {
        AuditError::Io(
            "the audit chain in PostgreSQL".into(),
            std::io::Error::other(e),
        )
    };
    let client = pool.get().await.map_err(|e| io(db_error(e)))?;
    let rows = client
        .query_raw(
            "SELECT seq, record FROM airlock_audit ORDER BY seq",
            std::iter::empty::<&dyn tokio_postgres::types::ToSql>(),
        )
        .await
        .map_err(|e| io(db_error(e)))?;
    pin_mut!(rows);
    // The chain starts at the genesis hash or, for a file log imported after retention
    // removed its oldest segments, where a retention record in it says the kept chain
    // starts (as `audit verify` of the files has it).
    let mut expected: Option<Position> = None;
    let mut start: Option<(u64, String)> = None;
    let mut start_named = false;
    let mut records = 0u64;
    while let Some(row) = rows.try_next().await.map_err(|e| io(db_error(e)))? {
        let row_seq: i64 = row.get(0);
        let line: String = row.get(1);
        let broken = |reason: String| AuditError::Broken {
            segment: String::new(),
            line: 0,
            seq: u64::try_from(row_seq).unwrap_or(0),
            reason,
        };
        let linked =
            crate::audit::check_link(expected.as_ref(), line.as_bytes()).map_err(broken)?;
        let start = start.get_or_insert_with(|| (linked.seq, linked.prev.clone()));
        if linked.record.get("event").and_then(|e| e.as_str())
            == Some(crate::audit::RETENTION_EVENT)
        {
            let named = (
                linked.record.get("kept_from_seq").and_then(|v| v.as_u64()),
                linked.record.get("kept_from_hash").and_then(|v| v.as_str()),
            );
            start_named |= named == (Some(start.0), Some(start.1.as_str()));
        }
        if i64::try_from(linked.seq).ok() != Some(row_seq) {
            return Err(broken(format!(
                "the row's seq is {row_seq} but the record says {}: it was edited",
                linked.seq
            )));
        }
        expected = Some(linked.next);
        records += 1;
    }
    let genesis = Position::genesis();
    let first_seq = match start {
        None => 0,
        Some((seq, prev)) if (seq, &prev) == (genesis.next_seq, &genesis.prev) => seq,
        Some((seq, _)) if start_named => seq,
        Some((seq, _)) => {
            return Err(AuditError::Broken {
                segment: String::new(),
                line: 0,
                seq,
                reason: format!("the chain starts at record {seq}, and no retention record names where the kept chain starts: earlier records were removed"),
            })
        }
    };
    Ok(Verified {
        records,
        segments: 0,
        first_seq,
    })
}

impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn reserve<'a>(&'a self, key: &'a str, allowed: u32) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            if allowed == 0 {
                return Err(LedgerError::UsedUp);
            }
            // The insert makes the row with this use reserved; a row already there is
            // updated only while a use is left. Concurrent reservers queue on the row's
            // lock and each re-checks the condition against the row as the one before
            // left it.
            let reserved = self
                .ledger_event(
                    key,
                    "reserve",
                    "INSERT INTO airlock_ledger AS l (key, reserved) VALUES ($1, 1)
                     ON CONFLICT (key) DO UPDATE
                        SET reserved = l.reserved + 1, updated_at = now()
                        WHERE l.committed + l.reserved < $2
                     RETURNING l.reserved",
                    Some(i64::from(allowed)),
                )
                .await?;
            if reserved {
                return Ok(());
            }
            // Every use is taken: those not committed are reserved by calls in flight
            // (this replica's own go one at a time under the receipt's lock, so another
            // replica's, or one left by a replica stopped mid-call).
            let client = self.connection().await.map_err(ledger_error)?;
            let row = client
                .query_opt(
                    "SELECT committed,
                            greatest(extract(epoch FROM clock_timestamp() - updated_at), 0)::float8
                     FROM airlock_ledger WHERE key = $1",
                    &[&key],
                )
                .await
                .map_err(ledger_error)?;
            match row {
                Some(row) if row.get::<_, i64>(0) < i64::from(allowed) => {
                    Err(LedgerError::InFlight {
                        idle: Duration::try_from_secs_f64(row.get(1)).unwrap_or(Duration::ZERO),
                    })
                }
                _ => Err(LedgerError::UsedUp),
            }
        })
    }

    fn commit<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            self.ledger_event(
                key,
                "commit",
                "INSERT INTO airlock_ledger AS l (key, committed) VALUES ($1, 1)
                 ON CONFLICT (key) DO UPDATE
                    SET committed = l.committed + 1,
                        reserved = greatest(l.reserved - 1, 0),
                        updated_at = now()
                 RETURNING l.committed",
                None,
            )
            .await
            .map(|_| ())
        })
    }

    fn release<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), LedgerError>> {
        Box::pin(async move {
            self.ledger_event(
                key,
                "release",
                "UPDATE airlock_ledger
                    SET reserved = greatest(reserved - 1, 0), updated_at = now()
                  WHERE key = $1
                 RETURNING reserved",
                None,
            )
            .await
            .map(|_| ())
        })
    }

    fn committed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u32, LedgerError>> {
        Box::pin(async move {
            let client = self.connection().await.map_err(ledger_error)?;
            let row = client
                .query_opt(
                    "SELECT committed FROM airlock_ledger WHERE key = $1",
                    &[&key],
                )
                .await
                .map_err(ledger_error)?;
            let committed: i64 = row.map_or(0, |r| r.get(0));
            Ok(u32::try_from(committed).unwrap_or(u32::MAX))
        })
    }

    fn audit_append(&self, record: Fields) -> BoxFuture<'_, bool> {
        Box::pin(self.append_one(record, false))
    }

    fn audit_append_durable(&self, record: Fields) -> BoxFuture<'_, bool> {
        // A committed transaction is durable (synchronous_commit as the database has it);
        // a spooled record is fdatasynced.
        Box::pin(self.append_one(record, true))
    }

    fn audit_sync(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match &self.spool {
                Some(spool) => spool.sync(),
                None => Ok(()),
            }
        })
    }

    fn audit_writable(&self) -> bool {
        // Records waiting in the spool mean the database could not take them: a receipt
        // use must be in the chain, so the gate stays closed until they are.
        self.ready.load(Ordering::SeqCst)
            && !self.audit_failing.load(Ordering::SeqCst)
            && !self.spool.as_ref().is_some_and(|s| s.waiting())
    }

    fn audit_health(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if !self.ready.load(Ordering::SeqCst) {
                return Err(NOT_READY.into());
            }
            if self.spool.as_ref().is_some_and(|s| s.waiting()) {
                return Err("audit records wait in the spool for PostgreSQL".into());
            }
            if !self.audit_writable() {
                return Err("the last audit record could not be written to PostgreSQL".into());
            }
            let client = self
                .pool
                .get()
                .await
                .map_err(|_| "PostgreSQL cannot be reached".to_string())?;
            client
                .query_one("SELECT NOT pg_is_in_recovery()", &[])
                .await
                .map_err(|_| "PostgreSQL does not answer".to_string())
                .and_then(|row| {
                    if row.get::<_, bool>(0) {
                        Ok(())
                    } else {
                        Err("PostgreSQL is read-only (a standby)".to_string())
                    }
                })
        })
    }

    fn current_approval<'a>(
        &'a self,
        binding_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Approval>, ApprovalError>> {
        Box::pin(async move {
            let client = self.connection().await.map_err(approval_error)?;
            let row = client
                .query_opt(
                    "SELECT record::text FROM airlock_approvals
                     WHERE binding_key = $1 AND status <> 'closed'",
                    &[&binding_key],
                )
                .await
                .map_err(approval_error)?;
            row.map(|r| from_record(r.get(0))).transpose()
        })
    }

    fn find_or_open_pending<'a>(
        &'a self,
        b: BlockedCall<'a>,
    ) -> BoxFuture<'a, Result<(Approval, bool), ApprovalError>> {
        Box::pin(async move {
            let fresh =
                Approval::pending(b.binding_key, b.call, b.agent, b.environment, b.decision);
            let client = self.connection().await.map_err(approval_error)?;
            // One statement: the unique key on the open approval's call identity makes
            // every replica's identical blocked call land on one row. A retry counts as an
            // attempt and is seen now; the approval is otherwise unchanged. (The open
            // approval may have been decided a moment ago: it is returned as it is, and
            // the caller finds it decided.)
            let row = client
                .query_one(
                    "INSERT INTO airlock_approvals AS a (id, binding_key, status, record)
                     VALUES ($1, $2, 'pending', $3::text::jsonb)
                     ON CONFLICT (binding_key) WHERE status <> 'closed' DO UPDATE SET
                        record = jsonb_set(
                            jsonb_set(a.record, '{attempts}',
                                to_jsonb(coalesce((a.record->>'attempts')::bigint, 0) + 1)),
                            '{last_seen_at}', EXCLUDED.record->'last_seen_at'),
                        updated_at = now()
                     RETURNING a.id, a.record::text",
                    &[&fresh.id, &fresh.binding_key, &to_record(&fresh)?],
                )
                .await
                .map_err(approval_error)?;
            let id: String = row.get(0);
            let is_new = id == fresh.id;
            Ok((from_record(row.get(1))?, is_new))
        })
    }

    fn close_approval<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            let client = self.connection().await.map_err(approval_error)?;
            let changed = client
                .execute(
                    "UPDATE airlock_approvals
                     SET status = 'closed', record = jsonb_set(record, '{status}', '\"closed\"'),
                         updated_at = now()
                     WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(approval_error)?;
            if changed == 0 {
                return Err(ApprovalError::NotFound(id.to_string()));
            }
            Ok(())
        })
    }

    fn read_receipt<'a>(
        &'a self,
        receipt_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<u8>, ApprovalError>> {
        Box::pin(async move {
            let client = self.connection().await.map_err(approval_error)?;
            receipt_in(&**client, receipt_id).await
        })
    }

    fn decide<'a>(
        &'a self,
        id: &'a str,
        sign: SignStep<'a>,
    ) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        // The approval's row is locked for the transaction, so two replicas' approvers sign
        // one after the other; a decision (no longer pending) is announced to every
        // replica at commit.
        Box::pin(async move {
            let mut client = self.connection().await.map_err(approval_error)?;
            let tx = client.transaction().await.map_err(approval_error)?;
            let mut a = approval_in(&*tx, id, true).await?;
            if a.status != Status::Pending {
                return Err(ApprovalError::NotPending(id.to_string(), a.status));
            }
            let stored = match &a.receipt_id {
                Some(r) => Some(receipt_in(&*tx, r).await?),
                None => None,
            };
            let signed = sign(&a, stored)?;
            // The receipt of the quorum under way, joined by one more signature, is stored
            // over itself; any other id is new, and one that names a stored receipt is
            // refused (as for plans): a decision never replaces a receipt it does not own,
            // such as one already issued for another call.
            let statement = if a.receipt_id.as_deref() == Some(signed.receipt_id.as_str()) {
                "INSERT INTO airlock_receipts (id, receipt) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET receipt = EXCLUDED.receipt, stored_at = now()"
            } else {
                "INSERT INTO airlock_receipts (id, receipt) VALUES ($1, $2)"
            };
            tx.execute(statement, &[&signed.receipt_id, &signed.receipt_json])
                .await
                .map_err(|e| {
                    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                        ApprovalError::receipt_taken(&signed.receipt_id)
                    } else {
                        approval_error(e)
                    }
                })?;
            a.take_signed(signed);
            update_approval(&*tx, &a).await?;
            if a.status != Status::Pending {
                tx.execute("SELECT pg_notify($1, $2)", &[&RESOLVED_CHANNEL, &a.id])
                    .await
                    .map_err(approval_error)?;
            }
            tx.commit().await.map_err(approval_error)?;
            if a.status != Status::Pending {
                self.waiters.wake(&a.id);
            }
            Ok(a)
        })
    }

    fn get_approval<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Approval, ApprovalError>> {
        Box::pin(self.approval(id))
    }

    fn list_approvals(
        &self,
        decided: Option<usize>,
    ) -> BoxFuture<'_, Result<Vec<Approval>, ApprovalError>> {
        Box::pin(async move {
            // NULL: no limit.
            let limit = decided.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            let client = self.pool.get().await.map_err(approval_error)?;
            let rows = client
                .query(
                    "SELECT record::text FROM (
                        SELECT record FROM airlock_approvals WHERE status = 'pending'
                        UNION ALL
                        (SELECT record FROM airlock_approvals WHERE status <> 'pending'
                         ORDER BY updated_at DESC LIMIT $1)
                     ) listed ORDER BY record->>'created_at' DESC",
                    &[&limit],
                )
                .await
                .map_err(approval_error)?;
            rows.into_iter().map(|r| from_record(r.get(0))).collect()
        })
    }

    fn receipt_location(&self, receipt_id: &str) -> String {
        format!("{receipt_id} (in PostgreSQL, table airlock_receipts)")
    }

    fn approval_resolved(&self) {
        self.waiters.wake_all();
    }

    fn wait_resolved<'a>(
        &'a self,
        approval_id: &'a str,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'a, bool> {
        Box::pin(
            self.waiters
                .wait(approval_id, deadline, RESOLVED_POLL, move || async move {
                    self.approval(approval_id).await.map(|a| a.status)
                }),
        )
    }

    fn trusted_keys(&self) -> BoxFuture<'_, Result<TrustedKeys, String>> {
        Box::pin(async move {
            let approvers = self.approvers.as_deref().ok_or(
                "the store was opened without the config's approvers: refusing receipts (fail closed)",
            )?;
            self.identities.trusted_keys(approvers).await
        })
    }

    fn agent_revoked<'a>(&'a self, access_key_id: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(self.identities.agent_revoked(access_key_id))
    }

    fn identities(&self) -> &super::identities::Identities {
        &self.identities
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused_and_older_ones_are_migrated_in_order() {
        assert!(refuse_newer(SCHEMA_VERSION).is_ok());
        assert!(refuse_newer(0).is_ok());
        let e = refuse_newer(SCHEMA_VERSION + 1).unwrap_err();
        assert!(e.contains("newer than this airlock knows"), "{e}");
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION as usize);
    }

    #[test]
    fn a_listening_connection_notices_a_silent_peer_within_seconds() {
        let config = listen_config(&Secret::new(
            "postgres://airlock@127.0.0.1:1/db?keepalives=0&keepalives_idle=7200",
        ))
        .expect("config");
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(5));
        let (idle, interval, retries) = KEEPALIVE;
        let probed = idle + interval * retries;
        assert!(probed <= USER_TIMEOUT, "{probed:?}");
        assert_eq!(config.get_tcp_user_timeout(), Some(&USER_TIMEOUT));
    }

    #[test]
    fn a_pooled_connection_is_bounded_by_the_server_and_by_tcp() {
        let url = Secret::new("postgres://airlock@127.0.0.1:1/db?keepalives=0");
        let config = pooled_config(&url, Some(STATEMENT_TIMEOUT)).expect("config");
        assert!(config.get_keepalives());
        assert_eq!(config.get_tcp_user_timeout(), Some(&USER_TIMEOUT));
        assert_eq!(
            config.get_options(),
            Some("-c statement_timeout=15000 -c lock_timeout=10000 -c idle_in_transaction_session_timeout=30000")
        );
        // The URL's own options come last: they win for what they set.
        let url = Secret::new("postgres://airlock@127.0.0.1:1/db?options=-c%20lock_timeout%3D500");
        let config = pooled_config(&url, None).expect("config");
        assert_eq!(
            config.get_options(),
            Some("-c lock_timeout=10000 -c idle_in_transaction_session_timeout=30000 -c lock_timeout=500")
        );
    }

    #[test]
    fn plaintext_is_allowed_to_this_host_only() {
        let judged = |url: &str| connect_config(&Secret::new(url)).map(|_| ());
        // This host, without TLS: allowed.
        for local in [
            "postgres://airlock:pw@127.0.0.1:5432/airlock",
            "postgres://airlock:pw@127.8.9.10/airlock?sslmode=disable",
            "postgres://airlock:pw@localhost/airlock",
            "postgres://airlock:pw@LOCALHOST./airlock?sslmode=prefer",
            "postgres://airlock:pw@[::1]:5432/airlock",
            "postgres://airlock:pw@%2Fvar%2Frun%2Fpostgresql/airlock",
            "postgres:///airlock?host=/var/run/postgresql&sslmode=disable",
            // docker-compose.yml's: PostgreSQL's socket in a shared volume.
            "postgres://airlock:pw@/airlock?host=/var/run/postgresql",
            "postgres://airlock:pw@db.internal/airlock?hostaddr=127.0.0.1",
            "postgres://airlock:pw@localhost,127.0.0.2/airlock",
        ] {
            assert_eq!(judged(local), Ok(()), "{local}");
        }
        // Another host without `sslmode=require`: refused, naming the fix, never the password.
        for remote in [
            "postgres://airlock:hunter2@db.internal/airlock",
            "postgres://airlock:hunter2@db.internal/airlock?sslmode=prefer",
            "postgres://airlock:hunter2@10.0.0.5:5432/airlock?sslmode=disable",
            "postgresql://airlock:hunter2@[2001:db8::1]/airlock",
            "postgres://airlock:hunter2@localhost,db.internal/airlock",
            "postgres://airlock:hunter2@localhost/airlock?hostaddr=10.0.0.5",
            "postgres://airlock:hunter2@/airlock?hostaddr=10.0.0.5",
            "postgres://airlock@db.internal/airlock?password=hunter2&sslmode=disable",
        ] {
            let e = judged(remote).expect_err(remote);
            assert!(e.contains("?sslmode=require"), "{e}");
            assert!(!e.contains("hunter2") && !e.contains(remote), "{e}");
        }
        // The same hosts with TLS required: allowed.
        for remote in [
            "postgres://airlock:pw@db.internal/airlock?sslmode=require",
            "postgres://airlock:pw@10.0.0.5/airlock?connect_timeout=3&sslmode=require",
            "postgres://airlock:pw@localhost/airlock?hostaddr=10.0.0.5&sslmode=require",
        ] {
            assert_eq!(judged(remote), Ok(()), "{remote}");
        }
        // The listening connection and the pool are made the same way.
        assert!(listen_config(&Secret::new("postgres://a:pw@db.internal/x")).is_err());
        assert!(pool(&Secret::new("postgres://a:pw@db.internal/x")).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_store_per_state_dir_spool() {
        let state = tempfile::tempdir().expect("state");
        // Nothing listens there: the store is made without reaching the database.
        let url = Secret::new("postgres://airlock@127.0.0.1:1/airlock");
        let first = PgStore::open(&url, state.path()).expect("the first store");
        let e = match PgStore::open(&url, state.path()) {
            Ok(_) => panic!("two stores share one state dir's spool"),
            Err(e) => e,
        };
        assert!(e.contains("another `airlock serve`"), "{e}");
        assert!(e.contains("[state] dir of its own"), "{e}");
        // Another state dir is another spool.
        let other = tempfile::tempdir().expect("other");
        drop(PgStore::open(&url, other.path()).expect("another state dir"));
        drop(first);
        PgStore::open(&url, state.path()).expect("the state dir is free once the store is gone");
    }

    #[test]
    fn a_url_that_is_not_postgres_is_refused_without_echoing_it() {
        let e = pool(&Secret::new("postgres://u:hunter2@[broken")).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
