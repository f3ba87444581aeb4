//! `airlock db import` and `airlock db export`: a state moved whole between the files and
//! PostgreSQL, so someone who started alone grows into a team (and back) without
//! re-enrolling anyone, re-approving anything or losing a record.
//!
//! The parts moved, each a pair of functions here (`import_…`, `export_…`):
//!
//! - **the single-use ledger**: each key's committed uses (a reservation never settled
//!   counts as used, as the file ledger has it after a crash);
//! - **the audit chain**: every record of every segment, line for line, so every hash is
//!   the one it was; the file chain is verified before import, the database's after, and
//!   an export is verified as `airlock audit verify` would;
//! - **approvals and their receipts**: all of them, open or closed;
//! - **submitted Terraform plans and their receipts**: every plan with its status (the
//!   records as `state/plans/<id>.json` holds them, moved as JSON: `store` sits below `plan`
//!   in the module graph), and the receipt each names;
//! - **identities**: the agents (revoked ones too, each with its secret as `agents.json`
//!   holds it, so no agent gets new keys), the enrolled passkeys with their signature
//!   counters, and the enrollments (a pending passkey stays pending, an open link open).
//!
//! **airlock's own key.** Each replica keeps the private half of its countersigning key in
//! its own state dir and registers the public half in `airlock_keys`. An import registers the
//! file state's public key there, so the receipts it countersigned still verify on every
//! replica; its private half stays in the file state (a replica started on that dir keeps
//! using it). The database holds no private key, so an export makes a fresh one in the
//! exported dir (as `serve` would at its first start): receipts countersigned by the
//! replicas verify there only once one replica's `airlock.key` is copied over it.
//!
//! Import is one transaction into a database whose airlock tables are empty (a database
//! with any state is refused: merging two histories would fork the chain and could give a
//! receipt its uses twice), with the tables locked so no replica writes meanwhile. Export
//! writes into a directory that is empty or absent. Stop `serve` while either runs: a
//! state that changes under the copy is not the state copied.

use super::postgres::identities::{self, IdentitySets};
use super::postgres::plans::PlanRow;
use super::postgres::{self, db_error};
use crate::state::agents::AgentStore;
use crate::state::approvals::{valid_id, Approval, ApprovalStore};
use crate::state::enrollments::EnrollmentStore;
use crate::state::ledger::Ledger;
use crate::state::trust::{self, PasskeyStore};
use deadpool_postgres::{Pool, Transaction};
use futures_util::{pin_mut, TryStreamExt};
use std::path::Path;

/// The tables an import fills, which must be empty before it; locked while it runs.
const TABLES: &[&str] = &[
    "airlock_ledger",
    "airlock_ledger_events",
    "airlock_audit",
    "airlock_audit_spools",
    "airlock_approvals",
    "airlock_receipts",
    "airlock_plans",
    "airlock_agents",
    "airlock_passkeys",
    "airlock_enrollments",
];

/// Locked with [`TABLES`] but may hold rows: a replica started on the empty database
/// registered its own key, which is no state to merge.
const KEYS_TABLE: &str = "airlock_keys";

/// Rows per statement when importing.
const BATCH: usize = 1000;

/// What was moved: each part's name and how many of it.
#[derive(Debug, Default)]
pub struct Moved(pub Vec<(&'static str, u64)>);

impl std::fmt::Display for Moved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(n, c)| format!("{c} {n}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Copies the file state in `state_dir` into the database (migrated first), which must
/// hold no state; then verifies the chain there.
pub async fn import(pool: &Pool, state_dir: &Path) -> Result<Moved, String> {
    if !state_dir.is_dir() {
        return Err(format!("{}: no such state directory", state_dir.display()));
    }
    // The file chain whole before anything is copied: a broken record is named here.
    crate::audit::verify_from(state_dir, None).map_err(|e| {
        format!(
            "the audit log in {} does not verify: {e}",
            state_dir.display()
        )
    })?;
    postgres::migrate(pool).await?;
    let mut client = pool.get().await.map_err(db_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    refuse_state(&tx).await?;
    // One call per part; each says what it moved.
    let mut moved = Moved::default();
    import_ledger(&tx, state_dir, &mut moved).await?;
    import_audit(&tx, state_dir, &mut moved).await?;
    import_approvals(&tx, state_dir, &mut moved).await?;
    import_plans(&tx, state_dir, &mut moved).await?;
    import_identities(&tx, state_dir, &mut moved).await?;
    tx.commit().await.map_err(db_error)?;
    postgres::verify_audit(pool)
        .await
        .map_err(|e| format!("imported, but the chain in PostgreSQL does not verify: {e}"))?;
    Ok(moved)
}

/// Writes the database's state into `state_dir`, which must be empty or absent, as the
/// file store keeps it; then verifies the chain written.
pub async fn export(pool: &Pool, state_dir: &Path) -> Result<Moved, String> {
    let empty = match std::fs::read_dir(state_dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(format!("{}: {e}", state_dir.display())),
    };
    if !empty {
        return Err(format!(
            "{} is not empty: export writes a whole state, into an empty or new directory",
            state_dir.display()
        ));
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| format!("{}: {e}", state_dir.display()))?;
    }
    postgres::check_schema(pool).await?;
    let mut client = pool.get().await.map_err(db_error)?;
    // One snapshot for every part.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db_error)?;
    // One call per part; each says what it moved.
    let mut moved = Moved::default();
    export_ledger(&tx, state_dir, &mut moved).await?;
    export_audit(&tx, state_dir, &mut moved).await?;
    export_approvals(&tx, state_dir, &mut moved).await?;
    export_plans(&tx, state_dir, &mut moved).await?;
    export_identities(&tx, state_dir, &mut moved).await?;
    tx.commit().await.map_err(db_error)?;
    crate::audit::verify_from(state_dir, None)
        .map_err(|e| format!("exported, but the audit log written does not verify: {e}"))?;
    Ok(moved)
}

/// Locks the tables against every other writer until the transaction ends, and refuses a
/// database in which any of them holds a row (naming them).
async fn refuse_state(tx: &Transaction<'_>) -> Result<(), String> {
    tx.batch_execute(&format!(
        "LOCK TABLE {}, {KEYS_TABLE} IN EXCLUSIVE MODE",
        TABLES.join(", ")
    ))
    .await
    .map_err(db_error)?;
    let mut holding = Vec::new();
    for table in TABLES {
        let any: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
            .await
            .map_err(db_error)?
            .get(0);
        if any {
            holding.push(*table);
        }
    }
    if !holding.is_empty() {
        return Err(format!(
            "the database holds airlock state already ({} not empty): import copies a file state into an EMPTY database only (merging two histories would fork the audit chain and could give a receipt its uses twice)",
            holding.join(", ")
        ));
    }
    Ok(())
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The ledger: each key with its committed uses (unsettled reservations count).
async fn import_ledger(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let ledger = Ledger::open(state_dir).map_err(|e| e.to_string())?;
    let entries = ledger.entries();
    for chunk in entries.chunks(BATCH) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let committed: Vec<i64> = chunk
            .iter()
            .map(|(_, u)| i64::from(u.committed) + i64::from(u.reserved))
            .collect();
        tx.execute(
            "INSERT INTO airlock_ledger (key, committed)
             SELECT * FROM unnest($1::text[], $2::bigint[])",
            &[&keys, &committed],
        )
        .await
        .map_err(db_error)?;
    }
    moved.0.push(("ledger keys", count(entries.len())));
    Ok(())
}

async fn export_ledger(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let rows = tx
        .query(
            "SELECT key, committed + reserved FROM airlock_ledger ORDER BY key",
            &[],
        )
        .await
        .map_err(db_error)?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        let uses: i64 = row.get(1);
        let uses =
            u32::try_from(uses).map_err(|_| format!("a ledger count out of range: {uses}"))?;
        entries.push((row.get::<_, String>(0), uses));
    }
    Ledger::write_new(state_dir, entries).map_err(|e| e.to_string())?;
    moved.0.push(("ledger keys", count(rows.len())));
    Ok(())
}

/// The audit chain, line for line in `seq` order.
async fn import_audit(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let mut records = crate::audit::Records::of(state_dir).map_err(|e| e.to_string())?;
    let mut imported = 0u64;
    loop {
        let lines: Vec<Vec<u8>> = records.by_ref().take(BATCH).collect::<Result<_, _>>()?;
        if lines.is_empty() {
            moved.0.push(("audit records", imported));
            return Ok(());
        }
        let mut seqs = Vec::with_capacity(lines.len());
        let mut texts = Vec::with_capacity(lines.len());
        for line in lines {
            let linked = crate::audit::check_link(None, &line)?;
            seqs.push(i64::try_from(linked.seq).map_err(|e| e.to_string())?);
            texts.push(String::from_utf8(line).map_err(|e| e.to_string())?);
        }
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        postgres::insert_chain_rows(&**tx, &seqs, &texts).await?;
        imported += count(seqs.len());
    }
}

async fn export_audit(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let mut restore = crate::audit::Restore::start(state_dir).map_err(|e| e.to_string())?;
    let rows = tx
        .query_raw(
            "SELECT record FROM airlock_audit ORDER BY seq",
            std::iter::empty::<&dyn tokio_postgres::types::ToSql>(),
        )
        .await
        .map_err(db_error)?;
    pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(db_error)? {
        let line: &str = row.get(0);
        restore.push(line.as_bytes()).map_err(|e| e.to_string())?;
    }
    let records = restore.finish().map_err(|e| e.to_string())?;
    moved.0.push(("audit records", records));
    Ok(())
}

/// Approvals (all of them) and the receipts they name.
async fn import_approvals(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let store = ApprovalStore::open(state_dir).map_err(|e| e.to_string())?;
    let approvals = store.list().map_err(|e| e.to_string())?;
    let mut receipts = 0u64;
    for a in &approvals {
        tx.execute(
            "INSERT INTO airlock_approvals (id, binding_key, status, record)
             VALUES ($1, $2, $3, $4::text::jsonb)",
            &[
                &a.id,
                &a.binding_key,
                &postgres::status_name(a.status).map_err(|e| e.to_string())?,
                &postgres::to_record(a).map_err(|e| e.to_string())?,
            ],
        )
        .await
        .map_err(db_error)?;
        if let Some(receipt_id) = &a.receipt_id {
            receipts += import_receipt(tx, &store, receipt_id).await?;
        }
    }
    moved.0.push(("approvals", count(approvals.len())));
    moved.0.push(("receipts", receipts));
    Ok(())
}

async fn export_approvals(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let store = ApprovalStore::open(state_dir).map_err(|e| e.to_string())?;
    let rows = tx
        .query("SELECT record::text FROM airlock_approvals", &[])
        .await
        .map_err(db_error)?;
    for row in &rows {
        let a: Approval = postgres::from_record(row.get(0)).map_err(|e| e.to_string())?;
        store.restore(&a).map_err(|e| e.to_string())?;
    }
    let receipts = tx
        .query("SELECT id, receipt FROM airlock_receipts", &[])
        .await
        .map_err(db_error)?;
    for row in &receipts {
        let bytes: Vec<u8> = row.get(1);
        store
            .restore_receipt(row.get(0), &bytes)
            .map_err(|e| e.to_string())?;
    }
    moved.0.push(("approvals", count(rows.len())));
    moved.0.push(("receipts", count(receipts.len())));
    Ok(())
}

/// Copies the stored receipt `receipt_id` (from `state/receipts/`, where approvals' and
/// plans' receipts are kept alike); 1 when it was not copied already.
async fn import_receipt(
    tx: &Transaction<'_>,
    store: &ApprovalStore,
    receipt_id: &str,
) -> Result<u64, String> {
    let receipt = store.read_receipt(receipt_id).map_err(|e| e.to_string())?;
    tx.execute(
        "INSERT INTO airlock_receipts (id, receipt) VALUES ($1, $2)
         ON CONFLICT (id) DO NOTHING",
        &[&receipt_id, &receipt],
    )
    .await
    .map_err(db_error)
}

/// What a plan's row holds beside its record (the fields of `plan::store::PlanRecord` of
/// the same names).
#[derive(serde::Deserialize)]
struct PlanFields {
    id: String,
    status: String,
    agent: String,
    receipt_id: Option<String>,
    submitted_at: String,
}

fn plans_dir(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("plans")
}

/// Submitted plans (`state/plans/<id>.json`) and the receipts they name. A plan's receipts
/// are exported with every other receipt (`export_approvals`).
async fn import_plans(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let dir = plans_dir(state_dir);
    let shown = |e: std::io::Error| format!("{}: {e}", dir.display());
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.collect::<Result<Vec<_>, _>>().map_err(shown)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(shown(e)),
    };
    let store = ApprovalStore::open(state_dir).map_err(|e| e.to_string())?;
    let (mut plans, mut receipts) = (0u64, 0u64);
    for entry in entries {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let row: PlanFields =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if path.file_stem().and_then(|s| s.to_str()) != Some(row.id.as_str()) {
            return Err(format!("{}: holds plan {:?}", path.display(), row.id));
        }
        let row = PlanRow {
            id: row.id,
            status: row.status,
            agent: row.agent,
            receipt_id: row.receipt_id,
            submitted_at: row.submitted_at,
            record: text,
        };
        postgres::plans::insert_row(&**tx, &row).await?;
        plans += 1;
        if let Some(receipt_id) = &row.receipt_id {
            receipts += import_receipt(tx, &store, receipt_id).await?;
        }
    }
    moved.0.push(("plans", plans));
    moved.0.push(("plan receipts", receipts));
    Ok(())
}

async fn export_plans(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let dir = plans_dir(state_dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let rows = tx
        .query("SELECT id, record::text FROM airlock_plans", &[])
        .await
        .map_err(db_error)?;
    for row in &rows {
        let id: &str = row.get(0);
        if !valid_id(id) {
            return Err(format!(
                "a plan in PostgreSQL has an id airlock never gives: {id:?}"
            ));
        }
        let record: serde_json::Value =
            serde_json::from_str(row.get(1)).map_err(|e| format!("plan {id}: {e}"))?;
        let json = serde_json::to_vec_pretty(&record).map_err(|e| format!("plan {id}: {e}"))?;
        let path = dir.join(format!("{id}.json"));
        crate::state::write_atomic(&path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    moved.0.push(("plans", count(rows.len())));
    Ok(())
}

/// Agents, passkeys and enrollments, and the file state's own public key (registered, so
/// what it countersigned verifies on every replica).
async fn import_identities(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let sets = IdentitySets {
        agents: AgentStore::new(state_dir)
            .load()
            .map_err(|e| e.to_string())?,
        passkeys: PasskeyStore::new(state_dir).load()?,
        enrollments: EnrollmentStore::new(state_dir).load()?,
    };
    identities::store_sets(tx, &sets).await?;
    let own_key = trust::airlock_public(state_dir)?;
    if let Some(public) = &own_key {
        identities::register_key_in(&**tx, public).await?;
    }
    moved
        .0
        .push(("agent keys", count(sets.agents.agents.len())));
    moved.0.push(("passkeys", count(sets.passkeys.len())));
    moved.0.push(("enrollments", count(sets.enrollments.len())));
    moved.0.push(("airlock keys", u64::from(own_key.is_some())));
    Ok(())
}

/// Agents, passkeys and enrollments as the files keep them, and a fresh own key for the
/// exported state (the database holds no private key: see the module doc).
async fn export_identities(
    tx: &Transaction<'_>,
    state_dir: &Path,
    moved: &mut Moved,
) -> Result<(), String> {
    let sets = identities::load_sets(tx).await?;
    let counts = [
        ("agent keys", count(sets.agents.agents.len())),
        ("passkeys", count(sets.passkeys.len())),
        ("enrollments", count(sets.enrollments.len())),
    ];
    AgentStore::new(state_dir)
        .restore(sets.agents)
        .map_err(|e| e.to_string())?;
    PasskeyStore::new(state_dir).restore(sets.passkeys)?;
    EnrollmentStore::new(state_dir).restore(sets.enrollments)?;
    trust::ensure_airlock_key(state_dir)?;
    moved.0.extend(counts);
    Ok(())
}
