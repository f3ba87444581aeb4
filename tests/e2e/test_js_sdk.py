"""The AWS SDK for JavaScript v3 through airlock, as an agent written in Node would use it.

The SDK has its own serializers and defaults, unlike botocore: bucket paths with a trailing
slash (`PUT /bucket/`, `GET /bucket/?list-type=2`), `x-id` query parameters, CRC32 checksums
on every upload it can (`requestChecksumCalculation: WHEN_SUPPORTED`: a streamed body goes
aws-chunked with `STREAMING-UNSIGNED-PAYLOAD-TRAILER`), `Expect: 100-continue` above 2 MiB.
The calls run in Node (tests/e2e/js/run_calls.mjs) with the agent's variables only:
`AWS_ENDPOINT_URL` (the proxy), the agent's keys, `NODE_EXTRA_CA_CERTS` (airlock's CA).

- Through the suite's shadow-mode airlock: S3 (bucket, small and large objects, multipart,
  listing, location, tagging, deletes), DynamoDB and RDS, checked in moto's own state; STS
  GetCallerIdentity, and AssumeRoleWithWebIdentity, which the SDK sends unsigned, refused.
- Through an enforcing airlock: DeleteBucket, DeleteObjects, DeleteTable and
  DeleteDBInstance are refused with the approval link in the SDK's error and reach no moto;
  approved with `airlock approve ID --key FILE`, the retry goes through exactly once; the
  same call again is refused again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support import (
    MIB, REGION, REPO, Agent, GatedAirlock, Moto, require_tool, run, unique, write_random_file,
)

RUNNER = REPO / "tests" / "e2e" / "js" / "run_calls.mjs"
ACCESS_DENIED = ("AccessDenied", "AccessDeniedException")


def node_with_sdk() -> str:
    """node, with the pinned SDK packages installed (`npm ci`): fails under CI, else skips."""
    node = require_tool("node")
    if not (REPO / "node_modules" / "@aws-sdk" / "client-s3").is_dir():
        if os.environ.get("CI"):
            pytest.fail("the @aws-sdk packages are not installed (npm ci), and CI is set", pytrace=False)
        pytest.skip("the @aws-sdk packages are not installed: run `npm ci`")
    return node


def js(agent: Agent, calls: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    """Run `calls` in one Node process as `agent`: one outcome per call (see run_calls.mjs)."""
    node = node_with_sdk()
    spec = tmp_path / f"calls-{unique('js')}.json"
    spec.write_text(json.dumps(calls))
    proc = run([node, str(RUNNER), str(spec)], {**agent.env, "NODE_NO_WARNINGS": "1"}, timeout=300)
    outcomes = json.loads(proc.stdout)
    assert len(outcomes) == len(calls), outcomes
    return outcomes


def ok(outcomes: list[dict[str, Any]], calls: list[dict[str, Any]]) -> None:
    failed = [f"{c['service']}:{c['command']}: {o.get('code')}: {o.get('message')}"
              for c, o in zip(calls, outcomes) if not o["ok"]]
    assert not failed, "the JS SDK's calls failed:\n" + "\n".join(failed)


def s3(command: str, **input: Any) -> dict[str, Any]:
    return {"service": "s3", "command": command, "input": input}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- through the shadow-mode airlock: the transport ------------------------------------------


def test_js_sdk_s3_round_trip(agent: Agent, moto: Moto, tmp_path: Path) -> None:
    bucket = unique("js-bucket")
    small = b"hello from the JS SDK v3\n"
    streamed = write_random_file(tmp_path / "streamed.bin", 9 * MIB)
    multipart = write_random_file(tmp_path / "multipart.bin", 12 * MIB)
    keys = {"small": "notes/small file.txt", "streamed": "big/streamed.bin", "in-memory": "big/in-memory.bin",
            "multipart": "big/multipart.bin"}

    calls = [
        s3("CreateBucket", Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}),
        s3("HeadBucket", Bucket=bucket),
        s3("PutObject", Bucket=bucket, Key=keys["small"], Body=small.decode()),
        # A file stream: aws-chunked with the SDK's CRC32 trailer.
        s3("PutObject", Bucket=bucket, Key=keys["streamed"], Body={"$file": str(streamed.path)},
           ContentLength=streamed.size),
        # The same bytes from memory: the CRC32 in a header, and Expect: 100-continue.
        s3("PutObject", Bucket=bucket, Key=keys["in-memory"], Body={"$fileBytes": str(streamed.path)}),
        {**s3("Upload", Bucket=bucket, Key=keys["multipart"], Body={"$file": str(multipart.path)}),
         "partSize": 5 * MIB},
        s3("GetObject", Bucket=bucket, Key=keys["small"]),
        s3("GetObject", Bucket=bucket, Key=keys["streamed"]),
        s3("GetObject", Bucket=bucket, Key=keys["in-memory"]),
        s3("GetObject", Bucket=bucket, Key=keys["multipart"]),
        s3("ListObjectsV2", Bucket=bucket),
        # Not "big/": moto 5.2.1 refuses the signature of any S3 query value with a "/",
        # boto3's and the JS SDK's sent to it directly too (tests/e2e/README.md).
        s3("ListObjectsV2", Bucket=bucket, Prefix="big"),
        s3("GetBucketLocation", Bucket=bucket),
        s3("PutBucketTagging", Bucket=bucket, Tagging={"TagSet": [{"Key": "made-by", "Value": "js-sdk"}]}),
    ]
    out = js(agent, calls, tmp_path)
    ok(out, calls)
    (_, _, _, put_streamed, put_in_memory, upload, get_small, get_streamed, get_in_memory, get_multipart,
     listed, listed_big, location, _) = out

    # The SDK's default framing, as it left the SDK: a stream aws-chunked with a CRC32
    # trailer; bytes in memory with the CRC32 in a header and Expect: 100-continue.
    [sent] = put_streamed["sent"]
    assert sent["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", sent
    assert (sent["content-encoding"], sent["x-amz-trailer"]) == ("aws-chunked", "x-amz-checksum-crc32"), sent
    [sent] = put_in_memory["sent"]
    assert sent.get("expect") == "100-continue" and "x-amz-checksum-crc32" in sent, sent
    assert len(upload["sent"]) == 5, f"not a multipart upload of 3 parts: {upload['sent']}"

    # Bytes back through airlock, and in moto itself.
    assert get_small["output"]["Body"] == {"length": len(small), "sha256": sha256(small)}
    assert get_streamed["output"]["Body"] == {"length": streamed.size, "sha256": streamed.sha256}
    assert get_in_memory["output"]["Body"] == {"length": streamed.size, "sha256": streamed.sha256}
    assert get_multipart["output"]["Body"] == {"length": multipart.size, "sha256": multipart.sha256}
    direct = moto.client("s3")
    for name, data in (("streamed", streamed), ("in-memory", streamed), ("multipart", multipart)):
        body = direct.get_object(Bucket=bucket, Key=keys[name])["Body"].read()
        assert sha256(body) == data.sha256, f"moto holds other bytes for {name}"
    assert direct.get_object(Bucket=bucket, Key=keys["small"])["Body"].read() == small

    assert sorted(o["Key"] for o in listed["output"]["Contents"]) == sorted(keys.values())
    assert sorted(o["Key"] for o in listed_big["output"]["Contents"]) == sorted(
        keys[k] for k in ("streamed", "in-memory", "multipart"))
    assert location["output"]["LocationConstraint"] == REGION
    assert direct.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "made-by", "Value": "js-sdk"}]

    calls = [
        s3("DeleteObject", Bucket=bucket, Key=keys["small"]),
        s3("DeleteObjects", Bucket=bucket,
           Delete={"Objects": [{"Key": keys[k]} for k in ("streamed", "in-memory", "multipart")]}),
        s3("ListObjectsV2", Bucket=bucket),
        s3("DeleteBucket", Bucket=bucket),
    ]
    out = js(agent, calls, tmp_path)
    ok(out, calls)
    assert sorted(d["Key"] for d in out[1]["output"]["Deleted"]) == sorted(
        keys[k] for k in ("streamed", "in-memory", "multipart"))
    assert out[2]["output"].get("KeyCount") == 0, out[2]
    with pytest.raises(ClientError) as err:
        direct.head_bucket(Bucket=bucket)
    assert err.value.response["Error"]["Code"] in ("404", "NoSuchBucket")


def test_js_sdk_dynamodb_and_rds(agent: Agent, moto: Moto, tmp_path: Path) -> None:
    table = unique("js-table")
    db = unique("js-db")
    item = {"pk": {"S": "k1"}, "n": {"N": "42"}, "tags": {"SS": ["a", "b"]}}
    calls = [
        {"service": "dynamodb", "command": "CreateTable", "input": {
            "TableName": table, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]}},
        {"service": "dynamodb", "command": "PutItem", "input": {"TableName": table, "Item": item}},
        {"service": "dynamodb", "command": "GetItem", "input": {"TableName": table, "Key": {"pk": {"S": "k1"}}}},
        {"service": "rds", "command": "CreateDBInstance", "input": {
            "DBInstanceIdentifier": db, "Engine": "postgres", "DBInstanceClass": "db.t3.micro",
            "AllocatedStorage": 20, "MasterUsername": "airlock", "MasterUserPassword": "not-a-real-password-1"}},
        {"service": "rds", "command": "DescribeDBInstances", "input": {"DBInstanceIdentifier": db}},
    ]
    out = js(agent, calls, tmp_path)
    ok(out, calls)
    got = out[2]["output"]["Item"]
    assert {**got, "tags": {"SS": sorted(got["tags"]["SS"])}} == item
    assert moto.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": "k1"}})["Item"]["n"] == {"N": "42"}
    assert [i["DBInstanceIdentifier"] for i in out[4]["output"]["DBInstances"]] == [db]
    [seen] = moto.client("rds").describe_db_instances(DBInstanceIdentifier=db)["DBInstances"]
    assert seen["Engine"] == "postgres"

    calls = [
        {"service": "dynamodb", "command": "DeleteTable", "input": {"TableName": table}},
        {"service": "rds", "command": "DeleteDBInstance", "input": {
            "DBInstanceIdentifier": db, "SkipFinalSnapshot": True}},
    ]
    ok(js(agent, calls, tmp_path), calls)
    assert table not in moto.client("dynamodb").list_tables()["TableNames"]
    with pytest.raises(ClientError) as err:
        moto.client("rds").describe_db_instances(DBInstanceIdentifier=db)
    assert err.value.response["Error"]["Code"] == "DBInstanceNotFound"


def test_js_sdk_unsigned_sts_call_is_refused(agent: Agent, moto: Moto, tmp_path: Path) -> None:
    """The SDK sends AssumeRoleWithWebIdentity unsigned (its model says no auth): airlock
    cannot tell which agent sent it, so it is refused before identification, and moto sees
    nothing. Signed STS calls go through."""
    calls = [
        {"service": "sts", "command": "GetCallerIdentity", "input": {}},
        {"service": "sts", "command": "AssumeRoleWithWebIdentity", "input": {
            "RoleArn": "arn:aws:iam::123456789012:role/js-web", "RoleSessionName": "js",
            "WebIdentityToken": "not-a-real-token"}},
    ]
    before = moto.request_count()
    identity, unsigned = js(agent, calls, tmp_path)
    assert identity["ok"] and identity["output"]["Arn"] == moto.user_arn, identity
    assert not unsigned["ok"], unsigned
    assert (unsigned["status"], unsigned["code"]) == (403, "MissingAuthenticationToken"), unsigned
    assert moto.request_count() == before + 1, "the unsigned call reached moto"


# --- through an enforcing airlock: the gate --------------------------------------------------


@dataclass(frozen=True)
class Target:
    call: dict[str, Any]
    present: Callable[[], bool]


def _bucket(moto: Moto) -> Target:
    bucket = unique("js-held-bucket")
    direct = moto.client("s3")
    direct.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

    def present() -> bool:
        return bucket in {b["Name"] for b in direct.list_buckets()["Buckets"]}
    return Target(s3("DeleteBucket", Bucket=bucket), present)


def _objects(moto: Moto) -> Target:
    bucket = unique("js-held-objects")
    direct = moto.client("s3")
    direct.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    for key in ("a.txt", "dir/b.txt"):
        direct.put_object(Bucket=bucket, Key=key, Body=b"keep me")

    def present() -> bool:
        return direct.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 2
    return Target(s3("DeleteObjects", Bucket=bucket,
                     Delete={"Objects": [{"Key": "a.txt"}, {"Key": "dir/b.txt"}]}), present)


def _table(moto: Moto) -> Target:
    table = unique("js-held-table")
    ddb = moto.client("dynamodb")
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    return Target({"service": "dynamodb", "command": "DeleteTable", "input": {"TableName": table}},
                  lambda: table in ddb.list_tables()["TableNames"])


def _db_instance(moto: Moto) -> Target:
    db = unique("js-held-db")
    rds = moto.client("rds")
    rds.create_db_instance(DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=20, MasterUsername="airlock",
                           MasterUserPassword="not-a-real-password-1")

    def present() -> bool:
        return db in {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}
    return Target({"service": "rds", "command": "DeleteDBInstance", "input": {
        "DBInstanceIdentifier": db, "SkipFinalSnapshot": True, "DeleteAutomatedBackups": True}}, present)


TARGETS: dict[str, Callable[[Moto], Target]] = {
    "s3-DeleteBucket": _bucket,
    "s3-DeleteObjects": _objects,
    "dynamodb-DeleteTable": _table,
    "rds-DeleteDBInstance": _db_instance,
}


@pytest.fixture(scope="module")
def js_gate(start_gated_airlock: Callable[..., GatedAirlock]) -> GatedAirlock:
    return start_gated_airlock("airlock-js-gate", settings={("approval", "uses"): 1})


@pytest.fixture(scope="module")
def js_gate_agent(js_gate: GatedAirlock) -> Agent:
    return js_gate.add_agent(unique("js-agent"))


@pytest.mark.parametrize("target", TARGETS)
def test_js_sdk_destructive_call_is_held_then_goes_through_once(
        target: str, js_gate: GatedAirlock, js_gate_agent: Agent, moto: Moto, tmp_path: Path) -> None:
    t = TARGETS[target](moto)

    def held() -> str:
        before = moto.request_count()
        [out] = js(js_gate_agent, [t.call], tmp_path)
        assert not out["ok"], f"{target} went through without an approval"
        assert out["status"] == 403 and out["code"] in ACCESS_DENIED, out
        assert moto.request_count() == before, "a refused call reached moto"
        return js_gate.approval_id(out["message"])

    approval = held()
    assert approval in js_gate.pending_ids()
    assert t.present(), f"{target}: the resource changed although the call was refused"

    js_gate.approve(approval)
    before = moto.request_count()
    [out] = js(js_gate_agent, [t.call], tmp_path)
    assert out["ok"], f"the approved call was refused: {out}"
    assert moto.request_count() == before + 1, "the approved call did not reach moto exactly once"
    assert not t.present(), f"{target}: approved and answered, yet the resource is still there"

    # The receipt is spent: the identical call asks again.
    assert held() != approval
