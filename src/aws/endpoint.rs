//! Where a call goes: the real AWS endpoint for a signing name and region, derived from
//! AWS's endpoint metadata (partitions, global services, hostname templates), or the one
//! emulator endpoint that `[upstream] endpoint` names.

use super::model::{Model, Service};

/// The upstream a request is sent to, and the region its new signature is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://rds.us-east-1.amazonaws.com` (no trailing slash).
    pub base: String,
    pub signing_region: String,
    /// The botocore service the call was resolved to (`rds`, `docdb`, `s3control`...).
    pub service: String,
}

/// Why no endpoint could be resolved; the message is shown to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved(pub String);

/// Resolves the real AWS endpoint of a botocore service (as identification named it) in a
/// region: the partition's global endpoint for global services, else the hostname template.
pub fn resolve(model: &Model, service_name: &str, region: &str) -> Result<Endpoint, Unresolved> {
    let (name, service): (&str, &Service) = model
        .services
        .get_key_value(service_name)
        .map(|(k, v)| (k.as_str(), v))
        .ok_or_else(|| {
            Unresolved(format!(
                "airlock does not know the AWS service {service_name:?}"
            ))
        })?;
    let partition = model
        .partition_of(region)
        .ok_or_else(|| Unresolved(format!("{region:?} is not a region airlock knows")))?;
    if let Some(global) = service.global.get(&partition.id) {
        return Ok(Endpoint {
            base: format!("https://{}", global.hostname),
            signing_region: global.region.clone(),
            service: name.to_string(),
        });
    }
    let template = service
        .hostname
        .get(&partition.id)
        .map(String::as_str)
        .unwrap_or("{service}.{region}.{dnsSuffix}");
    let host = template
        .replace("{service}", &service.endpoint_prefix)
        .replace("{region}", region)
        .replace("{dnsSuffix}", &partition.dns_suffix);
    Ok(Endpoint {
        base: format!("https://{host}"),
        signing_region: region.to_string(),
        service: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::model;

    fn base(name: &str, region: &str) -> String {
        resolve(model(), name, region)
            .map(|e| e.base)
            .unwrap_or_else(|e| e.0)
    }

    #[test]
    fn regional_and_global_services() {
        assert_eq!(
            base("rds", "us-west-2"),
            "https://rds.us-west-2.amazonaws.com"
        );
        assert_eq!(
            base("docdb", "us-west-2"),
            "https://rds.us-west-2.amazonaws.com"
        );
        assert_eq!(
            base("ec2", "eu-central-1"),
            "https://ec2.eu-central-1.amazonaws.com"
        );
        assert_eq!(
            base("lambda", "cn-north-1"),
            "https://lambda.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            base("dynamodbstreams", "us-east-1"),
            "https://streams.dynamodb.us-east-1.amazonaws.com"
        );
        assert_eq!(
            base("s3", "us-east-1"),
            "https://s3.us-east-1.amazonaws.com"
        );
        let iam = resolve(model(), "iam", "us-west-2").unwrap();
        assert_eq!(iam.base, "https://iam.amazonaws.com");
        assert_eq!(iam.signing_region, "us-east-1");
        assert!(resolve(model(), "no-such-service", "us-east-1").is_err());
        assert!(resolve(model(), "rds", "not a region").is_err());
    }
}
