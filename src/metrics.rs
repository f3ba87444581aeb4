//! Operations: Prometheus metrics (`GET /metrics`) and the health check (`GET /healthz`),
//! both served by the approval page's listener (`[listen] approvals`).
//!
//! # Why the approval listener
//!
//! It is already airlock's plain-HTTP, loopback-only listener (the config refuses anything
//! else), with a `Host` check against DNS rebinding and a connection cap; a scraper on the
//! host reaches it as `http://127.0.0.1:PORT/metrics`. A listener of its own would be one more
//! port to configure, check and drain for nothing it could do better.
//!
//! # What may be seen
//!
//! The agent can read this page too (it can reach every port on localhost). So the labels are
//! a bounded set of names that say nothing secret: the identified call's service (a name from
//! AWS's model, never a string from the request), the built-in class of the rule that decided
//! (`destructive-verb`, …), the call's outcome, the phase, the kind of upstream failure. No
//! agent, key, resource, approval id or error text. Pending approvals and held calls are
//! counts; the approval page lists the approvals themselves already.
//!
//! # Cost on the request path
//!
//! One process, one set of metrics (a Prometheus target is a process), kept in a static so
//! the request path, `redeem` and the audit writer record without each constructor taking a
//! handle. This module is a leaf: it knows label values, not the types they come from (the
//! proxy names the outcome and the upstream failure; `approvals::operations` reads the
//! gauges and answers the endpoints). Each phase's histogram is made once and observed
//! directly; the request counter's labels are three `&'static str` (the service name is
//! looked up in the embedded model, not copied), so counting a call allocates nothing after
//! its label set's first use. Gauges are read when scraped, not kept up to date per call.
//! What it all adds to a call is `metrics/forwarded_call` in `benches/hot_path.rs`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::future::Future;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// `Content-Type` of `/metrics`: Prometheus' text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `class` label of a call that was decided by no built-in class (a config rule, or no
/// rule: allowed by default).
pub const NO_CLASS: &str = "none";

/// A label whose value is unknown because the call ended before it was learned (not
/// authenticated, not identified, not decided).
const UNKNOWN: &str = "-";

/// Bucket bounds in seconds for the phases and the audit writes: from tens of microseconds
/// (verification, policy) to a minute (a call held while a human decides).
const BUCKETS: [f64; 18] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0, 5.0, 15.0, 60.0,
];

/// A named phase of the request path (ARCHITECTURE.md), as the `phase` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Authenticate,
    Identify,
    Decide,
    Redeem,
    Resign,
    /// Until the upstream's response headers (the body streams afterwards).
    Forward,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Authenticate,
        Phase::Identify,
        Phase::Decide,
        Phase::Redeem,
        Phase::Resign,
        Phase::Forward,
    ];

    fn label(self) -> &'static str {
        match self {
            Phase::Authenticate => "authenticate",
            Phase::Identify => "identify",
            Phase::Decide => "decide",
            Phase::Redeem => "redeem",
            Phase::Resign => "resign",
            Phase::Forward => "forward",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: &'static str,
    class: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SettledLabels {
    settled: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric airlock keeps, registered once.
struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    /// By [`Phase`] (`Phase::ALL`'s order): the family's members, kept to skip its lookup.
    phases: [Histogram; 6],
    upstream_errors: Family<UpstreamLabels, Counter>,
    receipt_uses: Family<SettledLabels, Counter>,
    audit_write: Histogram,
    audit_write_failures: Counter,
    audit_sync: Histogram,
    audit_sync_failures: Counter,
    held: Gauge,
    pending: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// `metric`, registered under `name`: the registry keeps a handle sharing its value.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::default();
        let phase_family =
            Family::<PhaseLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let phases =
            Phase::ALL.map(|p| phase_family.get_or_create_owned(&PhaseLabels { phase: p.label() }));
        r.register(
            "airlock_phase_seconds",
            "Time in each phase of the request path (forward: until response headers)",
            phase_family,
        );
        Metrics {
            calls: registered(
                &mut r,
                "airlock_requests",
                "Calls answered, by service, class of the deciding rule and outcome",
                Family::default(),
            ),
            phases,
            upstream_errors: registered(
                &mut r,
                "airlock_upstream_errors",
                "Calls the upstream did not complete, or answered with 5xx or 429",
                Family::default(),
            ),
            receipt_uses: registered(
                &mut r,
                "airlock_receipt_uses",
                "Receipt uses settled after forwarding: committed or released",
                Family::default(),
            ),
            audit_write: registered(
                &mut r,
                "airlock_audit_write_seconds",
                "Time to append one audit record, the lock included",
                histogram(),
            ),
            audit_write_failures: registered(
                &mut r,
                "airlock_audit_write_failures",
                "Audit records that could not be written",
                Counter::default(),
            ),
            audit_sync: registered(
                &mut r,
                "airlock_audit_sync_seconds",
                "Time to fdatasync the audit log",
                histogram(),
            ),
            audit_sync_failures: registered(
                &mut r,
                "airlock_audit_sync_failures",
                "fdatasyncs of the audit log that failed",
                Counter::default(),
            ),
            held: registered(
                &mut r,
                "airlock_held_calls",
                "Calls held now while a human decides",
                Gauge::default(),
            ),
            pending: registered(
                &mut r,
                "airlock_pending_approvals",
                "Approvals waiting for a human's decision",
                Gauge::default(),
            ),
            registry: r,
        }
    }
}

/// Records how long `phase` took.
pub fn observe(phase: Phase, took: Duration) {
    METRICS.phases[phase as usize].observe(took.as_secs_f64());
}

/// Runs one phase and records how long it took, whatever it returned.
pub async fn timed<T>(phase: Phase, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    observe(phase, started.elapsed());
    out
}

/// Counts one answered call. `service` is the identified call's service, `class` what the
/// decision set (see [`NO_CLASS`]), `None` for a call that ended before; `outcome` is the
/// audit record's `event` (`proxy::outcome::Outcome`), `upstream_error` the kind of failure
/// upstream, if any (`proxy::outcome::upstream_error`).
pub fn call_answered(
    service: Option<&str>,
    class: Option<&'static str>,
    outcome: &'static str,
    upstream_error: Option<&'static str>,
) {
    let labels = CallLabels {
        service: service.and_then(model_service).unwrap_or(UNKNOWN),
        class: class.unwrap_or(UNKNOWN),
        outcome,
    };
    METRICS.calls.get_or_create(&labels).inc();
    if let Some(kind) = upstream_error {
        METRICS
            .upstream_errors
            .get_or_create(&UpstreamLabels { kind })
            .inc();
    }
}

/// The service's name as the embedded model spells it, borrowed from the model: never a
/// string from a request, so the label set stays bounded.
fn model_service(service: &str) -> Option<&'static str> {
    crate::aws::model::model()
        .services
        .get_key_value(service)
        .map(|(name, _)| name.as_str())
}

/// Counts a receipt use settled after forwarding.
pub fn receipt_use_settled(committed: bool) {
    let settled = if committed { "committed" } else { "released" };
    METRICS
        .receipt_uses
        .get_or_create(&SettledLabels { settled })
        .inc();
}

/// Records one audit append.
pub fn audit_written(took: Duration, written: bool) {
    METRICS.audit_write.observe(took.as_secs_f64());
    if !written {
        METRICS.audit_write_failures.inc();
    }
}

/// Records one audit sync.
pub fn audit_synced(took: Duration, synced: bool) {
    METRICS.audit_sync.observe(took.as_secs_f64());
    if !synced {
        METRICS.audit_sync_failures.inc();
    }
}

/// What is true now and is read when scraped, not kept per call.
pub struct Now {
    pub held_calls: usize,
    /// `None` when the approval store cannot be read (the gauge keeps its last value).
    pub pending_approvals: Option<usize>,
}

/// The text `/metrics` answers.
pub fn exposition(now: Now) -> String {
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    METRICS.held.set(gauge(now.held_calls));
    if let Some(n) = now.pending_approvals {
        METRICS.pending.set(gauge(n));
    }
    let mut text = String::with_capacity(8 * 1024);
    if let Err(e) =
        prometheus_client::encoding::prometheus_text::encode(&mut text, &METRICS.registry)
    {
        tracing::error!(error = %e, "could not encode the metrics");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The same gauges in every test: the tests share the process's metrics.
    fn now() -> Now {
        Now {
            held_calls: 2,
            pending_approvals: Some(3),
        }
    }

    #[test]
    fn a_call_is_counted_under_bounded_labels() {
        let series = |service: &str, outcome: &str| {
            format!("airlock_requests_total{{service=\"{service}\",class=\"destructive-verb\",outcome=\"{outcome}\"}}")
        };
        let count = |text: &str, service: &str| {
            sample(text, &series(service, "approval_required")).unwrap_or(0.0)
        };
        let timeouts = |text: &str| {
            sample(text, "airlock_upstream_errors_total{kind=\"timeout\"}").unwrap_or(0.0)
        };
        let before = exposition(now());
        let class = Some("destructive-verb");
        call_answered(Some("s3"), class, "approval_required", None);
        // A service that is not in the model is not a label of its own.
        call_answered(
            Some("made-up-by-the-agent"),
            class,
            "approval_required",
            None,
        );
        call_answered(Some("s3"), class, "upstream_failure", Some("timeout"));
        let after = exposition(now());
        assert_eq!(count(&after, "s3") - count(&before, "s3"), 1.0, "{after}");
        assert_eq!(count(&after, "-") - count(&before, "-"), 1.0, "{after}");
        assert_eq!(timeouts(&after) - timeouts(&before), 1.0, "{after}");
        assert!(!after.contains("made-up-by-the-agent"), "{after}");
        assert_eq!(sample(&after, "airlock_held_calls"), Some(2.0));
        assert_eq!(sample(&after, "airlock_pending_approvals"), Some(3.0));
    }

    #[test]
    fn every_phase_has_its_histogram() {
        observe(Phase::Redeem, Duration::from_millis(3));
        let text = exposition(now());
        for p in Phase::ALL {
            let series = format!("airlock_phase_seconds_count{{phase=\"{}\"}}", p.label());
            assert!(sample(&text, &series).is_some(), "no {series} in\n{text}");
        }
        let redeemed = sample(&text, "airlock_phase_seconds_count{phase=\"redeem\"}");
        assert!(redeemed.is_some_and(|n| n >= 1.0), "{text}");
    }
}
