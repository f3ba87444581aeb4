"""aws-sdk-rust through airlock, in endpoint mode, as a Rust agent would use it.

The client is `tests/e2e/rust-sdk` (package `airlock-sdk-client`, built here with
`cargo build -p airlock-sdk-client`): one SDK call per run, configured only by the standard
environment (`AWS_ENDPOINT_URL`, the agent's keys, `AWS_REGION`, `SSL_CERT_FILE` for airlock's
CA), path-style S3, and the SDK's default checksum behaviour. It prints one JSON line per call.

What is checked is what a user would check: moto's own state, the bytes after a round trip
(sha256), the AWS error code and message the SDK reports. airlock's log also says which
operation it read each request as; it must be the operation the SDK called, so a serialiser
quirk that airlock misreads fails here even where moto would not notice.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import (
    MIB, ODD_KEYS, REPO, Agent, Airlock, GatedAirlock, Moto, create_assumable_role, multipart_etag, require_tool, run,
    unique, write_random_file,
)
from test_receipts import TARGETS, Outcome, Target, goes_through, held, status_of


# --- the client ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rust_client() -> Path:
    """Build the client crate (a workspace member: it reuses what airlock's build compiled
    with the same features, e.g. tokio and aws-lc-rs).
    A missing cargo skips outside CI and fails under it; a failed build always fails."""
    cargo = require_tool("cargo")
    proc = subprocess.run(
        [cargo, "build", "-p", "airlock-sdk-client", "--message-format=json-render-diagnostics"],
        cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"`cargo build -p airlock-sdk-client` failed:\n{proc.stderr[-8000:]}", pytrace=False)
    for line in proc.stdout.splitlines():
        message = json.loads(line)
        if (message.get("reason") == "compiler-artifact" and message.get("executable")
                and message["target"]["name"] == "airlock-sdk-client"):
            return Path(message["executable"])
    pytest.fail(f"cargo built no airlock-sdk-client executable:\n{proc.stdout[-4000:]}", pytrace=False)


@dataclass(frozen=True)
class Call:
    """One run of the client: its JSON line, and the operations airlock logged meanwhile."""

    result: dict[str, Any]
    logged: list[str]

    @property
    def ok(self) -> bool:
        return bool(self.result["ok"])


# airlock's per-request log line names the call it read: `... forwarded ... operation=s3:PutObject ...`
_OUTCOME_LINE = re.compile(r"\b(forwarded|refused)\b.*?\boperation=(\S+)")


def sdk(client: Path, agent: Agent, airlock: Airlock, *args: str) -> Call:
    """Run one client call as `agent` (one attempt, so what reached moto is this call's doing).
    airlock logs a call before it answers, so its lines are in the log when the client exits."""
    start = airlock.log_size()
    proc = run([str(client), *args], {**agent.env, "AWS_MAX_ATTEMPTS": "1"}, timeout=300, check=False)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line from {args}:\n{proc.stdout}\n{proc.stderr}"
    [result] = lines
    assert result["op"] == args[0], result
    assert (proc.returncode == 0) == result["ok"], (proc.returncode, result)
    with open(airlock.log_path, "rb") as log:
        log.seek(start)
        written = log.read().decode(errors="replace")
    logged = [f"{m.group(1)} {m.group(2)}" for m in map(_OUTCOME_LINE.search, written.splitlines()) if m]
    return Call(result, logged)


# The one error moto's CompleteMultipartUpload answer gives aws-sdk-rust (see test_s3).
MOTO_COMPLETE_ROOT = "expected CompleteMultipartUploadResult but got StartEl { name: Name { prefix: \"\", local: \"CompleteMultipartUploadResponse\" }"


def crc32_b64(path: Path) -> str:
    """S3's ChecksumCRC32 of a file: the big-endian CRC32, base64."""
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MIB), b""):
            crc = zlib.crc32(chunk, crc)
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


# --- transport: a shadow-mode airlock forwards everything ---------------------------------------


@pytest.fixture
def forwarded_as(rust_client: Path, agent: Agent, airlock: Airlock) -> Callable[..., dict[str, Any]]:
    """`forwarded_as("s3:PutObject", "put-object", ...)`: one call through the shadow airlock,
    which must read it as that action and forward it; the call must succeed. Its JSON line."""
    def call(action: str, *args: str) -> dict[str, Any]:
        made = sdk(rust_client, agent, airlock, *args)
        assert made.logged == [f"forwarded {action}"], made
        assert made.ok, made.result
        return made.result
    return call


def test_s3(forwarded_as: Callable[..., dict[str, Any]], rust_client: Path, agent: Agent, airlock: Airlock,
            moto: Moto, tmp_path: Path) -> None:
    s3 = moto.client("s3")
    bucket = unique("rust-sdk")
    small = write_random_file(tmp_path / "small.bin", 1000)
    big = write_random_file(tmp_path / "big.bin", 20 * MIB)

    forwarded_as("s3:CreateBucket", "create-bucket", bucket)
    s3.head_bucket(Bucket=bucket)
    forwarded_as("s3:HeadBucket", "head-bucket", bucket)

    # In memory: the CRC32 goes in a header. Streamed from the file: aws-chunked, the CRC32 in
    # a trailer (STREAMING-UNSIGNED-PAYLOAD-TRAILER), which moto reads and answers with.
    put = forwarded_as("s3:PutObject", "put-object", bucket, "small.bin", str(small.path))
    assert put["checksum_crc32"] == crc32_b64(small.path), put
    streamed = forwarded_as("s3:PutObject", "put-object-streaming", bucket, "big.bin", str(big.path))
    assert streamed["checksum_crc32"] == crc32_b64(big.path), streamed

    multipart = sdk(rust_client, agent, airlock, "upload-multipart", bucket, "multipart.bin", str(big.path), "8")
    assert multipart.logged == [f"forwarded s3:{op}" for op in (
        "CreateMultipartUpload", "UploadPart", "UploadPart", "UploadPart", "CompleteMultipartUpload")], multipart
    # moto 5.2.1 answers CompleteMultipartUpload with the root element
    # <CompleteMultipartUploadResponse>; aws-sdk-rust insists on <CompleteMultipartUploadResult>
    # (what S3 sends), so it reports a parse error for an upload moto completed. That error
    # alone is accepted; the object is then checked in moto (ETag of the three parts, bytes).
    if not multipart.ok:
        assert MOTO_COMPLETE_ROOT in multipart.result["error"], multipart.result
    else:
        assert multipart.result["parts"] == 3
    assert s3.head_object(Bucket=bucket, Key="multipart.bin")["ETag"].strip('"') == multipart_etag(big.path, 8 * MIB)

    # The bytes as moto stored them, then as the SDK reads them back.
    for key, data in (("small.bin", small), ("big.bin", big), ("multipart.bin", big)):
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == data.size, key
        got = forwarded_as("s3:GetObject", "get-object", bucket, key)
        assert (got["size"], got["sha256"]) == (data.size, data.sha256), key

    # Keys the SDK must percent-encode in the path (spaces, '?', '#', '//').
    for key in ODD_KEYS:
        forwarded_as("s3:PutObject", "put-object", bucket, key, str(small.path))
        assert forwarded_as("s3:GetObject", "get-object", bucket, key)["sha256"] == small.sha256, key

    listed = forwarded_as("s3:ListObjectsV2", "list-objects", bucket)
    assert {o["key"]: o["size"] for o in listed["objects"]} == {
        "big.bin": big.size, "multipart.bin": big.size, "small.bin": small.size,
        **{key: small.size for key in ODD_KEYS}}

    forwarded_as("s3:DeleteObject", "delete-object", bucket, "small.bin")
    removed = forwarded_as("s3:DeleteObjects", "delete-objects", bucket, "big.bin", "multipart.bin", *ODD_KEYS)
    assert (sorted(removed["deleted"]), removed["errors"]) == (sorted(["big.bin", "multipart.bin", *ODD_KEYS]), [])
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    forwarded_as("s3:DeleteBucket", "delete-bucket", bucket)
    assert bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_dynamodb(forwarded_as: Callable[..., dict[str, Any]], moto: Moto) -> None:
    ddb = moto.client("dynamodb")
    table = unique("rust-sdk-table")
    assert forwarded_as("dynamodb:CreateTable", "create-table", table)["status"] == "ACTIVE"
    forwarded_as("dynamodb:PutItem", "put-item", table, "user#1", "written by aws-sdk-rust")
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "user#1"}})["Item"]
    assert item["value"] == {"S": "written by aws-sdk-rust"}, item
    assert forwarded_as("dynamodb:GetItem", "get-item", table, "user#1")["value"] == "written by aws-sdk-rust"
    forwarded_as("dynamodb:DeleteTable", "delete-table", table)
    assert table not in ddb.list_tables()["TableNames"]


def test_rds(forwarded_as: Callable[..., dict[str, Any]], moto: Moto) -> None:
    rds = moto.client("rds")
    db = unique("rust-sdk-db")
    forwarded_as("rds:CreateDBInstance", "create-db-instance", db)
    described = forwarded_as("rds:DescribeDBInstances", "describe-db-instance", db)
    assert described["instances"] == [{"id": db, "status": "available"}]
    forwarded_as("rds:DeleteDBInstance", "delete-db-instance", db)
    assert db not in {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}


def refused_assume_role(call: Callable[..., dict[str, Any]], airlock: Airlock, moto: Moto, agent_name: str) -> dict[str, Any]:
    """`assume-role` of a role anyone may assume, as the SDK makes it (`call(*args)` runs the
    client, returns its JSON line). airlock must refuse it as credential vending (built-in
    catalogue, denied in every mode, not approvable: so no approval link, but the rule that
    would allow it for this agent), with AWS's AccessDenied, and moto must see nothing."""
    role = create_assumable_role(moto, unique("rust-sdk-role"))
    before = moto.request_count()
    result = call("assume-role", role, "rust-agent")
    assert moto.request_count() == before, f"a refused AssumeRole reached moto: {result}"
    assert not result["ok"] and result["code"] == "AccessDenied", result
    message = result["message"] or ""
    # What a program logging the SDK's error report shows: the message with the rule in it
    # (the report is Rust's Debug form, quotes escaped).
    assert message and message.replace("\\", "\\\\").replace('"', '\\"') in result["error"], result
    assert "builtin:credential-vending" in message and "not approvable" in message, message
    assert f'agents = ["{agent_name}"] actions = ["sts:AssumeRole"] overrides = ["builtin:credential-vending"]' in message, message
    assert airlock.approvals_url.rsplit(":", 1)[1] not in result["error"], "a deny offers no approval link"
    return result


def test_sts(forwarded_as: Callable[..., dict[str, Any]], rust_client: Path, agent: Agent, airlock: Airlock,
             moto: Moto) -> None:
    """GetCallerIdentity answers with airlock's upstream identity (the agent's key maps to it);
    AssumeRole is refused even by this shadow-mode airlock, which forwards everything else."""
    me = forwarded_as("sts:GetCallerIdentity", "get-caller-identity")
    assert me["arn"] == moto.user_arn and me["account"] == moto.user_arn.split(":")[4], me

    seen: list[Call] = []

    def call(*args: str) -> dict[str, Any]:
        seen.append(sdk(rust_client, agent, airlock, *args))
        return seen[-1].result

    refused_assume_role(call, airlock, moto, agent.name)
    assert seen[-1].logged == ["refused sts:AssumeRole"], seen[-1]


def test_ca_comes_from_ssl_cert_file(rust_client: Path, agent: Agent, airlock: Airlock) -> None:
    """aws-sdk-rust reads no AWS_CA_BUNDLE: its HTTPS client trusts the system's roots, or what
    SSL_CERT_FILE (or SSL_CERT_DIR) names instead. With only AWS_CA_BUNDLE it cannot reach airlock."""
    env = {k: v for k, v in agent.env.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    assert env["AWS_CA_BUNDLE"] == agent.ca_bundle
    bare = Agent(agent.name, agent.access_key_id, agent.secret_access_key, agent.endpoint, agent.ca_bundle, env)
    failed = sdk(rust_client, bare, airlock, "list-objects", unique("no-such-bucket"))
    assert not failed.ok and failed.logged == [], failed
    assert failed.result["code"] is None, failed.result
    assert "invalid peer certificate: UnknownIssuer" in failed.result["error"], failed.result


# --- the gate: an enforcing airlock refuses, a human approves, the call goes through once --------

# The destructive calls, as the Rust client makes them (targets from test_receipts.py).
RUST_ARGS: dict[str, Callable[[Target], list[str]]] = {
    "DeleteBucket": lambda t: ["delete-bucket", t.kwargs["Bucket"]],
    "DeleteObjects": lambda t: ["delete-objects", t.kwargs["Bucket"],
                                *[o["Key"] for o in t.kwargs["Delete"]["Objects"]]],
    "DeleteTable": lambda t: ["delete-table", t.kwargs["TableName"]],
    "DeleteDBInstance": lambda t: ["delete-db-instance", t.kwargs["DBInstanceIdentifier"]],
}


@pytest.fixture(scope="module")
def rust_gate(start_gated_airlock: Callable[..., GatedAirlock]) -> GatedAirlock:
    """An enforcing airlock with an approver key; a receipt covers one call."""
    return start_gated_airlock("airlock-rust-sdk", settings={("approval", "uses"): 1})


@pytest.mark.parametrize("target", RUST_ARGS)
def test_destructive_call_is_held_then_goes_through_once(target: str, rust_client: Path, rust_gate: GatedAirlock,
                                                          moto: Moto) -> None:
    agent = rust_gate.add_agent(unique("rust-agent"))
    t = TARGETS[target](moto)
    args = RUST_ARGS[target](t)
    seen: list[Call] = []

    def call() -> Outcome:
        made = sdk(rust_client, agent, rust_gate, *args)
        seen.append(made)
        r = made.result
        if made.ok:
            return Outcome(True, "", "")
        # The link must be in what the SDK reports: the error's message and its full report.
        if r["message"]:
            assert r["message"] in r["error"], r
        return Outcome(False, r["code"] or "", r["message"] or r["error"])

    first = held(rust_gate, moto, call)
    assert seen[-1].logged == [f"refused {t.action}"], seen[-1]
    rust_gate.approval_link(seen[-1].result["error"])
    t.present()
    [row] = [r for r in rust_gate.approvals() if r["id"] == first]
    assert (row["action"], row["agent"]) == (t.action, agent.name), row
    assert t.resource in {r["value"] for r in row["resources"]}, row

    rust_gate.approve(first)
    goes_through(moto, call)
    assert seen[-1].logged == [f"forwarded {t.action}"], seen[-1]
    t.gone()
    assert status_of(rust_gate, first) == "closed"

    again = held(rust_gate, moto, call)
    assert again != first
