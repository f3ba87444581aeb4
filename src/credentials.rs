//! airlock's own, real AWS credentials: from the standard chain (environment, profile,
//! SSO, web identity, container and instance roles), with a refresh-ahead cache because
//! the `aws-config` providers do not cache. The same cache ([`CredentialCache`]) holds the
//! sessions airlock keeps in other accounts (`proxy::assume`).
//!
//! What this does not guarantee: credentials that the chain cannot refresh (an expired SSO
//! session) stop working at their expiry; calls then fail with a clear error until the
//! chain yields new ones.

use crate::state::agents::KEY_PREFIX;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use std::future::Future;
use std::pin::Pin;
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

/// A refresh-ahead cache over one way of fetching credentials: airlock's own (the default
/// chain, [`RealCredentials`]) or a session in another account (`proxy::assume`).
pub struct CredentialCache<E> {
    fetcher: Fetcher<E>,
    cached: RwLock<Option<Credentials>>,
    last_failure: RwLock<Option<(Instant, E)>>,
    refreshing: Mutex<()>,
    refresh_ahead: Duration,
}

/// One fetch of fresh credentials.
pub type Fetching<E> = Pin<Box<dyn Future<Output = Result<Credentials, E>> + Send>>;
type Fetcher<E> = Box<dyn Fn() -> Fetching<E> + Send + Sync>;

/// airlock's own credentials, from the standard chain.
pub type RealCredentials = CredentialCache<CredentialsError>;

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
        Self::with_fetcher(
            move || {
                let provider = provider.clone();
                Box::pin(async move { from_provider(provider.as_ref()).await })
            },
            refresh_ahead,
        )
    }
}

pub async fn from_provider(
    provider: Option<&SharedCredentialsProvider>,
) -> Result<Credentials, CredentialsError> {
    match provider {
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
    }
}

impl<E: Clone + std::fmt::Display + Send + Sync + 'static> CredentialCache<E> {
    /// A cache over `fetch`, refreshed `refresh_ahead` before the credentials expire.
    pub fn with_fetcher(
        fetch: impl Fn() -> Fetching<E> + Send + Sync + 'static,
        refresh_ahead: Duration,
    ) -> Arc<Self> {
        Arc::new(CredentialCache {
            fetcher: Box::new(fetch),
            cached: RwLock::new(None),
            last_failure: RwLock::new(None),
            refreshing: Mutex::new(()),
            refresh_ahead,
        })
    }

    /// Current credentials; refreshes in the background when they are close to expiry and
    /// in the foreground when they are missing or expired.
    pub async fn get(self: &Arc<Self>) -> Result<Credentials, E> {
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

    async fn fetch(&self) -> Result<Credentials, E> {
        let result = (self.fetcher)().await;
        match &result {
            Ok(c) => {
                *self.cached.write().await = Some(c.clone());
                *self.last_failure.write().await = None;
            }
            Err(e) => {
                // Said once at start by `serve`; every refused call's log line repeats the reason.
                tracing::debug!(error = %e, "credentials could not be fetched");
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

    #[tokio::test]
    async fn sessions_close_to_expiry_are_refreshed_ahead_and_failures_kept_briefly() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let fetches = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&fetches);
        // Each session expires in two minutes: inside the five-minute refresh window.
        let cache: Arc<CredentialCache<CredentialsError>> = CredentialCache::with_fetcher(
            move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move {
                    Ok(Credentials::new(
                        format!("ASIA{n}"),
                        "secret",
                        Some("token".into()),
                        Some(SystemTime::now() + Duration::from_secs(120)),
                        "test",
                    ))
                })
            },
            Duration::from_secs(300),
        );
        assert_eq!(cache.get().await.unwrap().access_key_id(), "ASIA0");
        // Still valid, so it is served at once, and a refresh starts in the background.
        assert_eq!(cache.get().await.unwrap().access_key_id(), "ASIA0");
        for _ in 0..100 {
            if fetches.load(Ordering::SeqCst) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            fetches.load(Ordering::SeqCst) >= 2,
            "no refresh ahead of expiry"
        );
        assert_eq!(cache.get().await.unwrap().access_key_id(), "ASIA1");

        let failures = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&failures);
        let refused: Arc<CredentialCache<CredentialsError>> = CredentialCache::with_fetcher(
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Err(CredentialsError("role refused".into())) })
            },
            Duration::from_secs(300),
        );
        assert_eq!(refused.get().await.unwrap_err().0, "role refused");
        assert_eq!(refused.get().await.unwrap_err().0, "role refused");
        assert_eq!(
            failures.load(Ordering::SeqCst),
            1,
            "a refusal is not asked again at once"
        );
    }
}
