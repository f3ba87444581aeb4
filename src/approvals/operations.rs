//! `GET /metrics` and `GET /healthz` on this listener (see `crate::metrics` for why here and
//! what the metrics may say). The gauges are read from the gate when scraped.

use crate::gate::Gate;
use crate::metrics::{exposition, Now};
use crate::state::approvals::Status;

/// The metrics as Prometheus text, with held calls and pending approvals counted now.
pub async fn metrics(gate: &Gate) -> String {
    let pending = gate
        .store
        .list_approvals(Some(0))
        .await
        .map(|all| all.iter().filter(|a| a.status == Status::Pending).count());
    if let Err(e) = &pending {
        tracing::warn!(error = %e, "could not count the pending approvals for /metrics");
    }
    exposition(Now {
        held_calls: gate.held_calls(),
        pending_approvals: pending.ok(),
    })
}

/// Whether airlock can serve every call now: calls that need a receipt are refused while
/// the audit log cannot be written, so that is what is checked (the error says why).
pub async fn health(gate: &Gate) -> Result<(), String> {
    gate.store.audit_health().await
}
