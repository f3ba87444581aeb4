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
//!   file ledger does after a crash).
//! - **The audit chain** is `airlock_audit`, one row per record (`seq`, and the record's
//!   exact line, whose SHA-256 the next record names). Appends take a transaction-scoped
//!   advisory lock, read the last record and insert the new ones after it, so records from
//!   every replica form one chain. [`verify_audit`] streams it and names the first bad
//!   record. Each append is its own transaction (durable at commit); concurrent records are
//!   not yet grouped into one.
//! - **Approvals** (the request path's, and [`Store::decide`] for a decision) are rows of
//!   `airlock_approvals`: the approval's JSON record, its `status` beside it, and a unique
//!   index on `binding_key` over the rows not closed, so a blocked call finds or opens its
//!   approval in one statement and identical calls on every replica attach to one row. A
//!   decision is announced at commit (`NOTIFY`); [`PgStore::listen`] keeps a connection on
//!   `LISTEN` that wakes held calls, which also look again every [`RESOLVED_POLL`].
//!   Receipts are rows of `airlock_receipts`.
//! - **The schema is versioned** (`airlock_schema`): [`migrate`] applies what is missing in
//!   one transaction under an advisory lock (`serve` at start, `airlock db migrate`), and
//!   refuses a database whose schema is newer than this airlock knows.
//! - **Connections** come from a pool (deadpool) with bounded waits, so a database that is
//!   down answers with an error within seconds, never a hang. TLS is rustls with the
//!   system's roots, used as the URL's `sslmode` says (tokio-postgres's rules).
//!
//! - **Agents, passkeys, enrollment links and the replicas' own keys** are in
//!   [`identities`] (schema 3); the revocation lookups read them.
//!
//! Not yet here (see [`super::NOT_YET_IN_DATABASE`]): the page's and CLI's use of approvals;
//! `serve` does not start with a database until they are in it.

pub mod identities;

use super::{BlockedCall, SignStep, Store};
use crate::audit::{AuditError, Fields, Position, Verified};
use crate::receipt::TrustedKeys;
use crate::secret::Secret;
use crate::state::approvals::{Approval, ApprovalError, Status};
use crate::state::ledger::LedgerError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::future::BoxFuture;
use futures_util::{pin_mut, StreamExt, TryStreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

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
    // 3: agents, passkeys, enrollment links, the replicas' own keys.
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
const AUDIT_LOCK: i64 = 0x6169_726c_6f63_6b01;
/// The advisory lock migrations take: two replicas starting at once migrate once.
const MIGRATE_LOCK: i64 = 0x6169_726c_6f63_6b02;

/// How long a caller waits for a connection, or for one to be made, before the step fails
/// (and the gate closes for it).
const POOL_WAIT: Duration = Duration::from_secs(5);

/// At most this many connections per process.
const POOL_SIZE: usize = 16;

/// The connection pool for `url`. Nothing is connected until first use, so `serve` can
/// start while the database is down.
pub fn pool(url: &Secret) -> Result<Pool, String> {
    let manager = Manager::from_config(
        connect_config(url)?,
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

/// How to connect to `url` (a connect timeout and airlock's application name unless the
/// URL sets them). The error never holds the URL.
fn connect_config(url: &Secret) -> Result<tokio_postgres::Config, String> {
    let mut pg: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|e| format!("[state] database_url is not a PostgreSQL URL: {e}"))?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(POOL_WAIT);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("airlock");
    }
    Ok(pg)
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
fn db_error(e: impl std::fmt::Display) -> String {
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

fn refuse_newer(version: i32) -> Result<(), String> {
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the database's schema is version {version}, newer than this airlock knows ({SCHEMA_VERSION}); upgrade airlock (it refuses to write to a schema whose rules it does not know)"
        ));
    }
    Ok(())
}

/// The schema's version as found, refused unless it is exactly [`SCHEMA_VERSION`]: for
/// commands that read without migrating (`airlock audit verify`).
pub async fn check_schema(pool: &Pool) -> Result<(), String> {
    let client = pool.get().await.map_err(db_error)?;
    let found = client
        .query_opt("SELECT version FROM airlock_schema", &[])
        .await;
    let version: i32 = match found {
        Ok(row) => row.map_or(0, |r| r.get(0)),
        // No schema table at all: never migrated.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => return Err(db_error(e)),
    };
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
    /// The last audit append failed.
    audit_failing: AtomicBool,
    /// Woken when any approval is decided (here, or on another replica by `NOTIFY`): held
    /// calls look at their approval again.
    resolved: Arc<Notify>,
    /// The task that listens for other replicas' decisions, ended with the store.
    listener: Option<tokio::task::AbortHandle>,
    /// Agents, passkeys, enrollments and the replicas' keys.
    identities: super::identities::Identities,
    /// The config's `[[approver]]` keys ([`Self::with_approvers`]); `None`: receipts are
    /// refused (fail closed) rather than checked without them.
    approvers: Option<Vec<crate::receipt::ApproverPublic>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
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
fn from_record(record: String) -> Result<Approval, ApprovalError> {
    serde_json::from_str(&record)
        .map_err(|e| ApprovalError::Corrupt("an approval in PostgreSQL".into(), e))
}

fn to_record(a: &Approval) -> Result<String, ApprovalError> {
    serde_json::to_string(a)
        .map_err(|e| ApprovalError::Corrupt("an approval for PostgreSQL".into(), e))
}

/// The name the `status` column and the record give `status`.
fn status_name(status: Status) -> Result<String, ApprovalError> {
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

/// Listens on `channel` until the connection ends; each notification wakes `resolved`'s
/// waiters (held calls, which look at their own approval; the agents' follower).
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    channel: &str,
    resolved: &Notify,
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
                // A decision made while nobody listened is seen now.
                resolved.notify_waiters();
            }
            message = messages.next() => match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => resolved.notify_waiters(),
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
    pub fn new(pool: Pool) -> PgStore {
        PgStore {
            audit_failing: AtomicBool::new(false),
            resolved: Arc::new(Notify::new()),
            listener: None,
            identities: super::identities::Identities::Postgres(identities::PgIdentities::new(
                pool.clone(),
            )),
            pool,
            approvers: None,
        }
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
        let config = connect_config(url)?;
        let tls = tls()?;
        let resolved = Arc::clone(&self.resolved);
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = listen_once(&config, tls.clone(), RESOLVED_CHANNEL, &resolved).await
                {
                    tracing::warn!(error = %e, "not listening for approvals decided on other replicas; held calls poll until the connection is back");
                }
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        });
        self.listener = Some(task.abort_handle());
        Ok(self)
    }

    /// One approval by id.
    pub async fn approval(&self, id: &str) -> Result<Approval, ApprovalError> {
        let client = self.pool.get().await.map_err(approval_error)?;
        approval_in(&**client, id, false).await
    }

    /// The pool, for commands and tests.
    pub fn pool(&self) -> &Pool {
        &self.pool
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
        let mut client = self.pool.get().await.map_err(ledger_error)?;
        let tx = client.transaction().await.map_err(ledger_error)?;
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
        let mut client = self.pool.get().await.map_err(db_error)?;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .await
            .map_err(db_error)?;
        let last = tx
            .query_opt(
                "SELECT record FROM airlock_audit ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(db_error)?;
        let position = match last {
            None => Position::genesis(),
            Some(row) => {
                let line: String = row.get(0);
                Position::after(line.as_bytes()).map_err(|e| e.to_string())?
            }
        };
        let first_seq = position.next_seq;
        let mut out = Vec::new();
        crate::audit::link(position, records, &mut out);
        let text = String::from_utf8(out).map_err(|e| e.to_string())?;
        let lines: Vec<&str> = text.lines().collect();
        let seqs: Vec<i64> = (0..lines.len())
            .map(|i| i64::try_from(first_seq + i as u64).unwrap_or(i64::MAX))
            .collect();
        tx.execute(
            "INSERT INTO airlock_audit (seq, record)
             SELECT * FROM unnest($1::bigint[], $2::text[])",
            &[&seqs, &lines],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn append_one(&self, record: Fields) -> bool {
        let result = self.append_audit(&[record]).await;
        let ok = result.is_ok();
        let was_failing = self.audit_failing.swap(!ok, Ordering::SeqCst);
        match result {
            Ok(()) if was_failing => tracing::warn!("the audit chain in PostgreSQL can be written again; calls that need a receipt are served again"),
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "could not append an audit record to PostgreSQL: calls that need a receipt are refused (fail closed) until it can"),
        }
        ok
    }
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
    let mut expected = Position::genesis();
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
        let linked = crate::audit::check_link(Some(&expected), line.as_bytes()).map_err(broken)?;
        if i64::try_from(linked.seq).ok() != Some(row_seq) {
            return Err(broken(format!(
                "the row's seq is {row_seq} but the record says {}: it was edited",
                linked.seq
            )));
        }
        expected = linked.next;
        records += 1;
    }
    Ok(Verified {
        records,
        segments: 0,
        first_seq: 0,
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
                Ok(())
            } else {
                Err(LedgerError::UsedUp)
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
            let client = self.pool.get().await.map_err(ledger_error)?;
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
        Box::pin(self.append_one(record))
    }

    fn audit_append_durable(&self, record: Fields) -> BoxFuture<'_, bool> {
        // A committed transaction is durable (synchronous_commit as the database has it).
        Box::pin(self.append_one(record))
    }

    fn audit_sync(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn audit_writable(&self) -> bool {
        !self.audit_failing.load(Ordering::SeqCst)
    }

    fn audit_health(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
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
            let client = self.pool.get().await.map_err(approval_error)?;
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
            let client = self.pool.get().await.map_err(approval_error)?;
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
            let client = self.pool.get().await.map_err(approval_error)?;
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
            let client = self.pool.get().await.map_err(approval_error)?;
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
            let mut client = self.pool.get().await.map_err(approval_error)?;
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
            tx.execute(
                "INSERT INTO airlock_receipts (id, receipt) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET receipt = EXCLUDED.receipt, stored_at = now()",
                &[&signed.receipt_id, &signed.receipt_json],
            )
            .await
            .map_err(approval_error)?;
            a.take_signed(signed);
            update_approval(&*tx, &a).await?;
            if a.status != Status::Pending {
                tx.execute("SELECT pg_notify($1, $2)", &[&RESOLVED_CHANNEL, &a.id])
                    .await
                    .map_err(approval_error)?;
            }
            tx.commit().await.map_err(approval_error)?;
            self.resolved.notify_waiters();
            Ok(a)
        })
    }

    fn approval_resolved(&self) {
        self.resolved.notify_waiters();
    }

    fn wait_resolved<'a>(
        &'a self,
        approval_id: &'a str,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            loop {
                // Registered before the look, so a decision announced between the look
                // and the wait still wakes it.
                let woken = self.resolved.notified();
                pin_mut!(woken);
                woken.as_mut().enable();
                match self.approval(approval_id).await {
                    Ok(a) if a.status != Status::Pending => return true,
                    Ok(_) => {}
                    // Cannot tell: not decided as far as this call knows (it is answered
                    // with its link).
                    Err(_) => return false,
                }
                tokio::select! {
                    _ = &mut woken => {}
                    _ = tokio::time::sleep(RESOLVED_POLL) => {}
                    _ = tokio::time::sleep_until(deadline) => return false,
                }
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
            }
        })
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
    fn a_url_that_is_not_postgres_is_refused_without_echoing_it() {
        let e = pool(&Secret::new("postgres://u:hunter2@[broken")).unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
