//! `airlock db …` and the database's side of `airlock audit verify`: short commands, each
//! on a runtime of its own.

use crate::config::Config;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the schema in `[state] database_url` (one transaction; a schema
    /// newer than this airlock knows is refused).
    Migrate,
    /// Copy a file state (the ledger, the audit log with its chain, approvals and
    /// receipts) into the database, which must hold no state yet. Stop `serve` first.
    Import {
        /// The state directory to copy (default: `[state] dir`).
        #[arg(long, value_name = "DIR")]
        from: Option<std::path::PathBuf>,
    },
    /// Write the database's state into DIR (empty or new) as the file store keeps it;
    /// serve it by pointing `[state] dir` at it and removing `database_url`.
    Export {
        /// Where to write it (must be empty or absent).
        #[arg(value_name = "DIR")]
        to: std::path::PathBuf,
    },
}

pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// The config's database for the `db` commands, `audit verify` and the plan commands: no
/// statement timeout, since some read or write the whole state in long statements.
pub fn database_pool(config: &Config) -> Result<deadpool_postgres::Pool, String> {
    let url = config
        .database_url
        .as_ref()
        .ok_or("no database: set [state] database_url in the config, or AIRLOCK_DATABASE_URL")?;
    super::postgres::bulk_pool(url)
}

pub fn run(config: &Config, command: DbCommand) -> Result<(), String> {
    match command {
        DbCommand::Migrate => {
            let pool = database_pool(config)?;
            let migrated = runtime()?.block_on(super::postgres::migrate(&pool))?;
            if migrated.from == migrated.to {
                println!("schema already at version {}", migrated.to);
            } else {
                println!(
                    "schema migrated from version {} to {}",
                    migrated.from, migrated.to
                );
            }
            Ok(())
        }
        DbCommand::Import { from } => {
            let pool = database_pool(config)?;
            let from = from.unwrap_or_else(|| config.state_dir.clone());
            let moved = runtime()?.block_on(super::transfer::import(&pool, &from))?;
            println!(
                "imported {} from {} into PostgreSQL; the chain verifies there",
                moved,
                from.display()
            );
            Ok(())
        }
        DbCommand::Export { to } => {
            let pool = database_pool(config)?;
            let moved = runtime()?.block_on(super::transfer::export(&pool, &to))?;
            println!(
                "exported {} from PostgreSQL into {}; the chain verifies there",
                moved,
                to.display()
            );
            Ok(())
        }
    }
}

/// `airlock audit verify` when the chain is in the database: every record from the first,
/// the first bad one named by its sequence number.
pub fn audit_verify(config: &Config) -> Result<(), String> {
    let pool = database_pool(config)?;
    runtime()?.block_on(async {
        super::postgres::check_schema(&pool).await?;
        match super::postgres::verify_audit(&pool).await {
            Ok(v) => {
                println!("audit chain intact: {} records in PostgreSQL", v.records);
                Ok(())
            }
            Err(e) => Err(format!("audit chain in PostgreSQL broken: {e}")),
        }
    })
}

/// Appends one record to the audit chain the config names (the files' log, or the database's
/// chain), for a CLI command that changed the state.
pub fn append_audit_now(
    config: &Config,
    record: serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    if config.database_url.is_none() {
        return crate::audit::append_now(&config.state_dir, record).map_err(|e| e.to_string());
    }
    let pool = database_pool(config)?;
    runtime()?.block_on(async {
        super::postgres::check_schema(&pool).await?;
        super::postgres::PgStore::new(pool)
            .append_audit(&[record.into()])
            .await
    })
}
