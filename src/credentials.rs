//! airlock's own, real AWS credentials: from the standard chain (environment, profile,
//! SSO, web identity, container and instance roles), with a refresh-ahead cache because
//! the `aws-config` providers do not cache.
//!
//! What this does not guarantee: credentials that the chain cannot refresh (an expired SSO
//! session) stop working at their expiry; calls then fail with a clear error until the
//! chain yields new ones.

use crate::state::agents::KEY_PREFIX;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Mutex, RwLock};

/// What a newcomer needs when airlock has no credentials of its own, said once by `serve`.
pub const HOW_TO_GIVE_CREDENTIALS: &str = "give airlock real AWS credentials of its own: `aws configure` (or `aws sso login`), AWS_PROFILE or `[credentials] profile`, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in serve's environment";

/// The log filter that keeps the chain's own lookups quiet: on a machine that is not an EC2
/// instance, its instance-metadata (IMDS) probes fail by design, and `aws-config` logs each
/// failure as a multi-line dump of nested errors. airlock says once what is missing
/// instead; [`SHOW_THE_LOOKUP`] shows the lookup.
pub const QUIET_CHAIN: &str = "aws_config=error";

/// How to see the chain's lookup in full, as `serve` says when it finds no credentials.
pub const SHOW_THE_LOOKUP: &str = "AIRLOCK_LOG=aws_config=debug";

/// How long a failed lookup is remembered before the chain is asked again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(pub String);

pub struct RealCredentials {
    provider: Option<SharedCredentialsProvider>,
    cached: RwLock<Option<Credentials>>,
    last_failure: RwLock<Option<(Instant, CredentialsError)>>,
    refreshing: Mutex<()>,
    refresh_ahead: Duration,
}

impl RealCredentials {
    /// The default chain, optionally for a named profile.
    pub async fn from_default_chain(profile: Option<&str>, refresh_ahead: Duration) -> Arc<Self> {
        let mut builder = DefaultCredentialsChain::builder();
        if let Some(p) = profile {
            builder = builder.profile_name(p);
        }
        let chain = builder.build().await;
        Self::with_provider(Some(SharedCredentialsProvider::new(chain)), refresh_ahead)
    }

    pub fn with_provider(
        provider: Option<SharedCredentialsProvider>,
        refresh_ahead: Duration,
    ) -> Arc<Self> {
        Arc::new(RealCredentials {
            provider,
            cached: RwLock::new(None),
            last_failure: RwLock::new(None),
            refreshing: Mutex::new(()),
            refresh_ahead,
        })
    }

    /// Current credentials; refreshes in the background when they are close to expiry and
    /// in the foreground when they are missing or expired.
    pub async fn get(self: &Arc<Self>) -> Result<Credentials, CredentialsError> {
        let now = SystemTime::now();
        if let Some(c) = self.cached.read().await.clone() {
            match c.expiry() {
                None => return Ok(c),
                Some(exp) if exp > now + self.refresh_ahead => return Ok(c),
                Some(exp) if exp > now + Duration::from_secs(10) => {
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        if let Ok(_guard) = me.refreshing.try_lock() {
                            let _ = me.fetch().await;
                        }
                    });
                    return Ok(c);
                }
                Some(_) => {}
            }
        }
        if let Some((at, err)) = self.last_failure.read().await.clone() {
            if at.elapsed() < RETRY_AFTER_FAILURE {
                return Err(err);
            }
        }
        let _guard = self.refreshing.lock().await;
        if let Some(c) = self.cached.read().await.clone() {
            if c.expiry()
                .is_none_or(|e| e > SystemTime::now() + Duration::from_secs(10))
            {
                return Ok(c);
            }
        }
        self.fetch().await
    }

    async fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let result = match &self.provider {
            None => Err(CredentialsError("no credentials provider is configured".into())),
            Some(p) => match p.provide_credentials().await {
                Ok(c) if c.access_key_id().starts_with(KEY_PREFIX) => Err(CredentialsError(
                    "the credentials in airlock's own environment are an agent's proxy-only credentials, not real AWS credentials".into(),
                )),
                Ok(c) => Ok(c),
                Err(e) => {
                    tracing::debug!(error = ?e, "the credential chain found nothing");
                    // The chain error's own sentence only (a fixed text per kind, nothing
                    // secret): its sources are the multi-line dumps `QUIET_CHAIN` keeps quiet.
                    let said = e.to_string();
                    let reason = said.lines().next().unwrap_or_default();
                    Err(CredentialsError(format!(
                        "no AWS credentials found (the credential chain: {reason})"
                    )))
                }
            },
        };
        match &result {
            Ok(c) => {
                *self.cached.write().await = Some(c.clone());
                *self.last_failure.write().await = None;
            }
            Err(e) => {
                // Said once at start by `serve`; every refused call's log line repeats the reason.
                tracing::debug!(error = %e, "airlock has no usable AWS credentials of its own");
                *self.last_failure.write().await = Some((Instant::now(), e.clone()));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn agent_keys_are_never_used_as_real_credentials() {
        let fake = Credentials::new("AIRLOCKABCDEFGHIJKLM", "secret", None, None, "env");
        let real = RealCredentials::with_provider(
            Some(SharedCredentialsProvider::new(fake)),
            Duration::from_secs(300),
        );
        assert!(real.get().await.unwrap_err().0.contains("proxy-only"));
    }

    #[tokio::test]
    async fn static_credentials_are_cached() {
        let c = Credentials::new("AKIAEXAMPLE", "secret", None, None, "env");
        let real = RealCredentials::with_provider(
            Some(SharedCredentialsProvider::new(c)),
            Duration::from_secs(300),
        );
        assert_eq!(real.get().await.unwrap().access_key_id(), "AKIAEXAMPLE");
        assert!(real.cached.read().await.is_some());
        let none = RealCredentials::with_provider(None, Duration::from_secs(300));
        assert!(none.get().await.is_err());
    }
}
