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

/// What in the request can tell services that share a signing name apart.
#[derive(Debug, Default)]
pub struct Hint<'a> {
    /// `X-Amz-Target`, for JSON-protocol services.
    pub target: Option<&'a str>,
    /// The request path, for REST services (`/v20180820/...` is S3 Control, not S3).
    pub path: Option<&'a str>,
}

/// Length of the literal start of an operation's URI template that `path` begins with,
/// if the path fits it (`/{Bucket}/...` fits every path with length 1).
fn literal_match(template: &str, path: &str) -> Option<usize> {
    let template = template.split('?').next().unwrap_or("");
    let literal = template.split('{').next().unwrap_or("");
    path.starts_with(literal).then_some(literal.len())
}

/// Why no endpoint could be resolved; the message is shown to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved(pub String);

/// The services a signing name can mean, narrowed by the request's hint.
pub fn candidates<'a>(
    model: &'a Model,
    signing_name: &'a str,
    hint: &Hint<'_>,
) -> Vec<(&'a str, &'a Service)> {
    let all: Vec<_> = model.by_signing_name(signing_name).collect();
    if let Some(target) = hint.target {
        let prefix = target.split('.').next().unwrap_or("");
        let by_target: Vec<_> = all
            .iter()
            .copied()
            .filter(|(_, s)| s.target_prefix.as_deref() == Some(prefix))
            .collect();
        if !by_target.is_empty() {
            return by_target;
        }
    }
    if let (Some(path), true) = (hint.path, all.len() > 1) {
        let score = |s: &Service| {
            s.operations
                .values()
                .filter_map(|op| literal_match(&op.uri, path))
                .max()
        };
        let best = all.iter().filter_map(|(_, s)| score(s)).max();
        if let Some(best) = best {
            return all
                .into_iter()
                .filter(|(_, s)| score(s) == Some(best))
                .collect();
        }
    }
    all
}

/// Resolves the real AWS endpoint. Services that share a signing name but not an endpoint
/// are told apart by the hint; what stays ambiguous is refused, never guessed.
pub fn resolve(
    model: &Model,
    signing_name: &str,
    region: &str,
    hint: &Hint<'_>,
) -> Result<Endpoint, Unresolved> {
    let found = candidates(model, signing_name, hint);
    let (name, service) = match found.as_slice() {
        [] => {
            return Err(Unresolved(format!(
                "airlock does not know the AWS service {signing_name:?}"
            )))
        }
        [one] => *one,
        many => {
            // Same endpoint for all (rds, docdb, neptune all live at rds.*): any will do.
            let first = many[0];
            if many.iter().all(|(_, s)| {
                s.endpoint_prefix == first.1.endpoint_prefix
                    && s.global.is_empty() == first.1.global.is_empty()
            }) {
                many.iter()
                    .copied()
                    .find(|(n, _)| *n == signing_name)
                    .unwrap_or(first)
            } else {
                let names: Vec<&str> = many.iter().map(|(n, _)| *n).collect();
                return Err(Unresolved(format!(
                    "the signing name {signing_name:?} is shared by {} and this request does not say which; set [upstream] endpoint or use a client that sends a target",
                    names.join(", ")
                )));
            }
        }
    };
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
        resolve(model(), name, region, &Hint::default())
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
            base("ec2", "eu-central-1"),
            "https://ec2.eu-central-1.amazonaws.com"
        );
        assert_eq!(
            base("lambda", "cn-north-1"),
            "https://lambda.cn-north-1.amazonaws.com.cn"
        );
        let iam = resolve(model(), "iam", "us-west-2", &Hint::default()).unwrap();
        assert_eq!(iam.base, "https://iam.amazonaws.com");
        assert_eq!(iam.signing_region, "us-east-1");
        let s3 = resolve(
            model(),
            "s3",
            "us-east-1",
            &Hint {
                target: None,
                path: Some("/bucket/key"),
            },
        )
        .unwrap();
        assert_eq!(s3.base, "https://s3.us-east-1.amazonaws.com");
    }

    #[test]
    fn shared_signing_names_need_a_hint() {
        // dynamodb and dynamodbstreams share a signing name but not an endpoint.
        let hint = Hint {
            target: Some("DynamoDBStreams_20120810.ListStreams"),
            path: None,
        };
        let e = resolve(model(), "dynamodb", "us-east-1", &hint).unwrap();
        assert_eq!(e.base, "https://streams.dynamodb.us-east-1.amazonaws.com");
        let hint = Hint {
            target: Some("DynamoDB_20120810.ListTables"),
            path: None,
        };
        assert_eq!(
            resolve(model(), "dynamodb", "us-east-1", &hint)
                .unwrap()
                .base,
            "https://dynamodb.us-east-1.amazonaws.com"
        );
        let s3 = |path| {
            resolve(
                model(),
                "s3",
                "us-east-1",
                &Hint {
                    target: None,
                    path: Some(path),
                },
            )
            .map(|e| e.service)
        };
        assert_eq!(s3("/my-bucket/key").as_deref(), Ok("s3"));
        assert_eq!(s3("/v20180820/jobs").as_deref(), Ok("s3control"));
        assert!(resolve(model(), "no-such-service", "us-east-1", &Hint::default()).is_err());
        assert!(resolve(model(), "rds", "not a region", &Hint::default()).is_err());
    }
}
