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

/// The DNS suffixes AWS's endpoints live under: each partition's, and its dual-stack one
/// (`amazonaws.com`, `api.aws`, `amazonaws.com.cn`, …), longest first, each once. Sorted
/// once per model.
pub fn dns_suffixes(model: &Model) -> &[String] {
    model.dns_suffixes.get_or_init(|| {
        let mut out: Vec<String> = model
            .partitions
            .iter()
            .flat_map(|p| [&p.dns_suffix, &p.dual_stack_dns_suffix])
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        out.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        out.dedup();
        out
    })
}

/// The part of `host` (a DNS name, any case, no port) before one of AWS's DNS suffixes, in
/// lower case: `s3.us-east-1` for `S3.us-east-1.amazonaws.com`. None for any other name, and
/// for a suffix alone.
pub fn aws_host_label(model: &Model, host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !valid {
        return None;
    }
    dns_suffixes(model).iter().find_map(|suffix| {
        host.strip_suffix(suffix.as_str())
            .and_then(|head| head.strip_suffix('.'))
            .map(str::to_string)
    })
}

/// Whether `host` is a name under one of AWS's endpoint suffixes.
pub fn is_aws_host(model: &Model, host: &str) -> bool {
    aws_host_label(model, host).is_some()
}

/// What an S3 name under AWS's suffixes says about the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Host {
    /// Not a virtual-hosted S3 name (path-style S3, or another service).
    NoBucket,
    /// `bucket.s3.us-east-1.amazonaws.com` and its FIPS, dual-stack and legacy forms.
    Bucket(String),
    /// An access point, Object Lambda or S3 Express name: airlock does not identify calls
    /// addressed this way, so they are refused rather than read as something else.
    Unsupported(String),
}

/// Reads an AWS S3 host name: `{bucket}.{s3 | s3-fips | s3-external-1 | s3-REGION}[.dualstack][.REGION].SUFFIX`.
pub fn s3_host(model: &Model, host: &str) -> S3Host {
    let Some(head) = aws_host_label(model, host) else {
        return S3Host::NoBucket;
    };
    let mut labels: Vec<&str> = head.split('.').collect();
    let is_region = |l: &str| {
        model
            .partitions
            .iter()
            .any(|p| p.regions.iter().any(|r| r == l))
    };
    if labels.last().is_some_and(|l| is_region(l)) {
        labels.pop();
    }
    if labels.last() == Some(&"dualstack") {
        labels.pop();
    }
    let Some(service) = labels.pop() else {
        return S3Host::NoBucket;
    };
    let s3 = matches!(service, "s3" | "s3-fips" | "s3-external-1")
        || service.strip_prefix("s3-").is_some_and(is_region);
    let unsupported = service.starts_with("s3-accesspoint")
        || service.starts_with("s3-object-lambda")
        || service.starts_with("s3express");
    match (s3, unsupported, labels.is_empty()) {
        (true, _, true) => S3Host::NoBucket,
        (true, _, false) => S3Host::Bucket(labels.join(".")),
        (false, true, _) => S3Host::Unsupported(host.to_ascii_lowercase()),
        (false, false, _) => S3Host::NoBucket,
    }
}

/// Whether a call resolved to `endpoint` may be sent to `host`, the AWS name the client
/// addressed (through the HTTPS_PROXY tunnel): the endpoint's own host, its FIPS or
/// dual-stack form, or for S3 a bucket's virtual host on one of those. Anything else (an
/// API Gateway or Lambda URL name under `amazonaws.com` that someone else controls, the
/// endpoint of another service) is not: the call then goes to `endpoint` as resolved.
pub fn serves_host(model: &Model, endpoint: &Endpoint, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let Some(resolved) = endpoint.base.strip_prefix("https://") else {
        return false;
    };
    let host = match s3_host(model, &host) {
        S3Host::Bucket(bucket) if endpoint.service == "s3" => host
            .strip_prefix(&format!("{bucket}."))
            .map(str::to_string)
            .unwrap_or(host),
        _ => host,
    };
    if host == resolved {
        return true;
    }
    let Some((prefix, rest)) = resolved.split_once('.') else {
        return false;
    };
    let mut variants = vec![
        format!("{prefix}-fips.{rest}"),
        format!("{prefix}.dualstack.{rest}"),
        format!("{prefix}-fips.dualstack.{rest}"),
    ];
    for p in &model.partitions {
        let dual = &p.dual_stack_dns_suffix;
        if let (Some(head), false) = (rest.strip_suffix(p.dns_suffix.as_str()), dual.is_empty()) {
            variants.push(format!("{prefix}.{head}{dual}"));
            variants.push(format!("{prefix}-fips.{head}{dual}"));
        }
    }
    variants.contains(&host)
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

    #[test]
    fn aws_names_and_others() {
        let m = model();
        let suffixes = dns_suffixes(m);
        for s in ["amazonaws.com", "amazonaws.com.cn", "api.aws", "c2s.ic.gov"] {
            assert!(suffixes.iter().any(|x| x == s), "{suffixes:?}");
        }
        // Longest first, so `amazonaws.com.cn` is not read as a name under `amazonaws.com`.
        assert!(suffixes.windows(2).all(|w| w[0].len() >= w[1].len()));
        assert_eq!(
            aws_host_label(m, "s3.cn-north-1.amazonaws.com.cn").as_deref(),
            Some("s3.cn-north-1")
        );
        assert!(is_aws_host(m, "sts.amazonaws.com"));
        assert!(is_aws_host(m, "RDS.us-east-1.amazonaws.com."));
        assert!(is_aws_host(m, "s3.dualstack.eu-west-1.amazonaws.com"));
        assert!(is_aws_host(m, "dynamodb.us-east-1.api.aws"));
        assert!(is_aws_host(m, "ec2.cn-north-1.amazonaws.com.cn"));
        for other in [
            "amazonaws.com",
            "example.com",
            "amazonaws.com.evil.example",
            "evilamazonaws.com",
            "a..amazonaws.com",
            "under_score.amazonaws.com",
            "127.0.0.1",
        ] {
            assert!(!is_aws_host(m, other), "{other}");
        }
    }

    #[test]
    fn s3_virtual_hosts() {
        let m = model();
        let bucket = |h: &str| s3_host(m, h);
        let b = |name: &str| S3Host::Bucket(name.to_string());
        assert_eq!(
            bucket("my-bucket.s3.eu-west-1.amazonaws.com"),
            b("my-bucket")
        );
        assert_eq!(
            bucket("my.dotted.bucket.s3.amazonaws.com"),
            b("my.dotted.bucket")
        );
        assert_eq!(bucket("b1.s3-fips.us-east-1.amazonaws.com"), b("b1"));
        assert_eq!(bucket("b1.s3.dualstack.us-east-1.amazonaws.com"), b("b1"));
        assert_eq!(bucket("b1.s3-us-west-2.amazonaws.com"), b("b1"));
        assert_eq!(bucket("b1.s3-external-1.amazonaws.com"), b("b1"));
        assert_eq!(bucket("s3.eu-west-1.amazonaws.com"), S3Host::NoBucket);
        assert_eq!(bucket("s3.amazonaws.com"), S3Host::NoBucket);
        assert_eq!(bucket("rds.us-east-1.amazonaws.com"), S3Host::NoBucket);
        assert_eq!(bucket("b1.localhost"), S3Host::NoBucket);
        assert!(matches!(
            bucket("ap-123456789012.s3-accesspoint.us-east-1.amazonaws.com"),
            S3Host::Unsupported(_)
        ));
    }

    #[test]
    fn a_tunnelled_call_goes_to_its_own_host_only_when_that_host_serves_it() {
        let m = model();
        let rds = resolve(m, "rds", "us-east-1").unwrap();
        assert!(serves_host(m, &rds, "rds.us-east-1.amazonaws.com"));
        assert!(serves_host(m, &rds, "rds-fips.us-east-1.amazonaws.com"));
        assert!(serves_host(m, &rds, "rds.us-east-1.api.aws"));
        assert!(!serves_host(m, &rds, "ec2.us-east-1.amazonaws.com"));
        assert!(!serves_host(
            m,
            &rds,
            "abc.execute-api.us-east-1.amazonaws.com"
        ));
        let s3 = resolve(m, "s3", "eu-west-1").unwrap();
        assert!(serves_host(m, &s3, "bucket.s3.eu-west-1.amazonaws.com"));
        assert!(serves_host(
            m,
            &s3,
            "bucket.s3.dualstack.eu-west-1.amazonaws.com"
        ));
        assert!(serves_host(m, &s3, "s3-fips.eu-west-1.amazonaws.com"));
        assert!(!serves_host(m, &s3, "bucket.s3.us-east-1.amazonaws.com"));
        assert!(!serves_host(m, &s3, "x.lambda-url.eu-west-1.on.aws"));
    }
}
