//! The facts the rules in [`super`] judge, read from this host: the components of a path,
//! users and groups (`/etc/passwd`, `/etc/group`), and running `airlock serve` processes
//! (`/proc`). Also the list of airlock's own paths and what each needs, which `serve`'s
//! startup check and `airlock doctor` share.

use super::{exposure_through, Entry, Exposure, Need, Principal, Routes};
use crate::config::Config;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `path` and every directory above it, from `/` down, with symlinks resolved.
pub fn chain(path: &Path) -> std::io::Result<Vec<Entry>> {
    let real = std::fs::canonicalize(path)?;
    let mut paths: Vec<&Path> = real.ancestors().collect();
    paths.reverse();
    paths
        .into_iter()
        .map(|p| Ok(entry(p, &std::fs::symlink_metadata(p)?)))
        .collect()
}

/// One component, as `lstat` sees it. A symlink's mode bits mean nothing (nobody can write
/// through them to the link itself), so they are recorded as none.
fn entry(path: &Path, m: &std::fs::Metadata) -> Entry {
    Entry {
        path: path.to_path_buf(),
        uid: m.uid(),
        gid: m.gid(),
        mode: if m.file_type().is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        },
        is_dir: m.is_dir(),
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// As many symlinks as Linux follows in one path lookup (`ELOOP` beyond).
const MAX_SYMLINKS: usize = 40;

/// Every route to `path` (see [`Routes`]): the path as given, each symlink met on the way
/// (a relative target from the link's own directory), and the resolved path. Fails when any
/// component cannot be examined.
pub fn routes(path: &Path) -> std::io::Result<Routes> {
    let real = chain(path)?;
    let mut given: Vec<Vec<Entry>> = Vec::new();
    let mut pending = vec![std::path::absolute(path)?];
    let mut walked = 0;
    while let Some(next) = pending.pop() {
        walked += 1;
        if walked > MAX_SYMLINKS + 1 {
            return Err(std::io::Error::other("too many levels of symbolic links"));
        }
        let mut lexical = Vec::new();
        let mut prefix = PathBuf::new();
        for component in next.components() {
            prefix.push(component);
            let m = std::fs::symlink_metadata(&prefix)?;
            if m.file_type().is_symlink() {
                let dir = prefix.parent().unwrap_or(Path::new("/"));
                pending.push(dir.join(std::fs::read_link(&prefix)?));
            }
            lexical.push(entry(&prefix, &m));
        }
        if lexical != real && !given.contains(&lexical) {
            given.push(lexical);
        }
    }
    Ok(Routes { given, real })
}

/// This process's effective uid and groups.
pub fn current_principal() -> Principal {
    let uid = rustix::process::geteuid().as_raw();
    let mut gids = vec![rustix::process::getegid().as_raw()];
    for g in rustix::process::getgroups().unwrap_or_default() {
        if !gids.contains(&g.as_raw()) {
            gids.push(g.as_raw());
        }
    }
    Principal { uid, gids }
}

/// A user account from `/etc/passwd`, with its groups from `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub home: PathBuf,
    pub principal: Principal,
    /// Names of the groups the user is in (primary and supplementary).
    pub group_names: Vec<String>,
}

/// One `/etc/passwd` line: (name, uid, gid, home).
fn passwd_entries(text: &str) -> impl Iterator<Item = (&str, u32, u32, &str)> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some((f[0], f[2].parse().ok()?, f[3].parse().ok()?, f[5]))
    })
}

/// The account `name` or uid `uid`, from the given `/etc/passwd` and `/etc/group` texts.
pub fn account_in(
    passwd: &str,
    group: &str,
    name: Option<&str>,
    uid: Option<u32>,
) -> Option<Account> {
    let (name, uid, gid, home) = passwd_entries(passwd).find(|(n, u, _, _)| {
        name.is_none_or(|want| want == *n) && uid.is_none_or(|want| want == *u)
    })?;
    let mut gids = vec![gid];
    let mut group_names = Vec::new();
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(g) = f[2].parse::<u32>() else { continue };
        let member = f[3].split(',').any(|m| m == name);
        if g == gid || member {
            if !gids.contains(&g) {
                gids.push(g);
            }
            group_names.push(f[0].to_string());
        }
    }
    Some(Account {
        name: name.to_string(),
        home: PathBuf::from(home),
        principal: Principal { uid, gids },
        group_names,
    })
}

fn read_etc(name: &str) -> String {
    std::fs::read_to_string(Path::new("/etc").join(name)).unwrap_or_default()
}

/// The account named `name` on this host.
pub fn account_named(name: &str) -> Option<Account> {
    account_in(&read_etc("passwd"), &read_etc("group"), Some(name), None)
}

/// The account with uid `uid` on this host.
pub fn account_of_uid(uid: u32) -> Option<Account> {
    account_in(&read_etc("passwd"), &read_etc("group"), None, Some(uid))
}

/// The names of every user and group on this host, for messages.
pub fn names() -> super::Names {
    let passwd = read_etc("passwd");
    let group = read_etc("group");
    super::Names {
        users: passwd_entries(&passwd)
            .map(|(name, uid, _, _)| (uid, name.to_string()))
            .collect(),
        groups: group
            .lines()
            .filter_map(|line| {
                let mut f = line.split(':');
                let name = f.next()?;
                Some((f.nth(1)?.parse().ok()?, name.to_string()))
            })
            .collect(),
    }
}

/// Every account's home directory that exists.
pub fn homes() -> Vec<PathBuf> {
    let passwd = read_etc("passwd");
    let mut out: Vec<PathBuf> = passwd_entries(&passwd)
        .map(|(_, _, _, home)| PathBuf::from(home))
        .filter(|h| h.is_dir() && h != Path::new("/"))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A running `airlock serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeProcess {
    pub pid: u32,
    /// Its real uid (who can signal it).
    pub uid: u32,
    /// The `--config` it was started with, if any.
    pub config: Option<PathBuf>,
}

/// Reads one process's `status` and `cmdline`: `Some` when it is `airlock serve`. Both files
/// stay readable when `serve` is not dumpable.
fn serve_process(proc_dir: &Path, pid: u32) -> Option<ServeProcess> {
    let cmdline = std::fs::read(proc_dir.join("cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = Path::new(args.first()?).file_name()?.to_str()?;
    if program != "airlock" || !args.iter().skip(1).any(|a| a == "serve") {
        return None;
    }
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let config = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--config=").map(str::to_string).or_else(|| {
            (a == "--config")
                .then(|| args.get(i + 1).cloned())
                .flatten()
        })
    });
    Some(ServeProcess {
        pid,
        uid,
        config: config.map(PathBuf::from),
    })
}

/// Every `airlock serve` running on this host (in this PID namespace).
pub fn serve_processes() -> Vec<ServeProcess> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<ServeProcess> = dir
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            serve_process(&e.path(), pid)
        })
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

/// airlock's own paths that matter to its security, and what each needs. The config is a
/// secret when it holds a database password (`[state] database_url` with one): whoever can
/// write the database is as powerful as airlock's user (`AIRLOCK_DATABASE_URL` keeps the
/// password out of the file).
pub fn airlock_paths(config: &Config) -> Vec<(&'static str, PathBuf, Need)> {
    let config_need = if config.database_password_in_file {
        Need::Secret
    } else {
        Need::Unchangeable
    };
    vec![
        ("config", config.path.clone(), config_need),
        ("state dir", config.state_dir.clone(), Need::Secret),
        (
            "certificates dir",
            config.tls_dir.clone(),
            Need::Unchangeable,
        ),
        ("CA key", config.ca_key(), Need::Secret),
        ("server key", config.server_key(), Need::Secret),
    ]
}

/// The files airlock's own AWS credentials come from, as the SDK finds them: the config and
/// credentials files that `var` (serve's environment) names, else those under `home`
/// (`~/.aws`), and a web identity token file. Whoever can change the config file can make
/// airlock run a `credential_process` of theirs; the credentials file is a secret.
pub fn credential_sources(
    var: impl Fn(&str) -> Option<std::ffi::OsString>,
    home: Option<&Path>,
) -> Vec<(&'static str, PathBuf, Need)> {
    let mut out = Vec::new();
    let files = [
        (
            "AWS config file",
            "AWS_CONFIG_FILE",
            "config",
            Need::Unchangeable,
        ),
        (
            "AWS credentials file",
            "AWS_SHARED_CREDENTIALS_FILE",
            "credentials",
            Need::Secret,
        ),
    ];
    for (label, name, default, need) in files {
        let named = var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        // The SDK expands a leading `~/` to the home directory.
        let path = match (named, home) {
            (Some(p), Some(h)) if p.starts_with("~") => {
                Some(h.join(p.strip_prefix("~").unwrap_or(&p)))
            }
            (Some(p), _) => Some(p),
            (None, Some(h)) => Some(h.join(".aws").join(default)),
            (None, None) => None,
        };
        out.extend(path.map(|p| (label, p, need)));
    }
    if let Some(token) = var("AWS_WEB_IDENTITY_TOKEN_FILE").filter(|v| !v.is_empty()) {
        out.push((
            "web identity token file",
            PathBuf::from(token),
            Need::Unchangeable,
        ));
    }
    out
}

/// Every path `serve` relies on: airlock's own paths, its AWS credential sources (from this
/// process's environment; `HOME`, else the user's home in `/etc/passwd`) and its own binary.
pub fn serve_paths(
    config: &Config,
    own_uid: u32,
) -> std::io::Result<Vec<(&'static str, PathBuf, Need)>> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| account_of_uid(own_uid).map(|a| a.home));
    let mut paths = airlock_paths(config);
    paths.extend(credential_sources(|k| std::env::var_os(k), home.as_deref()));
    paths.push((
        "airlock binary",
        std::env::current_exe()?,
        Need::Unchangeable,
    ));
    Ok(paths)
}

/// Judges one path. A path that does not exist is judged by its nearest existing directory
/// (whoever can create entries there can plant it); any other failure to gather the facts is
/// an exposure (fail closed).
pub fn path_exposure(path: &Path, own_uid: u32, need: Need) -> Option<Exposure> {
    let path = match std::path::absolute(path) {
        Ok(p) => p,
        Err(e) => return Some(Exposure::unchecked(path, &e)),
    };
    let path = path.as_path();
    let mut judged = path;
    loop {
        match std::fs::symlink_metadata(judged) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match judged.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => judged = parent,
                _ => return None,
            },
            Err(e) => return Some(Exposure::unchecked(path, &e)),
        }
    }
    let need = if judged == path {
        need
    } else {
        Need::Unchangeable
    };
    match routes(judged) {
        Ok(routes) => exposure_through(&routes, own_uid, need).map(|x| Exposure {
            path: path.to_path_buf(),
            ..x
        }),
        Err(e) => Some(Exposure::unchecked(path, &e)),
    }
}

/// `serve`'s startup check: the paths it relies on ([`serve_paths`]) that anyone but
/// `own_uid` (and root) could change, or read when secret, or whose facts cannot be gathered.
pub fn startup_exposures(config: &Config, own_uid: u32) -> Vec<Exposure> {
    match serve_paths(config, own_uid) {
        Ok(paths) => paths
            .into_iter()
            .filter_map(|(_, path, need)| path_exposure(&path, own_uid, need))
            .collect(),
        Err(e) => vec![Exposure::unchecked(Path::new("the airlock binary"), &e)],
    }
}

/// Opens the config for reading only if nobody but `own_uid` (and root) can change it, on any
/// route to it, and only if the file opened is the file judged (same device and inode): no
/// rename can slip a different file in between the check and the read. Any failure to check
/// refuses (the config must exist).
pub fn open_unchangeable(path: &Path, own_uid: u32) -> Result<std::fs::File, Box<Exposure>> {
    let unchecked = |e: std::io::Error| Box::new(Exposure::unchecked(path, &e));
    let routes = routes(path).map_err(unchecked)?;
    if let Some(x) = exposure_through(&routes, own_uid, Need::Unchangeable) {
        return Err(Box::new(x));
    }
    open_judged(path, &routes)
}

/// Opens `path` only if it is still the file `routes` judged (same device and inode).
pub fn open_judged(path: &Path, routes: &Routes) -> Result<std::fs::File, Box<Exposure>> {
    let unchecked = |e: std::io::Error| Box::new(Exposure::unchecked(path, &e));
    let file = std::fs::File::open(path).map_err(unchecked)?;
    let opened = file.metadata().map_err(unchecked)?;
    let judged = routes.real.last().map(|e| (e.dev, e.ino));
    if judged != Some((opened.dev(), opened.ino())) {
        return Err(unchecked(std::io::Error::other(
            "it was replaced while it was being checked",
        )));
    }
    if !opened.is_file() {
        return Err(unchecked(std::io::Error::other("not a regular file")));
    }
    Ok(file)
}

/// Makes this process non-dumpable: another process of the same user can then neither read
/// its memory or `/proc/<pid>/environ` nor attach a debugger to it (Linux only).
#[cfg(target_os = "linux")]
pub fn make_undumpable() -> std::io::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(std::io::Error::from)
}

/// Elsewhere there is no such switch; nothing to do.
#[cfg(not(target_os = "linux"))]
pub fn make_undumpable() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        agent:x:1001:1001::/home/agent:/bin/sh\n\
        airlock:x:998:998::/var/lib/airlock:/usr/sbin/nologin\n";
    const GROUP: &str =
        "root:x:0:\nagent:x:1001:\ndocker:x:999:agent,bob\nairlock:x:998:\nsudo:x:27:bob\n";

    #[test]
    fn an_account_has_its_primary_and_supplementary_groups() {
        let a = account_in(PASSWD, GROUP, Some("agent"), None).unwrap();
        assert_eq!(
            a.principal,
            Principal {
                uid: 1001,
                gids: vec![1001, 999]
            }
        );
        assert_eq!(a.group_names, vec!["agent", "docker"]);
        assert_eq!(a.home, PathBuf::from("/home/agent"));
        let by_uid = account_in(PASSWD, GROUP, None, Some(998)).unwrap();
        assert_eq!(by_uid.name, "airlock");
        assert!(account_in(PASSWD, GROUP, Some("nobody"), None).is_none());
    }

    #[test]
    fn this_process_is_found_only_if_it_is_airlock_serve() {
        // The test binary is not `airlock serve`.
        let me = std::process::id();
        assert!(serve_process(Path::new(&format!("/proc/{me}")), me).is_none());
        assert!(serve_processes().iter().all(|p| p.pid != me));
    }

    #[test]
    fn a_chain_runs_from_the_root_to_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let c = chain(&file).unwrap();
        assert_eq!(c.first().unwrap().path, PathBuf::from("/"));
        assert_eq!(
            c.last().unwrap().path,
            std::fs::canonicalize(&file).unwrap()
        );
        assert!(c[..c.len() - 1].iter().all(|e| e.is_dir));
        assert!(!c.last().unwrap().is_dir);
    }
}
