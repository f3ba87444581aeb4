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
        dev: 0,
        ino: 0,
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

// --- what serve judges: routes through symlinks, missing paths, the config it reads -------

/// A temp dir (root or this user's, 0755) with `private` (0700) and `open` (0777, anyone may change it) in it.
fn private_and_open() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let private = dir.path().join("private");
    let open = dir.path().join("open");
    std::fs::create_dir(&private).unwrap();
    std::fs::create_dir(&open).unwrap();
    chmod(&private, 0o700);
    chmod(&open, 0o777);
    (dir, private, open)
}

#[test]
fn a_symlink_in_a_directory_others_can_change_is_an_exposure() {
    let me = host::current_principal().uid;
    let (_dir, private, open) = private_and_open();
    let config = private.join("airlock.toml");
    std::fs::write(&config, b"").unwrap();
    chmod(&config, 0o644);
    let judge = |p: &Path| exposure_through(&host::routes(p).unwrap(), me, Need::Unchangeable);
    assert_eq!(judge(&config), None, "the target alone is fine");

    // The link's own directory is judged, not only its target's.
    let link = open.join("airlock.toml");
    std::os::unix::fs::symlink(&config, &link).unwrap();
    let x = judge(&link).unwrap();
    assert_eq!(x.path, link);
    let g = x.writable.unwrap();
    assert_eq!((g.path, g.via_parent), (open.clone(), true));

    // A link to a link: the middle one's directory counts too (a relative target here).
    let safe_link = private.join("via");
    std::os::unix::fs::symlink("../open/airlock.toml", &safe_link).unwrap();
    let g = judge(&safe_link).unwrap().writable.unwrap();
    assert_eq!(
        g.path,
        private.join("../open"),
        "named as the link reaches it"
    );

    // A symlinked directory in the middle of the path, kept in a private place, is fine;
    // in an open one it is not.
    let private_dir_link = private.join("etc");
    std::os::unix::fs::symlink(&private, &private_dir_link).unwrap();
    assert_eq!(judge(&private_dir_link.join("airlock.toml")), None);
    let open_dir_link = open.join("etc");
    std::os::unix::fs::symlink(&private, &open_dir_link).unwrap();
    assert_eq!(
        judge(&open_dir_link.join("airlock.toml"))
            .unwrap()
            .writable
            .unwrap()
            .path,
        open
    );
}

#[test]
fn a_path_that_cannot_be_examined_is_an_exposure_and_a_missing_one_is_judged_by_its_directory() {
    let me = host::current_principal().uid;
    let (_dir, private, open) = private_and_open();
    // Missing, where nobody else can create it: nothing to say.
    assert_eq!(
        host::path_exposure(&private.join("no/such/credentials"), me, Need::Secret),
        None
    );
    // Missing, where others can create it (a planted AWS config runs its credential_process).
    let planted = open.join(".aws").join("config");
    let x = host::path_exposure(&planted, me, Need::Unchangeable).unwrap();
    assert_eq!(x.path, planted);
    assert_eq!(x.writable.unwrap().path, open);
    // A dangling symlink, or a file used as a directory: the facts cannot be gathered.
    let dangling = private.join("dangling");
    std::os::unix::fs::symlink(private.join("gone"), &dangling).unwrap();
    let file = private.join("file");
    std::fs::write(&file, b"").unwrap();
    for broken in [dangling, file.join("below")] {
        let x = host::path_exposure(&broken, me, Need::Unchangeable).unwrap();
        assert!(x.unchecked.is_some(), "{broken:?}");
        assert!(
            x.describe(me, &Names::default())
                .contains("cannot be checked"),
            "{x:?}"
        );
    }
}

#[test]
fn the_config_is_read_only_from_the_file_that_was_judged() {
    let me = host::current_principal().uid;
    let (_dir, private, open) = private_and_open();
    let config = private.join("airlock.toml");
    std::fs::write(&config, b"[policy]\n").unwrap();
    chmod(&config, 0o644);
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut host::open_unchangeable(&config, me).unwrap(),
        &mut text,
    )
    .unwrap();
    assert_eq!(text, "[policy]\n");

    // Judged, then replaced before it is opened: refused, not read.
    let routes = host::routes(&config).unwrap();
    let replacement = private.join("replacement");
    std::fs::write(&replacement, b"[policy]\nmode = \"shadow\"\n").unwrap();
    std::fs::rename(&replacement, &config).unwrap();
    let x = host::open_judged(&config, &routes).unwrap_err();
    assert!(x.unchecked.unwrap().contains("replaced"));

    // Renamed away: the config must exist, so that is a refusal too.
    std::fs::rename(&config, private.join("elsewhere")).unwrap();
    assert!(host::open_unchangeable(&config, me)
        .unwrap_err()
        .unchecked
        .is_some());

    // Through a symlink in a open directory: refused before it is opened.
    std::fs::rename(private.join("elsewhere"), &config).unwrap();
    let link = open.join("airlock.toml");
    std::os::unix::fs::symlink(&config, &link).unwrap();
    let x = host::open_unchangeable(&link, me).unwrap_err();
    assert_eq!(x.writable.unwrap().path, open);
}

#[test]
fn airlocks_credential_sources_come_from_its_environment_or_its_home() {
    use std::ffi::OsString;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let home = Path::new("/home/airlock");
    let paths = |pairs, home| {
        host::credential_sources(env(pairs), home)
            .into_iter()
            .map(|(_, p, need)| (p, need))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        paths(&[], Some(home)),
        vec![
            (home.join(".aws/config"), Need::Unchangeable),
            (home.join(".aws/credentials"), Need::Secret),
        ]
    );
    assert_eq!(paths(&[], None), vec![]);
    assert_eq!(
        paths(
            &[
                ("AWS_CONFIG_FILE", "/etc/airlock/aws-config"),
                ("AWS_SHARED_CREDENTIALS_FILE", "~/keys"),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", "/run/token"),
            ],
            Some(home)
        ),
        vec![
            (PathBuf::from("/etc/airlock/aws-config"), Need::Unchangeable),
            (home.join("keys"), Need::Secret),
            (PathBuf::from("/run/token"), Need::Unchangeable),
        ]
    );
}

#[test]
fn serve_judges_its_own_binary_and_credentials_files() {
    let me = host::current_principal().uid;
    let exe = std::env::current_exe().unwrap();
    let (_dir, private, _open) = private_and_open();
    let parsed =
        crate::config::Config::parse(&private.join("airlock.toml"), crate::config::EXAMPLE);
    let Ok(parsed) = parsed else {
        panic!("{parsed:?}")
    };
    let paths = host::serve_paths(&parsed, me).unwrap();
    assert!(paths
        .iter()
        .any(|(_, p, need)| *p == exe && *need == Need::Unchangeable));
    assert!(paths
        .iter()
        .any(|(label, _, need)| *label == "AWS credentials file" && *need == Need::Secret));
    // A credentials file others can read is an exposure.
    let credentials = private.join("credentials");
    std::fs::write(&credentials, b"[default]\n").unwrap();
    chmod(&credentials, 0o604);
    let x = host::path_exposure(&credentials, me, Need::Secret).unwrap();
    assert_eq!(x.readable.unwrap().class, Class::Other);
}

#[test]
fn a_config_holding_a_database_password_is_a_secret() {
    let me = host::current_principal().uid;
    let (_dir, private, _open) = private_and_open();
    let path = private.join("airlock.toml");
    let with_url = |url: &str| {
        crate::config::EXAMPLE.replacen(
            "[state]\n",
            &format!("[state]\ndatabase_url = \"{url}\"\n"),
            1,
        )
    };
    let config_exposure = |text: &str, mode: u32| {
        std::fs::write(&path, text).unwrap();
        chmod(&path, mode);
        let parsed = crate::config::Config::parse(&path, text).unwrap();
        let need = host::airlock_paths(&parsed)
            .into_iter()
            .find(|(label, _, _)| *label == "config")
            .map(|(_, _, need)| need)
            .unwrap();
        let exposed = host::startup_exposures(&parsed, me)
            .into_iter()
            .find(|x| x.path == parsed.path);
        (need, exposed)
    };
    // A password in the URL: the config is a secret, and one others can read is refused.
    let secret = with_url("postgres://airlock:hunter2@db.internal/airlock?sslmode=require");
    let (need, exposed) = config_exposure(&secret, 0o644);
    assert_eq!(need, Need::Secret);
    let x = exposed.expect("a readable config with a database password");
    assert!(x.readable.is_some() && x.writable.is_none(), "{x:?}");
    let line = x.describe(me, &host::names());
    assert!(line.contains("can read it"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
    assert_eq!(config_exposure(&secret, 0o600), (Need::Secret, None));
    // So is a password given as a parameter.
    let param = with_url("postgres://airlock@db.internal/airlock?password=hunter2");
    assert_eq!(config_exposure(&param, 0o644).0, Need::Secret);
    // No password in the file (trust, a certificate, or AIRLOCK_DATABASE_URL): readable is fine.
    let plain = with_url("postgres://airlock@127.0.0.1:5432/airlock");
    assert_eq!(config_exposure(&plain, 0o644), (Need::Unchangeable, None));
    assert_eq!(
        config_exposure(crate::config::EXAMPLE, 0o644),
        (Need::Unchangeable, None)
    );
}
