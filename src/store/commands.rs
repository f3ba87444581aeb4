//! `airlock db …` and the database's side of `airlock audit verify`: short commands, each
//! on a runtime of its own.

use crate::config::Config;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DbCommand {
    /// Create or upgrade the schema in `[state] database_url` (one transaction; a schema
    /// newer than this airlock knows is refused).
    Migrate,
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

fn database_pool(config: &Config) -> Result<deadpool_postgres::Pool, String> {
    let url = config
        .database_url
        .as_ref()
        .ok_or("no database: set [state] database_url in the config, or AIRLOCK_DATABASE_URL")?;
    super::postgres::pool(url)
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
