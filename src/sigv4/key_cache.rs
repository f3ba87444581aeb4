//! Derived signing keys, cached: the four HMAC steps of `kSigning` run once per access key,
//! day, region and service instead of once per call. One cache checks the agents'
//! signatures (`Proxy::signing_key`), another signs upstream with the real credentials
//! (`resign::sign_request`).
//!
//! - Looked up by borrowed strings: a hit allocates nothing.
//! - An entry also holds the secret it was derived from, compared on every hit, so a secret
//!   that changed under the same access key id is never answered with the old key. The
//!   secret is a [`Secret`] (never printed, wiped on drop), and the cache has no `Debug`
//!   that would show it: the access key id is the only thing it is keyed by.
//! - Bounded: when an insert would pass the bound, the keys of other days go first (a new
//!   UTC day makes yesterday's keys useless); if that is not enough, the cache starts over.
//! - Bounded per access key id too ([`MAX_KEYS_PER_ID`], the oldest goes first): the
//!   agents' cache is filled before a signature is checked, so whoever knows only an access
//!   key id, not its secret, can make up scopes; they churn that id's few entries and never
//!   push the other agents' keys out.

use super::{Scope, SigningKey};
use crate::secret::Secret;
use std::collections::HashMap;
use std::sync::RwLock;
use subtle::ConstantTimeEq;

/// Keys cached at most by default: more than 10,000 agents' keys for a region and service
/// each in a day (a few MiB when full). Past it every new key empties the cache, so it must
/// hold the keys in daily use, or every call derives its key anew.
pub const DEFAULT_MAX_KEYS: usize = 16_384;

/// Keys cached at most for one access key id: far more regions × services than one agent
/// uses in a day.
pub const MAX_KEYS_PER_ID: usize = 32;

/// The scope a key is derived for, borrowed: what a lookup needs.
#[derive(Clone, Copy)]
pub struct ScopeRef<'a> {
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

impl std::fmt::Display for ScopeRef<'_> {
    /// `date/region/service/aws4_request`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

impl<'a> From<&'a Scope> for ScopeRef<'a> {
    fn from(s: &'a Scope) -> Self {
        ScopeRef {
            date: &s.date,
            region: &s.region,
            service: &s.service,
        }
    }
}

struct Cached {
    scope: Scope,
    secret: Secret,
    key: SigningKey,
}

impl Cached {
    fn matches(&self, secret: &str, scope: ScopeRef<'_>) -> bool {
        self.scope.date == scope.date
            && self.scope.region == scope.region
            && self.scope.service == scope.service
            && bool::from(self.secret.expose().as_bytes().ct_eq(secret.as_bytes()))
    }
}

/// Signing keys by access key id and scope (see the module docs).
pub struct KeyCache {
    entries: RwLock<Entries>,
    max: usize,
}

/// Entries by access key id: a handful each (one per region and service in use), and how
/// many there are in all (kept, so that an insert does not count them).
#[derive(Default)]
struct Entries {
    by_id: HashMap<String, Vec<Cached>>,
    count: usize,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::new(DEFAULT_MAX_KEYS)
    }
}

impl KeyCache {
    /// A cache of at most `max` keys (at least one).
    pub fn new(max: usize) -> Self {
        KeyCache {
            entries: RwLock::new(Entries::default()),
            max: max.max(1),
        }
    }

    /// The key for `secret` (of `access_key_id`) and `scope`: the cached one, or derived now
    /// and cached.
    pub fn key(&self, access_key_id: &str, secret: &str, scope: ScopeRef<'_>) -> SigningKey {
        {
            let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = entries
                .by_id
                .get(access_key_id)
                .and_then(|list| list.iter().find(|c| c.matches(secret, scope)))
            {
                return hit.key;
            }
        }
        let scope = Scope {
            date: scope.date.to_owned(),
            region: scope.region.to_owned(),
            service: scope.service.to_owned(),
        };
        let key = SigningKey::derive(secret, &scope);
        let mut guard = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let entries = &mut *guard;
        let list = entries.by_id.entry(access_key_id.to_owned()).or_default();
        let before = list.len();
        // Another secret under the same id (or the same key derived by a concurrent call)
        // replaces what was there for this scope.
        list.retain(|c| c.scope != scope);
        let day = scope.date.clone();
        list.push(Cached {
            scope,
            secret: Secret::new(secret),
            key,
        });
        if list.len() > MAX_KEYS_PER_ID {
            list.remove(0);
        }
        entries.count = entries.count + list.len() - before;
        Self::bound(entries, self.max, &day);
        key
    }

    /// Keys cached now.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Past `max`: the keys of other days than `day` (the key just derived) go first; then
    /// everything.
    fn bound(entries: &mut Entries, max: usize, day: &str) {
        if entries.count <= max {
            return;
        }
        for list in entries.by_id.values_mut() {
            list.retain(|c| c.scope.date == day);
        }
        entries.by_id.retain(|_, list| !list.is_empty());
        entries.count = entries.by_id.values().map(Vec::len).sum();
        if entries.count > max {
            entries.by_id.clear();
            entries.count = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYTESTSECRET";

    fn scope(date: &str, region: &str, service: &str) -> Scope {
        Scope {
            date: date.into(),
            region: region.into(),
            service: service.into(),
        }
    }

    fn same(a: SigningKey, b: SigningKey) -> bool {
        a.sign("probe") == b.sign("probe")
    }

    #[test]
    fn cached_keys_are_the_derived_keys() {
        let cache = KeyCache::default();
        for s in [
            scope("20261205", "us-east-1", "s3"),
            scope("20261205", "eu-west-1", "s3"),
            scope("20261205", "us-east-1", "sts"),
        ] {
            let first = cache.key("AKID1", SECRET, (&s).into());
            let again = cache.key("AKID1", SECRET, (&s).into());
            assert!(same(first, SigningKey::derive(SECRET, &s)));
            assert!(same(again, first));
        }
        assert_eq!(cache.len(), 3);
        // The published example of AWS's SigV4 documentation (secret, 20150830/us-east-1/iam).
        let doc = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let key = cache.key(
            "AKIDEXAMPLE",
            doc,
            (&scope("20150830", "us-east-1", "iam")).into(),
        );
        assert_eq!(
            hex::encode(key.0),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn a_new_day_derives_a_new_key_and_drops_the_old_days_when_full() {
        let cache = KeyCache::new(2);
        let today = scope("20261205", "us-east-1", "s3");
        let tomorrow = scope("20261206", "us-east-1", "s3");
        let k1 = cache.key("AKID1", SECRET, (&today).into());
        let k2 = cache.key("AKID1", SECRET, (&tomorrow).into());
        assert!(!same(k1, k2));
        assert!(same(k2, SigningKey::derive(SECRET, &tomorrow)));
        assert_eq!(cache.len(), 2);
        // Full: a third key of the new day pushes out the old day's key only.
        let other = scope("20261206", "eu-west-1", "s3");
        let k3 = cache.key("AKID2", SECRET, (&other).into());
        assert!(same(k3, SigningKey::derive(SECRET, &other)));
        assert_eq!(cache.len(), 2);
        let entries = cache.entries.read().unwrap();
        assert!(entries
            .by_id
            .values()
            .flatten()
            .all(|c| c.scope.date == "20261206"));
    }

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let cache = KeyCache::new(8);
        for i in 0..100 {
            let s = scope("20261205", &format!("region-{i}"), "s3");
            let key = cache.key(&format!("AKID{}", i % 7), SECRET, (&s).into());
            assert!(same(key, SigningKey::derive(SECRET, &s)));
            assert!(cache.len() <= 8, "{} keys after {i}", cache.len());
            // Another secret under the same id and scope replaces the key, not adds one.
            cache.key(&format!("AKID{}", i % 7), "another secret", (&s).into());
            let entries = cache.entries.read().unwrap();
            let held: usize = entries.by_id.values().map(Vec::len).sum();
            assert_eq!(entries.count, held, "the kept count is the count");
        }
        assert!(!cache.is_empty());
    }

    #[test]
    fn made_up_scopes_under_one_id_do_not_push_out_the_other_agents_keys() {
        let cache = KeyCache::new(64);
        let honest = scope("20261205", "us-east-1", "s3");
        let kept = cache.key("HONEST", SECRET, (&honest).into());
        for i in 0..1000 {
            let s = scope("20261205", &format!("made-up-{i}"), "s3");
            cache.key("PROBED", "a guessed secret", (&s).into());
        }
        let entries = cache.entries.read().unwrap();
        assert_eq!(entries.by_id["PROBED"].len(), MAX_KEYS_PER_ID);
        // The newest made-up scope is the one kept last.
        assert_eq!(
            entries.by_id["PROBED"].last().unwrap().scope.region,
            "made-up-999"
        );
        assert!(same(entries.by_id["HONEST"][0].key, kept));
        // The kept count follows the per-id cap's drops too.
        let held: usize = entries.by_id.values().map(Vec::len).sum();
        assert_eq!(held, MAX_KEYS_PER_ID + 1);
        assert_eq!(entries.count, held, "the kept count is the count");
    }

    #[test]
    fn another_secret_under_the_same_id_gets_its_own_key() {
        let cache = KeyCache::default();
        let s = scope("20261205", "us-east-1", "s3");
        let old = cache.key("AKID1", SECRET, (&s).into());
        let new = cache.key("AKID1", "another/secret", (&s).into());
        assert!(!same(old, new));
        assert!(same(new, SigningKey::derive("another/secret", &s)));
        // The old secret's entry was replaced, not kept beside it.
        assert_eq!(cache.len(), 1);
    }
}
