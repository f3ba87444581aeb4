//! What a receipt says ([`ReceiptBody`]), what a request is ([`Binding`]), and the receipt file
//! ([`Receipt`]: the body and its signatures).

use super::canonical;
use super::ids::{is_lower_hex, present, KeyId, NamedKey};
use super::ReceiptError;
use crate::identify::{AwsCall, Resource};
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use base64::Engine as _;
use rand::RngCore as _;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

/// The one body format this airlock reads and writes.
pub const FORMAT: &str = "airlock-receipt/1";

/// A receipt file larger than this is not read.
pub const MAX_RECEIPT_BYTES: usize = 64 * 1024;

/// Defaults for a grant when the config says nothing: 15 minutes, one use.
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);
pub const DEFAULT_USES: u32 = 1;

/// The `format` field. One variant per body format ever issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    #[serde(rename = "airlock-receipt/1")]
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Approve,
    Deny,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Approve => "approve",
            Decision::Deny => "deny",
        })
    }
}

/// A receipt's id: 128 random bits, 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ReceiptId(String);

impl ReceiptId {
    pub fn random() -> ReceiptId {
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        ReceiptId(hex::encode(bytes))
    }

    pub fn parse(s: &str) -> Option<ReceiptId> {
        is_lower_hex(s, 32).then(|| ReceiptId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReceiptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ReceiptId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ReceiptId::parse(&s)
            .ok_or_else(|| de::Error::custom("a receipt id is 32 lowercase hex characters"))
    }
}

/// A UTC time to the second, written exactly one way: `2026-02-26T12:00:00Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

/// For parsing only; [`Timestamp`]'s `Display` writes the same form.
const TIMESTAMP_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

impl Timestamp {
    /// `t` in UTC, fractions of a second dropped.
    pub fn from_datetime(t: OffsetDateTime) -> Timestamp {
        let t = t.to_offset(time::UtcOffset::UTC);
        Timestamp(t.replace_nanosecond(0).unwrap_or(t))
    }

    pub fn as_datetime(&self) -> OffsetDateTime {
        self.0
    }

    /// Only the canonical form: anything that would not print back identically is refused
    /// (`+00:00`, fractions, lowercase `t`/`z`, years outside 0000..9999).
    pub fn parse(s: &str) -> Option<Timestamp> {
        let t = PrimitiveDateTime::parse(s, TIMESTAMP_FORMAT)
            .ok()?
            .assume_utc();
        let t = Timestamp(t);
        (t.to_string() == s).then_some(t)
    }

    pub(crate) fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| de::Error::custom("a time is written YYYY-MM-DDTHH:MM:SSZ (UTC)"))
    }
}

/// A passkey (WebAuthn) assertion, as the browser returned it (every byte field base64url
/// without padding), and the batch it approved. Checked by [`super::webauthn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebAuthnAssertion {
    #[serde(deserialize_with = "base64url")]
    pub credential_id: String,
    #[serde(deserialize_with = "base64url")]
    pub authenticator_data: String,
    #[serde(deserialize_with = "base64url")]
    pub client_data_json: String,
    #[serde(deserialize_with = "base64url")]
    pub signature: String,
    /// Empty when the assertion approved this receipt alone (its challenge is then this
    /// body's [`ReceiptBody::passkey_challenge`]). When one touch approved several receipts:
    /// the passkey challenges (64 hex characters each) of all of them, in the order signed,
    /// this one's included; the challenge is then [`super::webauthn::batch_challenge`].
    pub batch: Vec<String>,
}

fn base64url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    match BASE64URL.decode(s.as_bytes()) {
        Ok(_) => Ok(s),
        Err(_) => Err(de::Error::custom("expected base64url without padding")),
    }
}

/// Everything a receipt decides. Every field is signed, and every field is always written
/// (`null` included), so nothing can be added or dropped without breaking the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    pub format: Format,
    pub id: ReceiptId,
    pub decision: Decision,
    /// The agent's name.
    pub agent: String,
    pub environment: String,
    /// The AWS account, when airlock knew it.
    #[serde(deserialize_with = "present")]
    pub account: Option<String>,
    pub region: String,
    /// The botocore service name.
    pub service: String,
    pub operation: String,
    /// What the call acts on, in the order `identify` lists them: ARN when known, else
    /// `member=value` ([`Binding::resource_name`]).
    pub resources: Vec<String>,
    /// [`AwsCall::params_digest`].
    pub params_digest: String,
    pub issued_at: Timestamp,
    pub not_before: Timestamp,
    pub expires_at: Timestamp,
    /// How many calls it covers (counted by the ledger, not here).
    pub uses: u32,
    /// The approver's name.
    pub approver: String,
    pub approver_key_id: KeyId,
    /// `null` for a key approval; the assertion for a passkey approval.
    #[serde(deserialize_with = "present")]
    pub webauthn: Option<WebAuthnAssertion>,
    /// The pending approval this answers (a plan receipt: the plan's id).
    pub approval_id: String,
    /// How many distinct approvers must approve this body ([`super::quorum`]). Written only
    /// when 2 or more, so a one-approver body's canonical bytes are what they always were;
    /// a written value below 2 is refused, so each quorum has exactly one form.
    #[serde(
        default = "one_approver",
        skip_serializing_if = "is_one_approver",
        deserialize_with = "written_quorum"
    )]
    pub quorum: u32,
    /// A plan receipt's grant ([`super::plan`]); absent (never written) on a single call's
    /// receipt, so those bodies and their signatures are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<super::plan::PlanGrant>,
}

fn one_approver() -> u32 {
    1
}

fn is_one_approver(quorum: &u32) -> bool {
    *quorum == 1
}

fn written_quorum<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        n @ 2..=MAX_QUORUM => Ok(n),
        _ => Err(de::Error::custom(
            "a written quorum is 2 or more (one approver is written by leaving it out)",
        )),
    }
}

/// When a grant starts, how long it lasts, and how many calls it covers.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub issued_at: OffsetDateTime,
    pub ttl: std::time::Duration,
    pub uses: u32,
}

impl Validity {
    /// From `issued_at`, for [`DEFAULT_TTL`], [`DEFAULT_USES`] uses.
    pub fn starting(issued_at: OffsetDateTime) -> Validity {
        Validity {
            issued_at,
            ttl: DEFAULT_TTL,
            uses: DEFAULT_USES,
        }
    }
}

impl ReceiptBody {
    /// A new body for `binding`, with a fresh id, valid from `issued_at` for `ttl`, decided
    /// by `approver`: an approver's key ([`super::ApproverPublic`]), or a passkey
    /// ([`super::PasskeyPublic`]) whose assertion goes into `webauthn` once the human has
    /// touched it (over [`ReceiptBody::passkey_challenge`]). Either names itself by
    /// [`NamedKey`], so this module needs neither key module.
    pub fn new(
        binding: &Binding,
        approval_id: &str,
        decision: Decision,
        approver: &impl NamedKey,
        validity: Validity,
    ) -> ReceiptBody {
        let issued_at = Timestamp::from_datetime(validity.issued_at);
        let ttl = Duration::try_from(validity.ttl).unwrap_or(Duration::MAX);
        let b = binding.clone();
        ReceiptBody {
            format: Format::V1,
            id: ReceiptId::random(),
            decision,
            agent: b.agent,
            environment: b.environment,
            account: b.account,
            region: b.region,
            service: b.service,
            operation: b.operation,
            resources: b.resources,
            params_digest: b.params_digest,
            issued_at,
            not_before: issued_at,
            expires_at: issued_at.saturating_add(ttl),
            uses: validity.uses,
            approver: approver.name().to_owned(),
            approver_key_id: approver.key_id().clone(),
            webauthn: None,
            approval_id: approval_id.to_owned(),
            quorum: 1,
            plan: None,
        }
    }

    /// The call this body is for, to compare with a request's.
    pub fn binding(&self) -> Binding {
        Binding {
            agent: self.agent.clone(),
            environment: self.environment.clone(),
            account: self.account.clone(),
            region: self.region.clone(),
            service: self.service.clone(),
            operation: self.operation.clone(),
            resources: self.resources.clone(),
            params_digest: self.params_digest.clone(),
        }
    }

    /// The bytes that are signed (see [`canonical`]).
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        let value =
            serde_json::to_value(self).map_err(|e| ReceiptError::Canonical(e.to_string()))?;
        canonical::to_canonical(&value).map_err(|e| ReceiptError::Canonical(e.into()))
    }

    /// SHA-256 of the canonical bytes with `webauthn` set to `null`: the WebAuthn challenge
    /// for a passkey approval of this body. (The assertion cannot sign a body that already
    /// contains it; everything else it does cover.)
    pub fn passkey_challenge(&self) -> Result<[u8; 32], ReceiptError> {
        let mut unsigned = self.clone();
        unsigned.webauthn = None;
        Ok(Sha256::digest(unsigned.canonical_bytes()?).into())
    }
}

/// What one request is, in the terms a receipt binds. Made from the request
/// ([`Binding::of`]) and from a receipt ([`ReceiptBody::binding`]); they must be equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    pub agent: String,
    pub environment: String,
    pub account: Option<String>,
    pub region: String,
    pub service: String,
    pub operation: String,
    pub resources: Vec<String>,
    pub params_digest: String,
}

impl Binding {
    pub fn of(call: &AwsCall, agent: &str, environment: &str) -> Binding {
        Binding {
            agent: agent.to_owned(),
            environment: environment.to_owned(),
            account: call.account.clone(),
            region: call.region.clone(),
            service: call.service.clone(),
            operation: call.operation.clone(),
            resources: call.resources.iter().map(Binding::resource_name).collect(),
            params_digest: call.params_digest(),
        }
    }

    /// The ARN when known, else `member=value`. (Member names never contain `:` or `=`, so
    /// the two forms cannot be confused.)
    pub fn resource_name(resource: &Resource) -> String {
        match &resource.arn {
            Some(arn) => arn.clone(),
            None => format!("{}={}", resource.member, resource.value),
        }
    }
}

/// The most approvers a call can require (and so the most a receipt carries).
pub const MAX_QUORUM: u32 = 16;

/// One further approver of a quorum body, with their signatures over the body in their name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosigner {
    pub approver: String,
    pub approver_key_id: KeyId,
    /// `null` for a key approval; the assertion for a passkey approval.
    #[serde(deserialize_with = "present")]
    pub webauthn: Option<WebAuthnAssertion>,
    pub signatures: Vec<Signature>,
}

/// `cosigners`, when written, holds at least one entry (absent is the only empty form).
pub(super) fn written_cosigners<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Cosigner>, D::Error> {
    let list = Vec::<Cosigner>::deserialize(d)?;
    if list.is_empty() || list.len() >= MAX_QUORUM as usize {
        return Err(de::Error::custom(format!(
            "cosigners, when written, holds 1 to {} entries",
            MAX_QUORUM - 1
        )));
    }
    Ok(list)
}

/// A receipt file: the body and its signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub body: ReceiptBody,
    pub signatures: Vec<Signature>,
    /// The further approvers of a quorum body, each with its own signatures over the same
    /// body in its name ([`super::quorum`]). Absent (never empty) on a one-approver receipt.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "written_cosigners"
    )]
    pub cosigners: Vec<Cosigner>,
}

/// One signature over the body's canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub key_id: KeyId,
    pub algorithm: Algorithm,
    /// The 64-byte signature, base64 (standard alphabet, padded).
    #[serde(with = "signature_base64")]
    pub signature: ed25519_dalek::Signature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "ed25519")]
    Ed25519,
}

mod signature_base64 {
    use super::BASE64;
    use base64::Engine as _;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        sig: &ed25519_dalek::Signature,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(sig.to_bytes()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<ed25519_dalek::Signature, D::Error> {
        let s = String::deserialize(d)?;
        let raw = BASE64
            .decode(s.as_bytes())
            .map_err(|_| de::Error::custom("a signature is canonical base64"))?;
        let raw: [u8; 64] = raw
            .as_slice()
            .try_into()
            .map_err(|_| de::Error::custom("an ed25519 signature is 64 bytes"))?;
        Ok(ed25519_dalek::Signature::from_bytes(&raw))
    }
}

impl Receipt {
    /// Reads a receipt strictly: no duplicate keys, unknown or missing fields, floats, wrong
    /// types, or a format other than [`FORMAT`].
    pub fn from_json(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        if bytes.len() > MAX_RECEIPT_BYTES {
            return Err(ReceiptError::Malformed(format!(
                "larger than {MAX_RECEIPT_BYTES} bytes"
            )));
        }
        let value = canonical::parse_strict(bytes).map_err(ReceiptError::Json)?;
        // Named first, so a receipt from a newer airlock says so instead of "unknown field".
        if let Some(found) = value.get("body").and_then(|b| b.get("format")) {
            if found.as_str() != Some(FORMAT) {
                let mut found = found.to_string();
                found.truncate(64);
                return Err(ReceiptError::UnknownFormat { found });
            }
        }
        serde_json::from_value(value).map_err(|e| ReceiptError::Malformed(e.to_string()))
    }

    /// The receipt file, pretty-printed, newline-terminated. (Only the body's canonical bytes
    /// are signed, so layout does not matter.)
    pub fn to_json(&self) -> Result<String, ReceiptError> {
        let mut s = serde_json::to_string_pretty(self)
            .map_err(|e| ReceiptError::Canonical(e.to_string()))?;
        s.push('\n');
        Ok(s)
    }
}
