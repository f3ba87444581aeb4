//! Passkeys (WebAuthn): the checks of a registration and of an assertion. Pure code: bytes
//! in, facts or an error out.
//!
//! # Why airlock checks WebAuthn itself
//!
//! A passkey approval must sign *the receipt*: the WebAuthn challenge is the SHA-256 of the
//! receipt body's canonical bytes ([`ReceiptBody::passkey_challenge`]), and anyone holding the
//! enrolled public key must be able to check the assertion offline, years later, from the
//! receipt alone. Ceremony libraries such as `webauthn-rs` pick a random challenge themselves
//! and check the answer against server-side ceremony state, which fits neither. The checks
//! that matter here are few and fixed (WebAuthn Level 2, §7.1 and §7.2), and the signature
//! maths comes from well-kept crates: ECDSA P-256 from RustCrypto's `p256`, Ed25519 from
//! `ed25519-dalek`, CBOR from `ciborium`.
//!
//! # What an assertion must show
//!
//! - `clientDataJSON`: `type` is `webauthn.get`; `challenge` is exactly the expected one
//!   (base64url); `origin` is on the passkey's RP ID (`https://`, or `http://` only for
//!   `localhost`, a secure context); not `crossOrigin`, no `topOrigin`.
//! - `authenticatorData`: the RP ID hash is the passkey's; user present **and user verified**
//!   (PIN or biometrics: the agent cannot touch the passkey for the human).
//! - The signature over `authenticatorData ‖ SHA-256(clientDataJSON)` verifies under the
//!   enrolled key, and the assertion names the enrolled credential.
//!
//! Not checked here (the approval page does it live): the exact origin of this airlock's
//! page, and the signature counter. Attestation is not verified: the one-time enrollment link
//! is what vouches for a passkey, not the authenticator's maker.
//!
//! # One touch, several receipts
//!
//! A `terraform destroy` sends several destructive calls at once. One assertion can approve
//! them all: its challenge is then [`batch_challenge`] over the passkey challenges of every
//! body in the batch, and each receipt carries that list (`webauthn.batch`). Each receipt is
//! still checked on its own: its own challenge must be in the list, and the list must hash to
//! what the authenticator signed.

use super::body::{ReceiptBody, WebAuthnAssertion};
use super::canonical;
use super::ids::{check_name, is_lower_hex, KeyError, KeyId, NamedKey};
use super::ReceiptError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fmt;

/// Flags of `authenticatorData` (WebAuthn §6.1).
const FLAG_USER_PRESENT: u8 = 0x01;
const FLAG_USER_VERIFIED: u8 = 0x04;
const FLAG_ATTESTED_DATA: u8 = 0x40;

/// Bounds on what a browser sends; anything larger is not an honest assertion.
const MAX_CLIENT_DATA: usize = 4096;
const MAX_AUTHENTICATOR_DATA: usize = 4096;
const MAX_SIGNATURE: usize = 256;
const MAX_CREDENTIAL_ID: usize = 1023;
/// At most this many receipts share one touch.
pub const MAX_BATCH: usize = 64;

/// The `format` of a batch challenge's canonical document.
const BATCH_FORMAT: &str = "airlock-passkey-batch/1";

/// Why a passkey registration or assertion was refused. Messages name the check, never a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebAuthnError {
    #[error("{0} is not valid base64url")]
    Encoding(&'static str),
    #[error("{0} is too large")]
    TooLarge(&'static str),
    #[error("clientDataJSON is not a JSON object of the expected shape")]
    ClientData,
    #[error("clientDataJSON has type {found:?}, expected {expected:?}")]
    Type {
        found: String,
        expected: &'static str,
    },
    #[error("the challenge signed is not the one for this approval")]
    Challenge,
    #[error("origin {0:?} is not allowed here")]
    Origin(String),
    #[error("the assertion was made inside a cross-origin frame")]
    CrossOrigin,
    #[error("authenticatorData is malformed: {0}")]
    AuthenticatorData(&'static str),
    #[error("the authenticator was asserted for another relying party")]
    RpIdHash,
    #[error("the authenticator did not report user presence")]
    NotPresent,
    #[error("the authenticator did not verify the user (PIN or biometrics required)")]
    NotVerified,
    #[error("the assertion is by credential {found}, not by the enrolled passkey")]
    Credential { found: String },
    #[error("the signature does not verify under the enrolled passkey")]
    Signature,
    #[error("attestationObject is malformed: {0}")]
    Attestation(&'static str),
    #[error("the credential public key is malformed or unsupported: {0}")]
    PublicKey(&'static str),
    #[error("the batch of approved receipts is malformed: {0}")]
    Batch(&'static str),
}

/// The public key of an enrolled passkey.
#[derive(Clone, PartialEq, Eq)]
pub enum PasskeyKey {
    /// COSE algorithm -7: ECDSA on P-256 with SHA-256.
    Es256(p256::ecdsa::VerifyingKey),
    /// COSE algorithm -8: Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl PasskeyKey {
    /// The raw public key: SEC1 uncompressed point (ES256) or 32 bytes (Ed25519).
    fn raw(&self) -> Vec<u8> {
        match self {
            PasskeyKey::Es256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            PasskeyKey::Ed25519(k) => k.as_bytes().to_vec(),
        }
    }

    /// How airlock's state writes it: `es256:BASE64URL` or `ed25519:BASE64URL`.
    pub fn encode(&self) -> String {
        let alg = match self {
            PasskeyKey::Es256(_) => "es256",
            PasskeyKey::Ed25519(_) => "ed25519",
        };
        format!("{alg}:{}", BASE64URL.encode(self.raw()))
    }

    /// The inverse of [`PasskeyKey::encode`]; refuses points off the curve and weak keys.
    pub fn decode(s: &str) -> Result<PasskeyKey, WebAuthnError> {
        let (alg, b64) = s
            .split_once(':')
            .ok_or(WebAuthnError::PublicKey("no algorithm prefix"))?;
        let raw = BASE64URL
            .decode(b64.as_bytes())
            .map_err(|_| WebAuthnError::Encoding("public key"))?;
        match alg {
            "es256" => p256::ecdsa::VerifyingKey::from_sec1_bytes(&raw)
                .map(PasskeyKey::Es256)
                .map_err(|_| WebAuthnError::PublicKey("not a P-256 point")),
            "ed25519" => {
                let raw: [u8; 32] = raw
                    .as_slice()
                    .try_into()
                    .map_err(|_| WebAuthnError::PublicKey("an Ed25519 key is 32 bytes"))?;
                let key = ed25519_dalek::VerifyingKey::from_bytes(&raw)
                    .map_err(|_| WebAuthnError::PublicKey("not an Ed25519 point"))?;
                if key.is_weak() {
                    return Err(WebAuthnError::PublicKey("a weak Ed25519 key"));
                }
                Ok(PasskeyKey::Ed25519(key))
            }
            _ => Err(WebAuthnError::PublicKey("unknown algorithm")),
        }
    }

    /// The key id receipts name it by: the first 16 hex characters of SHA-256 over the raw key.
    pub fn key_id(&self) -> KeyId {
        KeyId::of_raw(&self.raw())
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), WebAuthnError> {
        match self {
            PasskeyKey::Es256(key) => {
                use p256::ecdsa::signature::Verifier as _;
                // WebAuthn's ES256 signatures are ASN.1 DER (§6.5.6).
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| WebAuthnError::Signature)?;
                key.verify(message, &sig)
                    .map_err(|_| WebAuthnError::Signature)
            }
            PasskeyKey::Ed25519(key) => {
                let sig = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| WebAuthnError::Signature)?;
                key.verify_strict(message, &sig)
                    .map_err(|_| WebAuthnError::Signature)
            }
        }
    }
}

impl fmt::Debug for PasskeyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// An enrolled passkey: whose it is, which credential, which key, for which relying party.
/// Built from airlock's state only; a receipt names it by [`PasskeyPublic::key_id`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyPublic {
    name: String,
    key_id: KeyId,
    credential_id: Vec<u8>,
    key: PasskeyKey,
    rp_id: String,
}

impl PasskeyPublic {
    pub fn new(
        name: &str,
        credential_id: Vec<u8>,
        key: PasskeyKey,
        rp_id: &str,
    ) -> Result<PasskeyPublic, KeyError> {
        check_name(name)?;
        Ok(PasskeyPublic {
            name: name.to_owned(),
            key_id: key.key_id(),
            credential_id,
            key,
            rp_id: rp_id.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn credential_id(&self) -> &[u8] {
        &self.credential_id
    }

    pub fn key(&self) -> &PasskeyKey {
        &self.key
    }

    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }
}

impl NamedKey for PasskeyPublic {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }
}

/// What a verified assertion reported, for the live checks the approval page adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionFacts {
    /// The origin the browser ran the ceremony on.
    pub origin: String,
    /// The authenticator's signature counter (0 when it keeps none).
    pub sign_count: u32,
}

/// A registration that checked out: the new credential and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub credential_id: Vec<u8>,
    pub key: PasskeyKey,
    pub sign_count: u32,
}

fn b64(field: &'static str, s: &str) -> Result<Vec<u8>, WebAuthnError> {
    BASE64URL
        .decode(s.as_bytes())
        .map_err(|_| WebAuthnError::Encoding(field))
}

/// The WebAuthn challenge for a batch: SHA-256 of the canonical JSON
/// `{"format":"airlock-passkey-batch/1","receipts":[hex, …]}`, the receipts' passkey
/// challenges in order.
pub fn batch_challenge(challenges: &[[u8; 32]]) -> [u8; 32] {
    let doc = serde_json::json!({
        "format": BATCH_FORMAT,
        "receipts": challenges.iter().map(hex::encode).collect::<Vec<_>>(),
    });
    // Strings and an array only: canonical form cannot fail.
    let bytes = canonical::to_canonical(&doc).unwrap_or_default();
    Sha256::digest(bytes).into()
}

/// What the authenticator must have signed for this body: its own passkey challenge, or the
/// batch challenge of the list it carries (which must hold its own, once, among 2 to
/// [`MAX_BATCH`] distinct entries).
pub fn expected_challenge(body: &ReceiptBody) -> Result<[u8; 32], ReceiptError> {
    let own = body.passkey_challenge()?;
    let batch = match &body.webauthn {
        None => return Ok(own),
        Some(a) => &a.batch,
    };
    if batch.is_empty() {
        return Ok(own);
    }
    let bad = |why| ReceiptError::Passkey(WebAuthnError::Batch(why));
    if batch.len() < 2 || batch.len() > MAX_BATCH {
        return Err(bad("a batch holds 2 to 64 receipts"));
    }
    let mut list = Vec::with_capacity(batch.len());
    for h in batch {
        if !is_lower_hex(h, 64) {
            return Err(bad("entries are 64 lowercase hex characters"));
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(h, &mut raw).map_err(|_| bad("not hex"))?;
        if list.contains(&raw) {
            return Err(bad("an entry appears twice"));
        }
        list.push(raw);
    }
    if !list.contains(&own) {
        return Err(bad(
            "this receipt is not in the batch its assertion approved",
        ));
    }
    Ok(batch_challenge(&list))
}

/// The parts of `clientDataJSON` that are checked.
struct ClientData {
    type_: String,
    challenge: String,
    origin: String,
}

fn parse_client_data(raw: &[u8]) -> Result<ClientData, WebAuthnError> {
    if raw.len() > MAX_CLIENT_DATA {
        return Err(WebAuthnError::TooLarge("clientDataJSON"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(raw).map_err(|_| WebAuthnError::ClientData)?;
    let text = |k: &str| -> Result<String, WebAuthnError> {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .ok_or(WebAuthnError::ClientData)
    };
    match v.get("crossOrigin") {
        None | Some(serde_json::Value::Bool(false)) => {}
        Some(_) => return Err(WebAuthnError::CrossOrigin),
    }
    if v.get("topOrigin").is_some() {
        return Err(WebAuthnError::CrossOrigin);
    }
    Ok(ClientData {
        type_: text("type")?,
        challenge: text("challenge")?,
        origin: text("origin")?,
    })
}

fn check_client_data(
    raw: &[u8],
    expected_type: &'static str,
    challenge: &[u8],
) -> Result<ClientData, WebAuthnError> {
    let cd = parse_client_data(raw)?;
    if cd.type_ != expected_type {
        return Err(WebAuthnError::Type {
            found: cd.type_.chars().take(32).collect(),
            expected: expected_type,
        });
    }
    // Compared as text: the browser writes base64url without padding, exactly one way.
    let expected = BASE64URL.encode(challenge);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        cd.challenge.as_bytes(),
        expected.as_bytes(),
    )) {
        return Err(WebAuthnError::Challenge);
    }
    Ok(cd)
}

/// Is `origin` a secure-context origin of `rp_id`: `https://RPID[:port]`, or
/// `http://RPID[:port]` when the RP ID is `localhost` (browsers treat it as secure)?
pub fn origin_matches_rp_id(origin: &str, rp_id: &str) -> bool {
    let (scheme, rest) = match origin.split_once("://") {
        Some(x) => x,
        None => return false,
    };
    let host = match rest.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return false,
        None => rest,
    };
    let local = rp_id == "localhost" || rp_id.ends_with(".localhost");
    let scheme_ok = scheme == "https" || (scheme == "http" && local);
    scheme_ok && host == rp_id && !rp_id.is_empty()
}

/// The fixed part of `authenticatorData`.
struct AuthData<'a> {
    rp_id_hash: &'a [u8],
    flags: u8,
    sign_count: u32,
    rest: &'a [u8],
}

fn parse_auth_data(raw: &[u8]) -> Result<AuthData<'_>, WebAuthnError> {
    if raw.len() > MAX_AUTHENTICATOR_DATA {
        return Err(WebAuthnError::TooLarge("authenticatorData"));
    }
    if raw.len() < 37 {
        return Err(WebAuthnError::AuthenticatorData("shorter than 37 bytes"));
    }
    let mut count = [0u8; 4];
    count.copy_from_slice(&raw[33..37]);
    Ok(AuthData {
        rp_id_hash: &raw[..32],
        flags: raw[32],
        sign_count: u32::from_be_bytes(count),
        rest: &raw[37..],
    })
}

fn check_user(ad: &AuthData<'_>, rp_id: &str) -> Result<(), WebAuthnError> {
    let expected = Sha256::digest(rp_id.as_bytes());
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        ad.rp_id_hash,
        expected.as_slice(),
    )) {
        return Err(WebAuthnError::RpIdHash);
    }
    if ad.flags & FLAG_USER_PRESENT == 0 {
        return Err(WebAuthnError::NotPresent);
    }
    if ad.flags & FLAG_USER_VERIFIED == 0 {
        return Err(WebAuthnError::NotVerified);
    }
    Ok(())
}

/// Checks a passkey assertion against an enrolled passkey and the challenge it must sign.
/// The origin is checked against the passkey's RP ID; the caller that knows its own exact
/// origin compares [`AssertionFacts::origin`] too.
pub fn verify_assertion(
    assertion: &WebAuthnAssertion,
    passkey: &PasskeyPublic,
    challenge: &[u8; 32],
) -> Result<AssertionFacts, WebAuthnError> {
    let credential_id = b64("credential_id", &assertion.credential_id)?;
    if credential_id != passkey.credential_id {
        let mut found = assertion.credential_id.clone();
        found.truncate(24);
        return Err(WebAuthnError::Credential { found });
    }
    let client_data = b64("client_data_json", &assertion.client_data_json)?;
    let auth_data = b64("authenticator_data", &assertion.authenticator_data)?;
    let signature = b64("signature", &assertion.signature)?;
    if signature.len() > MAX_SIGNATURE {
        return Err(WebAuthnError::TooLarge("signature"));
    }
    let cd = check_client_data(&client_data, "webauthn.get", challenge)?;
    if !origin_matches_rp_id(&cd.origin, &passkey.rp_id) {
        return Err(WebAuthnError::Origin(cd.origin.chars().take(100).collect()));
    }
    let ad = parse_auth_data(&auth_data)?;
    check_user(&ad, &passkey.rp_id)?;
    if ad.flags & FLAG_ATTESTED_DATA != 0 {
        return Err(WebAuthnError::AuthenticatorData(
            "an assertion carries no attested credential",
        ));
    }
    let mut message = auth_data.clone();
    message.extend_from_slice(&Sha256::digest(&client_data));
    passkey.key.verify(&message, &signature)?;
    Ok(AssertionFacts {
        origin: cd.origin,
        sign_count: ad.sign_count,
    })
}

/// Checks a registration (`navigator.credentials.create`) made on `origin` for `rp_id`
/// with `challenge`, user verification required. The attestation statement is not checked
/// (airlock asks for none): the one-time enrollment link vouches for the passkey.
pub fn verify_registration(
    client_data_json: &[u8],
    attestation_object: &[u8],
    challenge: &[u8],
    origin: &str,
    rp_id: &str,
) -> Result<Registration, WebAuthnError> {
    let cd = check_client_data(client_data_json, "webauthn.create", challenge)?;
    if cd.origin != origin {
        return Err(WebAuthnError::Origin(cd.origin.chars().take(100).collect()));
    }
    if attestation_object.len() > MAX_AUTHENTICATOR_DATA + 8192 {
        return Err(WebAuthnError::TooLarge("attestationObject"));
    }
    let bad = WebAuthnError::Attestation;
    let value: ciborium::Value =
        ciborium::de::from_reader(attestation_object).map_err(|_| bad("not CBOR"))?;
    let map = value.as_map().ok_or(bad("not a CBOR map"))?;
    let auth_data = map
        .iter()
        .find(|(k, _)| k.as_text() == Some("authData"))
        .and_then(|(_, v)| v.as_bytes())
        .ok_or(bad("no authData"))?;
    let ad = parse_auth_data(auth_data)?;
    check_user(&ad, rp_id)?;
    if ad.flags & FLAG_ATTESTED_DATA == 0 {
        return Err(WebAuthnError::AuthenticatorData("no attested credential"));
    }
    // aaguid (16) ‖ credentialIdLength (2, big-endian) ‖ credentialId ‖ COSE_Key ‖ extensions
    let rest = ad.rest;
    if rest.len() < 18 {
        return Err(WebAuthnError::AuthenticatorData(
            "attested data is truncated",
        ));
    }
    let id_len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
    if id_len == 0 || id_len > MAX_CREDENTIAL_ID || rest.len() < 18 + id_len {
        return Err(WebAuthnError::AuthenticatorData("bad credential id length"));
    }
    let credential_id = rest[18..18 + id_len].to_vec();
    let mut cose = &rest[18 + id_len..];
    let key: ciborium::Value =
        ciborium::de::from_reader(&mut cose).map_err(|_| WebAuthnError::PublicKey("not CBOR"))?;
    Ok(Registration {
        credential_id,
        key: cose_key(&key)?,
        sign_count: ad.sign_count,
    })
}

/// A COSE_Key (RFC 9053): EC2 P-256 with ES256 (-7), or OKP Ed25519 with EdDSA (-8).
fn cose_key(v: &ciborium::Value) -> Result<PasskeyKey, WebAuthnError> {
    let bad = WebAuthnError::PublicKey;
    let map = v.as_map().ok_or(bad("not a map"))?;
    let get = |label: i64| {
        map.iter()
            .find(|(k, _)| k.as_integer().and_then(|i| i64::try_from(i).ok()) == Some(label))
            .map(|(_, v)| v)
    };
    let int = |label| {
        get(label)
            .and_then(|v| v.as_integer())
            .and_then(|i| i64::try_from(i).ok())
    };
    let bytes = |label| get(label).and_then(|v| v.as_bytes());
    match (int(1), int(3), int(-1)) {
        // kty EC2, alg ES256, crv P-256
        (Some(2), Some(-7), Some(1)) => {
            let (x, y) = (bytes(-2).ok_or(bad("no x"))?, bytes(-3).ok_or(bad("no y"))?);
            if x.len() != 32 || y.len() != 32 {
                return Err(bad("coordinates are not 32 bytes"));
            }
            let mut point = vec![0x04];
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map(PasskeyKey::Es256)
                .map_err(|_| bad("not a P-256 point"))
        }
        // kty OKP, alg EdDSA, crv Ed25519
        (Some(1), Some(-8), Some(6)) => {
            let x: [u8; 32] = bytes(-2)
                .ok_or(bad("no x"))?
                .as_slice()
                .try_into()
                .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
                .map_err(|_| bad("not an Ed25519 point"))?;
            if key.is_weak() {
                return Err(bad("a weak Ed25519 key"));
            }
            Ok(PasskeyKey::Ed25519(key))
        }
        _ => Err(bad(
            "only ES256 (P-256) and EdDSA (Ed25519) keys are accepted",
        )),
    }
}

/// Test helpers: a software authenticator that makes real registrations and assertions.
#[cfg(test)]
pub(crate) mod soft {
    use super::*;
    use p256::ecdsa::signature::Signer as _;

    pub struct Authenticator {
        pub signing: p256::ecdsa::SigningKey,
        pub credential_id: Vec<u8>,
        pub rp_id: String,
        pub flags: u8,
        pub counter: u32,
    }

    impl Authenticator {
        pub fn new(rp_id: &str) -> Authenticator {
            Authenticator {
                signing: p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng),
                credential_id: b"credential-0001".to_vec(),
                rp_id: rp_id.to_owned(),
                flags: FLAG_USER_PRESENT | FLAG_USER_VERIFIED,
                counter: 0,
            }
        }

        pub fn key(&self) -> PasskeyKey {
            PasskeyKey::Es256(*self.signing.verifying_key())
        }

        pub fn passkey(&self, name: &str) -> PasskeyPublic {
            PasskeyPublic::new(name, self.credential_id.clone(), self.key(), &self.rp_id)
                .expect("passkey")
        }

        fn auth_data(&self, extra: &[u8], flags: u8) -> Vec<u8> {
            let mut ad = Sha256::digest(self.rp_id.as_bytes()).to_vec();
            ad.push(flags);
            ad.extend_from_slice(&self.counter.to_be_bytes());
            ad.extend_from_slice(extra);
            ad
        }

        pub fn client_data(kind: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
            serde_json::json!({
                "type": kind,
                "challenge": BASE64URL.encode(challenge),
                "origin": origin,
                "crossOrigin": false,
            })
            .to_string()
            .into_bytes()
        }

        /// An assertion over arbitrary client data.
        pub fn assert_raw(&mut self, client_data: &[u8]) -> WebAuthnAssertion {
            self.counter += 1;
            let ad = self.auth_data(&[], self.flags);
            let mut message = ad.clone();
            message.extend_from_slice(&Sha256::digest(client_data));
            let sig: p256::ecdsa::Signature = self.signing.sign(&message);
            WebAuthnAssertion {
                credential_id: BASE64URL.encode(&self.credential_id),
                authenticator_data: BASE64URL.encode(ad),
                client_data_json: BASE64URL.encode(client_data),
                signature: BASE64URL.encode(sig.to_der().as_bytes()),
                batch: Vec::new(),
            }
        }

        pub fn assert(&mut self, challenge: &[u8; 32], origin: &str) -> WebAuthnAssertion {
            let cd = Self::client_data("webauthn.get", challenge, origin);
            self.assert_raw(&cd)
        }

        /// `(clientDataJSON, attestationObject)` of a registration with `fmt: none`.
        pub fn register(&self, challenge: &[u8], origin: &str) -> (Vec<u8>, Vec<u8>) {
            let point = self.signing.verifying_key().to_encoded_point(false);
            let cose = ciborium::Value::Map(vec![
                (1.into(), 2.into()),
                (3.into(), (-7).into()),
                ((-1).into(), 1.into()),
                (
                    (-2).into(),
                    ciborium::Value::Bytes(point.x().expect("x").to_vec()),
                ),
                (
                    (-3).into(),
                    ciborium::Value::Bytes(point.y().expect("y").to_vec()),
                ),
            ]);
            let mut cose_bytes = Vec::new();
            ciborium::ser::into_writer(&cose, &mut cose_bytes).expect("cbor");
            let mut attested = vec![0u8; 16];
            let id_len = u16::try_from(self.credential_id.len()).expect("len");
            attested.extend_from_slice(&id_len.to_be_bytes());
            attested.extend_from_slice(&self.credential_id);
            attested.extend_from_slice(&cose_bytes);
            let ad = self.auth_data(&attested, self.flags | FLAG_ATTESTED_DATA);
            let att = ciborium::Value::Map(vec![
                ("fmt".into(), "none".into()),
                ("attStmt".into(), ciborium::Value::Map(vec![])),
                ("authData".into(), ciborium::Value::Bytes(ad)),
            ]);
            let mut att_bytes = Vec::new();
            ciborium::ser::into_writer(&att, &mut att_bytes).expect("cbor");
            (
                Self::client_data("webauthn.create", challenge, origin),
                att_bytes,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::soft::Authenticator;
    use super::*;

    const ORIGIN: &str = "http://localhost:8444";

    #[test]
    fn a_registration_round_trips_into_a_passkey_that_verifies() {
        let auth = Authenticator::new("localhost");
        let challenge = [9u8; 32];
        let (cd, att) = auth.register(&challenge, ORIGIN);
        let reg = verify_registration(&cd, &att, &challenge, ORIGIN, "localhost").expect("ok");
        assert_eq!(reg.credential_id, auth.credential_id);
        assert_eq!(reg.key, auth.key());
        let decoded = PasskeyKey::decode(&reg.key.encode()).expect("decode");
        assert_eq!(decoded, reg.key);
    }

    #[test]
    fn registrations_are_refused_for_every_wrong_detail() {
        let auth = Authenticator::new("localhost");
        let challenge = [9u8; 32];
        let (cd, att) = auth.register(&challenge, ORIGIN);
        let err = |r: Result<Registration, WebAuthnError>| r.expect_err("refused");
        assert_eq!(
            err(verify_registration(
                &cd,
                &att,
                &[8u8; 32],
                ORIGIN,
                "localhost"
            )),
            WebAuthnError::Challenge
        );
        assert!(matches!(
            err(verify_registration(
                &cd,
                &att,
                &challenge,
                "http://localhost:9",
                "localhost"
            )),
            WebAuthnError::Origin(_)
        ));
        assert_eq!(
            err(verify_registration(
                &cd,
                &att,
                &challenge,
                ORIGIN,
                "example.com"
            )),
            WebAuthnError::RpIdHash
        );
        let get = Authenticator::client_data("webauthn.get", &challenge, ORIGIN);
        assert!(matches!(
            err(verify_registration(
                &get,
                &att,
                &challenge,
                ORIGIN,
                "localhost"
            )),
            WebAuthnError::Type { .. }
        ));
        let mut no_uv = Authenticator::new("localhost");
        no_uv.flags = FLAG_USER_PRESENT;
        let (cd2, att2) = no_uv.register(&challenge, ORIGIN);
        assert_eq!(
            err(verify_registration(
                &cd2,
                &att2,
                &challenge,
                ORIGIN,
                "localhost"
            )),
            WebAuthnError::NotVerified
        );
        assert!(matches!(
            err(verify_registration(
                &cd,
                b"\xff\x00",
                &challenge,
                ORIGIN,
                "localhost"
            )),
            WebAuthnError::Attestation(_)
        ));
    }

    #[test]
    fn an_assertion_verifies_and_every_tampering_fails() {
        let mut auth = Authenticator::new("localhost");
        let passkey = auth.passkey("alice");
        let challenge = [3u8; 32];
        let good = auth.assert(&challenge, ORIGIN);
        let facts = verify_assertion(&good, &passkey, &challenge).expect("verifies");
        assert_eq!(facts.origin, ORIGIN);
        assert_eq!(facts.sign_count, 1);

        assert_eq!(
            verify_assertion(&good, &passkey, &[4u8; 32]),
            Err(WebAuthnError::Challenge)
        );

        let mut flipped = good.clone();
        let mut sig = BASE64URL.decode(&flipped.signature).expect("b64");
        let last = sig.len() - 1;
        sig[last] ^= 1;
        flipped.signature = BASE64URL.encode(sig);
        assert_eq!(
            verify_assertion(&flipped, &passkey, &challenge),
            Err(WebAuthnError::Signature)
        );

        let other = Authenticator::new("localhost").passkey("alice");
        assert_eq!(
            verify_assertion(&good, &other, &challenge),
            Err(WebAuthnError::Signature)
        );

        let mut wrong_id = good.clone();
        wrong_id.credential_id = BASE64URL.encode(b"other");
        assert!(matches!(
            verify_assertion(&wrong_id, &passkey, &challenge),
            Err(WebAuthnError::Credential { .. })
        ));

        for origin in [
            "http://evil.localhost:8444",
            "http://127.0.0.1:8444",
            "https://localhost.evil.com",
            "http://localhost:8444/path",
            "file://localhost",
        ] {
            let a = auth.assert(&challenge, origin);
            assert!(
                matches!(
                    verify_assertion(&a, &passkey, &challenge),
                    Err(WebAuthnError::Origin(_))
                ),
                "{origin}"
            );
        }

        let mut cross = serde_json::json!({
            "type": "webauthn.get",
            "challenge": BASE64URL.encode(challenge),
            "origin": ORIGIN,
            "crossOrigin": true,
        });
        let a = auth.assert_raw(cross.to_string().as_bytes());
        assert_eq!(
            verify_assertion(&a, &passkey, &challenge),
            Err(WebAuthnError::CrossOrigin)
        );
        cross["crossOrigin"] = false.into();
        cross["type"] = "webauthn.create".into();
        let a = auth.assert_raw(cross.to_string().as_bytes());
        assert!(matches!(
            verify_assertion(&a, &passkey, &challenge),
            Err(WebAuthnError::Type { .. })
        ));

        auth.flags = FLAG_USER_PRESENT;
        let a = auth.assert(&challenge, ORIGIN);
        assert_eq!(
            verify_assertion(&a, &passkey, &challenge),
            Err(WebAuthnError::NotVerified)
        );
        auth.flags = FLAG_USER_VERIFIED;
        let a = auth.assert(&challenge, ORIGIN);
        assert_eq!(
            verify_assertion(&a, &passkey, &challenge),
            Err(WebAuthnError::NotPresent)
        );

        let mut elsewhere = Authenticator::new("example.com");
        elsewhere.signing = auth.signing.clone();
        elsewhere.credential_id = auth.credential_id.clone();
        let a = elsewhere.assert(&challenge, ORIGIN);
        assert_eq!(
            verify_assertion(&a, &passkey, &challenge),
            Err(WebAuthnError::RpIdHash)
        );
    }

    #[test]
    fn origins_must_be_secure_contexts_of_the_rp_id() {
        assert!(origin_matches_rp_id("http://localhost:8444", "localhost"));
        assert!(origin_matches_rp_id("http://localhost", "localhost"));
        assert!(origin_matches_rp_id(
            "https://airlock.example.com",
            "airlock.example.com"
        ));
        assert!(!origin_matches_rp_id(
            "http://airlock.example.com",
            "airlock.example.com"
        ));
        assert!(!origin_matches_rp_id("http://localhost:", "localhost"));
        assert!(!origin_matches_rp_id("http://localhost:84x", "localhost"));
        assert!(!origin_matches_rp_id("localhost", "localhost"));
        assert!(!origin_matches_rp_id("https://", ""));
    }

    #[test]
    fn cose_keys_other_than_es256_and_eddsa_are_refused() {
        let rs256 = ciborium::Value::Map(vec![(1.into(), 3.into()), (3.into(), (-257).into())]);
        assert!(cose_key(&rs256).is_err());
        let ed = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let okp = ciborium::Value::Map(vec![
            (1.into(), 1.into()),
            (3.into(), (-8).into()),
            ((-1).into(), 6.into()),
            (
                (-2).into(),
                ciborium::Value::Bytes(ed.verifying_key().as_bytes().to_vec()),
            ),
        ]);
        assert_eq!(
            cose_key(&okp).expect("ed25519"),
            PasskeyKey::Ed25519(ed.verifying_key())
        );
    }
}
