//! Collecting M approvals on one receipt body, whatever they approve: a pending call
//! (`approvals::quorum`) or a Terraform plan (`plan::quorum`). Each says what it needs
//! through [`Collects`]; joining an approval to the quorum under way, checking every
//! signature and counting distinct approvers is this one code ([`join_approval`]), run by
//! each store under its lock. The receipt of an incomplete quorum authorizes nothing: its
//! owner stays pending until [`Tally::complete`]. Its window is the first approver's: once
//! it ends, the approvals in it lapse and the next approval starts anew.

use super::body::{Decision, Receipt, ReceiptBody};
use super::keys::{KeyId, TrustedKeys};
use super::quorum::{self, Tally};
use super::verify::{verify_signatures, VerifiedReceipt};

/// What approvals are collected for: one pending call (`state::approvals::Approval`) or one
/// submitted plan (`plan::store::PlanRecord`). Joining an approval to the quorum under way,
/// checking it and counting it is the same code for both ([`join_approval`]); each store
/// keeps its own record.
pub trait Collects {
    /// "call" or "plan", for messages.
    const NOUN: &'static str;
    /// Still waiting for decisions.
    fn is_pending(&self) -> bool;
    /// While pending, the receipt of the quorum under way.
    fn partial_receipt_id(&self) -> Option<&str>;
    /// The approvers who counted so far, in the order they signed.
    fn approved_by(&self) -> &[String];
    /// The quorum a fresh body states (`ReceiptBody::quorum`).
    fn stated_quorum(&self) -> u32;
    /// Why `approver` would not count, after `so_far` (the approvers of the quorum under
    /// way), if they would not.
    fn does_not_count(&self, approver: &str, so_far: &[String]) -> Option<String>;
    /// How far a verified receipt's distinct approvers go.
    fn tally(&self, verified: &VerifiedReceipt) -> Tally;
    /// "1 of 2 approvals".
    fn progress(&self) -> String;
}

/// The receipt of the quorum under way for `c` (`stored`: its bytes), unless its window has
/// ended: then the approvals in it lapse and the quorum starts over.
fn under_way<C: Collects>(c: &C, stored: Option<Vec<u8>>) -> Result<Option<Receipt>, String> {
    let (true, Some(_), Some(bytes)) = (c.is_pending(), c.partial_receipt_id(), stored) else {
        return Ok(None);
    };
    let partial =
        Receipt::from_json(&bytes).map_err(|e| format!("the stored receipt does not read: {e}"))?;
    let now = time::OffsetDateTime::now_utc();
    Ok((now < partial.body.expires_at.as_datetime()).then_some(partial))
}

/// Refuses an approval that cannot add to `c`'s quorum (`stored`: the bytes of its receipt
/// under way): by a name that does not count, or by an approver already counted (the same
/// person twice counts once).
pub fn may_approve_with<C: Collects>(
    c: &C,
    stored: Option<Vec<u8>>,
    approver: &str,
) -> Result<(), String> {
    let partial = under_way(c, stored)?;
    check_approver(c, partial.is_some(), approver)
}

fn check_approver<C: Collects>(c: &C, under_way: bool, approver: &str) -> Result<(), String> {
    let so_far = if under_way { c.approved_by() } else { &[] };
    if let Some(why) = c.does_not_count(approver, so_far) {
        return Err(why);
    }
    if so_far.iter().any(|n| n == approver) {
        return Err(format!(
            "{approver:?} has already approved this {} ({}): it needs another approver",
            C::NOUN,
            c.progress()
        ));
    }
    Ok(())
}

/// The body `approver` (with `key_id`) signs for `c`: for an approval while a quorum is
/// under way (`stored`), its body in their name; otherwise `fresh` (a new body), stating the
/// quorum `c` needs. A denial always signs a fresh body.
pub fn body_to_sign_with<C: Collects>(
    c: &C,
    stored: Option<Vec<u8>>,
    decision: Decision,
    (approver, key_id): (&str, &KeyId),
    fresh: impl FnOnce() -> ReceiptBody,
) -> Result<ReceiptBody, String> {
    if decision == Decision::Approve {
        if let Some(partial) = under_way(c, stored)? {
            return Ok(partial.body.in_name_of(approver, key_id));
        }
    }
    let mut body = fresh();
    body.quorum = c.stated_quorum();
    Ok(body)
}

/// An approval joined to the quorum under way: the receipt to store, and how far it goes.
pub struct Joined {
    pub receipt: Receipt,
    pub tally: Tally,
}

/// Joins `single` (one approver's approval over the body [`body_to_sign_with`] gave them) to
/// `c`'s quorum under way (`stored`), checks every signature against `trusted`, and counts.
/// Refuses an approver who does not count or already counted, and a first body that states
/// a smaller quorum than `c` needs. Called under the store's lock.
pub fn join_approval<C: Collects>(
    c: &C,
    stored: Option<Vec<u8>>,
    single: Receipt,
    trusted: &TrustedKeys,
) -> Result<Joined, String> {
    let approver = single.body.approver.clone();
    let partial = under_way(c, stored)?;
    check_approver(c, partial.is_some(), &approver)?;
    if partial.is_none() && single.body.quorum < c.stated_quorum() {
        return Err(format!(
            "the receipt states a quorum of {}, but this {} needs {}",
            single.body.quorum,
            C::NOUN,
            c.stated_quorum()
        ));
    }
    let joined = quorum::join(partial, single)
        .map_err(|e| format!("{e}: another approver decided meanwhile; start again"))?;
    let verified = verify_signatures(&joined, trusted).map_err(|e| e.to_string())?;
    let tally = c.tally(&verified);
    if !tally.counted.contains(&approver) {
        return Err(format!(
            "{approver:?} does not count toward this {}'s quorum",
            C::NOUN
        ));
    }
    Ok(Joined {
        receipt: joined,
        tally,
    })
}
