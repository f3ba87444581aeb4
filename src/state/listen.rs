//! `state/listen.json`: where the running `serve` listens. `serve` writes it once both
//! ports are bound (port 0 in the config means the kernel chose); the commands that print
//! an agent's endpoint or a link to the approval page read it. This module is the only one
//! that knows the file.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The addresses `serve` bound, and its process id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listening {
    pub proxy: SocketAddr,
    pub approvals: SocketAddr,
    /// The HTTPS_PROXY listener (`[listen] connect`), when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<SocketAddr>,
    /// `None` when the addresses come from the config rather than a running `serve`.
    pub pid: Option<u32>,
}

impl Listening {
    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("listen.json")
    }

    /// Writes the record atomically (mode 0600).
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        super::write_atomic(&Self::path(state_dir), &json)
    }

    /// The record of the running (or the last) `serve`; `None` when there is none or it
    /// cannot be read.
    pub fn read(state_dir: &Path) -> Option<Listening> {
        let text = std::fs::read(Self::path(state_dir)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Listening::read(dir.path()), None);
        let record = Listening {
            proxy: "127.0.0.1:41000".parse().expect("addr"),
            approvals: "[::1]:41001".parse().expect("addr"),
            connect: Some("127.0.0.1:41002".parse().expect("addr")),
            pid: Some(7),
        };
        record.write(dir.path()).expect("write");
        assert_eq!(Listening::read(dir.path()), Some(record));
        std::fs::write(dir.path().join("listen.json"), b"{\"proxy\": 1}").expect("write");
        assert_eq!(Listening::read(dir.path()), None);
    }
}
