//! The rules over synthetic chains, then over real files made with `chmod`.

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const ME: u32 = 998;
const AGENT: u32 = 1001;

fn e(path: &str, uid: u32, gid: u32, mode: u32, is_dir: bool) -> Entry {
    Entry {
        path: PathBuf::from(path),
        uid,
        gid,
        mode,
        is_dir,
    }
}

/// `/` and `/srv` (root, 0755), `/srv/airlock` (airlock, 0700), then `leaf`.
fn chain_with(dir_mode: u32, leaf: Entry) -> Vec<Entry> {
    vec![
        e("/", 0, 0, 0o755, true),
        e("/srv", 0, 0, 0o755, true),
        e("/srv/airlock", ME, ME, dir_mode, true),
        leaf,
    ]
}

fn agent() -> Principal {
    Principal {
        uid: AGENT,
        gids: vec![AGENT, 50],
    }
}

#[test]
fn a_private_file_in_a_private_dir_is_out_of_everyone_elses_reach() {
    let c = chain_with(0o700, e("/srv/airlock/ca.key", ME, ME, 0o600, false));
    assert_eq!(exposure(&c, ME, Need::Secret), None);
    let a = agent();
    assert_eq!(can_read(&c, Who::User(&a)), None);
    assert_eq!(can_write(&c, Who::User(&a)), None);
}

#[test]
fn group_and_other_bits_on_the_file_are_exposures_and_name_the_fix() {
    let c = chain_with(0o755, e("/srv/airlock/airlock.toml", ME, 50, 0o664, false));
    let x = exposure(&c, ME, Need::Unchangeable).unwrap();
    assert_eq!(x.writable.as_ref().unwrap().class, Class::Group(50));
    assert!(x.readable.is_none(), "a config may be readable");
    let line = x.describe(ME, &Names::default());
    assert!(
        line.contains("chmod g-w /srv/airlock/airlock.toml"),
        "{line}"
    );

    let c = chain_with(0o755, e("/srv/airlock/ca.key", ME, ME, 0o604, false));
    let x = exposure(&c, ME, Need::Secret).unwrap();
    assert!(x.writable.is_none());
    assert_eq!(x.readable.unwrap().class, Class::Other);
}

#[test]
fn a_writable_directory_above_lets_others_replace_the_file() {
    let c = chain_with(0o775, e("/srv/airlock/airlock.toml", ME, ME, 0o644, false));
    let g = exposure(&c, ME, Need::Unchangeable)
        .unwrap()
        .writable
        .unwrap();
    assert_eq!(g.path, PathBuf::from("/srv/airlock"));
    assert!(g.via_parent);
    assert!(fix(&g, ME, true, &Names::default()).contains("chmod g-w /srv/airlock"));
    // The agent is in group 50 only if the dir's group is 50.
    let mut c = c;
    c[2].gid = 50;
    assert!(can_write(&c, Who::User(&agent())).is_some());
}

#[test]
fn a_sticky_directory_protects_entries_others_do_not_own() {
    let tmp = |leaf_uid| {
        vec![
            e("/", 0, 0, 0o755, true),
            e("/tmp", 0, 0, 0o1777, true),
            e("/tmp/airlock", leaf_uid, leaf_uid, 0o700, true),
        ]
    };
    assert_eq!(exposure(&tmp(ME), ME, Need::Secret), None);
    let a = agent();
    assert_eq!(can_write(&tmp(ME), Who::User(&a)), None);
    // An entry the agent owns in /tmp is the agent's.
    assert!(can_write(&tmp(AGENT), Who::User(&a)).is_some());
}

#[test]
fn an_owner_other_than_airlock_or_root_controls_the_path() {
    // The config inside someone's home: that someone can move it away.
    let c = vec![
        e("/", 0, 0, 0o755, true),
        e("/home", 0, 0, 0o755, true),
        e("/home/alice", 1000, 1000, 0o755, true),
        e("/home/alice/airlock.toml", ME, ME, 0o644, false),
    ];
    let g = exposure(&c, ME, Need::Unchangeable)
        .unwrap()
        .writable
        .unwrap();
    assert_eq!(g.class, Class::Owner(1000));
    assert!(fix(&g, ME, true, &Names::default()).starts_with("move it under"));
    // A file owned by someone else, in a good place: chown it.
    let c = chain_with(0o700, e("/srv/airlock/ca.key", 1000, 1000, 0o600, false));
    let g = exposure(&c, ME, Need::Secret).unwrap().writable.unwrap();
    assert_eq!(
        fix(&g, ME, true, &Names::default()),
        format!("chown {ME} /srv/airlock/ca.key")
    );
}

#[test]
fn a_user_needs_search_permission_on_every_directory_above() {
    let c = chain_with(0o700, e("/srv/airlock/listen.json", ME, ME, 0o644, false));
    let a = agent();
    assert_eq!(
        can_read(&c, Who::User(&a)),
        None,
        "0700 above stops the agent"
    );
    // serve still wants a secret private by its own mode (as ssh does).
    assert!(exposure(&c, ME, Need::Secret).unwrap().readable.is_some());
    let c = chain_with(0o711, e("/srv/airlock/listen.json", ME, ME, 0o644, false));
    assert_eq!(can_read(&c, Who::User(&a)).unwrap().class, Class::Other);
}

#[test]
fn a_readable_directory_is_one_whose_entries_can_be_listed_or_entered() {
    let state = |mode| chain_with(0o755, e("/srv/airlock/state", ME, ME, mode, true));
    let a = agent();
    assert!(can_read(&state(0o700), Who::User(&a)).is_none());
    assert!(can_read(&state(0o701), Who::User(&a)).is_some());
    assert!(can_read(&state(0o704), Who::User(&a)).is_some());
    assert!(exposure(&state(0o750), ME, Need::Secret).is_some());
}

#[test]
fn the_user_who_owns_it_or_root_can_do_anything() {
    let c = chain_with(0o700, e("/srv/airlock/ca.key", ME, ME, 0o400, false));
    let airlock = Principal {
        uid: ME,
        gids: vec![ME],
    };
    assert_eq!(
        can_write(&c, Who::User(&airlock)).unwrap().class,
        Class::Owner(ME)
    );
    let root = Principal {
        uid: 0,
        gids: vec![0],
    };
    assert_eq!(can_read(&c, Who::User(&root)).unwrap().class, Class::Root);
}

// --- real files -------------------------------------------------------------------------

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn real_files_with_chmod() {
    let dir = tempfile::tempdir().unwrap();
    let me = host::current_principal().uid;
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o700);
    let key = dir.path().join("ca.key");
    std::fs::write(&key, b"secret").unwrap();
    chmod(&key, 0o600);
    chmod(dir.path(), 0o755);
    let judge = |p: &Path, need| exposure(&host::chain(p).unwrap(), me, need);
    assert_eq!(judge(&state, Need::Secret), None);
    assert_eq!(judge(&key, Need::Secret), None);

    chmod(&state, 0o770);
    let x = judge(&state, Need::Secret).unwrap();
    assert!(x.writable.is_some() && x.readable.is_some());
    assert!(x
        .describe(me, &host::names())
        .contains(&state.display().to_string()));
    chmod(&state, 0o700);

    chmod(&key, 0o604);
    let x = judge(&key, Need::Secret).unwrap();
    assert!(x.writable.is_none());
    assert_eq!(x.readable.unwrap().class, Class::Other);
    assert_eq!(judge(&key, Need::Unchangeable), None);

    chmod(dir.path(), 0o777);
    let x = judge(&key, Need::Unchangeable).unwrap();
    assert!(x.writable.unwrap().via_parent);
}

#[test]
fn messages_name_users_and_groups_when_known() {
    let names = Names {
        users: [(ME, "airlock".to_string()), (1000, "alice".to_string())].into(),
        groups: [(50, "staff".to_string())].into(),
    };
    let c = chain_with(
        0o755,
        e("/srv/airlock/airlock.toml", 1000, 50, 0o664, false),
    );
    let g = exposure(&c, ME, Need::Unchangeable)
        .unwrap()
        .writable
        .unwrap();
    assert_eq!(holder(&g, &names), "alice (uid 1000), its owner");
    assert_eq!(
        fix(&g, ME, true, &names),
        "chown airlock /srv/airlock/airlock.toml"
    );
    let c = chain_with(0o755, e("/srv/airlock/airlock.toml", ME, 50, 0o664, false));
    let x = exposure(&c, ME, Need::Unchangeable).unwrap();
    assert!(x
        .describe(ME, &names)
        .contains("group staff (gid 50) can change it (chmod g-w"));
}
