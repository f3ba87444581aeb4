//! What one call became, in one type: the audit record's `event` and the log line's
//! `outcome` come from it, and it is derived from the error's typed [`Cause`] and
//! [`Origin`], never from its AWS error code (one code, `AccessDenied`, covers four
//! different stories an incident reader must tell apart).

use super::error::{Cause, Origin, ProxyError};
use super::forward::Forwarded;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded without a receipt (allowed, or shadow mode).
    Forwarded,
    /// Forwarded under a receipt a human granted.
    ReceiptUsed,
    /// Refused: it needs a human's approval, and none is granted yet.
    ApprovalRequired,
    /// Refused by a policy `deny`.
    DeniedByPolicy,
    /// Refused: a human denied it.
    DeniedByApprover,
    /// Refused: the stored receipt does not verify.
    ReceiptInvalid,
    /// Refused for any other reason (signature, limits, unidentified call, airlock's state);
    /// the record's `code` says which.
    Refused,
    /// airlock could not complete the call upstream (502, 503, 504 made by airlock).
    UpstreamFailure,
}

impl Outcome {
    /// The outcome of a call that reached the end of its path (`Ok`) or was refused.
    pub fn of<T>(result: &Result<T, ProxyError>, receipt_used: bool) -> Outcome {
        match result {
            Ok(_) if receipt_used => Outcome::ReceiptUsed,
            Ok(_) => Outcome::Forwarded,
            Err(e) => match (e.cause, e.origin) {
                (Cause::DeniedByPolicy, _) => Outcome::DeniedByPolicy,
                (Cause::ApprovalRequired, _) => Outcome::ApprovalRequired,
                (Cause::DeniedByApprover, _) => Outcome::DeniedByApprover,
                (Cause::ReceiptInvalid, _) => Outcome::ReceiptInvalid,
                (Cause::Other, Origin::Upstream) => Outcome::UpstreamFailure,
                (Cause::Other, Origin::Downstream | Origin::Internal) => Outcome::Refused,
            },
        }
    }

    /// The audit record's `event`.
    pub fn event(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::ReceiptUsed => "receipt_used",
            Outcome::ApprovalRequired => "approval_required",
            Outcome::DeniedByPolicy => "denied_by_policy",
            Outcome::DeniedByApprover => "denied_by_approver",
            Outcome::ReceiptInvalid => "receipt_invalid",
            Outcome::Refused => "refused",
            Outcome::UpstreamFailure => "upstream_failure",
        }
    }
}

/// The kind of upstream failure a call ended in, for the metrics: airlock's own 503/502/504
/// for an upstream it could not complete the call with, or the upstream's own answer of a
/// server error or throttling (forwarded to the agent as it came).
pub fn upstream_error(result: &Result<Forwarded, ProxyError>) -> Option<&'static str> {
    match result {
        Err(e) if e.origin == Origin::Upstream => Some(match e.status.as_u16() {
            503 => "unreachable",
            504 => "timeout",
            _ => "broken",
        }),
        Err(_) => None,
        Ok(f) if f.response.status().as_u16() == 429 => Some("throttled"),
        Ok(f) if f.response.status().is_server_error() => Some("server_error"),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(result: Result<(), ProxyError>, receipt_used: bool) -> &'static str {
        Outcome::of(&result, receipt_used).event()
    }

    #[test]
    fn every_outcome_names_its_event() {
        assert_eq!(event(Ok(()), false), "forwarded");
        assert_eq!(event(Ok(()), true), "receipt_used");
        let denied = |cause| Err(ProxyError::access_denied(cause, "no"));
        assert_eq!(
            event(denied(Cause::ApprovalRequired), false),
            "approval_required"
        );
        assert_eq!(
            event(denied(Cause::DeniedByPolicy), false),
            "denied_by_policy"
        );
        assert_eq!(
            event(denied(Cause::DeniedByApprover), false),
            "denied_by_approver"
        );
        assert_eq!(
            event(denied(Cause::ReceiptInvalid), false),
            "receipt_invalid"
        );
        // The same code, AccessDenied, without a cause is a plain refusal.
        assert_eq!(event(denied(Cause::Other), false), "refused");
        assert_eq!(event(Err(ProxyError::bad_request("x")), false), "refused");
        assert_eq!(event(Err(ProxyError::internal("x")), false), "refused");
        assert_eq!(
            event(Err(ProxyError::state_unwritable("x")), true),
            "refused"
        );
    }

    #[test]
    fn failures_upstream_are_told_apart_from_refusals() {
        for e in [
            ProxyError::unreachable("connection refused"),
            ProxyError::bad_gateway("reset"),
            ProxyError::gateway_timeout("slow"),
        ] {
            // A call under a receipt that failed upstream is still an upstream failure.
            assert_eq!(event(Err(e.clone()), false), "upstream_failure", "{e}");
            assert_eq!(event(Err(e), true), "upstream_failure");
        }
    }

    #[test]
    fn upstream_failures_are_named_by_kind() {
        let kind = |e: ProxyError| upstream_error(&Err(e));
        assert_eq!(
            kind(ProxyError::unreachable("refused")),
            Some("unreachable")
        );
        assert_eq!(kind(ProxyError::bad_gateway("reset")), Some("broken"));
        assert_eq!(kind(ProxyError::gateway_timeout("slow")), Some("timeout"));
        assert_eq!(kind(ProxyError::bad_request("x")), None);
        let answered = |status: u16| {
            let mut response = http::Response::new(super::super::body::full(""));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            upstream_error(&Ok(Forwarded { response }))
        };
        assert_eq!(answered(200), None);
        assert_eq!(answered(404), None);
        assert_eq!(answered(429), Some("throttled"));
        assert_eq!(answered(500), Some("server_error"));
    }
}
