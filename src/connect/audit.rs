//! The HTTPS_PROXY listener's own audit records: a request it refused (a `CONNECT` to a host
//! that is neither AWS nor a passthrough entry, or a plain-HTTP proxy request) and a
//! passthrough tunnel it opened. The calls inside an AWS tunnel are audited like any call on
//! the endpoint listener, so opening one writes nothing here.
//!
//! | event | fields |
//! |---|---|
//! | `connect_refused` | `peer` (address:port), `method`, `host` and `port` (`null` when the target could not be read), `reason` |
//! | `connect_passthrough` | `peer`, `host`, `port`, `to` (the address connected to), `reason` |
//! | `connect_refused_suppressed`, `connect_passthrough_suppressed` | `count`, `since`, `peers`, `targets` (each at most [`LISTED`], sorted), `reason` |
//!
//! No record holds a secret: the target is recorded only as the host and port airlock read
//! from it (never userinfo, nor the raw text of a target it could not read), and nothing of
//! what a tunnel carries.
//!
//! Any local process can connect to the listener, and the peer's address says little (a
//! process may send from any 127.x.y.z), so the records are rate-limited per event, not per
//! peer: at most [`RECORDS_PER_WINDOW`] in each [`WINDOW`], counted from the first record
//! after a quiet one. What a full window leaves out is counted and written as one
//! `…_suppressed` record when the window ends (within one more window, or when `serve`
//! stops), so a flood costs the log a bounded number of lines and is still on the record.

use crate::audit::record;
use crate::store::Store;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request the listener refused.
pub const REFUSED: &str = "connect_refused";
/// A passthrough tunnel opened.
pub const PASSTHROUGH: &str = "connect_passthrough";

/// How long a window of records lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Records of one event written in one window; the rest are counted.
pub const RECORDS_PER_WINDOW: u32 = 20;
/// Peers and targets a `…_suppressed` record lists.
pub const LISTED: usize = 8;

/// The listener's records, each event under its own budget.
pub struct ConnectAudit {
    /// The audit chain, whichever store keeps it.
    log: Arc<dyn Store>,
    refused: Budget,
    passthrough: Budget,
}

impl ConnectAudit {
    pub fn new(log: Arc<dyn Store>) -> Self {
        ConnectAudit {
            log,
            refused: Budget::new(REFUSED),
            passthrough: Budget::new(PASSTHROUGH),
        }
    }

    /// A refused request: `target` is the host and port as read, `None` if unreadable.
    pub async fn refused(
        &self,
        peer: SocketAddr,
        method: &str,
        target: Option<(&str, u16)>,
        reason: &str,
    ) {
        let listed = target.map_or_else(|| "-".to_owned(), |(h, p)| authority(h, p));
        let mut r = record(REFUSED);
        r.insert("peer".into(), json!(peer.to_string()));
        r.insert("method".into(), json!(method));
        r.insert("host".into(), json!(target.map(|(h, _)| h)));
        r.insert("port".into(), json!(target.map(|(_, p)| p)));
        r.insert("reason".into(), json!(reason));
        self.write(&self.refused, peer, &listed, r).await;
    }

    /// A passthrough tunnel to `host:port`, connected to `to`.
    pub async fn passthrough(&self, peer: SocketAddr, host: &str, port: u16, to: &str) {
        let mut r = record(PASSTHROUGH);
        r.insert("peer".into(), json!(peer.to_string()));
        r.insert("host".into(), json!(host));
        r.insert("port".into(), json!(port));
        r.insert("to".into(), json!(to));
        r.insert("reason".into(), json!(format!("tunnelled unread to {to}")));
        self.write(&self.passthrough, peer, &authority(host, port), r)
            .await;
    }

    /// Writes the counts of windows that have ended (all of them at `at_end`).
    pub async fn flush(&self, at_end: bool) {
        let now = Instant::now();
        for budget in [&self.refused, &self.passthrough] {
            if let Some(summary) = budget.flush(now, at_end) {
                self.log.audit_append(summary.into()).await;
            }
        }
    }

    async fn write(&self, budget: &Budget, peer: SocketAddr, target: &str, r: Map<String, Value>) {
        let (ended, admitted) = budget.admit(Instant::now(), peer, target);
        if let Some(summary) = ended {
            self.log.audit_append(summary.into()).await;
        }
        if admitted {
            self.log.audit_append(r.into()).await;
        }
    }
}

/// `host:port`, brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One event's window: how many records it wrote, and what it left out.
struct Budget {
    event: &'static str,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    /// When the window began (`None`: no window open).
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
    /// The time of the first record left out.
    since: Option<String>,
    peers: BTreeSet<String>,
    targets: BTreeSet<String>,
}

impl Budget {
    fn new(event: &'static str) -> Self {
        Budget {
            event,
            window: Mutex::new(Window::default()),
        }
    }

    /// Whether a record may be written at `now`; first, the count of a window that has
    /// ended with records left out (to be written before it).
    fn admit(
        &self,
        now: Instant,
        peer: SocketAddr,
        target: &str,
    ) -> (Option<Map<String, Value>>, bool) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut ended = None;
        if w.started.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            ended = std::mem::take(&mut *w).summary(self.event);
            w.started = Some(now);
        }
        if w.written < RECORDS_PER_WINDOW {
            w.written += 1;
            return (ended, true);
        }
        w.suppressed += 1;
        if w.since.is_none() {
            w.since = Some(crate::state::rfc3339_millis(time::OffsetDateTime::now_utc()));
        }
        if w.peers.len() < LISTED {
            w.peers.insert(peer.ip().to_string());
        }
        if w.targets.len() < LISTED {
            w.targets.insert(target.to_owned());
        }
        (ended, false)
    }

    /// The count of the window if it has ended at `now` (or `at_end`), which closes it.
    fn flush(&self, now: Instant, at_end: bool) -> Option<Map<String, Value>> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let ended = w.started.is_some_and(|s| now.duration_since(s) >= WINDOW);
        if !(at_end || ended) {
            return None;
        }
        std::mem::take(&mut *w).summary(self.event)
    }
}

impl Window {
    /// The `…_suppressed` record of a window that left records out.
    fn summary(self, event: &str) -> Option<Map<String, Value>> {
        if self.suppressed == 0 {
            return None;
        }
        let mut r = record(&format!("{event}_suppressed"));
        r.insert("count".into(), json!(self.suppressed));
        r.insert("since".into(), json!(self.since));
        r.insert("peers".into(), json!(self.peers));
        r.insert("targets".into(), json!(self.targets));
        r.insert(
            "reason".into(),
            json!(format!(
                "{} more {event} left out (at most {RECORDS_PER_WINDOW} records a {}s window)",
                self.suppressed,
                WINDOW.as_secs()
            )),
        );
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 40000))
    }

    #[test]
    fn a_window_writes_its_budget_then_counts_the_rest() {
        let budget = Budget::new(REFUSED);
        let start = Instant::now();
        for n in 0..RECORDS_PER_WINDOW {
            let (ended, admitted) = budget.admit(start, peer(1), "example.com:443");
            assert!(ended.is_none() && admitted, "record {n}");
        }
        for n in 0..30u8 {
            let (ended, admitted) = budget.admit(start, peer(n), &format!("h{n}.example:443"));
            assert!(ended.is_none() && !admitted);
        }
        // Not over yet: nothing to flush.
        assert!(budget.flush(start + WINDOW / 2, false).is_none());
        // The next record after the window carries the count first, and is written.
        let (ended, admitted) = budget.admit(start + WINDOW, peer(1), "example.com:443");
        assert!(admitted);
        let summary = ended.expect("the ended window's count");
        assert_eq!(summary["event"], "connect_refused_suppressed");
        assert_eq!(summary["count"], 30);
        assert_eq!(summary["peers"].as_array().map(Vec::len), Some(LISTED));
        assert_eq!(summary["targets"].as_array().map(Vec::len), Some(LISTED));
        assert!(summary["since"].is_string());
        // A window that left nothing out has nothing to say.
        assert!(budget.flush(start + 3 * WINDOW, false).is_none());
    }

    #[test]
    fn an_ended_window_is_flushed_by_the_ticker_or_at_the_end() {
        let budget = Budget::new(PASSTHROUGH);
        let start = Instant::now();
        for _ in 0..=RECORDS_PER_WINDOW {
            budget.admit(start, peer(2), "[::1]:8080");
        }
        assert!(budget.flush(start + WINDOW / 2, false).is_none());
        let summary = budget.flush(start + WINDOW, false).expect("flushed");
        assert_eq!(
            (summary["event"].as_str(), summary["count"].as_u64()),
            (Some("connect_passthrough_suppressed"), Some(1))
        );
        assert_eq!(summary["peers"], json!(["127.0.0.2"]));
        assert_eq!(summary["targets"], json!(["[::1]:8080"]));
        // Flushed once only; a new window starts with the next record.
        assert!(budget.flush(start + 2 * WINDOW, true).is_none());
        for _ in 0..=RECORDS_PER_WINDOW {
            budget.admit(start + 2 * WINDOW, peer(3), "a.example:443");
        }
        assert!(budget.flush(start + 2 * WINDOW, true).is_some());
    }

    #[test]
    fn targets_are_spelt_as_authorities() {
        assert_eq!(authority("::1", 443), "[::1]:443");
        assert_eq!(authority("example.com", 443), "example.com:443");
    }
}
