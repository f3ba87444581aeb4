//! The end-to-end suite's aws-sdk-rust client (tests/e2e/test_rust_sdk.py).
//!
//! One AWS call per run, made the way an agent written in Rust makes it: the SDK's default
//! configuration chain (`AWS_ENDPOINT_URL`, the access key variables, `AWS_REGION`,
//! `AWS_MAX_ATTEMPTS`), its default HTTPS client (which trusts what `SSL_CERT_FILE` names), and
//! its default checksum behaviour. The only setting made in code is path-style S3 addressing
//! when an endpoint is set, because the endpoint is an IP address; without one (HTTPS_PROXY
//! mode: the default client reads `HTTPS_PROXY`) S3 is virtual-hosted, the SDK's default.
//! Nothing here knows about airlock.
//!
//! Usage: `airlock-sdk-client OPERATION ARGS...` (see `USAGE`). The result is one JSON line on
//! stdout: `{"op": …, "ok": true, …}`, or `{"op": …, "ok": false, "code": …, "message": …,
//! "error": …}` with the AWS error code, its message and the SDK's full error report, so the
//! test reads what a program using the SDK would see. The exit code is 0 for success, 1 for a
//! failed call and 2 for a wrong command line.

use std::fmt::Debug;
use std::path::Path;
use std::process::ExitCode;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart,
    CreateBucketConfiguration, Delete, ObjectIdentifier,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

const USAGE: &str = "usage: airlock-sdk-client OPERATION ARGS...
  s3:       create-bucket B | head-bucket B | put-object B KEY FILE | put-object-streaming B KEY FILE
            | upload-multipart B KEY FILE PART_MIB | get-object B KEY | list-objects B
            | delete-object B KEY | delete-objects B KEY... | delete-bucket B
  dynamodb: create-table T | put-item T PK VALUE | get-item T PK | delete-table T
  rds:      create-db-instance DB | describe-db-instance DB | delete-db-instance DB
  sts:      get-caller-identity | assume-role ROLE_ARN SESSION_NAME";

/// What a call returned: its fields for the JSON line, or the failure's.
type Outcome = Result<Map<String, Value>, Failure>;

/// A failed call: the AWS error code and message when the service answered, and the SDK's
/// whole error report (`DisplayErrorContext`, what a program would log).
struct Failure {
    code: Option<String>,
    message: Option<String>,
    report: String,
}

impl<E, R> From<SdkError<E, R>> for Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: Debug,
{
    fn from(err: SdkError<E, R>) -> Self {
        Failure {
            code: err.code().map(str::to_owned),
            message: err.message().map(str::to_owned),
            report: DisplayErrorContext(&err).to_string(),
        }
    }
}

impl Failure {
    /// A failure on this side of the wire (a file that cannot be read, a body cut short).
    fn local(what: impl std::fmt::Display) -> Self {
        Failure {
            code: None,
            message: None,
            report: what.to_string(),
        }
    }
}

/// `json!({...})` as the field map of a JSON line.
fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((op, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let config = aws_config::defaults(BehaviorVersion::latest()).load().await;
    let Some(outcome) = dispatch(&config, op, rest).await else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut line = Map::new();
    line.insert("op".into(), json!(op));
    let code = match outcome {
        Ok(result) => {
            line.insert("ok".into(), json!(true));
            line.extend(result);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            line.insert("ok".into(), json!(false));
            line.insert("code".into(), json!(failure.code));
            line.insert("message".into(), json!(failure.message));
            line.insert("error".into(), json!(failure.report));
            ExitCode::from(1)
        }
    };
    println!("{}", Value::Object(line));
    code
}

/// Run `op` with its arguments; `None` for an unknown operation or wrong argument count.
async fn dispatch(config: &SdkConfig, op: &str, args: &[String]) -> Option<Outcome> {
    let s3 = || {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(config.endpoint_url().is_some())
                .build(),
        )
    };
    let dynamodb = || aws_sdk_dynamodb::Client::new(config);
    let rds = || aws_sdk_rds::Client::new(config);
    let sts = || aws_sdk_sts::Client::new(config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Some(match (op, args.as_slice()) {
        ("create-bucket", [bucket]) => create_bucket(&s3(), config, bucket).await,
        ("head-bucket", [bucket]) => head_bucket(&s3(), bucket).await,
        ("put-object", [bucket, key, file]) => put_object(&s3(), bucket, key, file, false).await,
        ("put-object-streaming", [bucket, key, file]) => {
            put_object(&s3(), bucket, key, file, true).await
        }
        ("upload-multipart", [bucket, key, file, part_mib]) => {
            let part_size = part_mib.parse::<u64>().ok()?.checked_mul(1024 * 1024)?;
            upload_multipart(&s3(), bucket, key, file, part_size).await
        }
        ("get-object", [bucket, key]) => get_object(&s3(), bucket, key).await,
        ("list-objects", [bucket]) => list_objects(&s3(), bucket).await,
        ("delete-object", [bucket, key]) => delete_object(&s3(), bucket, key).await,
        ("delete-objects", [bucket, keys @ ..]) if !keys.is_empty() => {
            delete_objects(&s3(), bucket, keys).await
        }
        ("delete-bucket", [bucket]) => delete_bucket(&s3(), bucket).await,
        ("create-table", [table]) => create_table(&dynamodb(), table).await,
        ("put-item", [table, pk, value]) => put_item(&dynamodb(), table, pk, value).await,
        ("get-item", [table, pk]) => get_item(&dynamodb(), table, pk).await,
        ("delete-table", [table]) => delete_table(&dynamodb(), table).await,
        ("create-db-instance", [db]) => create_db_instance(&rds(), db).await,
        ("describe-db-instance", [db]) => describe_db_instance(&rds(), db).await,
        ("delete-db-instance", [db]) => delete_db_instance(&rds(), db).await,
        ("get-caller-identity", []) => get_caller_identity(&sts()).await,
        ("assume-role", [role, session]) => assume_role(&sts(), role, session).await,
        _ => return None,
    })
}

// --- S3 ---------------------------------------------------------------------------------------

async fn create_bucket(s3: &aws_sdk_s3::Client, config: &SdkConfig, bucket: &str) -> Outcome {
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let location = CreateBucketConfiguration::builder()
        .location_constraint(BucketLocationConstraint::from(region.as_str()))
        .build();
    let out = s3
        .create_bucket()
        .bucket(bucket)
        .create_bucket_configuration(location)
        .send()
        .await?;
    Ok(fields(json!({ "location": out.location() })))
}

async fn head_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Outcome {
    let out = s3.head_bucket().bucket(bucket).send().await?;
    Ok(fields(json!({ "region": out.bucket_region() })))
}

/// PutObject with the SDK's default checksum behaviour. An in-memory body gets its CRC32 in an
/// `x-amz-checksum-crc32` header; a streamed one (from the file) goes aws-chunked with the CRC32
/// in a trailer (`STREAMING-UNSIGNED-PAYLOAD-TRAILER` over HTTPS).
async fn put_object(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    file: &str,
    streaming: bool,
) -> Outcome {
    let body = if streaming {
        ByteStream::from_path(Path::new(file))
            .await
            .map_err(Failure::local)?
    } else {
        ByteStream::from(std::fs::read(file).map_err(Failure::local)?)
    };
    let out = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body)
        .send()
        .await?;
    Ok(fields(json!({
        "etag": out.e_tag(),
        "checksum_crc32": out.checksum_crc32(),
    })))
}

/// A multipart upload with CRC32 part checksums, parts streamed from the file.
async fn upload_multipart(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    file: &str,
    part_size: u64,
) -> Outcome {
    let size = std::fs::metadata(file).map_err(Failure::local)?.len();
    if part_size == 0 || size == 0 {
        return Err(Failure::local(
            "the file and the part size must not be empty",
        ));
    }
    let created = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| Failure::local("CreateMultipartUpload returned no upload id"))?;
    let parts = match upload_parts(s3, bucket, key, upload_id, file, size, part_size).await {
        Ok(parts) => parts,
        Err(failure) => {
            // Leave no half-finished upload behind; the part's failure is what is reported.
            let _ = s3
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await;
            return Err(failure);
        }
    };
    let count = parts.len();
    let done = s3
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(fields(json!({ "etag": done.e_tag(), "parts": count })))
}

async fn upload_parts(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    file: &str,
    size: u64,
    part_size: u64,
) -> Result<Vec<CompletedPart>, Failure> {
    let mut parts = Vec::new();
    let mut offset = 0;
    let mut number = 1;
    while offset < size {
        let length = part_size.min(size - offset);
        let body = ByteStream::read_from()
            .path(file)
            .offset(offset)
            .length(Length::Exact(length))
            .build()
            .await
            .map_err(Failure::local)?;
        let out = s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(body)
            .send()
            .await?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                .build(),
        );
        offset += length;
        number += 1;
    }
    Ok(parts)
}

/// GetObject, the body streamed into a SHA-256 (never held whole).
async fn get_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Outcome {
    let mut out = s3.get_object().bucket(bucket).key(key).send().await?;
    let mut digest = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = out.body.try_next().await.map_err(Failure::local)? {
        digest.update(&chunk);
        size += chunk.len() as u64;
    }
    Ok(fields(json!({
        "size": size,
        "sha256": hex::encode(digest.finalize()),
        "etag": out.e_tag(),
    })))
}

async fn list_objects(s3: &aws_sdk_s3::Client, bucket: &str) -> Outcome {
    let out = s3.list_objects_v2().bucket(bucket).send().await?;
    let objects: Vec<Value> = out
        .contents()
        .iter()
        .map(|o| json!({ "key": o.key(), "size": o.size() }))
        .collect();
    Ok(fields(
        json!({ "objects": objects, "truncated": out.is_truncated() }),
    ))
}

async fn delete_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Outcome {
    s3.delete_object().bucket(bucket).key(key).send().await?;
    Ok(Map::new())
}

async fn delete_objects(s3: &aws_sdk_s3::Client, bucket: &str, keys: &[&str]) -> Outcome {
    let objects = keys
        .iter()
        .map(|key| ObjectIdentifier::builder().key(*key).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::local)?;
    let delete = Delete::builder()
        .set_objects(Some(objects))
        .quiet(false)
        .build()
        .map_err(Failure::local)?;
    let out = s3
        .delete_objects()
        .bucket(bucket)
        .delete(delete)
        .send()
        .await?;
    let deleted: Vec<_> = out.deleted().iter().filter_map(|d| d.key()).collect();
    let errors: Vec<_> = out
        .errors()
        .iter()
        .map(|e| json!({ "key": e.key(), "code": e.code() }))
        .collect();
    Ok(fields(json!({ "deleted": deleted, "errors": errors })))
}

async fn delete_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Outcome {
    s3.delete_bucket().bucket(bucket).send().await?;
    Ok(Map::new())
}

// --- DynamoDB ---------------------------------------------------------------------------------

async fn create_table(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Outcome {
    let key = AttributeDefinition::builder()
        .attribute_name("pk")
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(Failure::local)?;
    let schema = KeySchemaElement::builder()
        .attribute_name("pk")
        .key_type(KeyType::Hash)
        .build()
        .map_err(Failure::local)?;
    let out = dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(key)
        .key_schema(schema)
        .send()
        .await?;
    let status = out
        .table_description()
        .and_then(|t| t.table_status())
        .map(|s| s.as_str().to_owned());
    Ok(fields(json!({ "status": status })))
}

async fn put_item(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    value: &str,
) -> Outcome {
    dynamodb
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(pk.to_owned()))
        .item("value", AttributeValue::S(value.to_owned()))
        .send()
        .await?;
    Ok(Map::new())
}

async fn get_item(dynamodb: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Outcome {
    let out = dynamodb
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .consistent_read(true)
        .send()
        .await?;
    let value = out
        .item()
        .and_then(|item| item.get("value"))
        .and_then(|v| v.as_s().ok());
    Ok(fields(json!({ "value": value })))
}

async fn delete_table(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Outcome {
    dynamodb.delete_table().table_name(table).send().await?;
    Ok(Map::new())
}

// --- RDS --------------------------------------------------------------------------------------

async fn create_db_instance(rds: &aws_sdk_rds::Client, db: &str) -> Outcome {
    let out = rds
        .create_db_instance()
        .db_instance_identifier(db)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("airlock")
        .master_user_password("not-a-real-password-1")
        .send()
        .await?;
    let status = out.db_instance().and_then(|i| i.db_instance_status());
    Ok(fields(json!({ "status": status })))
}

async fn describe_db_instance(rds: &aws_sdk_rds::Client, db: &str) -> Outcome {
    let out = rds
        .describe_db_instances()
        .db_instance_identifier(db)
        .send()
        .await?;
    let instances: Vec<Value> = out
        .db_instances()
        .iter()
        .map(|i| json!({ "id": i.db_instance_identifier(), "status": i.db_instance_status() }))
        .collect();
    Ok(fields(json!({ "instances": instances })))
}

async fn delete_db_instance(rds: &aws_sdk_rds::Client, db: &str) -> Outcome {
    let out = rds
        .delete_db_instance()
        .db_instance_identifier(db)
        .skip_final_snapshot(true)
        .delete_automated_backups(true)
        .send()
        .await?;
    let status = out.db_instance().and_then(|i| i.db_instance_status());
    Ok(fields(json!({ "status": status })))
}

// --- STS --------------------------------------------------------------------------------------

async fn get_caller_identity(sts: &aws_sdk_sts::Client) -> Outcome {
    let out = sts.get_caller_identity().send().await?;
    Ok(fields(json!({
        "account": out.account(),
        "arn": out.arn(),
        "user_id": out.user_id(),
    })))
}

/// AssumeRole. What comes back on success is only the session's identity and expiry, never its
/// keys: the JSON line is read by tests and may end up in their logs.
async fn assume_role(sts: &aws_sdk_sts::Client, role: &str, session: &str) -> Outcome {
    let out = sts
        .assume_role()
        .role_arn(role)
        .role_session_name(session)
        .send()
        .await?;
    Ok(fields(json!({
        "assumed_role_arn": out.assumed_role_user().map(|u| u.arn()),
        "has_credentials": out.credentials().is_some(),
    })))
}
