//! What a plan receipt grants: the calls one Terraform plan will make to destroy what it
//! destroys, each bound as a single receipt binds its call, signed once.
//!
//! A plan receipt is an ordinary [`ReceiptBody`] (same canonical bytes, same signatures, same
//! [`super::verify`]) whose `plan` field holds a [`PlanGrant`]. Its own call fields name no
//! AWS call (`service` `terraform`, `operation` `ApplyPlan`), and [`super::check_binding`]
//! refuses it, so it never stands in for a single call's receipt. The proxy asks
//! [`covering_entries`] instead, and the ledger counts each entry's uses on its own.
//!
//! An entry covers a call when the agent, environment, account, region, service and operation
//! are equal and the call's parameters, less the ones named in `free`, are exactly the
//! entry's. The resources a call names are a function of its parameters (`identify`), so
//! equal parameters mean equal resources; `free` parameters are the ones the plan cannot fix
//! (the keys a `force_destroy` bucket holds at apply time), and an entry with any is shown on
//! the page as covering "whatever the bucket holds".

use super::body::{present, ReceiptBody};
use super::ReceiptError;
use crate::identify::AwsCall;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `service` and `operation` of a plan receipt's own call fields.
pub const PLAN_SERVICE: &str = "terraform";
pub const PLAN_OPERATION: &str = "ApplyPlan";

/// The plan a receipt approves, and the calls it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanGrant {
    /// The submitted plan's id (`airlock plan submit`).
    pub plan_id: String,
    /// SHA-256 (hex) of the canonical `resource_changes` with the prior state's lineage and
    /// serial (`plan::digest`).
    pub digest: String,
    /// The plan's own creation time, as Terraform wrote it (`null` when it wrote none).
    #[serde(deserialize_with = "present")]
    pub created_at: Option<String>,
    pub entries: Vec<PlanEntry>,
}

/// One covered call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanEntry {
    /// The Terraform resource address whose destruction makes this call.
    pub address: String,
    pub environment: String,
    #[serde(deserialize_with = "present")]
    pub account: Option<String>,
    pub region: String,
    /// The botocore service name.
    pub service: String,
    pub operation: String,
    /// What the call acts on (ARN, else `member=value`), as the page showed it.
    pub resources: Vec<String>,
    /// The parameters the plan fixes, exactly as `identify` writes them.
    pub params: BTreeMap<String, String>,
    /// Parameters whose values the plan cannot know (a name covers `name` and `name.…`).
    pub free: Vec<String>,
    /// How many calls it covers; `null`: as many as the provider makes while the receipt is
    /// valid (fan-out inside one container, such as emptying a `force_destroy` bucket).
    #[serde(deserialize_with = "present")]
    pub uses: Option<u32>,
}

impl PlanEntry {
    /// `ec2:DeleteVpc`-style name, for pages and logs.
    pub fn action(&self) -> String {
        format!("{}:{}", self.service, self.operation)
    }

    fn is_free(&self, param: &str) -> bool {
        self.free.iter().any(|f| {
            param == f
                || param
                    .strip_prefix(f.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    /// Does this entry cover `call`, made in `environment`?
    pub fn covers(&self, environment: &str, call: &AwsCall) -> bool {
        if self.environment != environment
            || self.account != call.account
            || self.region != call.region
            || self.service != call.service
            || self.operation != call.operation
        {
            return false;
        }
        let mut fixed = call.params.iter().filter(|(k, _)| !self.is_free(k));
        let mut wanted = self.params.iter();
        // Both sorted by name: equal maps, item by item.
        loop {
            match (fixed.next(), wanted.next()) {
                (None, None) => return true,
                (Some(a), Some(b)) if a == b => {}
                _ => return false,
            }
        }
    }
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
    if body.decision != super::Decision::Approve || body.agent != agent {
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
    if grant.entries.is_empty() && body.decision == super::Decision::Approve {
        return Err(ReceiptError::Malformed(
            "a plan receipt covers at least one call".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{sign, verify, ApproverKey, Binding, Receipt, TrustedKeys, Validity};
    use super::*;
    use crate::receipt::{check_binding, check_window, Decision};
    use time::macros::datetime;

    fn entry() -> PlanEntry {
        PlanEntry {
            address: "aws_dynamodb_table.items".into(),
            environment: "staging".into(),
            account: Some("111111111111".into()),
            region: "eu-west-1".into(),
            service: "dynamodb".into(),
            operation: "DeleteTable".into(),
            resources: vec!["arn:aws:dynamodb:eu-west-1:111111111111:table/items".into()],
            params: [("TableName".to_owned(), "items".to_owned())].into(),
            free: Vec::new(),
            uses: Some(1),
        }
    }

    fn delete_table(name: &str) -> AwsCall {
        AwsCall {
            service: "dynamodb".into(),
            signing_name: "dynamodb".into(),
            operation: "DeleteTable".into(),
            region: "eu-west-1".into(),
            account: Some("111111111111".into()),
            resources: Vec::new(),
            params: [("TableName".to_owned(), name.to_owned())].into(),
        }
    }

    fn plan_receipt(key: &ApproverKey, decision: Decision) -> Receipt {
        let binding = Binding {
            agent: "terraform".into(),
            environment: "staging".into(),
            account: Some("111111111111".into()),
            region: "eu-west-1".into(),
            service: PLAN_SERVICE.into(),
            operation: PLAN_OPERATION.into(),
            resources: vec!["terraform-plan:p1".into()],
            params_digest: "d".repeat(64),
        };
        let mut body = ReceiptBody::new(
            &binding,
            "p1",
            decision,
            &key.public(),
            Validity::starting(datetime!(2026-02-26 12:00:00 UTC)),
        );
        body.plan = Some(PlanGrant {
            plan_id: "p1".into(),
            digest: "d".repeat(64),
            created_at: Some("2026-02-26T11:59:00Z".into()),
            entries: vec![entry()],
        });
        sign(body, key).expect("sign")
    }

    fn trusted(key: &ApproverKey) -> TrustedKeys {
        let mut t = TrustedKeys::new();
        t.add_approver(&key.public()).expect("trusted");
        t
    }

    #[test]
    fn a_plan_receipt_is_signed_and_verified_like_any_receipt() {
        let alice = ApproverKey::generate("alice").expect("key");
        let r = plan_receipt(&alice, Decision::Approve);
        let read = Receipt::from_json(r.to_json().expect("json").as_bytes()).expect("reads back");
        let v = verify(&read, &trusted(&alice)).expect("verifies");
        assert_eq!(
            covering_entries(v.body(), "terraform", "staging", &delete_table("items")),
            [0]
        );
        // Another agent, environment or table: nothing.
        assert!(covering_entries(v.body(), "other", "staging", &delete_table("items")).is_empty());
        assert!(covering_entries(v.body(), "terraform", "prod", &delete_table("items")).is_empty());
        assert!(
            covering_entries(v.body(), "terraform", "staging", &delete_table("other")).is_empty()
        );
        // Never a single call's receipt, whatever its fields say.
        let as_call = Binding::of(&delete_table("items"), "terraform", "staging");
        assert!(check_binding(&v, &as_call, datetime!(2026-02-26 12:01:00 UTC)).is_err());
        assert!(check_window(v.body(), datetime!(2026-02-26 12:01:00 UTC)).is_ok());
        assert!(check_window(v.body(), datetime!(2026-02-26 13:00:00 UTC)).is_err());
    }

    #[test]
    fn an_edited_entry_or_an_untrusted_signer_is_refused() {
        let alice = ApproverKey::generate("alice").expect("key");
        let mallory = ApproverKey::generate("alice").expect("key");
        let mut edited = plan_receipt(&alice, Decision::Approve);
        if let Some(grant) = edited.body.plan.as_mut() {
            grant.entries[0]
                .params
                .insert("TableName".into(), "other".into());
        }
        assert!(matches!(
            verify(&edited, &trusted(&alice)),
            Err(ReceiptError::BadSignature(_))
        ));
        let mut more_uses = plan_receipt(&alice, Decision::Approve);
        if let Some(grant) = more_uses.body.plan.as_mut() {
            grant.entries[0].uses = None;
        }
        assert!(verify(&more_uses, &trusted(&alice)).is_err());
        let forged = plan_receipt(&mallory, Decision::Approve);
        assert!(matches!(
            verify(&forged, &trusted(&alice)),
            Err(ReceiptError::UntrustedKey(_))
        ));
        // A denial covers nothing.
        let denied = plan_receipt(&alice, Decision::Deny);
        let v = verify(&denied, &trusted(&alice)).expect("a denial verifies");
        assert!(
            covering_entries(v.body(), "terraform", "staging", &delete_table("items")).is_empty()
        );
    }

    #[test]
    fn a_plan_receipt_must_say_it_is_one() {
        let alice = ApproverKey::generate("alice").expect("key");
        let mut r = plan_receipt(&alice, Decision::Approve);
        r.body.service = "dynamodb".into();
        r.signatures.clear();
        let r = sign(r.body, &alice).expect("sign");
        assert!(matches!(
            verify(&r, &trusted(&alice)),
            Err(ReceiptError::Malformed(_))
        ));
    }
}
