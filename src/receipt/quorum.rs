//! M-of-N: one receipt body approved by several distinct approvers.
//!
//! The body ([`ReceiptBody`]) states the quorum it needs (`quorum`, signed with everything
//! else) and names its first approver. Every further approver approves the *same* body in
//! their own name: the body with only the three fields that say who approved replaced
//! (`approver`, `approver_key_id`, `webauthn`; [`ReceiptBody::in_name_of`]). Such an approval
//! is a complete one-approver receipt over that view (a key signature, or a passkey assertion
//! countersigned by airlock), checked by exactly the code that checks any receipt, and it is
//! kept in the envelope as a [`Cosigner`]. [`join`] refuses a view that differs from the body
//! in anything but those three fields, so all approvals are of one call, one validity window,
//! one id.
//!
//! Counting ([`tally`]): distinct approver *names* (one person with a key and a passkey, or
//! the same person twice, counts once), only names the rule lets count
//! ([`Quorum::approvers`]), against the larger of the quorum the body states and the one the
//! config requires now. A denial is never joined: one denial is a receipt of its own, and it
//! denies however many approvals came before it.

pub use super::body::{Cosigner, MAX_QUORUM};
use super::body::{Decision, Receipt, ReceiptBody};
use super::keys::KeyId;
use super::ReceiptError;
use serde::{Deserialize, Serialize};

/// What a call needs: how many distinct approvers, and which names may count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quorum {
    pub approvals: u32,
    /// `None`: every trusted approver counts.
    #[serde(default)]
    pub approvers: Option<Vec<String>>,
}

impl Default for Quorum {
    /// One approver, anyone trusted: what every call needed before quorums existed.
    fn default() -> Quorum {
        Quorum {
            approvals: 1,
            approvers: None,
        }
    }
}

impl Quorum {
    /// Whether `approver`'s approval counts toward this quorum.
    pub fn counts(&self, approver: &str) -> bool {
        self.approvers
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == approver))
    }
}

impl ReceiptBody {
    /// This body as `approver` approves it (with `key_id`): the same call, window and id, in
    /// their name. A passkey's assertion goes into `webauthn` afterwards, over this view's
    /// [`ReceiptBody::passkey_challenge`].
    pub fn in_name_of(&self, approver: &str, key_id: &KeyId) -> ReceiptBody {
        let mut view = self.clone();
        view.approver = approver.to_owned();
        view.approver_key_id = key_id.clone();
        view.webauthn = None;
        view
    }
}

impl ReceiptBody {
    /// The call this body binds, as far as the body says: its service, operation, account,
    /// region and resources (each an ARN, or `member=value` when airlock knew no ARN), and
    /// no parameters (the body carries only their digest). For matching rules against when
    /// the call itself is gone ([`crate::policy::Policy::quorum_bound`]).
    pub fn bound_call(&self) -> crate::identify::AwsCall {
        use crate::identify::call::Resource;
        let signing_name = signing_name_of(&self.service);
        let resources = self
            .resources
            .iter()
            .map(|name| match name.split_once('=') {
                Some((member, value)) if !name.starts_with("arn:") => Resource {
                    member: member.to_owned(),
                    value: value.to_owned(),
                    arn: None,
                },
                _ => Resource {
                    member: String::new(),
                    value: String::new(),
                    arn: Some(name.clone()),
                },
            })
            .collect();
        crate::identify::AwsCall {
            service: self.service.clone(),
            signing_name,
            operation: self.operation.clone(),
            region: self.region.clone(),
            account: self.account.clone(),
            resources,
            params: Default::default(),
        }
    }
}

/// The SigV4 signing name of botocore service `service` (itself when the model does not know it).
pub fn signing_name_of(service: &str) -> String {
    crate::aws::model::model()
        .services
        .get(service)
        .map_or_else(|| service.to_owned(), |s| s.signing_name.clone())
}

impl Cosigner {
    /// The body as this cosigner signed it.
    pub fn view(&self, body: &ReceiptBody) -> ReceiptBody {
        let mut view = body.in_name_of(&self.approver, &self.approver_key_id);
        view.webauthn = self.webauthn.clone();
        view
    }

    /// Their approval as the one-approver receipt it is.
    pub fn as_receipt(&self, body: &ReceiptBody) -> Receipt {
        Receipt {
            body: self.view(body),
            signatures: self.signatures.clone(),
            cosigners: Vec::new(),
        }
    }
}

/// Adds `approval` (a one-approver receipt over `partial`'s body in its approver's name) to
/// `partial`; with no partial receipt, `approval` is the first. Refuses to join a denial, a
/// receipt that already has cosigners, or a view that differs from the body.
pub fn join(partial: Option<Receipt>, approval: Receipt) -> Result<Receipt, ReceiptError> {
    if !approval.cosigners.is_empty() {
        return Err(ReceiptError::Quorum(
            "only a one-approver receipt is joined",
        ));
    }
    let Some(mut receipt) = partial else {
        return Ok(approval);
    };
    if receipt.body.decision != Decision::Approve || approval.body.decision != Decision::Approve {
        return Err(ReceiptError::Quorum(
            "a denial is never joined to approvals",
        ));
    }
    let a = approval.body;
    let mut expected = receipt.body.in_name_of(&a.approver, &a.approver_key_id);
    expected.webauthn = a.webauthn.clone();
    if expected != a {
        return Err(ReceiptError::Quorum(
            "the approval is of another body (the call, window or id differ)",
        ));
    }
    if receipt.cosigners.len() + 1 >= MAX_QUORUM as usize {
        return Err(ReceiptError::Quorum("too many approvers on one receipt"));
    }
    receipt.cosigners.push(Cosigner {
        approver: a.approver,
        approver_key_id: a.approver_key_id,
        webauthn: a.webauthn,
        signatures: approval.signatures,
    });
    Ok(receipt)
}

/// How far a verified receipt is toward its quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Distinct approvers who count, in the order they approved.
    pub counted: Vec<String>,
    /// The approvals needed: the larger of the body's quorum and the config's.
    pub need: u32,
}

impl Tally {
    pub fn have(&self) -> usize {
        self.counted.len()
    }

    pub fn complete(&self) -> bool {
        self.have() >= self.need as usize
    }
}

/// The distinct `approvers` that `required` lets count, toward `need`.
fn counted(approvers: &[String], required: &Quorum, need: u32) -> Tally {
    Tally {
        counted: approvers
            .iter()
            .filter(|name| required.counts(name))
            .cloned()
            .collect(),
        need: need.max(1),
    }
}

/// Counts the distinct `approvers` of a verified receipt's `body` that `required` lets count.
pub fn tally(body: &ReceiptBody, approvers: &[String], required: &Quorum) -> Tally {
    counted(approvers, required, body.quorum.max(required.approvals))
}

/// [`tally`], refusing an approval whose quorum is not complete. A denial passes: it
/// authorizes nothing, whoever signed it, and `check_binding` refuses it.
pub fn check(
    body: &ReceiptBody,
    approvers: &[String],
    required: &Quorum,
) -> Result<Tally, ReceiptError> {
    let t = tally(body, approvers, required);
    if body.decision == Decision::Approve && !t.complete() {
        return Err(ReceiptError::QuorumNotMet {
            have: t.have(),
            need: t.need,
        });
    }
    Ok(t)
}

/// A plan receipt's entry covering a call: the receipt meets the quorum its body states (the
/// most any of its entries needs, [`check`]), and the call's own `required` quorum counted
/// over the names `required` lets count. The plan's largest quorum is not asked of every
/// entry: an entry whose rule lets only some names count needs only its own number of them.
pub fn check_entry(
    body: &ReceiptBody,
    approvers: &[String],
    required: &Quorum,
) -> Result<Tally, ReceiptError> {
    check(body, approvers, &Quorum::default())?;
    let t = counted(approvers, required, required.approvals);
    if body.decision == Decision::Approve && !t.complete() {
        return Err(ReceiptError::QuorumNotMet {
            have: t.have(),
            need: t.need,
        });
    }
    Ok(t)
}
