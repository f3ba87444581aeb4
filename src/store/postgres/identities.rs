//! Agents, approvers' passkeys, enrollment links and each replica's own public key in
//! PostgreSQL, so every replica knows the same ones.
//!
//! - **One table per set** (`airlock_agents`, `airlock_passkeys`, `airlock_enrollments`):
//!   a row per record, keyed by what identifies it (the agent's access key id, the passkey's
//!   key id, the link token's SHA-256), holding the record as the file holds it (an agent's
//!   secret access key included, as in `agents.json`: SigV4 verification needs the secret
//!   itself). `seq` keeps the order records were added in.
//! - **A change is the file code's change**: the set is read, changed by the same function the
//!   file store runs (`AgentsFile::add`, `trust::advance_counter`, `enrollments::consume_link`…)
//!   and written back, all in one transaction under an advisory lock, so changes from any
//!   replica or CLI apply one after the other and a counter that did not advance is refused
//!   everywhere. A change that spans two sets (a confirmation settles a pending passkey and
//!   adds it; a revocation ends links and removes passkeys) is one transaction.
//! - **Agents are followed, not read per call**: the request path authenticates from the
//!   in-memory [`AgentRegistry`]. A change to the agents bumps `airlock_identities_version`
//!   and sends `NOTIFY airlock_agents_changed` in its transaction; [`follow_agents`] listens
//!   on a connection of its own and also reads the version every [`AGENTS_POLL`], reloading
//!   the agents when it moved. While the database cannot be read the last set stays, for
//!   as long as that lasts (allowed calls go on with it); a call that needs a receipt reads
//!   its key here first ([`PgIdentities::agent_revoked`], from `proxy::redeem`), so no
//!   revocation waits on the follower to spend a use. A row that is not an agent record as
//!   this airlock reads it is left out of the followed set (that key refused) with a log
//!   line; the others still load.
//! - **Passkeys and airlock's own keys are read per use** (each gated call, each page
//!   ceremony), as the files are: an approver revoked on one replica is refused by every
//!   replica at its next call. Each replica countersigns passkey approvals with its own key
//!   (its private half stays in its `[state] dir`); `serve` registers the public half in
//!   `airlock_keys`, so a receipt countersigned on one replica verifies on all.

use super::{db_error, listen_config, listen_once, tls, COMPLAIN_EVERY, LISTEN_RETRY};
use crate::receipt::{ApproverPublic, KeyId, TrustedKeys};
use crate::secret::Secret;
use crate::state::agents::{AgentError, AgentRecord, AgentRegistry, AgentsFile};
use crate::state::enrollments::{self, Enrollment, Settlement};
use crate::state::trust::{self, PasskeyRecord};
use deadpool_postgres::{Pool, Transaction};
use futures_util::pin_mut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The identity sets, the replicas' public keys, the agents' version: one migration, whose
/// version is its place in `super::MIGRATIONS`.
pub(super) const MIGRATION: &str = "
    CREATE TABLE airlock_agents (
        key text PRIMARY KEY,
        seq bigserial NOT NULL,
        record jsonb NOT NULL
    );
    CREATE TABLE airlock_passkeys (
        key text PRIMARY KEY,
        seq bigserial NOT NULL,
        record jsonb NOT NULL
    );
    CREATE UNIQUE INDEX airlock_passkeys_credential ON airlock_passkeys ((record->>'credential_id'));
    CREATE TABLE airlock_enrollments (
        key text PRIMARY KEY,
        seq bigserial NOT NULL,
        record jsonb NOT NULL
    );
    CREATE TABLE airlock_keys (
        key_id text PRIMARY KEY,
        public_key text NOT NULL,
        registered_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE airlock_identities_version (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        version bigint NOT NULL
    );
    INSERT INTO airlock_identities_version (version) VALUES (0);";

/// The channel a change to the agents is announced on (`NOTIFY`, sent at commit).
const AGENTS_CHANNEL: &str = "airlock_agents_changed";

/// How often a follower reads the agents' version when no notification came (the listening
/// connection is down, or a notification was lost): a revocation counts within this.
pub const AGENTS_POLL: Duration = Duration::from_millis(500);

/// The advisory lock every change to the identity sets takes (transaction-scoped).
const IDENTITIES_LOCK: i64 = 0x6169_726c_6f63_6b03;

/// A record kept in one of the identity tables.
trait Stored: Serialize + DeserializeOwned {
    const TABLE: &'static str;
    /// Whether a change to this set is announced to the replicas' followers.
    const ANNOUNCED: bool;
    fn key(&self) -> &str;
}

impl Stored for AgentRecord {
    const TABLE: &'static str = "airlock_agents";
    const ANNOUNCED: bool = true;
    fn key(&self) -> &str {
        &self.access_key_id
    }
}

impl Stored for PasskeyRecord {
    const TABLE: &'static str = "airlock_passkeys";
    const ANNOUNCED: bool = false;
    fn key(&self) -> &str {
        &self.key_id
    }
}

impl Stored for Enrollment {
    const TABLE: &'static str = "airlock_enrollments";
    const ANNOUNCED: bool = false;
    fn key(&self) -> &str {
        &self.token_sha256
    }
}

/// Every record of a set, in the order they were added.
async fn load_in<T: Stored>(client: &impl tokio_postgres::GenericClient) -> Result<Vec<T>, String> {
    let query = format!("SELECT record::text FROM {} ORDER BY seq", T::TABLE);
    let rows = client.query(&query, &[]).await.map_err(db_error)?;
    rows.iter()
        .map(|row| {
            serde_json::from_str(row.get(0))
                .map_err(|e| format!("a record of {} in PostgreSQL: {e}", T::TABLE))
        })
        .collect()
}

/// Makes the set's rows `all`: rows no longer in it are deleted, new ones added after the
/// others, changed ones updated.
async fn store_in<T: Stored>(tx: &Transaction<'_>, all: &[T]) -> Result<(), String> {
    let mut keys = Vec::with_capacity(all.len());
    let mut records = Vec::with_capacity(all.len());
    for record in all {
        keys.push(record.key().to_owned());
        records.push(
            serde_json::to_string(record).map_err(|e| format!("a record for {}: {e}", T::TABLE))?,
        );
    }
    let delete = format!("DELETE FROM {} WHERE key <> ALL($1::text[])", T::TABLE);
    tx.execute(&delete, &[&keys]).await.map_err(db_error)?;
    let upsert = format!(
        "INSERT INTO {table} AS t (key, record)
         SELECT k, r::jsonb FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(k, r, n)
         ORDER BY n
         ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record
            WHERE t.record IS DISTINCT FROM EXCLUDED.record",
        table = T::TABLE
    );
    tx.execute(&upsert, &[&keys, &records])
        .await
        .map_err(db_error)?;
    if T::ANNOUNCED {
        let row = tx
            .query_one(
                "UPDATE airlock_identities_version SET version = version + 1 RETURNING version",
                &[],
            )
            .await
            .map_err(db_error)?;
        let version: i64 = row.get(0);
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&AGENTS_CHANNEL, &version.to_string()],
        )
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

/// The three identity sets as the files hold them: what `airlock db import` and
/// `airlock db export` move.
pub struct IdentitySets {
    pub agents: AgentsFile,
    pub passkeys: Vec<PasskeyRecord>,
    pub enrollments: Vec<Enrollment>,
}

/// Stores `sets` in `tx` (the tables are empty: an import checked), in their order.
pub(crate) async fn store_sets(tx: &Transaction<'_>, sets: &IdentitySets) -> Result<(), String> {
    store_in(tx, &sets.agents.agents).await?;
    store_in(tx, &sets.passkeys).await?;
    store_in(tx, &sets.enrollments).await
}

/// The three identity sets as `tx` sees them.
pub(crate) async fn load_sets(tx: &Transaction<'_>) -> Result<IdentitySets, String> {
    Ok(IdentitySets {
        agents: AgentsFile {
            agents: load_in(&**tx).await?,
        },
        passkeys: load_in(&**tx).await?,
        enrollments: load_in(&**tx).await?,
    })
}

/// Registers a replica's own public key in `client`'s view (its private half stays on the
/// replica); one registered already is left as it is.
pub(crate) async fn register_key_in(
    client: &impl tokio_postgres::GenericClient,
    public: &ApproverPublic,
) -> Result<(), String> {
    client
        .execute(
            "INSERT INTO airlock_keys (key_id, public_key) VALUES ($1, $2)
             ON CONFLICT (key_id) DO NOTHING",
            &[&public.key_id().as_str(), &public.config_value()],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

/// Agents, passkeys, enrollments and the replicas' keys in the database.
#[derive(Clone)]
pub struct PgIdentities {
    pool: Pool,
}

impl PgIdentities {
    pub fn new(pool: Pool) -> PgIdentities {
        PgIdentities { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A transaction holding the identity lock: the changes of every replica and CLI go one
    /// at a time.
    async fn locked<R>(
        &self,
        change: impl AsyncFnOnce(&Transaction<'_>) -> Result<R, String>,
    ) -> Result<R, String> {
        let mut client = self.pool.get().await.map_err(db_error)?;
        let tx = client.transaction().await.map_err(db_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&IDENTITIES_LOCK])
            .await
            .map_err(db_error)?;
        // An error drops the transaction: nothing of the change is kept.
        let out = change(&tx).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(out)
    }

    /// Runs `change` on one set, as the file store runs it on its file.
    async fn change<T: Stored, R>(
        &self,
        change: impl FnOnce(&mut Vec<T>) -> Result<R, String>,
    ) -> Result<R, String> {
        self.locked(async |tx| {
            let mut all = load_in::<T>(&**tx).await?;
            let out = change(&mut all)?;
            store_in(tx, &all).await?;
            Ok(out)
        })
        .await
    }

    async fn load<T: Stored>(&self) -> Result<Vec<T>, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        load_in(&**client).await
    }

    /// Every agent, revoked ones included (their key ids are never issued again).
    pub async fn agents(&self) -> Result<AgentsFile, String> {
        Ok(AgentsFile {
            agents: self.load().await?,
        })
    }

    /// Runs one of `AgentsFile`'s changes on the agents; the followers hear of it at commit.
    pub async fn change_agents<R>(
        &self,
        change: impl FnOnce(&mut AgentsFile) -> Result<R, AgentError>,
    ) -> Result<R, String> {
        self.change(|agents: &mut Vec<AgentRecord>| {
            let mut file = AgentsFile {
                agents: std::mem::take(agents),
            };
            let out = change(&mut file).map_err(|e| e.to_string());
            *agents = file.agents;
            out
        })
        .await
    }

    /// Whether `access_key_id` is revoked (or unknown): one row read.
    pub async fn agent_revoked(&self, access_key_id: &str) -> Result<bool, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        let row = client
            .query_opt(
                "SELECT record->>'revoked_at' IS NULL FROM airlock_agents WHERE key = $1",
                &[&access_key_id],
            )
            .await
            .map_err(db_error)?;
        Ok(!row.is_some_and(|r| r.get::<_, bool>(0)))
    }

    pub async fn passkeys(&self) -> Result<Vec<PasskeyRecord>, String> {
        self.load().await
    }

    pub async fn add_passkey(&self, record: PasskeyRecord) -> Result<(), String> {
        self.change(|all| trust::add_passkey(all, record)).await
    }

    /// Records an assertion's counter: under the lock, so of two replicas shown the same
    /// counter, the second is refused.
    pub async fn advance_counter(&self, key_id: &KeyId, count: u32) -> Result<(), String> {
        self.change(|all| trust::advance_counter(all, key_id, count))
            .await
    }

    pub async fn enrollments(&self) -> Result<Vec<Enrollment>, String> {
        self.load().await
    }

    /// Runs one of `enroll`'s changes on the enrollments, then drops the long-expired ones.
    pub async fn change_enrollments<R>(
        &self,
        change: impl FnOnce(&mut Vec<Enrollment>) -> Result<R, String>,
    ) -> Result<R, String> {
        self.change(|all| {
            let out = change(all)?;
            enrollments::prune(all);
            Ok(out)
        })
        .await
    }

    /// Settles a pending passkey and, when confirmed, adds it: one transaction, so a
    /// revocation cannot fall between the two.
    pub async fn settle_and_add(
        &self,
        settlement: Settlement<'_>,
    ) -> Result<(Enrollment, Option<PasskeyRecord>), String> {
        self.locked(async |tx| {
            let mut links = load_in::<Enrollment>(&**tx).await?;
            let (settled, record) = enrollments::settle_pending(&mut links, settlement)?;
            enrollments::prune(&mut links);
            store_in(tx, &links).await?;
            if let Some(record) = &record {
                let mut passkeys = load_in::<PasskeyRecord>(&**tx).await?;
                trust::add_passkey(&mut passkeys, record.clone())?;
                store_in(tx, &passkeys).await?;
            }
            Ok((settled, record))
        })
        .await
    }

    /// Ends `name`'s open links and pending passkeys and removes its passkeys, in one
    /// transaction: (passkeys removed, links ended).
    pub async fn revoke_approver(&self, name: &str) -> Result<(usize, usize), String> {
        self.locked(async |tx| {
            let mut links = load_in::<Enrollment>(&**tx).await?;
            let ended = enrollments::end_links_of(&mut links, name);
            enrollments::prune(&mut links);
            store_in(tx, &links).await?;
            let mut passkeys = load_in::<PasskeyRecord>(&**tx).await?;
            let removed = trust::remove_passkeys_of(&mut passkeys, name);
            store_in(tx, &passkeys).await?;
            Ok((removed, ended))
        })
        .await
    }

    /// Registers a replica's own public key (its private half stays on the replica).
    pub async fn register_airlock_key(&self, public: &ApproverPublic) -> Result<(), String> {
        let client = self.pool.get().await.map_err(db_error)?;
        register_key_in(&**client, public).await
    }

    /// The keys receipts are checked against: `approvers` (the config's), every replica's own
    /// key and the enrolled passkeys, read now.
    pub async fn trusted_keys(&self, approvers: &[ApproverPublic]) -> Result<TrustedKeys, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        let rows = client
            .query("SELECT public_key FROM airlock_keys ORDER BY key_id", &[])
            .await
            .map_err(db_error)?;
        let airlock_keys = rows
            .iter()
            .map(|row| {
                ApproverPublic::from_config(trust::AIRLOCK_KEY_NAME, row.get(0))
                    .map_err(|e| format!("a replica's key in PostgreSQL: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let passkeys = load_in::<PasskeyRecord>(&**client).await?;
        crate::signing::assemble_trusted_keys(approvers, &airlock_keys, &passkeys)
    }

    /// The agents' version now.
    async fn agents_version(&self) -> Result<i64, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        let row = client
            .query_one("SELECT version FROM airlock_identities_version", &[])
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }

    /// The agents the request path may know: a row that is not an agent record as this
    /// airlock reads it (a field it does not know, a value of the wrong form) is left out,
    /// with a log line, so that agent's key is refused and every other agent still counts.
    /// (Changes still read the whole set strictly, so such a row is never dropped.)
    async fn agents_to_serve(&self) -> Result<AgentsFile, String> {
        let client = self.pool.get().await.map_err(db_error)?;
        let query = format!(
            "SELECT key, record::text FROM {} ORDER BY seq",
            AgentRecord::TABLE
        );
        let rows = client.query(&query, &[]).await.map_err(db_error)?;
        let mut agents = Vec::with_capacity(rows.len());
        for row in &rows {
            let key: &str = row.get(0);
            match serde_json::from_str::<AgentRecord>(row.get(1)) {
                Ok(agent) => agents.push(agent),
                Err(e) => {
                    tracing::error!(access_key_id = %key, problem = %unreadable(&e), "an agent in PostgreSQL cannot be read by this airlock: its key is refused until the row is fixed");
                }
            }
        }
        Ok(AgentsFile { agents })
    }

    /// Reloads `registry` when the agents' version is not `seen`; the version loaded.
    async fn refresh(&self, registry: &AgentRegistry, seen: Option<i64>) -> Result<i64, String> {
        let version = self.agents_version().await?;
        if Some(version) != seen {
            // Read after the version: a change in between is loaded now and again next time.
            registry.replace(self.agents_to_serve().await?);
            if seen.is_some() {
                tracing::info!(agents = registry.len(), "agents reloaded from PostgreSQL");
            }
        }
        Ok(version)
    }
}

/// What is wrong with an agent's row, without any of its values (a value of the wrong
/// form could be its secret): the name of a field unknown or missing, else the kind of
/// fault and where.
fn unreadable(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("unknown field") || text.starts_with("missing field") {
        // `unknown field `x`, expected one of …`: the name and the names expected.
        return text;
    }
    format!("{:?} at column {}", e.classify(), e.column())
}

/// The request path's agents, loaded from the database and kept in step with it: on each
/// `NOTIFY` from a change, and every [`AGENTS_POLL`] otherwise. A database that cannot be
/// read at start leaves no agent known (every call refused) until it can. `own_key`, this
/// replica's countersigning key, is registered once the database answers. The task ends
/// when the registry is dropped. Needs a Tokio runtime.
pub async fn follow_agents(
    identities: PgIdentities,
    url: &Secret,
    mut own_key: Option<ApproverPublic>,
) -> Result<Arc<AgentRegistry>, String> {
    let registry = AgentRegistry::detached(AgentsFile::default());
    let mut seen = match identities.refresh(&registry, None).await {
        Ok(version) => Some(version),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the agents from PostgreSQL: every call is refused until it can be read");
            None
        }
    };
    let changed = Arc::new(Notify::new());
    let listener = {
        let config = listen_config(url)?;
        let tls = tls()?;
        let changed = Arc::clone(&changed);
        tokio::spawn(async move {
            let heard = |_: Option<&str>| changed.notify_waiters();
            loop {
                if let Err(e) = listen_once(&config, tls.clone(), AGENTS_CHANNEL, &heard).await {
                    tracing::warn!(error = %e, "not listening for agents changed on other replicas; polling every {AGENTS_POLL:?} until the connection is back");
                }
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        })
    };
    let weak = Arc::downgrade(&registry);
    tokio::spawn(async move {
        // Since when the set has not been read, and when that was last said.
        let (mut stale, mut said): (Option<Instant>, Option<Instant>) = (None, None);
        loop {
            // Registered before the read, so a change announced during it is not missed.
            let woken = changed.notified();
            pin_mut!(woken);
            woken.as_mut().enable();
            let Some(registry) = weak.upgrade() else {
                listener.abort();
                return;
            };
            if let Some(key) = &own_key {
                match identities.register_airlock_key(key).await {
                    Ok(()) => own_key = None,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register this replica's own key in PostgreSQL yet: other replicas do not trust its passkey approvals until it is")
                    }
                }
            }
            match identities.refresh(&registry, seen).await {
                Ok(version) => {
                    if let Some(since) = stale.take() {
                        tracing::warn!(stale_for = ?since.elapsed(), "the agents can be read from PostgreSQL again");
                    }
                    said = None;
                    seen = Some(version);
                }
                Err(e) => {
                    // Said at once, then at most every COMPLAIN_EVERY, with how old the set is.
                    let since = *stale.get_or_insert_with(Instant::now);
                    if said.is_none_or(|t| t.elapsed() >= COMPLAIN_EVERY) {
                        tracing::warn!(error = %e, stale_for = ?since.elapsed(), "could not read the agents from PostgreSQL; allowed calls are still served with the set last read (calls that need a receipt look the key up in the database, and are refused while it cannot be read)");
                        said = Some(Instant::now());
                    }
                }
            }
            drop(registry);
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep(AGENTS_POLL) => {}
            }
        }
    });
    Ok(registry)
}
