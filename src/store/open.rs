//! The one way `serve` and the commands get a [`Store`]: the files in `[state] dir`, or
//! PostgreSQL when `[state] database_url` (or `AIRLOCK_DATABASE_URL`) is set. Whichever the
//! config names, the approval page, `airlock approvals`, `approve` and `deny` and the
//! request path see the same approvals.

use super::files::FileStore;
use super::postgres::{self, PgStore};
use super::Store;
use crate::config::Config;
use std::sync::Arc;

/// Who opens the store, which decides what is started with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opener {
    /// `serve`: the files' audit writer and ledger; for PostgreSQL, a store made without
    /// reaching the database (the schema migrated at first contact, as `airlock db
    /// migrate` does; audit records spooled meanwhile) and a connection listening for
    /// decisions made on other replicas.
    Serve,
    /// A short command (`approvals`, `approve`, `deny`): approvals read and decided, audit
    /// records appended one by one and durable at once; no ledger, no `serve_started`
    /// record; for PostgreSQL, the schema checked, never migrated.
    Command,
}

/// The store the config names. Needs a Tokio runtime.
pub async fn open(config: Arc<Config>, opener: Opener) -> Result<Arc<dyn Store>, String> {
    let Some(url) = config.database_url.clone() else {
        let files = match opener {
            Opener::Serve => FileStore::open(config)?,
            Opener::Command => FileStore::for_command(config)?,
        };
        return Ok(Arc::new(files));
    };
    match opener {
        Opener::Serve => Ok(for_serve(config).await?.0),
        Opener::Command => {
            let pool = postgres::pool(&url)?;
            postgres::check_schema(&pool).await?;
            Ok(Arc::new(
                PgStore::new(pool).with_approvers(config.approvers.clone()),
            ))
        }
    }
}

/// `serve`'s store ([`Opener::Serve`]), and with a database the PostgreSQL store itself,
/// which the plan index follows. Needs a Tokio runtime.
pub async fn for_serve(
    config: Arc<Config>,
) -> Result<(Arc<dyn Store>, Option<Arc<PgStore>>), String> {
    let Some(url) = config.database_url.clone() else {
        return Ok((Arc::new(FileStore::open(config)?), None));
    };
    // Made without reaching the database: `serve` starts while it is down, the schema is
    // migrated at first contact and audit records wait in the spool.
    let store = Arc::new(
        PgStore::open(&url, &config.state_dir)?
            .with_approvers(config.approvers.clone())
            .listen(&url)?,
    );
    Ok((Arc::clone(&store) as Arc<dyn Store>, Some(store)))
}

/// A command's runtime and store: the command runs its steps with `runtime.block_on`.
pub fn for_command(config: &Config) -> Result<(tokio::runtime::Runtime, Arc<dyn Store>), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let store = runtime.block_on(open(Arc::new(config.clone()), Opener::Command))?;
    Ok((runtime, store))
}
