//! Who may call and who may approve: the agents and their keys, the approvers' passkeys, the
//! enrollment links, and the keys receipts are checked against, wherever they are kept.
//!
//! - [`Identities::Files`]: `agents.json`, `passkeys.json`, `enrollments.json` and
//!   `airlock.pub` in `[state] dir`, through the file code that ran before (`AgentStore`,
//!   `PasskeyStore`, `EnrollmentStore`, `signing::trusted_keys`), unchanged.
//! - [`Identities::Postgres`]: the same records in PostgreSQL
//!   ([`super::postgres::identities`]), changed by the same functions under a database lock.
//!
//! The CLI ([`run_blocking`]), `serve` ([`Identities::agent_registry`]) and the approval page
//! (through [`super::Store::identities`]) all go through here.

use super::postgres::identities::PgIdentities;
use crate::config::Config;
use crate::receipt::{ApproverPublic, KeyId, TrustedKeys};
use crate::state::agents::{AgentRecord, AgentRegistry, AgentStore, AgentsFile};
use crate::state::enrollments::{self, Enrollment, EnrollmentStore, PendingPasskey, Settlement};
use crate::state::trust::{PasskeyRecord, PasskeyStore};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub enum Identities {
    /// In `[state] dir`.
    Files(PathBuf),
    /// In `[state] database_url`.
    Postgres(PgIdentities),
}

impl Identities {
    /// Where the config keeps them: its `database_url`, else its `[state] dir`. Nothing is
    /// connected until first use.
    pub fn open(config: &Config) -> Result<Identities, String> {
        Ok(match &config.database_url {
            Some(url) => Identities::Postgres(PgIdentities::new(super::postgres::pool(url)?)),
            None => Identities::Files(config.state_dir.clone()),
        })
    }

    /// Every agent, revoked ones included.
    pub async fn agents(&self) -> Result<AgentsFile, String> {
        match self {
            Identities::Files(dir) => AgentStore::new(dir).load().map_err(|e| e.to_string()),
            Identities::Postgres(pg) => pg.agents().await,
        }
    }

    /// A new agent in airlock's own account (`AgentsFile::add`).
    pub async fn add_agent(&self, name: &str) -> Result<AgentRecord, String> {
        match self {
            Identities::Files(dir) => AgentStore::new(dir).add(name).map_err(|e| e.to_string()),
            Identities::Postgres(pg) => pg.change_agents(|f| f.add(name)).await,
        }
    }

    /// An agent bound to accounts (`AgentsFile::add_bound`): every active key of it.
    pub async fn add_bound_agent(
        &self,
        name: &str,
        accounts: &[(String, String)],
    ) -> Result<Vec<AgentRecord>, String> {
        match self {
            Identities::Files(dir) => AgentStore::new(dir)
                .add_bound(name, accounts)
                .map_err(|e| e.to_string()),
            Identities::Postgres(pg) => pg.change_agents(|f| f.add_bound(name, accounts)).await,
        }
    }

    /// Revokes every key of an agent; each replica refuses them within a second.
    pub async fn revoke_agent(&self, name: &str) -> Result<(), String> {
        match self {
            Identities::Files(dir) => AgentStore::new(dir).revoke(name).map_err(|e| e.to_string()),
            Identities::Postgres(pg) => pg.change_agents(|f| f.revoke(name)).await,
        }
    }

    /// Whether the agent key was revoked (an unknown key counts as revoked).
    pub async fn agent_revoked(&self, access_key_id: &str) -> Result<bool, String> {
        match self {
            Identities::Files(_) => Ok(!self.agents().await?.is_active(access_key_id)),
            Identities::Postgres(pg) => pg.agent_revoked(access_key_id).await,
        }
    }

    /// What `serve` needs before it answers: the request path's agents, kept in step with
    /// where they are kept (the file, watched by `serve`'s reload tick; or the database,
    /// followed by notification and polling), and, with a database, this replica's own key
    /// registered so that every replica trusts the passkey approvals it countersigns.
    pub async fn prepare_serving(&self, config: &Config) -> Result<Arc<AgentRegistry>, String> {
        match (self, &config.database_url) {
            (Identities::Postgres(pg), Some(url)) => {
                let own = crate::state::trust::ensure_airlock_key(&config.state_dir)?;
                super::postgres::identities::follow_agents(pg.clone(), url, Some(own.public()))
                    .await
            }
            _ => AgentRegistry::open(&config.state_dir).map_err(|e| e.to_string()),
        }
    }

    pub async fn passkeys(&self) -> Result<Vec<PasskeyRecord>, String> {
        match self {
            Identities::Files(dir) => PasskeyStore::new(dir).load(),
            Identities::Postgres(pg) => pg.passkeys().await,
        }
    }

    pub async fn add_passkey(&self, record: PasskeyRecord) -> Result<(), String> {
        match self {
            Identities::Files(dir) => PasskeyStore::new(dir).add(record),
            Identities::Postgres(pg) => pg.add_passkey(record).await,
        }
    }

    /// Records an assertion's signature counter; one that did not go up is refused.
    pub async fn advance_counter(&self, key_id: &KeyId, count: u32) -> Result<(), String> {
        match self {
            Identities::Files(dir) => PasskeyStore::new(dir).advance_counter(key_id, count),
            Identities::Postgres(pg) => pg.advance_counter(key_id, count).await,
        }
    }

    /// Every enrollment kept (a read error counts as none: no link works then).
    pub async fn enrollments(&self) -> Vec<Enrollment> {
        match self {
            Identities::Files(dir) => EnrollmentStore::new(dir).all(),
            Identities::Postgres(pg) => pg.enrollments().await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not read the enrollments from PostgreSQL");
                Vec::new()
            }),
        }
    }

    /// A new enrollment link for `name`: its token, shown once.
    pub async fn open_enrollment(&self, name: &str, ttl: Duration) -> Result<String, String> {
        match self {
            Identities::Files(dir) => EnrollmentStore::new(dir).create(name, ttl),
            Identities::Postgres(pg) => {
                pg.change_enrollments(|all| enrollments::open_link(all, name, ttl))
                    .await
            }
        }
    }

    /// Uses up a link (`enrollments::consume_link`): its name.
    pub async fn consume_enrollment(
        &self,
        hash: &str,
        pending: Option<PendingPasskey>,
    ) -> Result<String, String> {
        match self {
            Identities::Files(dir) => EnrollmentStore::new(dir).consume(hash, pending),
            Identities::Postgres(pg) => {
                pg.change_enrollments(|all| enrollments::consume_link(all, hash, pending))
                    .await
            }
        }
    }

    /// Settles a pending passkey and, confirmed, adds it, as one step for `revoke_approver`.
    pub async fn settle_pending(
        &self,
        settlement: Settlement<'_>,
    ) -> Result<(Enrollment, Option<PasskeyRecord>), String> {
        match self {
            Identities::Files(dir) => {
                let _held = enrollments::approvers_lock(dir)?;
                let (e, record) = EnrollmentStore::new(dir).settle(settlement)?;
                if let Some(record) = &record {
                    PasskeyStore::new(dir).add(record.clone())?;
                }
                Ok((e, record))
            }
            Identities::Postgres(pg) => pg.settle_and_add(settlement).await,
        }
    }

    /// Ends `name`'s links and pending passkeys and removes its passkeys, as one step:
    /// (passkeys removed, links or pending passkeys ended).
    pub async fn revoke_approver(&self, name: &str) -> Result<(usize, usize), String> {
        match self {
            Identities::Files(dir) => {
                let _held = enrollments::approvers_lock(dir)?;
                let ended = EnrollmentStore::new(dir).revoke(name)?;
                let removed = PasskeyStore::new(dir).remove_name(name)?;
                Ok((removed, ended))
            }
            Identities::Postgres(pg) => pg.revoke_approver(name).await,
        }
    }

    /// Makes this replica's own key one every replica trusts (a no-op for the files, where
    /// `airlock.pub` is read directly).
    pub async fn register_airlock_key(&self, public: &ApproverPublic) -> Result<(), String> {
        match self {
            Identities::Files(_) => Ok(()),
            Identities::Postgres(pg) => pg.register_airlock_key(public).await,
        }
    }

    /// The keys receipts are checked against: `approvers` (the config's), airlock's own
    /// key(s) and the enrolled passkeys, read now.
    pub async fn trusted_keys(&self, approvers: &[ApproverPublic]) -> Result<TrustedKeys, String> {
        match self {
            Identities::Files(dir) => crate::signing::trusted_keys_in(approvers, dir),
            Identities::Postgres(pg) => pg.trusted_keys(approvers).await,
        }
    }
}

/// For the CLI: one step on the identities the config names, on a runtime of its own (the
/// database's schema checked first).
pub fn run_blocking<T, F: Future<Output = Result<T, String>>>(
    config: &Config,
    step: impl FnOnce(Identities) -> F,
) -> Result<T, String> {
    let identities = Identities::open(config)?;
    super::commands::runtime()?.block_on(async {
        if let Identities::Postgres(pg) = &identities {
            super::postgres::check_schema(pg.pool()).await?;
        }
        step(identities).await
    })
}

/// For the CLI: the keys receipts are checked against now (`approve`, `deny`, `plan approve`,
/// `receipt verify`), from where the config keeps them.
pub fn trusted_keys_now(config: &Config) -> Result<TrustedKeys, String> {
    run_blocking(config, async |ids| {
        ids.trusted_keys(&config.approvers).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passkey(name: &str) -> PasskeyRecord {
        let auth = crate::receipt::webauthn::soft::Authenticator::new("localhost");
        crate::state::trust::tests::enrolled(&auth, name)
    }

    /// Without a database the identities are the state dir's files, as the file stores
    /// read them: what one writes through here, they read, and the other way round.
    #[tokio::test(flavor = "current_thread")]
    async fn the_files_are_the_file_stores_own() {
        let dir = tempfile::tempdir().expect("dir");
        let ids = Identities::Files(dir.path().to_owned());
        let agent = ids.add_agent("claude").await.expect("add");
        let on_disk = AgentStore::new(dir.path())
            .get("claude")
            .expect("in agents.json");
        assert_eq!(on_disk.access_key_id, agent.access_key_id);
        assert!(!ids
            .agent_revoked(&agent.access_key_id)
            .await
            .expect("lookup"));
        AgentStore::new(dir.path())
            .revoke("claude")
            .expect("revoke");
        assert!(ids
            .agent_revoked(&agent.access_key_id)
            .await
            .expect("lookup"));
        assert!(ids.revoke_agent("claude").await.is_err(), "revoked twice");

        let carol = passkey("carol");
        let key_id = KeyId::parse(&carol.key_id).expect("key id");
        ids.add_passkey(carol.clone()).await.expect("enroll");
        assert_eq!(PasskeyStore::new(dir.path()).load().expect("load").len(), 1);
        ids.advance_counter(&key_id, 2).await.expect("up");
        assert!(ids.advance_counter(&key_id, 2).await.is_err(), "replayed");
        let trusted = ids.trusted_keys(&[]).await.expect("trusted");
        assert!(trusted.passkeys().any(|p| *p.key_id() == key_id));

        let token = ids
            .open_enrollment("carol", Duration::from_secs(60))
            .await
            .expect("link");
        assert!(EnrollmentStore::new(dir.path()).find(&token).is_some());
        assert_eq!(ids.revoke_approver("carol").await.expect("revoke"), (1, 1));
        assert!(ids.passkeys().await.expect("passkeys").is_empty());
        assert!(enrollments::find_link(&ids.enrollments().await, &token).is_none());
    }
}
