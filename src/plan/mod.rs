//! Terraform plans: approve everything a plan destroys at once, before it runs.
//!
//! `airlock plan submit` reads the output of `terraform show -json plan.bin` (or the binary
//! plan itself), checks it is a plan, computes its [`digest`], and maps each resource the plan
//! deletes (a `delete`, or the delete half of a replace) to the AWS calls the AWS provider
//! makes for it ([`mapping`]). One approval then signs one plan receipt
//! (`receipt::plan::PlanGrant`) listing those calls; while `terraform apply plan.bin` runs,
//! the proxy lets a destructive call through when an entry covers it (`proxy::plan`).
//!
//! Pure, except [`cli`] (the commands), [`store`] (submitted plans in the state dir) and
//! reading a binary plan's `tfstate` member from
//! bytes. Submitting grants nothing: anyone, the agent too, may submit; what is approved is
//! derived here from the plan, shown on the page, and signed.
//!
//! Secrets: a plan holds attribute values in the clear (passwords). Nothing of the plan is
//! stored but the digest and what [`mapping`] derives (ids, names, ARNs, delete options).

pub mod cli;
pub mod index;
pub mod mapping;
pub mod quorum;
pub mod records;
pub mod shared;
pub mod store;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

/// Largest plan (JSON or binary) read.
pub const MAX_PLAN_BYTES: u64 = 256 * 1024 * 1024;

/// A plan, as far as airlock reads it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub format_version: String,
    pub terraform_version: Option<String>,
    /// The plan's creation time (RFC 3339), when Terraform wrote one.
    pub timestamp: Option<String>,
    pub resource_changes: Vec<Value>,
    /// The region of the default `aws` provider, when the configuration gives it as a constant.
    pub default_region: Option<String>,
    /// The prior state's lineage and serial, from a binary plan's `tfstate` member (the JSON
    /// has neither).
    pub lineage: Option<String>,
    pub serial: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a Terraform plan: {0}")]
    NotAPlan(String),
    #[error("the binary plan cannot be read: {0}")]
    Binary(String),
}

impl Plan {
    /// Reads `terraform show -json` output. It must be a plan: `format_version` 1.x,
    /// `resource_changes` a list, `prior_state` an object, and not `errored`.
    pub fn from_json(bytes: &[u8]) -> Result<Plan, PlanError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| PlanError::Json(e.to_string()))?;
        let top = v
            .as_object()
            .ok_or_else(|| PlanError::NotAPlan("the document is not an object".into()))?;
        let format_version = top
            .get("format_version")
            .and_then(Value::as_str)
            .filter(|f| f.starts_with("1."))
            .ok_or_else(|| PlanError::NotAPlan("format_version is missing or not 1.x".into()))?
            .to_owned();
        let resource_changes = top
            .get("resource_changes")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                PlanError::NotAPlan(
                    "no resource_changes (is this a state, not a plan? run `terraform show -json plan.bin`)"
                        .into(),
                )
            })?
            .clone();
        if !top.get("prior_state").is_some_and(Value::is_object) {
            return Err(PlanError::NotAPlan("no prior_state".into()));
        }
        if top.get("errored").and_then(Value::as_bool) == Some(true) {
            return Err(PlanError::NotAPlan(
                "the plan is marked errored: Terraform could not finish it".into(),
            ));
        }
        let text = |k: &str| top.get(k).and_then(Value::as_str).map(str::to_owned);
        let default_region = top
            .get("configuration")
            .and_then(|c| c.get("provider_config"))
            .and_then(|p| p.get("aws"))
            .and_then(|aws| aws.get("expressions"))
            .and_then(|e| e.get("region"))
            .and_then(|r| r.get("constant_value"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Plan {
            format_version,
            terraform_version: text("terraform_version"),
            timestamp: text("timestamp"),
            resource_changes,
            default_region,
            lineage: None,
            serial: None,
        })
    }

    /// Adds the prior state's lineage and serial from the `tfstate` member of a binary plan.
    pub fn with_state_of(mut self, binary_plan: &[u8]) -> Result<Plan, PlanError> {
        let (lineage, serial) = state_identity(binary_plan)?;
        self.lineage = Some(lineage);
        self.serial = Some(serial);
        Ok(self)
    }

    /// What [`Plan::digest`] covers: the state too only when it was read from a binary plan.
    pub fn digest_scope(&self) -> crate::receipt::DigestScope {
        if self.lineage.is_some() && self.serial.is_some() {
            crate::receipt::DigestScope::ResourceChangesAndState
        } else {
            crate::receipt::DigestScope::ResourceChanges
        }
    }

    /// SHA-256 (hex) of the canonical `{lineage, resource_changes, serial}`: two plans with
    /// the same changes against the same state have the same digest, whatever their
    /// timestamps; a plan made against another state (or state version) has another.
    pub fn digest(&self) -> String {
        let mut doc = Map::new();
        doc.insert(
            "lineage".into(),
            self.lineage.clone().map_or(Value::Null, Value::String),
        );
        doc.insert(
            "resource_changes".into(),
            Value::Array(self.resource_changes.clone()),
        );
        doc.insert(
            "serial".into(),
            self.serial.map_or(Value::Null, Value::from),
        );
        let value = integers_only(Value::Object(doc));
        // Only non-integers could fail, and `integers_only` turned them into text.
        let bytes = crate::receipt::canonical::to_canonical(&value).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }
}

/// The canonical form (shared with receipts) takes integers only: other numbers are written
/// as their JSON text.
fn integers_only(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(integers_only).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, item)| (k, integers_only(item)))
                .collect(),
        ),
        other => other,
    }
}

/// Is this a binary plan (a zip archive) rather than JSON?
pub fn is_binary_plan(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// `lineage` and `serial` of the `tfstate` member of a binary plan.
fn state_identity(binary_plan: &[u8]) -> Result<(String, u64), PlanError> {
    use std::io::Read as _;
    let bad = |m: String| PlanError::Binary(m);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(binary_plan))
        .map_err(|e| bad(format!("not a zip archive: {e}")))?;
    let member = archive
        .by_name("tfstate")
        .map_err(|e| bad(format!("no tfstate member: {e}")))?;
    let mut text = Vec::new();
    member
        .take(MAX_PLAN_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| bad(format!("tfstate: {e}")))?;
    let state: Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("tfstate is not JSON: {e}")))?;
    let lineage = state
        .get("lineage")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("tfstate has no lineage".into()))?;
    let serial = state
        .get("serial")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("tfstate has no serial".into()))?;
    Ok((lineage.to_owned(), serial))
}

/// The covered calls of `destroyed`, as a receipt's entries: each placed in its environment
/// (`environment_of(account, region)`, as the gate places calls), its resources named as
/// `identify` will name them.
pub fn entries(
    destroyed: &[mapping::Destroyed],
    environment_of: impl Fn(Option<&str>, &str) -> String,
) -> Vec<crate::receipt::PlanEntry> {
    let mut out = Vec::new();
    for d in destroyed {
        let mapping::Coverage::Covered { calls } = &d.coverage else {
            continue;
        };
        for c in calls {
            let resources = crate::identify::resources::of_params(
                &c.service,
                &c.operation,
                &c.region,
                c.account.as_deref(),
                &c.params,
            );
            out.push(crate::receipt::PlanEntry {
                address: d.address.clone(),
                environment: environment_of(c.account.as_deref(), &c.region),
                account: c.account.clone(),
                region: c.region.clone(),
                service: c.service.clone(),
                operation: c.operation.clone(),
                resources: resources
                    .iter()
                    .map(crate::receipt::Binding::resource_name)
                    .collect(),
                params: c.params.clone(),
                free: c.free.clone(),
                uses: c.uses,
            });
        }
    }
    out
}

/// The call fields of a plan receipt's body: the agent, the plan's environments, its account
/// and region when there is one of each, and the plan itself in place of an AWS call.
pub fn receipt_binding(record: &store::PlanRecord) -> crate::receipt::Binding {
    let one = |values: Vec<String>| -> Vec<String> {
        let mut v = values;
        v.sort();
        v.dedup();
        v
    };
    let accounts = one(record
        .entries
        .iter()
        .map(|e| e.account.clone().unwrap_or_default())
        .collect());
    let regions = one(record.entries.iter().map(|e| e.region.clone()).collect());
    crate::receipt::Binding {
        agent: record.agent.clone(),
        environment: record.environment_label(),
        account: match accounts.as_slice() {
            [a] if !a.is_empty() => Some(a.clone()),
            _ => None,
        },
        region: regions.join("+"),
        service: crate::receipt::plan::PLAN_SERVICE.to_owned(),
        operation: crate::receipt::plan::PLAN_OPERATION.to_owned(),
        resources: vec![format!("terraform-plan:{}", record.id)],
        params_digest: record.digest.clone(),
    }
}

/// The body of a receipt that decides `record`: its call fields, its grant, and a window of
/// `ttl` from now. The first approver (or a denier) signs it; further approvers cosign it.
pub fn receipt_body(
    record: &store::PlanRecord,
    decision: crate::receipt::Decision,
    approver: &impl crate::receipt::ids::NamedKey,
    ttl: std::time::Duration,
) -> crate::receipt::ReceiptBody {
    let mut body = crate::receipt::ReceiptBody::new(
        &receipt_binding(record),
        &record.id,
        decision,
        approver,
        validity(record, ttl),
    );
    body.plan = Some(grant(record));
    body
}

/// For tests: `record` approved by `key`'s approver alone (a record whose entries each need
/// one approver), as `airlock plan approve` records it.
#[cfg(test)]
pub(crate) fn approved_alone(
    store: &store::PlanStore,
    key: &crate::receipt::ApproverKey,
    record: &store::PlanRecord,
    ttl: std::time::Duration,
) -> store::PlanRecord {
    let body = receipt_body(
        record,
        crate::receipt::Decision::Approve,
        &key.public(),
        ttl,
    );
    let signed = crate::receipt::sign(body, key).expect("signed");
    let mut trusted = crate::receipt::TrustedKeys::new();
    trusted.add_approver(&key.public()).expect("trusted");
    let recorded = shared::at_once(quorum::record(store, &trusted, signed)).expect("recorded");
    assert_eq!(recorded.plan.status, store::PlanStatus::Approved);
    recorded.plan
}

/// What a plan receipt grants for `record`.
pub fn grant(record: &store::PlanRecord) -> crate::receipt::PlanGrant {
    crate::receipt::PlanGrant {
        plan_id: record.id.clone(),
        digest: record.digest.clone(),
        digest_scope: record.digest_scope,
        created_at: record.plan_created_at.clone(),
        entries: record.entries.clone(),
    }
}

/// A plan receipt's validity: the configured lifetime, from now; `uses` counts its entries
/// (each entry's own uses are the ledger's).
pub fn validity(record: &store::PlanRecord, ttl: std::time::Duration) -> crate::receipt::Validity {
    crate::receipt::Validity {
        issued_at: time::OffsetDateTime::now_utc(),
        ttl,
        uses: u32::try_from(record.entries.len()).unwrap_or(u32::MAX),
    }
}
