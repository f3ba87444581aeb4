//! Agents, approvers' passkeys, enrollment links and the replicas' own keys shared through
//! PostgreSQL, against a private cluster (`tests/pg/`): an agent added or revoked through
//! one replica counts on the other within a second (by NOTIFY, and by polling without it),
//! an approver revoked on one is untrusted on the other, a passkey counter advances once
//! across replicas, an enrollment link works once, a pending passkey confirmed on one is
//! trusted on the other, each replica's own key is trusted by all, and the CLI shares
//! agents and approvers through the database.

#![allow(clippy::expect_used)]

mod pg;

use airlock::approvals::enroll;
use airlock::receipt::KeyId;
use airlock::secret::Secret;
use airlock::store::identities::Identities;
use airlock::store::postgres::identities::follow_agents;
use airlock::store::postgres::{self, PgStore};
use airlock::store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pg::{airlock, config_with_database, passkey_record, replica, text, Cluster};

/// How long a change made through one replica may take to count on another.
const ACROSS_REPLICAS: Duration = Duration::from_secs(1);

/// Waits (bounded by [`ACROSS_REPLICAS`] and a little) until `seen` is true; how long it took,
/// or `None` if it never was.
async fn time_until(mut seen: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < ACROSS_REPLICAS * 3 {
        if seen() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Agents, passkeys, enrollments and revocations through two replicas (each a store over
/// its own pool, B following the agents as `serve` does), and the CLI through two configs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identities_are_shared_across_replicas() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("identities").await;
    let a = replica(&url).await;
    let b = Arc::new(
        Arc::into_inner(replica(&url).await)
            .expect("one owner")
            .with_approvers(Vec::new()),
    );
    an_agent_revoked_on_one_replica_is_refused_by_the_other(&url, &a, &b).await;
    an_approver_revoked_on_one_replica_is_untrusted_on_the_other(&a, &b).await;
    a_passkey_counter_advances_once_across_replicas(&a, &b).await;
    an_enrollment_link_works_once_across_replicas(&a, &b).await;
    a_pending_passkey_confirmed_on_one_replica_is_trusted_on_the_other(&a, &b).await;
    each_replicas_own_key_is_trusted_by_all(&a, &b).await;
    the_cli_shares_agents_through_the_database(&cluster).await;
}

async fn an_agent_revoked_on_one_replica_is_refused_by_the_other(
    url: &str,
    a: &PgStore,
    b: &PgStore,
) {
    let Identities::Postgres(b_identities) = b.identities() else {
        panic!("a PostgreSQL store keeps its identities in PostgreSQL");
    };
    // B starts as `serve` does: following the agents, its own key registered once it can.
    let own = airlock::receipt::ApproverKey::generate("airlock").expect("key");
    let registry = follow_agents(b_identities.clone(), &Secret::new(url), Some(own.public()))
        .await
        .expect("follow the agents");
    let mut registered = false;
    for _ in 0..100 {
        if b.trusted_keys().await.expect("trusted keys").len() == 1 {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(registered, "B's own key was not registered within a second");
    let added = a.identities().add_agent("claude").await.expect("add");
    let key = added.access_key_id.clone();
    let known = time_until(|| registry.get(&key).is_some()).await;
    let known = known.expect("the agent added on A is never known on B");
    println!("agent added on replica A: known on replica B after {known:?}");
    assert!(known < ACROSS_REPLICAS, "known on B after {known:?}");
    let on_b = registry.get(&key).expect("known");
    assert_eq!(on_b.name, "claude");
    assert_eq!(
        on_b.secret.expose(),
        added.secret_access_key.expose(),
        "B verifies with the same secret"
    );
    assert!(!b.agent_revoked(&key).await.expect("lookup"));
    assert!(
        a.identities().add_agent("claude").await.is_err(),
        "a second active agent of the same name"
    );

    a.identities().revoke_agent("claude").await.expect("revoke");
    let refused = time_until(|| registry.get(&key).is_none()).await;
    let refused = refused.expect("the key revoked on A is never refused on B");
    println!("agent revoked on replica A: refused on replica B after {refused:?}");
    assert!(refused < ACROSS_REPLICAS, "refused on B after {refused:?}");
    assert!(b.agent_revoked(&key).await.expect("lookup"));
    assert!(
        b.agent_revoked("AIRLOCKNEVERISSUED00")
            .await
            .expect("lookup"),
        "an unknown key counts as revoked"
    );
    let listed = b.identities().agents().await.expect("list").agents;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some(), "revoked agents are kept");

    // An agent bound to two accounts: both keys known on B.
    let accounts = [
        ("staging".to_owned(), "111111111111".to_owned()),
        ("prod".to_owned(), "222222222222".to_owned()),
    ];
    let bound = a
        .identities()
        .add_bound_agent("deployer", &accounts)
        .await
        .expect("bind");
    let both = time_until(|| {
        bound
            .iter()
            .all(|k| registry.get(&k.access_key_id).is_some())
    })
    .await;
    assert!(
        both.is_some_and(|t| t < ACROSS_REPLICAS),
        "B does not know both keys"
    );
    let prod = registry.get(&bound[1].access_key_id).expect("known");
    assert_eq!(prod.account.as_deref(), Some("prod"));
    a.identities()
        .revoke_agent("deployer")
        .await
        .expect("revoke");

    // Without the notification (the follower's connection gone), the poll still finds it.
    let again = a.identities().add_agent("codex").await.expect("add");
    cluster_terminate_listeners(a).await;
    a.identities().revoke_agent("codex").await.expect("revoke");
    let polled = time_until(|| registry.get(&again.access_key_id).is_none()).await;
    let polled = polled.expect("never refused without the notification");
    println!(
        "agent revoked with B's listening connection cut: refused on B after {polled:?} (poll)"
    );
    assert!(polled < ACROSS_REPLICAS, "refused after {polled:?}");
}

/// Ends every listening connection (as a lost connection would), so only polling is left
/// until they are made again.
async fn cluster_terminate_listeners(store: &PgStore) {
    let client = store.pool().get().await.expect("connection");
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate");
}

async fn an_approver_revoked_on_one_replica_is_untrusted_on_the_other(a: &PgStore, b: &PgStore) {
    let carol = passkey_record("carol", b"credential-carol");
    let key_id = KeyId::parse(&carol.key_id).expect("key id");
    a.identities()
        .add_passkey(carol.clone())
        .await
        .expect("enroll");
    let trusted = b.trusted_keys().await.expect("trusted keys");
    assert!(
        trusted.passkeys().any(|p| *p.key_id() == key_id),
        "the passkey enrolled on A is not trusted on B"
    );
    let mut twin = passkey_record("mallory", b"credential-carol");
    twin.sign_count = 1;
    assert!(
        a.identities().add_passkey(twin).await.is_err(),
        "a credential enrolled twice"
    );

    let (removed, ended) = a
        .identities()
        .revoke_approver("carol")
        .await
        .expect("revoke");
    assert_eq!((removed, ended), (1, 0));
    let start = Instant::now();
    let trusted = b.trusted_keys().await.expect("trusted keys");
    let after = start.elapsed();
    assert!(
        !trusted.passkeys().any(|p| *p.key_id() == key_id),
        "the approver revoked on A is still trusted on B"
    );
    println!("approver revoked on replica A: untrusted on replica B at its next read ({after:?})");
    assert!(
        a.trusted_keys().await.is_err(),
        "a store without the config's approvers checks no receipt"
    );
}

async fn a_passkey_counter_advances_once_across_replicas(a: &Arc<PgStore>, b: &Arc<PgStore>) {
    let dana = passkey_record("dana", b"credential-dana");
    let key_id = KeyId::parse(&dana.key_id).expect("key id");
    a.identities().add_passkey(dana).await.expect("enroll");
    a.identities()
        .advance_counter(&key_id, 5)
        .await
        .expect("first use");
    let replay = b.identities().advance_counter(&key_id, 5).await;
    assert!(
        replay.is_err_and(|e| e.contains("signature counter")),
        "the same counter accepted on B"
    );
    // The same assertion shown to both replicas at once, many times: one acceptance.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(if i % 2 == 0 { a } else { b });
        let key_id = key_id.clone();
        tasks.push(tokio::spawn(async move {
            store.identities().advance_counter(&key_id, 6).await.is_ok()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += usize::from(t.await.expect("task"));
    }
    println!("counter 6 shown 16 times over two replicas: accepted {accepted}");
    assert_eq!(accepted, 1);
    let stored = b.identities().passkeys().await.expect("passkeys");
    assert_eq!(stored[0].sign_count, 6);
}

async fn an_enrollment_link_works_once_across_replicas(a: &PgStore, b: &PgStore) {
    let token = a
        .identities()
        .open_enrollment("erin", Duration::from_secs(600))
        .await
        .expect("link");
    let on_b = b.identities().enrollments().await;
    let link = enroll::find_link(&on_b, &token).expect("the link made on A opens on B");
    assert_eq!(link.name, "erin");
    let hash = enroll::token_hash(&token).expect("hash");
    assert!(
        !serde_json::to_string(&on_b).expect("json").contains(&token),
        "the token itself is stored"
    );
    let name = b
        .identities()
        .consume_enrollment(&hash, None)
        .await
        .expect("used on B");
    assert_eq!(name, "erin");
    assert!(
        a.identities()
            .consume_enrollment(&hash, None)
            .await
            .is_err(),
        "the link worked twice"
    );
    assert!(enroll::find_link(&a.identities().enrollments().await, &token).is_none());
}

/// A passkey registered through a link on B waits; confirmed on A, it is trusted on B; the
/// confirmation settles and adds in one step, so a second confirmation finds nothing.
async fn a_pending_passkey_confirmed_on_one_replica_is_trusted_on_the_other(
    a: &PgStore,
    b: &PgStore,
) {
    let token = b
        .identities()
        .open_enrollment("frank", Duration::from_secs(600))
        .await
        .expect("link");
    let hash = enroll::token_hash(&token).expect("hash");
    let passkey = passkey_record("frank", b"credential-frank");
    let pending = enroll::PendingPasskey {
        id: "pending-frank".into(),
        passkey: passkey.clone(),
        registered_at: passkey.created_at.clone(),
        remote_addr: "127.0.0.1:50000".into(),
        user_agent: "test".into(),
        until: i64::MAX,
    };
    b.identities()
        .consume_enrollment(&hash, Some(pending))
        .await
        .expect("registered on B");
    let untrusted = b.trusted_keys().await.expect("trusted keys");
    assert!(
        !untrusted
            .passkeys()
            .any(|p| p.key_id().as_str() == passkey.key_id),
        "a pending passkey is trusted"
    );
    let waiting = enroll::waiting_in(a.identities().enrollments().await);
    assert_eq!(waiting.len(), 1, "A does not see the passkey waiting");
    let (_, added) = a
        .identities()
        .settle_pending(enroll::Settlement {
            id: "pending-frank",
            key_id: &passkey.key_id,
            confirmed: true,
            by: "dana",
        })
        .await
        .expect("confirmed on A");
    assert!(added.is_some());
    let trusted = b.trusted_keys().await.expect("trusted keys");
    assert!(
        trusted
            .passkeys()
            .any(|p| p.key_id().as_str() == passkey.key_id),
        "the passkey confirmed on A is not trusted on B"
    );
    assert!(
        b.identities()
            .settle_pending(enroll::Settlement {
                id: "pending-frank",
                key_id: &passkey.key_id,
                confirmed: true,
                by: "dana",
            })
            .await
            .is_err(),
        "confirmed twice"
    );
}

async fn each_replicas_own_key_is_trusted_by_all(a: &PgStore, b: &PgStore) {
    let before = b.trusted_keys().await.expect("trusted").len();
    for store in [a, b] {
        let own = airlock::receipt::ApproverKey::generate("airlock").expect("key");
        for _restart in 0..2 {
            store
                .identities()
                .register_airlock_key(&own.public())
                .await
                .expect("register");
        }
    }
    let after = b.trusted_keys().await.expect("trusted").len();
    assert_eq!(
        after,
        before + 2,
        "B does not trust both replicas' own keys (each registered twice)"
    );
}

async fn the_cli_shares_agents_through_the_database(cluster: &Cluster) {
    let url = cluster.database("identities_cli").await;
    let one = tempfile::tempdir().expect("dir");
    let two = tempfile::tempdir().expect("dir");
    let first = config_with_database(one.path(), &url);
    let second = config_with_database(two.path(), &url);
    let out = airlock(&first, &["db", "migrate"]);
    assert!(out.status.success(), "db migrate: {}", text(&out));
    let out = airlock(&first, &["agent", "add", "ci-runner", "--json"]);
    assert!(out.status.success(), "agent add: {}", text(&out));
    let env: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let key = env["AWS_ACCESS_KEY_ID"]
        .as_str()
        .expect("key id")
        .to_owned();
    assert!(
        !holds_file(one.path(), "agents.json", 4),
        "the agent went to a file, not to the database"
    );

    let listed = |config: &Path| -> serde_json::Value {
        let out = airlock(config, &["agent", "list", "--json"]);
        assert!(out.status.success(), "agent list: {}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!said.contains("SECRET"), "agent list shows secrets: {said}");
        serde_json::from_str(&said).expect("json")
    };
    let seen = listed(&second);
    assert_eq!(seen[0]["name"], "ci-runner", "{seen}");
    assert_eq!(seen[0]["access_key_id"], key.as_str());
    assert!(seen[0]["revoked_at"].is_null());

    let out = airlock(&second, &["agent", "revoke", "ci-runner"]);
    assert!(out.status.success(), "agent revoke: {}", text(&out));
    let seen = listed(&first);
    assert!(
        seen[0]["revoked_at"].is_string(),
        "revoked through the second config, still active for the first: {seen}"
    );
    let out = airlock(&first, &["approver", "revoke", "nobody"]);
    assert!(!out.status.success(), "revoked an approver that never was");

    // An enrollment link made through one config is in the database; an approver revoked
    // through the other loses its passkeys there, and the revocation is in the shared chain.
    let out = airlock(&first, &["approver", "enroll", "gina"]);
    assert!(out.status.success(), "approver enroll: {}", text(&out));
    let store = replica(&url).await;
    let links = store.identities().enrollments().await;
    assert!(
        links.len() == 1 && links[0].name == "gina",
        "the link is not in the database"
    );
    store
        .identities()
        .add_passkey(passkey_record("gina", b"credential-gina"))
        .await
        .expect("enroll");
    let out = airlock(&second, &["approver", "list", "--json"]);
    assert!(out.status.success(), "approver list: {}", text(&out));
    let approvers: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        approvers
            .as_array()
            .expect("list")
            .iter()
            .any(|a| a["name"] == "gina" && a["kind"] == "passkey"),
        "gina's passkey is not listed through the other config: {approvers}"
    );
    let out = airlock(&second, &["approver", "revoke", "gina"]);
    assert!(out.status.success(), "approver revoke: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passkey(s) removed, 1 open link(s)"),
        "{}",
        text(&out)
    );
    assert!(store
        .identities()
        .passkeys()
        .await
        .expect("passkeys")
        .is_empty());
    let verified = postgres::verify_audit(store.pool()).await.expect("chain");
    assert_eq!(verified.records, 1, "the revocation is not in the chain");
}

/// An agent's row this airlock cannot read (a field it does not know, as a hand edit or a
/// newer airlock may leave) refuses that agent alone: a follower leaves it out, with a log
/// line, and keeps every other agent and every later change, whether it meets the row on a
/// change or at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_agent_row_refuses_that_agent_only() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = cluster.database("unreadable_agent").await;
    let a = replica(&url).await;
    let Identities::Postgres(ids) = a.identities() else {
        panic!("a PostgreSQL store keeps its identities in PostgreSQL");
    };
    let good = a.identities().add_agent("good").await.expect("add");
    let odd = a.identities().add_agent("odd").await.expect("add");
    let registry = follow_agents(ids.clone(), &Secret::new(&url), None)
        .await
        .expect("follow the agents");
    assert!(registry.get(&odd.access_key_id).is_some());

    // Changed and announced as any change to the agents is, but no longer an agent record
    // this airlock reads.
    let client = a.pool().get().await.expect("client");
    let announce = "UPDATE airlock_identities_version SET version = version + 1;
                    NOTIFY airlock_agents_changed";
    client
        .batch_execute(&format!(
            "UPDATE airlock_agents SET record = record || '{{\"role\": \"admin\"}}'
             WHERE key = '{}'; {announce}",
            odd.access_key_id
        ))
        .await
        .expect("an unknown field");
    let refused = time_until(|| registry.get(&odd.access_key_id).is_none()).await;
    assert!(
        refused.is_some(),
        "the agent whose row cannot be read is still served"
    );
    assert!(
        registry.get(&good.access_key_id).is_some(),
        "one unreadable row refused every agent"
    );
    // Later changes still count (the good agent revoked by hand, as a change would).
    client
        .batch_execute(&format!(
            "UPDATE airlock_agents SET record = jsonb_set(record, '{{revoked_at}}', '\"2026-01-01T00:00:00Z\"')
             WHERE key = '{}'; {announce}",
            good.access_key_id
        ))
        .await
        .expect("revoke by hand");
    let later = time_until(|| registry.get(&good.access_key_id).is_none()).await;
    assert!(later.is_some(), "the follower stopped following");

    // A follower that meets the row at start.
    let third = a.identities().add_agent("third");
    assert!(
        third.await.is_err(),
        "a change rewrote the set over a row it cannot read"
    );
    client
        .batch_execute(&format!(
            "UPDATE airlock_agents SET record = record - 'revoked_at' WHERE key = '{}'",
            good.access_key_id
        ))
        .await
        .expect("restore");
    let fresh = follow_agents(ids.clone(), &Secret::new(&url), None)
        .await
        .expect("follow the agents");
    assert!(fresh.get(&good.access_key_id).is_some());
    assert!(fresh.get(&odd.access_key_id).is_none());
}

/// Whether `name` is anywhere under `dir` (at most `depth` levels down).
fn holds_file(dir: &Path, name: &str, depth: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        path.file_name().is_some_and(|n| n == name)
            || (depth > 0 && path.is_dir() && holds_file(&path, name, depth - 1))
    })
}
