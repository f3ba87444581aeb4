//! `GET /metrics` and `GET /healthz` on this listener (see `crate::metrics` for why here and
//! what the metrics may say). The gauges are read from the proxy's state when scraped.

use crate::metrics::{exposition, Now};
use crate::proxy::Proxy;
use crate::state::approvals::Status;

/// The metrics as Prometheus text, with held calls and pending approvals counted now.
pub fn metrics(proxy: &Proxy) -> String {
    let pending = proxy
        .approvals
        .list()
        .map(|all| all.iter().filter(|a| a.status == Status::Pending).count());
    if let Err(e) = &pending {
        tracing::warn!(error = %e, "could not count the pending approvals for /metrics");
    }
    let max_held = proxy.config.approval.max_held;
    exposition(Now {
        held_calls: max_held.saturating_sub(proxy.held.available_permits()),
        pending_approvals: pending.ok(),
    })
}

/// Whether airlock can serve every call now: calls that need a receipt are refused while
/// the audit log cannot be written, so that is what is checked (the error says why).
pub fn health(proxy: &Proxy) -> Result<(), String> {
    proxy.audit.check_writable()
}
