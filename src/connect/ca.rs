//! airlock's CA as the HTTPS_PROXY tunnel needs it: name-constrained to the names airlock
//! may ever speak for (loopback, and AWS's endpoint suffixes), and a minter of short-lived
//! leaf certificates for the AWS names clients open tunnels to.
//!
//! The name constraints (X.509 `NameConstraints`, permitted subtrees only) are what limit a
//! leaked `ca.key`: every client that checks them (OpenSSL, Go, rustls/webpki, Node, curl)
//! refuses a certificate the CA signed for any other name. A CA made before them is
//! replaced with `airlock init --rotate-ca`.

use crate::aws::endpoint::dns_suffixes;
use crate::aws::model;
use rcgen::{
    CertificateParams, CidrSubnet, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, KeyPair,
    KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a minted leaf is valid (from an hour back, for clocks that lag).
const LEAF_VALIDITY: time::Duration = time::Duration::hours(24);

/// How long a minted leaf is served before a new one is made: well inside its validity.
const LEAF_REUSE: Duration = Duration::from_secs(12 * 3600);

/// Leaves kept at most; past this the cache starts over.
const MAX_CACHED_LEAVES: usize = 1024;

/// The names airlock's CA may certify: `localhost`, the loopback addresses, and every AWS
/// endpoint suffix (each partition's and its dual-stack one).
pub fn name_constraints() -> NameConstraints {
    let mut permitted = vec![
        GeneralSubtree::DnsName("localhost".into()),
        GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            8,
        )),
        GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            128,
        )),
    ];
    permitted.extend(
        dns_suffixes(model())
            .iter()
            .map(|s| GeneralSubtree::DnsName(s.clone())),
    );
    NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: Vec::new(),
    }
}

/// Whether the CA certificate (PEM) carries name constraints. An unreadable certificate is
/// an error, not a "no".
pub fn is_name_constrained(ca_pem: &str) -> Result<bool, String> {
    let params = CertificateParams::from_ca_cert_pem(ca_pem)
        .map_err(|e| format!("the CA certificate cannot be read: {e}"))?;
    Ok(params
        .name_constraints
        .is_some_and(|c| !c.permitted_subtrees.is_empty()))
}

/// `serve`'s warning when the CA in use has no name constraints (made before they were):
/// every client that trusts it would accept a certificate its key signs for any site.
pub fn warn_if_unconstrained(config: &crate::config::Config) {
    let path = config.ca_cert();
    let judged = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|pem| is_name_constrained(&pem));
    match judged {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            ca = %path.display(),
            "airlock's CA is not name-constrained: whoever got ca.key could sign certificates for any site, which clients trusting this CA would accept; `airlock init --rotate-ca` makes a constrained one"
        ),
        Err(e) => {
            tracing::warn!(ca = %path.display(), error = %e, "could not tell whether airlock's CA is name-constrained")
        }
    }
}

/// The CA's certificate, rebuilt from its PEM and key so it can sign (rcgen needs a
/// `Certificate` as issuer; the subject and key are the CA's, so what it signs chains to it).
pub fn issuer(
    ca_pem: &str,
    ca_key_pem: &str,
) -> Result<(rcgen::Certificate, KeyPair), rcgen::Error> {
    let key = KeyPair::from_pem(ca_key_pem)?;
    let ca = CertificateParams::from_ca_cert_pem(ca_pem)?.self_signed(&key)?;
    Ok((ca, key))
}

/// A TLS server certificate for `names`, signed by the CA, valid from `not_before` until
/// `not_after`: (certificate PEM, private key PEM).
pub fn server_leaf(
    names: Vec<String>,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<(rcgen::Certificate, KeyPair), rcgen::Error> {
    let common_name = names.first().cloned().unwrap_or_default();
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, ca, ca_key)?;
    Ok((cert, key))
}

/// Mints and caches the TLS configuration for each AWS name a tunnel is opened to.
pub struct Minter {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    ca_der: CertificateDer<'static>,
    leaves: Mutex<HashMap<String, (Arc<rustls::ServerConfig>, Instant)>>,
}

impl Minter {
    /// From the CA files `airlock init` made.
    pub fn load(config: &crate::config::Config) -> Result<Self, String> {
        let read = |p: std::path::PathBuf| {
            std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))
        };
        let ca_pem = read(config.ca_cert())?;
        let ca_key_pem = read(config.ca_key())?;
        Self::from_pem(&ca_pem, &ca_key_pem)
            .map_err(|e| format!("{}: {e}", config.ca_key().display()))
    }

    /// From the CA's certificate and key (PEM).
    pub fn from_pem(ca_pem: &str, ca_key_pem: &str) -> Result<Self, rcgen::Error> {
        let (ca, ca_key) = issuer(ca_pem, ca_key_pem)?;
        let ca_der = ca.der().clone();
        Ok(Minter {
            ca,
            ca_key,
            ca_der,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS configuration for `host` (an AWS name, lower case): cached, or minted now.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((config, made)) = leaves.get(host) {
            if made.elapsed() < LEAF_REUSE {
                return Ok(Arc::clone(config));
            }
        }
        let now = time::OffsetDateTime::now_utc();
        let (cert, key) = server_leaf(
            vec![host.to_string()],
            &self.ca,
            &self.ca_key,
            now - time::Duration::hours(1),
            now + LEAF_VALIDITY,
        )
        .map_err(|e| format!("could not make a certificate for {host}: {e}"))?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = crate::proxy::accept::server_config(chain, key)
            .map_err(|e| format!("TLS configuration for {host}: {e}"))?;
        if leaves.len() >= MAX_CACHED_LEAVES {
            leaves.clear();
        }
        leaves.insert(host.to_string(), (Arc::clone(&config), Instant::now()));
        tracing::debug!(%host, "minted a leaf certificate");
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints_name_loopback_and_every_aws_suffix() {
        let c = name_constraints();
        let dns: Vec<&str> = c
            .permitted_subtrees
            .iter()
            .filter_map(|s| match s {
                GeneralSubtree::DnsName(n) => Some(n.as_str()),
                _ => None,
            })
            .collect();
        for name in ["localhost", "amazonaws.com", "api.aws", "amazonaws.com.cn"] {
            assert!(dns.contains(&name), "{dns:?}");
        }
        assert!(!dns.iter().any(|n| n.is_empty() || *n == "com"), "{dns:?}");
        assert!(c.excluded_subtrees.is_empty());
    }

    #[test]
    fn leaves_are_minted_once_per_name_for_that_name_only() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.name_constraints = Some(name_constraints());
        let ca = params.self_signed(&key).unwrap();
        assert!(is_name_constrained(&ca.pem()).unwrap());
        let minter = Minter::from_pem(&ca.pem(), &key.serialize_pem()).unwrap();
        let sts = minter.server_config("sts.amazonaws.com").unwrap();
        assert!(Arc::ptr_eq(
            &sts,
            &minter.server_config("sts.amazonaws.com").unwrap()
        ));
        let rds = minter.server_config("rds.amazonaws.com").unwrap();
        assert!(!Arc::ptr_eq(&sts, &rds));
        // A leaf names its host and nothing else (that it chains to the CA and that clients
        // accept it is tests/e2e/test_connect.py's).
        let now = time::OffsetDateTime::now_utc();
        let (leaf, _) = server_leaf(
            vec!["sts.amazonaws.com".into()],
            &minter.ca,
            &minter.ca_key,
            now,
            now + LEAF_VALIDITY,
        )
        .unwrap();
        let parsed = CertificateParams::from_ca_cert_pem(&leaf.pem()).unwrap();
        assert_eq!(
            parsed.subject_alt_names,
            vec![rcgen::SanType::DnsName(
                "sts.amazonaws.com".try_into().unwrap()
            )]
        );
    }
}
