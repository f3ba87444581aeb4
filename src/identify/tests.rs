//! Unit tests of identification, one section per protocol and per ambiguity rule.

use super::*;
use http::{HeaderMap, HeaderName, HeaderValue};

struct R {
    signing: &'static str,
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    host: &'static str,
    body: Option<Vec<u8>>,
}

fn req(signing: &'static str, method: &'static str, path: &str) -> R {
    R {
        signing,
        method,
        path: path.to_string(),
        query: Vec::new(),
        headers: HeaderMap::new(),
        host: "localhost:8443",
        body: Some(Vec::new()),
    }
}

impl R {
    fn q(mut self, k: &str, v: &str) -> Self {
        self.query.push((k.to_string(), v.to_string()));
        self
    }
    fn h(mut self, k: &str, v: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
        self
    }
    fn host(mut self, host: &'static str) -> Self {
        self.host = host;
        self
    }
    fn body(mut self, b: &str) -> Self {
        self.body = Some(b.as_bytes().to_vec());
        self
    }
    fn bytes(mut self, b: Vec<u8>) -> Self {
        self.body = Some(b);
        self
    }
    fn streamed(mut self) -> Self {
        self.body = None;
        self
    }
    fn form(self, b: &str) -> Self {
        self.h(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(b)
    }
    fn run(&self) -> Result<AwsCall, IdentifyError> {
        identify(&Request {
            signing_name: self.signing,
            region: "us-east-1",
            method: self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            host: self.host,
            body: self.body.as_deref(),
            account: Some("111111111111"),
        })
    }
    fn op(&self) -> String {
        match self.run() {
            Ok(c) => format!("{}:{}", c.service, c.operation),
            Err(e) => format!("error {}", e.code),
        }
    }
}

fn arns(call: &AwsCall) -> Vec<(String, String, Option<String>)> {
    call.resources
        .iter()
        .map(|r| (r.member.clone(), r.value.clone(), r.arn.clone()))
        .collect()
}

// ---------------------------------------------------------------- query / ec2

#[test]
fn query_identifies_rds_delete_with_params_and_arn() {
    let r = req("rds", "POST", "/").form(
        "Action=DeleteDBInstance&Version=2014-10-31&DBInstanceIdentifier=prod-db&SkipFinalSnapshot=true&DeleteAutomatedBackups=true",
    );
    let call = r.run().unwrap();
    assert_eq!(
        (call.service.as_str(), call.operation.as_str()),
        ("rds", "DeleteDBInstance")
    );
    assert_eq!(call.params["SkipFinalSnapshot"], "true");
    assert!(!call.params.contains_key("Action"));
    assert_eq!(
        arns(&call),
        vec![(
            "DBInstanceIdentifier".into(),
            "prod-db".into(),
            Some("arn:aws:rds:us-east-1:111111111111:db:prod-db".into())
        )]
    );
}

#[test]
fn query_params_do_not_depend_on_order_or_encoding() {
    let a = req("rds", "POST", "/")
        .form("Action=DeleteDBInstance&DBInstanceIdentifier=prod%2Ddb&SkipFinalSnapshot=true")
        .run()
        .unwrap();
    let b = req("rds", "POST", "/")
        .form("SkipFinalSnapshot=true&DBInstanceIdentifier=prod-db&Action=DeleteDBInstance")
        .run()
        .unwrap();
    assert_eq!(a.params, b.params);
    assert_eq!(a.params_digest(), b.params_digest());
}

#[test]
fn query_ambiguities_are_refused() {
    let dup = req("rds", "POST", "/").form("Action=DeleteDBInstance&Action=DescribeDBInstances");
    assert_eq!(dup.op(), "error InvalidRequest");
    let both = req("rds", "POST", "/")
        .q("Action", "DescribeDBInstances")
        .form("Action=DeleteDBInstance&DBInstanceIdentifier=x");
    assert_eq!(both.op(), "error InvalidRequest");
    let other_ct = req("rds", "POST", "/")
        .h("content-type", "text/plain")
        .body("Action=DeleteDBInstance&DBInstanceIdentifier=x");
    assert_eq!(other_ct.op(), "error InvalidRequest");
    let latin1 = req("rds", "POST", "/")
        .h(
            "content-type",
            "application/x-www-form-urlencoded; charset=iso-8859-1",
        )
        .body("Action=DeleteDBInstance&DBInstanceIdentifier=x");
    assert_eq!(latin1.op(), "error InvalidRequest");
    let dup_param = req("rds", "POST", "/")
        .form("Action=DeleteDBInstance&DBInstanceIdentifier=a&DBInstanceIdentifier=b");
    assert_eq!(dup_param.op(), "error InvalidRequest");
    // AWS reads names case-sensitively: these have no Action at all.
    let lower = req("rds", "POST", "/").form("action=DeleteDBInstance&DBInstanceIdentifier=x");
    assert_eq!(lower.op(), "error MissingAction");
    let encoded = req("rds", "POST", "/").form("%41ction=DeleteDBInstance");
    assert_eq!(
        encoded.op(),
        "rds:DeleteDBInstance",
        "%41 is A, decoded once"
    );
    let wrong_version = req("rds", "POST", "/").form("Action=DeleteDBInstance&Version=2012-01-01");
    assert_eq!(wrong_version.op(), "error InvalidParameterValue");
    let unknown = req("rds", "POST", "/").form("Action=DropEverything");
    assert_eq!(unknown.op(), "error InvalidAction");
    let target = req("rds", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.DeleteTable")
        .form("Action=DeleteDBInstance");
    assert_eq!(target.op(), "error UnknownOperationException");
    let get_with_body = req("rds", "GET", "/")
        .q("Action", "DescribeDBInstances")
        .form("Action=DeleteDBInstance");
    assert_eq!(get_with_body.op(), "error InvalidRequest");
    let not_buffered = req("rds", "POST", "/")
        .h("content-type", "application/x-www-form-urlencoded")
        .streamed();
    assert_eq!(not_buffered.op(), "error InvalidRequest");
}

#[test]
fn query_get_and_shared_signing_names() {
    let get = req("rds", "GET", "/")
        .q("Action", "DescribeDBInstances")
        .q("Version", "2014-10-31");
    assert_eq!(get.op(), "rds:DescribeDBInstances");
    // elb and elbv2 share a signing name; the Version says which.
    let v1 = req("elasticloadbalancing", "POST", "/")
        .form("Action=DescribeLoadBalancers&Version=2012-06-01");
    assert_eq!(v1.op(), "elb:DescribeLoadBalancers");
    let v2 = req("elasticloadbalancing", "POST", "/")
        .form("Action=DescribeLoadBalancers&Version=2015-12-01");
    assert_eq!(v2.op(), "elbv2:DescribeLoadBalancers");
}

#[test]
fn ec2_lists_become_numbered_resources() {
    let call = req("ec2", "POST", "/")
        .form("Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1&InstanceId.2=i-2")
        .run()
        .unwrap();
    assert_eq!(call.operation, "TerminateInstances");
    assert_eq!(
        arns(&call),
        vec![
            (
                "InstanceId.1".into(),
                "i-1".into(),
                Some("arn:aws:ec2:us-east-1:111111111111:instance/i-1".into())
            ),
            (
                "InstanceId.2".into(),
                "i-2".into(),
                Some("arn:aws:ec2:us-east-1:111111111111:instance/i-2".into())
            ),
        ]
    );
    let sg = req("ec2", "POST", "/")
        .form("Action=DeleteSecurityGroup&Version=2016-11-15&GroupId=sg-1")
        .run()
        .unwrap();
    assert_eq!(
        sg.resources[0].arn.as_deref(),
        Some("arn:aws:ec2:us-east-1:111111111111:security-group/sg-1")
    );
}

// ---------------------------------------------------------------- json

#[test]
fn json_target_and_body() {
    let r = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.DeleteTable")
        .h("content-type", "application/x-amz-json-1.0")
        .body(r#"{"TableName":"orders"}"#);
    let call = r.run().unwrap();
    assert_eq!(call.operation, "DeleteTable");
    assert_eq!(
        call.resources[0].arn.as_deref(),
        Some("arn:aws:dynamodb:us-east-1:111111111111:table/orders")
    );
    let streams = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDBStreams_20120810.ListStreams")
        .body("{}");
    assert_eq!(streams.op(), "dynamodbstreams:ListStreams");
}

#[test]
fn json_ambiguities_are_refused() {
    let dup = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.DeleteTable")
        .body(r#"{"TableName":"a","TableName":"b"}"#);
    assert_eq!(dup.op(), "error SerializationException");
    let nested = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.UpdateTable")
        .body(r#"{"TableName":"a","X":{"k":1,"k":2}}"#);
    assert_eq!(nested.op(), "error SerializationException");
    let other_service = req("dynamodb", "POST", "/")
        .h("x-amz-target", "AmazonSQS.DeleteQueue")
        .body("{}");
    assert_eq!(other_service.op(), "error UnknownOperationException");
    let twice = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.ListTables")
        .h("x-amz-target", "DynamoDB_20120810.DeleteTable")
        .body("{}");
    assert_eq!(twice.op(), "error InvalidRequest");
    let not_object = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.ListTables")
        .body("[]");
    assert_eq!(not_object.op(), "error SerializationException");
    let form = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.ListTables")
        .h("content-type", "application/x-www-form-urlencoded")
        .body("{}");
    assert_eq!(form.op(), "error InvalidRequest");
    let no_target = req("dynamodb", "POST", "/").body("{}");
    assert_eq!(no_target.op(), "error UnknownOperationException");
    let unknown = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.DropAll")
        .body("{}");
    assert_eq!(unknown.op(), "error UnknownOperationException");
}

#[test]
fn json_params_are_canonical() {
    let a = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.UpdateTable")
        .body(r#"{"TableName":"t","DeletionProtectionEnabled":false,"X":{"b":1,"a":2}}"#)
        .run()
        .unwrap();
    let b = req("dynamodb", "POST", "/")
        .h("x-amz-target", "DynamoDB_20120810.UpdateTable")
        .body(r#"{ "X": {"a":2, "b":1}, "DeletionProtectionEnabled": false, "TableName": "t" }"#)
        .run()
        .unwrap();
    assert_eq!(a.params, b.params);
    assert_eq!(a.params["DeletionProtectionEnabled"], "false");
    let n = |body: &str| {
        req("dynamodb", "POST", "/")
            .h("x-amz-target", "DynamoDB_20120810.UpdateTable")
            .body(body)
            .run()
            .unwrap()
            .params
    };
    assert_eq!(
        n(r#"{"TableName":"t","N":1}"#),
        n(r#"{"TableName":"\u0074","N":1.0e0}"#)
    );
    assert_eq!(a.params["X"], r#"{"a":2,"b":1}"#);
}

// ---------------------------------------------------------------- cbor

#[test]
fn cbor_path_and_body() {
    let mut body = Vec::new();
    let value = ciborium::Value::Map(vec![(
        ciborium::Value::Text("AlarmNames".into()),
        ciborium::Value::Array(vec![ciborium::Value::Text("a1".into())]),
    )]);
    ciborium::into_writer(&value, &mut body).unwrap();
    let r = req(
        "monitoring",
        "POST",
        "/service/GraniteServiceVersion20100801/operation/DeleteAlarms",
    )
    .h("smithy-protocol", "rpc-v2-cbor")
    .h("content-type", "application/cbor")
    .bytes(body.clone());
    let call = r.run().unwrap();
    assert_eq!(
        (call.service.as_str(), call.operation.as_str()),
        ("cloudwatch", "DeleteAlarms")
    );
    assert_eq!(call.params["AlarmNames"], r#"["a1"]"#);
    // The same service also speaks query.
    let q = req("monitoring", "POST", "/")
        .form("Action=DeleteAlarms&Version=2010-08-01&AlarmNames.member.1=a1");
    assert_eq!(q.op(), "cloudwatch:DeleteAlarms");

    let dup = ciborium::Value::Map(vec![
        (
            ciborium::Value::Text("A".into()),
            ciborium::Value::Bool(true),
        ),
        (
            ciborium::Value::Text("A".into()),
            ciborium::Value::Bool(false),
        ),
    ]);
    let mut dup_body = Vec::new();
    ciborium::into_writer(&dup, &mut dup_body).unwrap();
    let r = req(
        "monitoring",
        "POST",
        "/service/GraniteServiceVersion20100801/operation/DeleteAlarms",
    )
    .h("smithy-protocol", "rpc-v2-cbor")
    .h("content-type", "application/cbor")
    .bytes(dup_body);
    assert_eq!(r.op(), "error SerializationException");
    let other = req(
        "monitoring",
        "POST",
        "/service/DynamoDB_20120810/operation/DeleteTable",
    )
    .h("smithy-protocol", "rpc-v2-cbor")
    .bytes(Vec::new());
    assert_eq!(other.op(), "error UnknownOperationException");
}

// ---------------------------------------------------------------- rest-json

#[test]
fn rest_json_labels_and_arns() {
    let call = req("lambda", "DELETE", "/2015-03-31/functions/my-fn")
        .run()
        .unwrap();
    assert_eq!(call.operation, "DeleteFunction");
    assert_eq!(
        call.resources[0].arn.as_deref(),
        Some("arn:aws:lambda:us-east-1:111111111111:function:my-fn")
    );
    // An encoded ARN in one segment is one label.
    let call = req(
        "lambda",
        "DELETE",
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Afunction%3Af",
    )
    .run()
    .unwrap();
    assert_eq!(
        call.resources[0].value,
        "arn:aws:lambda:us-east-1:1:function:f"
    );
    assert_eq!(
        req("lambda", "DELETE", "/2015-03-31/functions/").op(),
        "error UnknownOperationException"
    );
    assert_eq!(
        req("lambda", "PATCH", "/2015-03-31/functions/f").op(),
        "error UnknownOperationException"
    );
}

#[test]
fn rest_json_duplicate_body_keys_refused() {
    let r = req("lambda", "PUT", "/2015-03-31/functions/f/configuration")
        .h("content-type", "application/json")
        .body(r#"{"Timeout":3,"Timeout":4}"#);
    assert_eq!(r.op(), "error SerializationException");
}

// ---------------------------------------------------------------- S3

#[test]
fn s3_path_style_and_virtual_hosted() {
    let call = req("s3", "DELETE", "/bucket/dir/a%2Fb%20c+d")
        .run()
        .unwrap();
    assert_eq!(call.operation, "DeleteObject");
    assert_eq!(
        arns(&call),
        vec![
            (
                "Bucket".into(),
                "bucket".into(),
                Some("arn:aws:s3:::bucket".into())
            ),
            (
                "Key".into(),
                "dir/a/b c+d".into(),
                Some("arn:aws:s3:::bucket/dir/a/b c+d".into())
            ),
        ]
    );
    // `..` is part of an S3 key, never resolved.
    let dots = req("s3", "DELETE", "/bucket/../other/k").run().unwrap();
    assert_eq!(dots.resources[1].value, "../other/k");
    assert_eq!(req("s3", "DELETE", "/bucket").op(), "s3:DeleteBucket");
    let vhost = req("s3", "DELETE", "/")
        .host("bucket.localhost:8443")
        .run()
        .unwrap();
    assert_eq!(vhost.operation, "DeleteBucket");
    assert_eq!(vhost.resources[0].value, "bucket");
    let vkey = req("s3", "DELETE", "/k")
        .host("bucket.localhost")
        .run()
        .unwrap();
    assert_eq!(
        (vkey.operation.as_str(), vkey.resources[1].value.as_str()),
        ("DeleteObject", "k")
    );
    assert_eq!(
        req("s3", "DELETE", "/k").host("127.0.0.1:8443").op(),
        "s3:DeleteBucket"
    );
    assert_eq!(req("s3", "GET", "/").op(), "s3:ListBuckets");
    assert_eq!(req("s3express", "GET", "/").op(), "s3:ListDirectoryBuckets");
}

#[test]
fn s3_query_discriminators() {
    assert_eq!(
        req("s3", "DELETE", "/b").q("tagging", "").op(),
        "s3:DeleteBucketTagging"
    );
    assert_eq!(
        req("s3", "DELETE", "/b/k").q("tagging", "").op(),
        "s3:DeleteObjectTagging"
    );
    assert_eq!(
        req("s3", "GET", "/b").q("list-type", "2").op(),
        "s3:ListObjectsV2"
    );
    assert_eq!(req("s3", "GET", "/b").op(), "s3:ListObjects");
    assert_eq!(
        req("s3", "GET", "/b").q("lifecycle", "").op(),
        "s3:GetBucketLifecycleConfiguration"
    );
    assert_eq!(req("s3", "PUT", "/b/k").op(), "s3:PutObject");
    assert_eq!(
        req("s3", "PUT", "/b/k").h("x-amz-copy-source", "/o/k").op(),
        "s3:CopyObject"
    );
    assert_eq!(
        req("s3", "PUT", "/b/k")
            .q("partNumber", "1")
            .q("uploadId", "u")
            .op(),
        "s3:UploadPart"
    );
    assert_eq!(
        req("s3", "PUT", "/b/k")
            .q("partNumber", "1")
            .q("uploadId", "u")
            .h("x-amz-copy-source", "/o/k")
            .op(),
        "s3:UploadPartCopy"
    );
    assert_eq!(
        req("s3", "DELETE", "/b/k").q("uploadId", "u").op(),
        "s3:AbortMultipartUpload"
    );
    // `?Delete` is not `?delete`: no S3 operation is POST /{Bucket} without it.
    assert_eq!(
        req("s3", "POST", "/b").q("Delete", "").op(),
        "error UnknownOperationException"
    );
    // Two discriminators at once are ambiguous.
    assert_eq!(
        req("s3", "DELETE", "/b")
            .q("tagging", "")
            .q("cors", "")
            .op(),
        "error InvalidRequest"
    );
    // A discriminator repeated is refused.
    assert_eq!(
        req("s3", "DELETE", "/b")
            .q("tagging", "")
            .q("tagging", "")
            .op(),
        "error InvalidRequest"
    );
}

const DELETE_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Object><Key>a&amp;b</Key></Object>
  <Object><Key><![CDATA[c<d]]></Key><VersionId>v1</VersionId></Object>
  <Quiet>true</Quiet>
</Delete>"#;

#[test]
fn s3_delete_objects_lists_every_key() {
    let call = req("s3", "POST", "/b")
        .q("delete", "")
        .body(DELETE_XML)
        .run()
        .unwrap();
    assert_eq!(call.operation, "DeleteObjects");
    assert_eq!(
        arns(&call),
        vec![
            ("Bucket".into(), "b".into(), Some("arn:aws:s3:::b".into())),
            (
                "Key.1".into(),
                "a&b".into(),
                Some("arn:aws:s3:::b/a&b".into())
            ),
            (
                "Key.2".into(),
                "c<d".into(),
                Some("arn:aws:s3:::b/c<d".into())
            ),
        ]
    );
    assert_eq!(call.params["Object.2.VersionId"], "v1");
    assert_eq!(call.params["Quiet"], "true");
    let doctype = format!(
        "<!DOCTYPE d [<!ENTITY x \"y\">]>{}",
        DELETE_XML.trim_start_matches(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
    );
    assert_eq!(
        req("s3", "POST", "/b").q("delete", "").body(&doctype).op(),
        "error MalformedXML"
    );
    let entity = "<Delete><Object><Key>&x;</Key></Object></Delete>";
    assert_eq!(
        req("s3", "POST", "/b").q("delete", "").body(entity).op(),
        "error MalformedXML"
    );
    let two_keys = "<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>";
    assert_eq!(
        req("s3", "POST", "/b").q("delete", "").body(two_keys).op(),
        "error MalformedXML"
    );
    assert_eq!(
        req("s3", "POST", "/b").q("delete", "").streamed().op(),
        "error InvalidRequest"
    );
    assert!(s3_needs_body("POST", &[("delete".into(), String::new())]));
    assert!(!s3_needs_body("POST", &[("Delete".into(), String::new())]));
    assert!(!s3_needs_body("PUT", &[]));
}

/// Each S3 call the e2e suite makes with aws-sdk-rust, as aws-sdk-s3 1.157 writes it: bucket
/// calls on `/bucket/`, object calls with `x-id=`, bare query keys (`?uploads`, `?delete`),
/// CRC32 checksums in headers or announced as an aws-chunked trailer. Only DeleteObjects'
/// body is read (as the proxy does); `x-id` is no parameter.
#[test]
fn s3_as_aws_sdk_rust_writes_it() {
    // `METHOD /path?query` as on the wire; the body is not read (streamed).
    let wire = |line: &'static str, headers: &[(&str, &str)]| {
        let (method, target) = line.split_once(' ').unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut r = req("s3", method, path).streamed();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            r = r.q(k, v);
        }
        for (k, v) in headers {
            r = r.h(k, v);
        }
        r
    };
    let crc32_header = &[
        ("x-amz-sdk-checksum-algorithm", "CRC32"),
        ("x-amz-checksum-crc32", "0qPeVA=="),
    ];
    let crc32_trailer = &[
        ("content-encoding", "aws-chunked"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
        ("x-amz-decoded-content-length", "100"),
        ("x-amz-sdk-checksum-algorithm", "CRC32"),
    ];
    let upload_part = "PUT /b1/mp?x-id=UploadPart&partNumber=1&uploadId=u1";
    let cases = [
        (wire("PUT /b1/", &[]), "CreateBucket", "b1"),
        (wire("HEAD /b1/", &[]), "HeadBucket", "b1"),
        (
            wire("PUT /b1/k/x.bin?x-id=PutObject", crc32_header),
            "PutObject",
            "k/x.bin",
        ),
        (
            wire("PUT /b1/k/y.bin?x-id=PutObject", crc32_trailer),
            "PutObject",
            "k/y.bin",
        ),
        (
            wire(
                "POST /b1/mp?uploads",
                &[("x-amz-checksum-algorithm", "CRC32")],
            ),
            "CreateMultipartUpload",
            "mp",
        ),
        (wire(upload_part, crc32_trailer), "UploadPart", "u1"),
        (
            wire("POST /b1/mp?uploadId=u1", &[]),
            "CompleteMultipartUpload",
            "u1",
        ),
        (
            wire(
                "GET /b1/k/x.bin?x-id=GetObject",
                &[("x-amz-checksum-mode", "ENABLED")],
            ),
            "GetObject",
            "k/x.bin",
        ),
        (wire("GET /b1/?list-type=2", &[]), "ListObjectsV2", "b1"),
        (
            wire("DELETE /b1/k?x-id=DeleteObject", &[]),
            "DeleteObject",
            "k",
        ),
        (wire("DELETE /b1/", &[]), "DeleteBucket", "b1"),
    ];
    for (request, operation, last_resource) in cases {
        let call = request.run().unwrap();
        assert_eq!(call.operation, operation, "{:?}", request.path);
        assert_eq!(call.resources[0].value, "b1", "{operation}");
        assert_eq!(
            call.resources.last().map(|r| r.value.as_str()),
            Some(last_resource),
            "{operation}"
        );
        assert!(!call.params.contains_key("x-id"), "{operation}");
    }
    let delete = r#"<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a</Key></Object><Object><Key>b</Key></Object><Quiet>false</Quiet></Delete>"#;
    let call = req("s3", "POST", "/b1/")
        .q("delete", "")
        .h("x-amz-sdk-checksum-algorithm", "CRC32")
        .h("x-amz-checksum-crc32", "r7GPGg==")
        .body(delete)
        .run()
        .unwrap();
    assert_eq!(call.operation, "DeleteObjects");
    let keys: Vec<&str> = call.resources.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(keys, ["b1", "a", "b"]);
}

#[test]
fn s3_versioning_body_is_a_parameter() {
    let call = req("s3", "PUT", "/b")
        .q("versioning", "")
        .body("<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>")
        .run()
        .unwrap();
    assert_eq!(call.operation, "PutBucketVersioning");
    assert_eq!(call.params["Status"], "Suspended");
}

#[test]
fn s3_control_is_its_own_service() {
    let call = req("s3", "DELETE", "/v20180820/accesspoint/ap1")
        .h("x-amz-account-id", "111111111111")
        .host("111111111111.localhost:8443")
        .run()
        .unwrap();
    assert_eq!(
        (call.service.as_str(), call.operation.as_str()),
        ("s3control", "DeleteAccessPoint")
    );
    assert_eq!(call.action(), "s3:DeleteAccessPoint");
}

// ---------------------------------------------------------------- more rules

#[test]
fn query_without_version_is_refused_when_versions_differ() {
    let r = req("elasticloadbalancing", "POST", "/").form("Action=DescribeLoadBalancers");
    assert_eq!(r.op(), "error InvalidRequest");
    // rds, docdb and neptune share the API version: the same call, read as rds's.
    let r = req("rds", "POST", "/").form("Action=DeleteDBCluster&DBClusterIdentifier=c");
    assert_eq!(r.op(), "rds:DeleteDBCluster");
}

#[test]
fn query_and_rest_services_of_one_family() {
    // ses (query) and sesv2 (rest-json) both sign as ses.
    let q = req("ses", "POST", "/").form("Action=DeleteIdentity&Version=2010-12-01&Identity=a");
    assert_eq!(q.op(), "ses:DeleteIdentity");
    let r = req("ses", "DELETE", "/v2/email/identities/a");
    assert_eq!(r.op(), "sesv2:DeleteEmailIdentity");
    let neither = req("ses", "POST", "/nowhere");
    assert!(neither.op().starts_with("error"));
}

#[test]
fn json_refuses_a_query_string_action() {
    let r = req("dynamodb", "POST", "/")
        .q("Action", "DeleteTable")
        .h("x-amz-target", "DynamoDB_20120810.ListTables")
        .body("{}");
    assert_eq!(r.op(), "error InvalidRequest");
}

#[test]
fn greedy_labels_in_the_middle_of_a_template() {
    let call = req(
        "workspaces-web",
        "PUT",
        "/portals/arn:aws:workspaces-web:us-east-1:1:portal/p1/browserSettings",
    )
    .q(
        "browserSettingsArn",
        "arn:aws:workspaces-web:us-east-1:1:browserSettings/b",
    )
    .run()
    .unwrap();
    assert_eq!(call.operation, "AssociateBrowserSettings");
    assert_eq!(
        call.params["portalArn"],
        "arn:aws:workspaces-web:us-east-1:1:portal/p1"
    );
}

#[test]
fn rest_query_lists_are_numbered_and_scalars_unique() {
    let call = req(
        "lambda",
        "GET",
        "/2017-03-31/tags/arn:aws:lambda:us-east-1:1:function:f",
    )
    .run()
    .unwrap();
    assert_eq!(call.operation, "ListTags");
    let untag = req(
        "lambda",
        "DELETE",
        "/2017-03-31/tags/arn:aws:lambda:us-east-1:1:function:f",
    )
    .q("tagKeys", "a")
    .q("tagKeys", "b")
    .run()
    .unwrap();
    assert_eq!(untag.operation, "UntagResource");
    assert_eq!(untag.params["tagKeys.1"], "a");
    assert_eq!(untag.params["tagKeys.2"], "b");
    // A label and a query parameter of the same name: refused.
    let clash = req("lambda", "DELETE", "/2015-03-31/functions/f").q("FunctionName", "g");
    assert_eq!(clash.op(), "error InvalidRequest");
    let twice = req("lambda", "DELETE", "/2015-03-31/functions/f")
        .q("Qualifier", "1")
        .q("Qualifier", "2");
    assert_eq!(twice.op(), "error InvalidRequest");
}

#[test]
fn encoded_slashes_do_not_split_literals() {
    assert_eq!(
        req("lambda", "DELETE", "/2015-03-31%2Ffunctions/f").op(),
        "error UnknownOperationException"
    );
}

#[test]
fn s3_edge_cases() {
    // `+` in a path is a plus, `%2B` too; `%20` is a space.
    let call = req("s3", "GET", "/b/a+b%2Bc%20d").run().unwrap();
    assert_eq!(call.resources[1].value, "a+b+c d");
    // A trailing slash is part of the key; an empty key names no object, so `/b/` is
    // the bucket (the JS SDK v3 and aws-sdk-rust write every bucket call that way).
    assert_eq!(
        req("s3", "DELETE", "/b/dir/").run().unwrap().resources[1].value,
        "dir/"
    );
    assert_eq!(req("s3", "DELETE", "/b/").op(), "s3:DeleteBucket");
    assert_eq!(req("s3", "PUT", "/b/").op(), "s3:CreateBucket");
    assert_eq!(req("s3", "HEAD", "/b/").op(), "s3:HeadBucket");
    assert_eq!(
        req("s3", "GET", "/b/").q("list-type", "2").op(),
        "s3:ListObjectsV2"
    );
    assert_eq!(
        req("s3", "GET", "/b/").q("location", "").op(),
        "s3:GetBucketLocation"
    );
    // `//` is no bucket; `/b//` is the key `/`.
    assert!(req("s3", "GET", "//").op().starts_with("error"));
    assert_eq!(
        req("s3", "DELETE", "/b//").run().unwrap().resources[1].value,
        "/"
    );
    // A Host label that is no bucket name.
    assert_eq!(
        req("s3", "GET", "/").host("Not_A_Bucket.localhost").op(),
        "error InvalidRequest"
    );
    assert_eq!(
        virtual_host_bucket("my.bucket.localhost:8443").as_deref(),
        Some("my.bucket")
    );
    assert_eq!(virtual_host_bucket("localhost:8443"), None);
    assert_eq!(virtual_host_bucket("127.0.0.1:8443"), None);
    assert_eq!(virtual_host_bucket("[::1]:8443"), None);
    // Object Lambda's Host names a route, not a bucket.
    let wgor = req("s3-object-lambda", "POST", "/WriteGetObjectResponse")
        .host("route.localhost:8443")
        .h("x-amz-request-route", "route")
        .h("x-amz-request-token", "t")
        .streamed();
    assert_eq!(wgor.op(), "s3:WriteGetObjectResponse");
    // x-id is ignored (SDKs add it or not).
    let a = req("s3", "GET", "/b/k")
        .q("x-id", "GetObject")
        .run()
        .unwrap();
    let b = req("s3", "GET", "/b/k").run().unwrap();
    assert_eq!(a.params, b.params);
}

#[test]
fn a_trailing_slash_outside_s3_is_read_as_either_sdk_family_writes_it() {
    let cases = [
        // botocore writes Backup's CreateBackupPlan `PUT /backup/plans/`, the JS SDK v3
        // `PUT /backup/plans`: both are the operation.
        ("backup", "PUT /backup/plans/", "backup:CreateBackupPlan"),
        ("backup", "PUT /backup/plans", "backup:CreateBackupPlan"),
        // The other way round: botocore `DELETE /backup/plans/{id}`, a slash added.
        (
            "backup",
            "DELETE /backup/plans/p-1/",
            "backup:DeleteBackupPlan",
        ),
        // Route 53 (rest-xml): botocore `POST /2013-04-01/hostedzone/{Id}/rrset/`.
        (
            "route53",
            "POST /2013-04-01/hostedzone/Z/rrset",
            "route53:ChangeResourceRecordSets",
        ),
        // A path that fits as sent is read as sent: Lex V1's `GET /imports/{importId}`
        // and Lex V2's `GET /imports/{importId}/` stay apart.
        ("lex", "GET /imports/i-1", "lex-models:GetImport"),
        ("lex", "GET /imports/i-1/", "lexv2-models:DescribeImport"),
        // One slash only: `/backup/plans//` is no template.
        (
            "backup",
            "PUT /backup/plans//",
            "error UnknownOperationException",
        ),
    ];
    for (signing, call, want) in cases {
        let (method, path) = call.split_once(' ').unwrap();
        assert_eq!(req(signing, method, path).op(), want, "{call}");
    }
    // A label read through the toggled slash: botocore `GET /backup/plans/{id}/`.
    let got = req("backup", "GET", "/backup/plans/p-1").run().unwrap();
    assert_eq!(got.operation, "GetBackupPlan");
    assert_eq!(
        got.params.get("backupPlanId").map(String::as_str),
        Some("p-1")
    );
    // Never past a greedy label: IoT's `GET /destinations/{arn+}` keeps the slash in its
    // value.
    let got = req("iot", "GET", "/destinations/arn:aws:iot:x/")
        .run()
        .unwrap();
    assert_eq!(
        got.params.get("arn").map(String::as_str),
        Some("arn:aws:iot:x/")
    );
    // In S3 the slash is the key's: `/b/dir` is not `/b/dir/`.
    let got = req("s3", "DELETE", "/b/dir").run().unwrap();
    assert_eq!(got.resources[1].value, "dir");
}

#[test]
fn xml_in_another_encoding_is_refused() {
    let body = "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><Delete><Object><Key>k</Key></Object></Delete>";
    assert_eq!(
        req("s3", "POST", "/b").q("delete", "").body(body).op(),
        "error MalformedXML"
    );
    let pi = "<Delete><?evil x?><Object><Key>k</Key></Object></Delete>";
    assert_eq!(
        req("s3", "POST", "/b").q("delete", "").body(pi).op(),
        "error MalformedXML"
    );
    let prefixed = "<Delete xmlns:x=\"u\"><x:Object><Key>k</Key></x:Object></Delete>";
    assert_eq!(
        req("s3", "POST", "/b").q("delete", "").body(prefixed).op(),
        "error MalformedXML"
    );
}

#[test]
fn unknown_signing_names_are_refused() {
    assert_eq!(req("nope", "GET", "/").op(), "error InvalidRequest");
}

#[test]
fn arns_of_common_resources() {
    use resources::{arn_for, ArnContext};
    let ctx = |s: &'static str| ArnContext::new(s, "eu-west-1", Some("222222222222"));
    let arn = |s: &'static str, wire: &str, v: &str| arn_for(&ctx(s), wire, v, None);
    assert_eq!(
        arn("iam", "RoleName", "r").as_deref(),
        Some("arn:aws:iam::222222222222:role/r")
    );
    assert_eq!(
        arn("iam", "UserName", "u").as_deref(),
        Some("arn:aws:iam::222222222222:user/u")
    );
    assert_eq!(
        arn("kms", "KeyId", "1234abcd").as_deref(),
        Some("arn:aws:kms:eu-west-1:222222222222:key/1234abcd")
    );
    assert_eq!(
        arn("kms", "KeyId", "alias/k").as_deref(),
        Some("arn:aws:kms:eu-west-1:222222222222:alias/k")
    );
    assert_eq!(
        arn(
            "sqs",
            "QueueUrl",
            "https://sqs.eu-west-1.amazonaws.com/333333333333/q"
        )
        .as_deref(),
        Some("arn:aws:sqs:eu-west-1:333333333333:q")
    );
    assert_eq!(
        arn("rds", "DBSnapshotIdentifier", "s").as_deref(),
        Some("arn:aws:rds:eu-west-1:222222222222:snapshot:s")
    );
    assert_eq!(
        arn("rds", "DBClusterIdentifier", "c").as_deref(),
        Some("arn:aws:rds:eu-west-1:222222222222:cluster:c")
    );
    assert_eq!(
        arn("ec2", "VpcId", "vpc-1").as_deref(),
        Some("arn:aws:ec2:eu-west-1:222222222222:vpc/vpc-1")
    );
    assert_eq!(
        arn("sns", "TopicArn", "arn:aws:sns:eu-west-1:1:t").as_deref(),
        Some("arn:aws:sns:eu-west-1:1:t")
    );
    assert_eq!(arn("glue", "Name", "x"), None);
    // No account, no account-scoped ARN.
    let none = ArnContext::new("rds", "us-east-1", None);
    assert_eq!(arn_for(&none, "DBInstanceIdentifier", "d", None), None);
    let cn = ArnContext::new("s3", "cn-north-1", None);
    assert_eq!(
        arn_for(&cn, "Bucket", "b", None).as_deref(),
        Some("arn:aws-cn:s3:::b")
    );
}

#[test]
fn resources_are_read_only_where_the_service_reads_them() {
    // s3control's DeleteAccessPoint takes the account from the x-amz-account-id header:
    // a body or a query parameter of that name is not it.
    let call = req("s3", "DELETE", "/v20180820/accesspoint/ap1")
        .h("x-amz-account-id", "111111111111")
        .run()
        .unwrap();
    assert_eq!(call.resources[0].value, "111111111111");
    // A body member is never taken from a header of the same name.
    let call = req("lambda", "POST", "/2015-03-31/functions")
        .h("functionname", "staging")
        .h("content-type", "application/json")
        .body(r#"{"FunctionName":"prod","Role":"r","Code":{}}"#)
        .run()
        .unwrap();
    assert_eq!(call.operation, "CreateFunction");
    assert_eq!(
        call.resources
            .iter()
            .map(|r| r.value.as_str())
            .collect::<Vec<_>>(),
        vec!["prod"]
    );
}
