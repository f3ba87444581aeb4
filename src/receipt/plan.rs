//! What a plan receipt grants: the calls one Terraform plan will make to destroy what it
//! destroys, each bound as a single receipt binds its call, signed once.
//!
//! A plan receipt is an ordinary [`ReceiptBody`] (same canonical bytes, same signatures, same
//! [`super::verify`]) whose `plan` field holds a [`PlanGrant`]. Its own call fields name no
//! AWS call (`service` `terraform`, `operation` `ApplyPlan`), and [`super::check_binding`]
//! refuses it, so it never stands in for a single call's receipt. The proxy asks
//! `verify::covering_entries` instead, and the ledger counts each entry's uses on its own.
//!
//! An entry covers a call when the agent, environment, account, region, service and operation
//! are equal and the call's parameters, less the ones named in `free`, are exactly the
//! entry's. The resources a call names are a function of its parameters (`identify`), so
//! equal parameters mean equal resources; `free` parameters are the ones the plan cannot fix
//! (the keys a `force_destroy` bucket holds at apply time), and an entry with any is shown on
//! the page as covering "whatever the bucket holds".

use super::ids::present;
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
    /// SHA-256 (hex) of the canonical `resource_changes`, with the prior state's lineage and
    /// serial when `digest_scope` says so (`plan::digest`).
    pub digest: String,
    /// What the digest covers. Required: a plan receipt that does not say is not read (it
    /// covers nothing), so what the approver was told about the digest is always signed.
    pub digest_scope: DigestScope,
    /// The plan's own creation time, as Terraform wrote it (`null` when it wrote none).
    #[serde(deserialize_with = "present")]
    pub created_at: Option<String>,
    pub entries: Vec<PlanEntry>,
}

impl PlanGrant {
    /// The entry whose success closes entry `index`. An entry with a limited number of uses
    /// closes on its own success: a second success would act on a new resource of the same
    /// name (uses beyond the first are for refusals such as a `DeleteBucket` answered
    /// `BucketNotEmpty`). An entry for what a container holds (`uses: null`) closes on the
    /// success of the container's own delete: the last entry with limited uses of the same
    /// address after it (`DeleteBucket` for the bucket's objects). `None`: only the window,
    /// or the plan being spent, closes it.
    pub fn closed_by(&self, index: usize) -> Option<usize> {
        let entry = self.entries.get(index)?;
        if entry.uses.is_some() {
            return Some(index);
        }
        self.entries
            .iter()
            .enumerate()
            .skip(index + 1)
            .rev()
            .find(|(_, e)| e.address == entry.address && e.uses.is_some())
            .map(|(i, _)| i)
    }
}

/// What a plan's digest covers. The JSON form of a plan (`terraform show -json`) has no
/// state lineage or serial, so a digest made from it binds the resource changes only; the
/// binary plan's `tfstate` member adds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DigestScope {
    /// The canonical `resource_changes` only (submitted as JSON). Also what a stored plan
    /// that predates the field is taken to be: the claim that binds the least.
    #[default]
    #[serde(rename = "resource_changes")]
    ResourceChanges,
    /// The canonical `resource_changes` with the prior state's lineage and serial.
    #[serde(rename = "resource_changes+state")]
    ResourceChangesAndState,
}

/// What a plan submitted as JSON is flagged with: on the page, in `plan show`, at submission.
pub const JSON_DIGEST_WARNING: &str = "submitted as JSON: the digest does not bind the state the plan was made against; submit the binary plan to bind it";

impl DigestScope {
    pub fn as_str(self) -> &'static str {
        match self {
            DigestScope::ResourceChanges => "resource_changes",
            DigestScope::ResourceChangesAndState => "resource_changes+state",
        }
    }

    /// The warning to show with the digest, if any.
    pub fn warning(self) -> Option<&'static str> {
        match self {
            DigestScope::ResourceChanges => Some(JSON_DIGEST_WARNING),
            DigestScope::ResourceChangesAndState => None,
        }
    }
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
