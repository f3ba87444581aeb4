//! The facts the rules in [`super`] judge, read from this host: the components of a path,
//! users and groups (`/etc/passwd`, `/etc/group`), and running `airlock serve` processes
//! (`/proc`). Also the list of airlock's own paths and what each needs, which `serve`'s
//! startup check and `airlock doctor` share.

use super::{exposure, Entry, Exposure, Need, Principal};
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
        .map(|p| {
            let m = std::fs::symlink_metadata(p)?;
            Ok(Entry {
                path: p.to_path_buf(),
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode() & 0o7777,
                is_dir: m.is_dir(),
            })
        })
        .collect()
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

/// airlock's own paths that matter to its security, and what each needs.
pub fn airlock_paths(config: &Config) -> Vec<(&'static str, PathBuf, Need)> {
    vec![
        ("config", config.path.clone(), Need::Unchangeable),
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

/// `serve`'s startup check: airlock's paths that anyone but `own_uid` (and root) could
/// change, or read when secret. Paths that do not exist are skipped (`init` made them).
pub fn startup_exposures(config: &Config, own_uid: u32) -> Vec<Exposure> {
    airlock_paths(config)
        .into_iter()
        .filter_map(|(_, path, need)| match chain(&path) {
            Ok(entries) => exposure(&entries, own_uid, need),
            Err(_) => None,
        })
        .collect()
}

/// The config file alone, checked before it is trusted.
pub fn config_exposure(config_path: &Path, own_uid: u32) -> Option<Exposure> {
    exposure(&chain(config_path).ok()?, own_uid, Need::Unchangeable)
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
