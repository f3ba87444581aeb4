//! Receipts: a person's signed decision about exactly one AWS call. Pure code (no tokio, no
//! hyper); the only I/O is reading and writing key files in [`keys`].
//!
//! # Lifecycle
//!
//! ```text
//! pending approval ──► ReceiptBody::new(binding, …) ──► sign(body, key) ──► Receipt (stored, JSON)
//! request ──► Binding::of(call, agent, env) ─┐
//! Receipt + TrustedKeys (config) ──► verify ─┴─► check_binding(now) ──► the ledger counts the use
//! ```
//!
//! # Why it looks like this
//!
//! Other receipt and token systems were bypassed through gaps between what was signed and what
//! was acted on; each point here closes one:
//!
//! - The signature covers canonical bytes of the **whole** body ([`canonical`]): sorted keys, no
//!   whitespace, integers only, every field present (`null` included). Never concatenated
//!   strings, never a subset of fields.
//! - The verifier recomputes those bytes from the parsed body; the file's own bytes are never
//!   what is checked. The parser is strict (duplicate keys, unknown or missing fields, floats,
//!   a foreign `format`), so what is verified is what is used.
//! - Keys come only from [`TrustedKeys`], which is built from airlock's config. A receipt
//!   names a key id; it never brings a key.
//! - Every signature present must verify under a trusted key, and the key named in
//!   `approver_key_id` must be among them and belong to the named approver; airlock's own key
//!   countersigns but never approves alone.
//! - A denial is a valid receipt (the CLI shows it), but [`check_binding`] never lets one
//!   authorize anything.
//! - Single use is not checked here: the durable ledger (`state::ledger`) counts uses.
//! - A body may need several distinct approvers (`quorum`); each further one signs the same
//!   body in their own name ([`quorum`]), and fewer distinct approvers than the body states
//!   (or the config requires, checked by the proxy and `airlock receipt verify`) authorize
//!   nothing.
//!
//! - A passkey approval carries the human's own WebAuthn assertion over the body's hash
//!   ([`webauthn`]), checked against passkeys enrolled in airlock's state, and airlock's own
//!   countersignature; one touch may approve a batch, each receipt still checked on its own.
//!
//! Not guaranteed here: that the person holding an approver key or passkey is who the config
//! or the enrollment says; single use of an assertion (the approval page consumes each
//! ceremony once; offline, a receipt is one decision whatever its copies).

pub mod body;
pub mod canonical;
pub mod collect;
pub mod ids;
pub mod keys;
pub mod plan;
pub mod quorum;
pub mod verify;
pub mod webauthn;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;

pub use body::{
    Algorithm, Binding, Decision, Format, Receipt, ReceiptBody, ReceiptId, Signature, Timestamp,
    Validity, WebAuthnAssertion, DEFAULT_TTL, DEFAULT_USES, FORMAT, MAX_RECEIPT_BYTES,
};
pub use keys::{
    config_block, keygen, keygen_locked, ApproverKey, ApproverPublic, KeyError, KeyId, LoadedKey,
    Role, TrustedKeys, Unlock,
};
pub use plan::{DigestScope, PlanEntry, PlanGrant};
pub use quorum::{Cosigner, Quorum, Tally};
pub use verify::{
    authorize, check_binding, check_window, covering_entries, sign, verify, verify_signatures,
    Signer, VerifiedReceipt, ISSUE_SKEW,
};
pub use webauthn::{PasskeyKey, PasskeyPublic, WebAuthnError};

/// Why a receipt was refused. Each variant names one check; messages go to agents and
/// operators, and never hold key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt is not strict JSON: {0}")]
    Json(String),
    #[error("receipt is malformed: {0}")]
    Malformed(String),
    #[error("receipt has format {found}, but this airlock reads only {FORMAT:?}")]
    UnknownFormat { found: String },
    #[error("receipt body cannot be made canonical: {0}")]
    Canonical(String),
    #[error("receipt carries no signature")]
    Unsigned,
    #[error("receipt is signed twice by key {0}")]
    DuplicateSignature(KeyId),
    #[error("receipt is signed by key {0}, which is not a trusted key in airlock's config")]
    UntrustedKey(KeyId),
    #[error("signature by key {0} does not match the receipt's contents (edited after signing?)")]
    BadSignature(KeyId),
    #[error("receipt names approver key {0}, but that key did not sign it")]
    ApproverDidNotSign(KeyId),
    #[error("key {0} is airlock's own key, which cannot approve on its own")]
    NotAnApproverKey(KeyId),
    #[error("key {key_id} belongs to approver {holder:?}, but the receipt names {claimed:?}")]
    ApproverMismatch {
        key_id: KeyId,
        holder: String,
        claimed: String,
    },
    #[error("passkey assertion refused: {0}")]
    Passkey(#[from] WebAuthnError),
    #[error("a passkey receipt must also be signed by airlock's own key")]
    NotCountersigned,
    #[error("receipt times are out of order: {0}")]
    Times(&'static str),
    #[error("receipt is an approval for 0 uses")]
    NoUses,
    #[error("receipt is a denial by {approver:?}: it authorizes nothing")]
    Denied { approver: String },
    #[error("receipt is for {field} {receipt}, but this call has {field} {request}")]
    Mismatch {
        field: &'static str,
        receipt: String,
        request: String,
    },
    #[error("receipt is not valid before {0}")]
    NotYetValid(Timestamp),
    #[error("receipt expired at {0}")]
    Expired(Timestamp),
    #[error("receipt has {have} distinct approver(s) who count, but needs {need}")]
    QuorumNotMet { have: usize, need: u32 },
    #[error("receipt's approvers do not fit together: {0}")]
    Quorum(&'static str),
}
