//! Who can read or change a file, from its mode bits and those of the directories above it.
//!
//! One set of rules serves both sides of the same question: `serve` refuses to enforce a
//! policy read from files that anyone but its own user could change (or, for secrets, read),
//! and `airlock doctor` lists what the agent's user could read or change. The rules here are
//! pure: [`host`] gathers the facts (one [`Entry`] per path component, the principal's uid
//! and groups) and these functions judge them.
//!
//! What is judged: owner, group and other bits, ownership (an owner can `chmod`, so owning
//! anything on the way is control), directories one can write into (an entry can be renamed
//! away and replaced, unless the sticky bit protects it), and search (`x`) permission on
//! every directory above. root can do everything. Not judged: POSIX ACLs, Linux capabilities
//! other than root's, and mandatory access control (SELinux, AppArmor): those only take
//! access away or are granted deliberately, and the modes below are what airlock sets up.

pub mod host;

use std::path::PathBuf;

/// One component of a path: the directories from `/` down, then the path itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub is_dir: bool,
    /// Which file it is (`st_dev`, `st_ino`): what was judged is what is opened.
    pub dev: u64,
    pub ino: u64,
}

/// Every chain through which a path is reached. Whoever can change any entry on any of them
/// can change what the path opens, so all are judged for change; reading is judged on `real`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// The path as given, and each symlink met on the way to its target, component by
    /// component with symlinks not followed: a symlink's own directories decide whether it
    /// can be replaced. Chains equal to `real` are left out.
    pub given: Vec<Vec<Entry>>,
    /// The path with every symlink resolved: the file that is opened.
    pub real: Vec<Entry>,
}

impl Routes {
    /// Every chain, `real` last.
    fn all(&self) -> impl Iterator<Item = &[Entry]> {
        self.given
            .iter()
            .map(Vec::as_slice)
            .chain([self.real.as_slice()])
    }
}

/// A user as the kernel sees it for access checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub uid: u32,
    /// The primary group and every supplementary group.
    pub gids: Vec<u32>,
}

/// Whose access is judged.
#[derive(Debug, Clone, Copy)]
pub enum Who<'a> {
    /// One user (doctor: the agent's user).
    User(&'a Principal),
    /// Every user except this uid and root (serve: anyone but itself). Group bits count as
    /// access, whoever is in the group; directories above are not required to be searchable
    /// for reading (as ssh does: a secret must be private by its own mode).
    AnyoneBut(u32),
}

/// Through which class of the mode an access is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Owned by this uid: the owner can change the mode at will.
    Owner(u32),
    Group(u32),
    Other,
    /// The principal is root.
    Root,
}

/// Names of users and groups, for messages (`/etc/passwd`, `/etc/group`); ids without a
/// name are shown as numbers.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub users: std::collections::HashMap<u32, String>,
    pub groups: std::collections::HashMap<u32, String>,
}

impl Names {
    /// `alice (uid 1000)`, or `uid 1000`.
    pub fn user(&self, uid: u32) -> String {
        match self.users.get(&uid) {
            Some(n) => format!("{n} (uid {uid})"),
            None => format!("uid {uid}"),
        }
    }

    /// `staff (gid 50)`, or `gid 50`.
    pub fn group(&self, gid: u32) -> String {
        match self.groups.get(&gid) {
            Some(n) => format!("{n} (gid {gid})"),
            None => format!("gid {gid}"),
        }
    }

    /// The name to give `chown`: the user's name, else its uid.
    fn chown_target(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }
}

/// Which access, to what, granted how: enough to name the path and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The path whose mode or owner grants it (the file itself or a directory above).
    pub path: PathBuf,
    pub class: Class,
    /// True when it is a directory above the file: entries in it can be replaced.
    pub via_parent: bool,
}

const READ: u32 = 0o4;
const WRITE: u32 = 0o2;
const SEARCH: u32 = 0o1;
const STICKY: u32 = 0o1000;

/// The class through which `who` holds any of `bits` on `entry`, if any.
fn grant_class(entry: &Entry, who: Who<'_>, bits: u32) -> Option<Class> {
    let group = (entry.mode >> 3) & 0o7;
    let other = entry.mode & 0o7;
    match who {
        Who::User(p) if p.uid == 0 => Some(Class::Root),
        Who::User(p) if entry.uid == p.uid => Some(Class::Owner(p.uid)),
        Who::User(p) if p.gids.contains(&entry.gid) => {
            (group & bits != 0).then_some(Class::Group(entry.gid))
        }
        Who::User(_) => (other & bits != 0).then_some(Class::Other),
        Who::AnyoneBut(me) => {
            if entry.uid != me && entry.uid != 0 {
                // Not root and not us: the owner may do anything, its bits say nothing.
                Some(Class::Owner(entry.uid))
            } else if group & bits != 0 {
                Some(Class::Group(entry.gid))
            } else if other & bits != 0 {
                Some(Class::Other)
            } else {
                None
            }
        }
    }
}

/// Does `who` own `entry` (and so control its mode)?
fn owns(entry: &Entry, who: Who<'_>) -> bool {
    match who {
        Who::User(p) => p.uid == 0 || entry.uid == p.uid,
        Who::AnyoneBut(me) => entry.uid != me && entry.uid != 0,
    }
}

/// Can `who` get to the last entry (search permission on every directory above it)?
fn reaches(chain: &[Entry], who: Who<'_>) -> bool {
    match who {
        Who::AnyoneBut(_) => true,
        Who::User(_) => chain
            .iter()
            .take(chain.len().saturating_sub(1))
            .all(|dir| grant_class(dir, who, SEARCH).is_some()),
    }
}

/// How `who` can read the last entry of `chain` (a file's contents; a directory's listing
/// or the files in it), or `None`.
pub fn can_read(chain: &[Entry], who: Who<'_>) -> Option<Grant> {
    let target = chain.last()?;
    if !reaches(chain, who) {
        return None;
    }
    let bits = if target.is_dir { READ | SEARCH } else { READ };
    grant_class(target, who, bits).map(|class| Grant {
        path: target.path.clone(),
        class,
        via_parent: false,
    })
}

/// How `who` can change what a path opens, through any of its routes.
pub fn can_write_through(routes: &Routes, who: Who<'_>) -> Option<Grant> {
    routes.all().find_map(|chain| can_write(chain, who))
}

/// How `who` can change the last entry of `chain`: write it, change its mode (own it), or
/// replace it or a directory above it (write and search on a directory that is not sticky,
/// or that is sticky but whose entry `who` owns). The grant nearest to `/` is reported.
pub fn can_write(chain: &[Entry], who: Who<'_>) -> Option<Grant> {
    let last = chain.len().checked_sub(1)?;
    for (i, entry) in chain.iter().enumerate() {
        if !reaches(&chain[..=i], who) {
            return None;
        }
        let found = |class, via_parent| {
            Some(Grant {
                path: entry.path.clone(),
                class,
                via_parent,
            })
        };
        if owns(entry, who) {
            let class = grant_class(entry, who, READ | WRITE | SEARCH).unwrap_or(Class::Other);
            return found(class, i < last);
        }
        if i == last {
            return grant_class(entry, who, WRITE).and_then(|class| found(class, false));
        }
        if entry.is_dir {
            let child = &chain[i + 1];
            let sticky_protects = entry.mode & STICKY != 0 && !owns(child, who);
            // Replacing an entry needs write and search on the directory.
            if let (Some(class), Some(_)) = (
                grant_class(entry, who, WRITE),
                grant_class(entry, who, SEARCH),
            ) {
                if !sticky_protects {
                    return found(class, true);
                }
            }
        }
    }
    None
}

/// What `serve` requires of one of its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nobody else may change it (the config, certificates).
    Unchangeable,
    /// Nobody else may change or read it (the state dir, private keys).
    Secret,
}

/// A path of airlock's that someone other than its user could change or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// The path `serve` uses (the config, the state dir, a key).
    pub path: PathBuf,
    pub writable: Option<Grant>,
    pub readable: Option<Grant>,
    /// Why the facts could not be gathered: then nobody can vouch for the path (fail closed).
    pub unchecked: Option<String>,
}

impl Exposure {
    /// A path whose facts could not be gathered.
    pub fn unchecked(path: &std::path::Path, error: &std::io::Error) -> Exposure {
        Exposure {
            path: path.to_path_buf(),
            writable: None,
            readable: None,
            unchecked: Some(error.to_string()),
        }
    }

    /// One line: the path, who else can change or read it, and the fix.
    pub fn describe(&self, own_uid: u32, names: &Names) -> String {
        let mut parts = Vec::new();
        if let Some(e) = &self.unchecked {
            parts.push(format!("cannot be checked ({e}), so it is not trusted"));
        }
        if let Some(g) = &self.writable {
            parts.push(format!(
                "{} can change it ({})",
                holder(g, names),
                fix(g, own_uid, true, names)
            ));
        }
        if let Some(g) = &self.readable {
            parts.push(format!(
                "{} can read it ({})",
                holder(g, names),
                fix(g, own_uid, false, names)
            ));
        }
        format!("{}: {}", self.path.display(), parts.join("; "))
    }
}

/// Judges one of `serve`'s paths: `None` when only `own_uid` (and root) can change it, and,
/// for secrets, read it.
pub fn exposure(chain: &[Entry], own_uid: u32, need: Need) -> Option<Exposure> {
    let routes = Routes {
        given: Vec::new(),
        real: chain.to_vec(),
    };
    exposure_through(&routes, own_uid, need)
}

/// Judges one of `serve`'s paths through all its routes (see [`Routes`]); the exposure names
/// the path as given.
pub fn exposure_through(routes: &Routes, own_uid: u32, need: Need) -> Option<Exposure> {
    let who = Who::AnyoneBut(own_uid);
    let writable = can_write_through(routes, who);
    let readable = match need {
        Need::Secret => can_read(&routes.real, who),
        Need::Unchangeable => None,
    };
    if writable.is_none() && readable.is_none() {
        return None;
    }
    Some(Exposure {
        path: routes.all().next()?.last()?.path.clone(),
        writable,
        readable,
        unchecked: None,
    })
}

/// Who holds a grant, in words.
pub fn holder(g: &Grant, names: &Names) -> String {
    let through = if g.via_parent {
        format!(" through {}", g.path.display())
    } else {
        String::new()
    };
    match g.class {
        Class::Owner(uid) if g.via_parent => {
            format!("{}, owner of {}", names.user(uid), g.path.display())
        }
        Class::Owner(uid) => format!("{}, its owner", names.user(uid)),
        Class::Group(gid) => format!("group {}{through}", names.group(gid)),
        Class::Other => format!("every user{through}"),
        Class::Root => "root".to_string(),
    }
}

/// The command that takes a grant away, keeping `own_uid`'s access.
pub fn fix(g: &Grant, own_uid: u32, write: bool, names: &Names) -> String {
    let path = g.path.display();
    let bits = match (write, g.via_parent) {
        (true, _) => "w",
        (false, true) => "rx",
        (false, false) => "rwx",
    };
    match g.class {
        Class::Owner(_) if g.via_parent => format!(
            "move it under a directory that only {} or root owns",
            names.user(own_uid)
        ),
        Class::Owner(_) => format!("chown {} {path}", names.chown_target(own_uid)),
        Class::Group(_) => format!("chmod g-{bits} {path}"),
        Class::Other => format!("chmod o-{bits} {path}"),
        Class::Root => "run the agent as another user than root".to_string(),
    }
}

#[cfg(test)]
mod tests;
