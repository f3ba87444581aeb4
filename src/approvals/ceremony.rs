//! The approval page's short-lived memory: CSRF tokens handed to rendered pages, and WebAuthn
//! ceremonies between their `begin` and their `finish`.
//!
//! A ceremony is taken out when it finishes, whether the assertion checks out or not, so each
//! challenge is answered at most once: a replayed `finish` finds nothing. Both maps are capped
//! and expire their entries, so requests to this listener cannot grow memory without bound.

use crate::receipt::{KeyId, ReceiptBody};
use rand::RngCore as _;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a rendered page's CSRF token is accepted.
pub const CSRF_TTL: Duration = Duration::from_secs(30 * 60);
/// How long a started ceremony may take (the browser's WebAuthn timeout is shorter).
pub const CEREMONY_TTL: Duration = Duration::from_secs(3 * 60);
/// The WebAuthn `timeout` the page asks the browser for, in milliseconds.
pub const WEBAUTHN_TIMEOUT_MS: u64 = 120_000;

const MAX_CSRF: usize = 4096;
const MAX_CEREMONIES: usize = 1024;

pub use crate::state::enrollments::random_token;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A started ceremony, waiting for the browser's answer.
pub enum Ceremony {
    /// Approve or deny the calls whose receipt bodies these are, with one assertion by
    /// `passkey` over `challenge`.
    Decide {
        bodies: Vec<ReceiptBody>,
        passkey: KeyId,
        challenge: [u8; 32],
        /// The bodies' passkey challenges (hex), when there are several.
        batch: Vec<String>,
    },
    /// Confirm (or reject) the pending passkey `enrollment`, which must still be `new_key_id`,
    /// with one assertion by the enrolled `passkey` over `challenge`.
    Confirm {
        enrollment: String,
        new_key_id: String,
        confirm: bool,
        passkey: KeyId,
        challenge: [u8; 32],
    },
    /// Register a passkey for the enrollment token whose SHA-256 is `token_hash`.
    Enroll {
        token_hash: String,
        name: String,
        challenge: [u8; 32],
    },
}

struct Entry<T> {
    value: T,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    csrf: HashMap<String, Instant>,
    ceremonies: HashMap<String, Entry<Ceremony>>,
}

#[derive(Default)]
pub struct Ceremonies {
    inner: Mutex<Inner>,
}

impl Ceremonies {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A CSRF token for a page about to be rendered.
    pub fn new_csrf(&self) -> String {
        let now = Instant::now();
        let token = random_token();
        let mut inner = self.lock();
        if inner.csrf.len() >= MAX_CSRF {
            inner.csrf.retain(|_, exp| *exp > now);
            if inner.csrf.len() >= MAX_CSRF {
                // Still full: the oldest goes (its page must be reloaded).
                if let Some(oldest) = inner
                    .csrf
                    .iter()
                    .min_by_key(|(_, exp)| **exp)
                    .map(|(k, _)| k.clone())
                {
                    inner.csrf.remove(&oldest);
                }
            }
        }
        inner.csrf.insert(token.clone(), now + CSRF_TTL);
        token
    }

    pub fn csrf_ok(&self, token: &str) -> bool {
        let now = Instant::now();
        let inner = self.lock();
        inner.csrf.get(token).is_some_and(|exp| *exp > now)
    }

    /// Stores a started ceremony and returns its id. When too many are under way the oldest
    /// is dropped: a flood of `begin`s (anyone on this machine can send them) can make a
    /// person start again, never stop them from starting.
    pub fn start(&self, ceremony: Ceremony) -> String {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.ceremonies.retain(|_, e| e.expires > now);
        if inner.ceremonies.len() >= MAX_CEREMONIES {
            if let Some(oldest) = inner
                .ceremonies
                .iter()
                .min_by_key(|(_, e)| e.expires)
                .map(|(k, _)| k.clone())
            {
                inner.ceremonies.remove(&oldest);
            }
        }
        let id = random_token();
        inner.ceremonies.insert(
            id.clone(),
            Entry {
                value: ceremony,
                expires: now + CEREMONY_TTL,
            },
        );
        id
    }

    /// Takes a ceremony out (it can be finished once), if it exists and has not expired.
    pub fn take(&self, id: &str) -> Option<Ceremony> {
        let now = Instant::now();
        let entry = self.lock().ceremonies.remove(id)?;
        (entry.expires > now).then_some(entry.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enroll() -> Ceremony {
        Ceremony::Enroll {
            token_hash: "h".into(),
            name: "n".into(),
            challenge: [0; 32],
        }
    }

    #[test]
    fn a_ceremony_is_taken_once() {
        let c = Ceremonies::default();
        let id = c.start(enroll());
        assert!(c.take(&id).is_some());
        assert!(c.take(&id).is_none(), "taken twice");
        assert!(c.take("made-up").is_none());
    }

    #[test]
    fn csrf_tokens_are_issued_and_nothing_else_passes() {
        let c = Ceremonies::default();
        let t = c.new_csrf();
        assert!(c.csrf_ok(&t));
        assert!(!c.csrf_ok(""));
        assert!(!c.csrf_ok(&random_token()));
    }

    #[test]
    fn a_flood_of_ceremonies_drops_the_oldest_and_never_refuses() {
        let c = Ceremonies::default();
        let first = c.start(enroll());
        for _ in 0..MAX_CEREMONIES {
            c.start(enroll());
        }
        let last = c.start(enroll());
        assert!(c.take(&first).is_none(), "the oldest was dropped");
        assert!(c.take(&last).is_some());
        assert!(c.lock().ceremonies.len() <= MAX_CEREMONIES);
    }
}
