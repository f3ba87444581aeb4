//! The embedded service model. Parsed once, on first use.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

static MODEL_JSON: &str = include_str!("../../data/aws-model.json");
/// Each service's operations, one JSON line per service, found by the byte span the model
/// gives: the lines of services never called are never read (nor paged in).
static OPERATIONS_JSON: &str = include_str!("../../data/aws-operations.json");

#[derive(Debug, Deserialize)]
pub struct Model {
    pub source: String,
    pub partitions: Vec<Partition>,
    pub services: BTreeMap<String, Service>,
    /// Service names by signing name, built on first use (every request asks).
    #[serde(skip)]
    signing_index: OnceLock<std::collections::HashMap<String, Vec<String>>>,
    /// The partitions' DNS suffixes, longest first, built on first use (every request to an
    /// AWS name asks: `aws::endpoint::dns_suffixes`).
    #[serde(skip)]
    pub(crate) dns_suffixes: OnceLock<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub struct Partition {
    pub id: String,
    pub dns_suffix: String,
    /// Where the partition's dual-stack endpoints live (`api.aws`).
    #[serde(default)]
    pub dual_stack_dns_suffix: String,
    pub region_regex: String,
    pub regions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GlobalEndpoint {
    pub hostname: String,
    pub region: String,
}

#[derive(Debug, Deserialize)]
pub struct Service {
    pub signing_name: String,
    pub endpoint_prefix: String,
    pub protocols: Vec<String>,
    pub target_prefix: Option<String>,
    pub json_version: Option<String>,
    pub api_version: String,
    pub service_id: String,
    pub global: BTreeMap<String, GlobalEndpoint>,
    pub hostname: BTreeMap<String, String>,
    /// Where the operations are in `aws-operations.json` (`[start, end)`), parsed on first
    /// use: most services are never called, and parsing all ~18,000 operations up front
    /// costs tens of MiB.
    #[serde(rename = "operations")]
    operations_span: (usize, usize),
    #[serde(skip)]
    parsed_operations: OnceLock<BTreeMap<String, Operation>>,
}

impl Service {
    /// The service's operations by name.
    pub fn operations(&self) -> &BTreeMap<String, Operation> {
        self.parsed_operations.get_or_init(|| {
            let (start, end) = self.operations_span;
            let text = OPERATIONS_JSON
                .get(start..end)
                .unwrap_or("not in aws-operations.json");
            match serde_json::from_str(text) {
                Ok(ops) => ops,
                Err(e) => {
                    eprintln!(
                        "airlock: the embedded model's operations of {} are unreadable ({e})",
                        self.service_id
                    );
                    BTreeMap::new()
                }
            }
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct Operation {
    pub method: String,
    pub uri: String,
    pub labels: Vec<String>,
    pub query_literals: Vec<String>,
    pub required_query: Vec<String>,
    pub resources: Vec<String>,
    pub body_member: Option<String>,
    /// Naming members that are optional, listed only when `resources` is empty (ec2
    /// `DeleteSecurityGroup`'s `GroupId`): resources when the request carries them.
    #[serde(default)]
    pub optional_resources: Vec<String>,
    /// Header members the operation requires (lower-case), e.g. S3 `CopyObject`'s
    /// `x-amz-copy-source`.
    #[serde(default)]
    pub required_headers: Vec<String>,
    #[serde(default)]
    pub deprecated: bool,
    /// `endpoint.hostPrefix`, e.g. `{AccountId}.` (S3 Control), `data-`.
    #[serde(default)]
    pub host_prefix: Option<String>,
    /// Query-string members (REST protocols): wire name → member; `*` is a map member
    /// that takes every other key.
    #[serde(default)]
    pub query_members: BTreeMap<String, String>,
    /// Query-string members that are lists (their key may repeat).
    #[serde(default)]
    pub list_query: Vec<String>,
    /// Header members (REST protocols): lower-case header name → member.
    #[serde(default)]
    pub header_members: BTreeMap<String, String>,
    /// Top-level body members (REST protocols, no explicit payload): wire name → member.
    #[serde(default)]
    pub body_members: BTreeMap<String, String>,
    /// The shape type of the payload member (`structure`, `blob`, `string`, `union`).
    #[serde(default)]
    pub payload_type: Option<String>,
    /// Static context parameters set to true (`UseS3ExpressControlEndpoint`).
    #[serde(default)]
    pub static_context: Vec<String>,
}

/// The model, parsed on first use. The data is part of the binary, so a parse failure is a
/// build defect that the test suite catches; it still reports rather than panics.
pub fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| match serde_json::from_str(MODEL_JSON) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("airlock: the embedded AWS model is unreadable ({e}); continuing with none");
            Model {
                source: String::new(),
                partitions: Vec::new(),
                services: BTreeMap::new(),
                signing_index: OnceLock::new(),
                dns_suffixes: OnceLock::new(),
            }
        }
    })
}

impl Model {
    /// Every service that signs with this signing name (`rds` → rds, docdb, neptune).
    pub fn by_signing_name<'a>(
        &'a self,
        signing_name: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Service)> + 'a {
        let index = self.signing_index.get_or_init(|| {
            let mut index = std::collections::HashMap::<String, Vec<String>>::new();
            for (name, s) in &self.services {
                index
                    .entry(s.signing_name.clone())
                    .or_default()
                    .push(name.clone());
            }
            index
        });
        index
            .get(signing_name)
            .into_iter()
            .flatten()
            .filter_map(|name| self.services.get_key_value(name))
            .map(|(k, s)| (k.as_str(), s))
    }

    /// The partition a region belongs to: the longest region prefix of a partition's
    /// pattern that the region starts with (`us-gov-west-1` is aws-us-gov, not aws).
    pub fn partition_of(&self, region: &str) -> Option<&Partition> {
        if let Some(p) = self
            .partitions
            .iter()
            .find(|p| p.regions.iter().any(|r| r == region))
        {
            return Some(p);
        }
        let well_formed = region.rsplit_once('-').is_some_and(|(head, n)| {
            !head.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && !n.is_empty()
                && head.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
        });
        if !well_formed {
            return None;
        }
        self.partitions
            .iter()
            .flat_map(|p| {
                region_prefixes(&p.region_regex)
                    .into_iter()
                    .map(move |pre| (pre, p))
            })
            .filter(|(pre, _)| region.starts_with(pre.as_str()))
            .max_by_key(|(pre, _)| pre.len())
            .map(|(_, p)| p)
    }
}

/// `^(us|eu)\-\w+\-\d+$` → `["us-", "eu-"]`; `^us\-gov\-\w+\-\d+$` → `["us-gov-"]`.
fn region_prefixes(regex: &str) -> Vec<String> {
    let body = regex.trim_start_matches('^');
    let literal = body.split("\\w+").next().unwrap_or("").replace("\\-", "-");
    // Expand one alternation group, if present: `(us|eu)-` or `eusc-(de)-`.
    match (literal.find('('), literal.find(')')) {
        (Some(open), Some(close)) if open < close => {
            let (head, tail) = (&literal[..open], &literal[close + 1..]);
            literal[open + 1..close]
                .split('|')
                .map(|alt| format!("{head}{alt}{tail}"))
                .collect()
        }
        _ => vec![literal],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_loads_with_every_protocol_known() {
        let m = model();
        assert!(m.services.len() > 400, "only {} services", m.services.len());
        for (name, s) in &m.services {
            assert!(!s.protocols.is_empty(), "{name} has no protocol");
            for p in &s.protocols {
                assert!(
                    super::super::Protocol::from_model(p).is_some(),
                    "{name}: unknown protocol {p}"
                );
            }
        }
        assert_eq!(
            m.services["dynamodb"].target_prefix.as_deref(),
            Some("DynamoDB_20120810")
        );
    }

    #[test]
    fn every_service_finds_its_own_operations() {
        let m = model();
        for (name, s) in &m.services {
            assert!(!s.operations().is_empty(), "{name}: no operations read");
        }
        assert!(m.services["rds"]
            .operations()
            .contains_key("DeleteDBInstance"));
        assert!(m.services["s3"].operations().contains_key("PutObject"));
        assert!(!m.services["s3"]
            .operations()
            .contains_key("DeleteDBInstance"));
    }

    #[test]
    fn regions_map_to_partitions() {
        let m = model();
        let id = |r: &str| m.partition_of(r).map(|p| p.id.as_str());
        assert_eq!(id("us-east-1"), Some("aws"));
        assert_eq!(id("eu-west-9"), Some("aws"));
        assert_eq!(id("us-gov-west-1"), Some("aws-us-gov"));
        assert_eq!(id("us-gov-east-7"), Some("aws-us-gov"));
        assert_eq!(id("cn-north-1"), Some("aws-cn"));
        assert_eq!(id("us-isob-east-3"), Some("aws-iso-b"));
        assert_eq!(id("eusc-de-east-1"), Some("aws-eusc"));
        assert_eq!(id("evil.example.com/x-1"), None);
        assert_eq!(id("mars-north-1"), None);
    }
}
