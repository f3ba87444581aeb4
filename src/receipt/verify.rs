//! Signing and checking receipts.
//!
//! Checking has two steps, so the CLI can show a receipt that the proxy would refuse:
//! [`verify`] (signatures, signer, format, times: is this a genuine receipt?) and
//! [`check_binding`] (is it an approval, for exactly this call, now?). The proxy calls
//! [`authorize`], which is both.

use super::body::{
    Algorithm, Binding, Decision, Receipt, ReceiptBody, Signature, WebAuthnAssertion,
};
use super::keys::{ApproverKey, KeyId, Role, TrustedKeys};
use super::plan::{PlanGrant, PLAN_OPERATION, PLAN_SERVICE};
use super::quorum::{self, Quorum};
use super::webauthn;
use super::ReceiptError;
use crate::identify::AwsCall;
use time::{Duration, OffsetDateTime};

/// How far `issued_at` may lie after `not_before` (the clocks of the signer and of airlock).
pub const ISSUE_SKEW: Duration = Duration::seconds(60);

/// Signs `body` with `key`: a receipt with one signature.
pub fn sign(body: ReceiptBody, key: &ApproverKey) -> Result<Receipt, ReceiptError> {
    let mut receipt = Receipt {
        body,
        signatures: Vec::new(),
        cosigners: Vec::new(),
    };
    receipt.countersign(key)?;
    Ok(receipt)
}

impl Receipt {
    /// Adds `key`'s signature over the same body (airlock's own, on a passkey approval).
    pub fn countersign(&mut self, key: &ApproverKey) -> Result<(), ReceiptError> {
        let key_id = key.key_id();
        if self.signatures.iter().any(|s| s.key_id == key_id) {
            return Err(ReceiptError::DuplicateSignature(key_id));
        }
        let message = self.body.canonical_bytes()?;
        self.signatures.push(Signature {
            key_id,
            algorithm: Algorithm::Ed25519,
            signature: key.sign_bytes(&message),
        });
        Ok(())
    }
}

/// A key that signed a verified receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    pub key_id: KeyId,
    /// The name the trusted key carries in airlock's config.
    pub name: String,
    pub role: Role,
}

/// A receipt whose every signature checked out against a trusted key. Only [`verify`] makes
/// one. It may still be a denial: [`check_binding`] refuses those.
#[derive(Debug, Clone)]
pub struct VerifiedReceipt {
    receipt: Receipt,
    signers: Vec<Signer>,
    /// Distinct approver names, the body's own first, then each cosigner's.
    approvers: Vec<String>,
}

impl VerifiedReceipt {
    pub fn body(&self) -> &ReceiptBody {
        &self.receipt.body
    }

    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    pub fn signers(&self) -> &[Signer] {
        &self.signers
    }

    /// Everyone who approved (or denied) this body, each name once.
    pub fn approvers(&self) -> &[String] {
        &self.approvers
    }

    /// How far it is toward its quorum and `required` ([`quorum::tally`]).
    pub fn tally(&self, required: &Quorum) -> quorum::Tally {
        quorum::tally(self.body(), &self.approvers, required)
    }

    /// [`quorum::check`]: an approval short of its quorum or of `required` is refused.
    pub fn check_quorum(&self, required: &Quorum) -> Result<quorum::Tally, ReceiptError> {
        quorum::check(self.body(), &self.approvers, required)
    }

    /// [`quorum::check_entry`]: for a plan receipt's entry covering a call that needs
    /// `required`.
    pub fn check_entry_quorum(&self, required: &Quorum) -> Result<quorum::Tally, ReceiptError> {
        quorum::check_entry(self.body(), &self.approvers, required)
    }

    pub fn into_receipt(self) -> Receipt {
        self.receipt
    }
}

/// Is this a genuine receipt? [`verify_signatures`], and an approval has as many distinct
/// approvers as its body's quorum ([`quorum::check`]; the proxy also checks the config's).
pub fn verify(receipt: &Receipt, trusted: &TrustedKeys) -> Result<VerifiedReceipt, ReceiptError> {
    let verified = verify_signatures(receipt, trusted)?;
    verified.check_quorum(&Quorum::default())?;
    Ok(verified)
}

/// Is every approval in this receipt genuine? The body's own ([`verify_approval`]) and each
/// cosigner's over the body in their name, and the times in order. A quorum not yet complete
/// passes here (the approval page shows such a receipt as "1 of 2").
pub fn verify_signatures(
    receipt: &Receipt,
    trusted: &TrustedKeys,
) -> Result<VerifiedReceipt, ReceiptError> {
    let body = &receipt.body;
    if !receipt.cosigners.is_empty() {
        if body.decision != Decision::Approve {
            return Err(ReceiptError::Quorum("a denial has no cosigners"));
        }
        if body.quorum < 2 {
            return Err(ReceiptError::Quorum(
                "a body that needs one approver has no cosigners",
            ));
        }
    }
    let mut signers = verify_approval(body, &receipt.signatures, trusted)?;
    let mut approvers = vec![body.approver.clone()];
    for cosigner in &receipt.cosigners {
        let theirs = cosigner.as_receipt(body);
        for s in verify_approval(&theirs.body, &theirs.signatures, trusted)? {
            if !signers.iter().any(|known| known.key_id == s.key_id) {
                signers.push(s);
            }
        }
        if !approvers.contains(&cosigner.approver) {
            approvers.push(cosigner.approver.clone());
        }
    }

    if body.not_before >= body.expires_at {
        return Err(ReceiptError::Times("not_before is not before expires_at"));
    }
    if body.issued_at > body.not_before.saturating_add(ISSUE_SKEW) {
        return Err(ReceiptError::Times("issued_at is after not_before"));
    }
    if body.decision == Decision::Approve && body.uses == 0 {
        return Err(ReceiptError::NoUses);
    }
    check_plan_shape(body)?;
    Ok(VerifiedReceipt {
        receipt: receipt.clone(),
        signers,
        approvers,
    })
}

/// One approver's approval of `body`: every signature in `signatures` is by a trusted key
/// over the body's canonical bytes (at least one; one bad or unknown signature rejects it),
/// and the approver approved — for a key approval the key named by `approver_key_id` signed
/// and belongs to the approver named; for a passkey approval that passkey's assertion
/// verifies and airlock countersigned. The keys that signed.
fn verify_approval(
    body: &ReceiptBody,
    signatures: &[Signature],
    trusted: &TrustedKeys,
) -> Result<Vec<Signer>, ReceiptError> {
    if signatures.is_empty() {
        return Err(ReceiptError::Unsigned);
    }
    let message = body.canonical_bytes()?;
    let mut signers: Vec<Signer> = Vec::with_capacity(signatures.len());
    for sig in signatures {
        if signers.iter().any(|s| s.key_id == sig.key_id) {
            return Err(ReceiptError::DuplicateSignature(sig.key_id.clone()));
        }
        let key = trusted
            .get(&sig.key_id)
            .ok_or_else(|| ReceiptError::UntrustedKey(sig.key_id.clone()))?;
        match sig.algorithm {
            Algorithm::Ed25519 => key
                .key
                .verify_strict(&message, &sig.signature)
                .map_err(|_| ReceiptError::BadSignature(sig.key_id.clone()))?,
        }
        signers.push(Signer {
            key_id: sig.key_id.clone(),
            name: key.name.clone(),
            role: key.role,
        });
    }

    if let Some(assertion) = &body.webauthn {
        verify_passkey(body, assertion, trusted, &mut signers)?;
    } else {
        verify_key_approval(body, &signers)?;
    }
    Ok(signers)
}

/// A key approval: the key named by `approver_key_id` signed, and is that approver's.
fn verify_key_approval(body: &ReceiptBody, signers: &[Signer]) -> Result<(), ReceiptError> {
    let approver = signers
        .iter()
        .find(|s| s.key_id == body.approver_key_id)
        .ok_or_else(|| ReceiptError::ApproverDidNotSign(body.approver_key_id.clone()))?;
    if approver.role != Role::Approver {
        return Err(ReceiptError::NotAnApproverKey(approver.key_id.clone()));
    }
    if approver.name != body.approver {
        return Err(ReceiptError::ApproverMismatch {
            key_id: approver.key_id.clone(),
            holder: approver.name.clone(),
            claimed: body.approver.clone(),
        });
    }
    Ok(())
}

/// A passkey approval: `approver_key_id` names an enrolled passkey of the named approver,
/// the assertion in the body verifies under it over this body's challenge (alone or in its
/// batch), and airlock's own key countersigned (the page checked the live origin, the
/// counter and single use when it issued the receipt).
fn verify_passkey(
    body: &ReceiptBody,
    assertion: &WebAuthnAssertion,
    trusted: &TrustedKeys,
    signers: &mut Vec<Signer>,
) -> Result<(), ReceiptError> {
    let passkey = trusted
        .passkey(&body.approver_key_id)
        .ok_or_else(|| ReceiptError::UntrustedKey(body.approver_key_id.clone()))?;
    if passkey.name() != body.approver {
        return Err(ReceiptError::ApproverMismatch {
            key_id: passkey.key_id().clone(),
            holder: passkey.name().to_owned(),
            claimed: body.approver.clone(),
        });
    }
    if !signers.iter().any(|s| s.role == Role::Airlock) {
        return Err(ReceiptError::NotCountersigned);
    }
    let challenge = webauthn::expected_challenge(body)?;
    webauthn::verify_assertion(assertion, passkey, &challenge).map_err(ReceiptError::Passkey)?;
    signers.push(Signer {
        key_id: passkey.key_id().clone(),
        name: passkey.name().to_owned(),
        role: Role::Passkey,
    });
    Ok(())
}

/// Does this verified receipt authorize `request` at `now`? It must be an approval, every
/// bound field must equal the request's, and `now` must lie in `[not_before, expires_at)`.
/// Uses are the ledger's business, not this function's.
pub fn check_binding(
    receipt: &VerifiedReceipt,
    request: &Binding,
    now: OffsetDateTime,
) -> Result<(), ReceiptError> {
    let body = receipt.body();
    if body.decision != Decision::Approve {
        return Err(ReceiptError::Denied {
            approver: body.approver.clone(),
        });
    }
    if body.plan.is_some() {
        // A plan receipt covers its entries (`plan::covering_entries`), never a call by its
        // own fields.
        return Err(ReceiptError::Mismatch {
            field: "plan",
            receipt: "a plan receipt".into(),
            request: "a single call".into(),
        });
    }
    let granted = body.binding();
    // Destructured, so a field added to `Binding` cannot be forgotten here.
    let Binding {
        agent,
        environment,
        account,
        region,
        service,
        operation,
        resources,
        params_digest,
    } = request;
    same("agent", &granted.agent, agent)?;
    same("environment", &granted.environment, environment)?;
    same("account", &granted.account, account)?;
    same("region", &granted.region, region)?;
    same("service", &granted.service, service)?;
    same("operation", &granted.operation, operation)?;
    same("resources", &granted.resources, resources)?;
    same("params_digest", &granted.params_digest, params_digest)?;
    check_window(body, now)
}

/// Is `now` in the receipt's window, `[not_before, expires_at)`?
pub fn check_window(body: &ReceiptBody, now: OffsetDateTime) -> Result<(), ReceiptError> {
    if now < body.not_before.as_datetime() {
        return Err(ReceiptError::NotYetValid(body.not_before));
    }
    if now >= body.expires_at.as_datetime() {
        return Err(ReceiptError::Expired(body.expires_at));
    }
    Ok(())
}

fn same<T: PartialEq + std::fmt::Debug>(
    field: &'static str,
    granted: &T,
    requested: &T,
) -> Result<(), ReceiptError> {
    if granted == requested {
        Ok(())
    } else {
        // `Debug` quotes and escapes, so nothing in a value can forge the message's shape.
        Err(ReceiptError::Mismatch {
            field,
            receipt: format!("{granted:?}"),
            request: format!("{requested:?}"),
        })
    }
}

/// The proxy's check: [`verify`], then [`check_binding`].
pub fn authorize(
    receipt: &Receipt,
    trusted: &TrustedKeys,
    request: &Binding,
    now: OffsetDateTime,
) -> Result<VerifiedReceipt, ReceiptError> {
    let verified = verify(receipt, trusted)?;
    check_binding(&verified, request, now)?;
    Ok(verified)
}

impl ReceiptBody {
    /// A plan receipt's grant, or `None` for a single call's receipt.
    pub fn plan_grant(&self) -> Option<&PlanGrant> {
        self.plan.as_ref()
    }
}

/// The entries of a verified plan receipt that cover `call` by `agent` in `environment`, in
/// plan order. Empty for a denial, another agent, or a receipt that is not a plan's. Times
/// are checked by [`super::verify::check_window`]; uses by the ledger.
pub fn covering_entries(
    body: &ReceiptBody,
    agent: &str,
    environment: &str,
    call: &AwsCall,
) -> Vec<usize> {
    let Some(grant) = &body.plan else {
        return Vec::new();
    };
    if body.decision != Decision::Approve || body.agent != agent {
        return Vec::new();
    }
    grant
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.covers(environment, call))
        .map(|(i, _)| i)
        .collect()
}

/// A plan receipt's body must say what it is: the call fields name no AWS call, and it has
/// at least one entry.
pub(crate) fn check_plan_shape(body: &ReceiptBody) -> Result<(), ReceiptError> {
    let Some(grant) = &body.plan else {
        return Ok(());
    };
    if body.service != PLAN_SERVICE || body.operation != PLAN_OPERATION {
        return Err(ReceiptError::Malformed(format!(
            "a plan receipt's call is {PLAN_SERVICE}:{PLAN_OPERATION}"
        )));
    }
    if grant.entries.is_empty() && body.decision == Decision::Approve {
        return Err(ReceiptError::Malformed(
            "a plan receipt covers at least one call".into(),
        ));
    }
    Ok(())
}
