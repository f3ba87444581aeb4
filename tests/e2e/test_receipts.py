"""Approvals and receipts end to end: a destructive call goes through once, and only under a
valid receipt for exactly that call.

Every airlock here enforces the shipped policy, trusts approver keys made with `airlock keygen`,
and answers a blocked call at once (`[approval] hold_seconds = 0`). A human approves with
`airlock approve ID --key FILE`, as README.md describes. Calls come from the AWS CLI and boto3
with an agent's proxy-only credentials and reach moto (signature checking on), so "went
through" and "nothing happened" are read from moto's own state and request log.

Receipts are forged in Python where a test needs one no airlock command would sign: the
canonical form is RFC 8785 for receipts (src/receipt/canonical.rs), so re-signing a receipt
unchanged with its approver's key must give the stored signature byte for byte (checked).

Every test runs on the store `state_store` names (its id says which): the files in `[state]
dir`, or under scripts/with-postgres a PostgreSQL database of each airlock's own. What a test
reads or changes in the store (a receipt, an approval, the ledger, the audit chain) it reads or
changes where that store keeps it (`support.FileState`, `support.DatabaseState`), as someone
with write access to the store could.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from support import (
    REGION, Agent, ApproverKey, GatedAirlock, Moto, StoredReceipt, create_lambda_function, error_code, keygen,
    unique,
)

# Every test here on the store of this run, named in its id.
pytestmark = pytest.mark.usefixtures("state_store")

# One attempt: "went through once" must be airlock's doing, never a client's retry.
NO_RETRIES = Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})
ACCESS_DENIED = ("AccessDenied", "AccessDeniedException")


# --- calls and what became of them ----------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    ok: bool
    code: str
    message: str


_CLI_ERROR = re.compile(r"An error occurred \(([^)]*)\)(?: when calling the \w+ operation(?: \([^)]*\))?)?: (.*)",
                        re.S)


def cli_call(agent: Agent, *args: str) -> Callable[[], Outcome]:
    """The AWS CLI as `agent` (one attempt)."""
    def call() -> Outcome:
        proc = agent.aws_run(*args, extra_env={"AWS_MAX_ATTEMPTS": "1"})
        if proc.returncode == 0:
            return Outcome(True, "", proc.stdout)
        m = _CLI_ERROR.search(proc.stderr)
        return Outcome(False, m.group(1) if m else "", proc.stderr)
    return call


def boto3_call(client: Any, op: str, **kwargs: Any) -> Callable[[], Outcome]:
    def call() -> Outcome:
        try:
            getattr(client, op)(**kwargs)
        except ClientError as e:
            err = e.response.get("Error", {})
            return Outcome(False, err.get("Code", ""), err.get("Message", ""))
        return Outcome(True, "", "")
    return call


def blocked(gate: GatedAirlock, moto: Moto, call: Callable[[], Outcome]) -> Outcome:
    """`call` is refused with AccessDenied and reaches no moto."""
    before = moto.request_count()
    out = call()
    assert not out.ok, f"the call went through: {out}"
    assert out.code in ACCESS_DENIED, f"refused with {out.code!r}, not AccessDenied: {out.message}"
    assert moto.request_count() == before, f"a refused call reached moto: {out.message}"
    return out


def held(gate: GatedAirlock, moto: Moto, call: Callable[[], Outcome]) -> str:
    """`call` is refused with the approval link and reaches no moto: the pending approval's id."""
    out = blocked(gate, moto, call)
    approval = gate.approval_id(out.message)
    assert approval in gate.pending_ids(), f"{approval} is not listed as pending"
    return approval


def goes_through(moto: Moto, call: Callable[[], Outcome]) -> Outcome:
    """`call` succeeds, and exactly one request reached moto."""
    before = moto.request_count()
    out = call()
    assert out.ok, f"the approved call was refused: {out.code}: {out.message}"
    assert moto.request_count() == before + 1, "the approved call did not reach moto exactly once"
    return out


def status_of(gate: GatedAirlock, approval: str) -> str:
    [row] = [r for r in gate.approvals(all=True) if r["id"] == approval]
    return row["status"]


# --- receipts as stored (a file, or a row in PostgreSQL), and as files -------------------------


def read_receipt(stored: StoredReceipt | Path) -> dict[str, Any]:
    return json.loads(stored.read_text())


def write_receipt(stored: StoredReceipt | Path, receipt: dict[str, Any]) -> None:
    stored.write_text(json.dumps(receipt, indent=2) + "\n")


def canonical(value: Any) -> bytes:
    """RFC 8785 for documents with ASCII keys and integer numbers (what receipts are)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def private_key(key: ApproverKey | Path) -> Ed25519PrivateKey:
    path = key.path if isinstance(key, ApproverKey) else key
    seed = base64.b64decode(json.loads(path.read_text())["seed"])
    return Ed25519PrivateKey.from_private_bytes(seed)


def key_id_of(key: ApproverKey | Path) -> str:
    path = key.path if isinstance(key, ApproverKey) else key
    return json.loads(path.read_text())["key_id"]


def signature(key: ApproverKey | Path, body: dict[str, Any]) -> dict[str, Any]:
    raw = private_key(key).sign(canonical(body))
    return {"key_id": key_id_of(key), "algorithm": "ed25519", "signature": base64.b64encode(raw).decode()}


def receipt_verifies(gate: GatedAirlock, receipt: StoredReceipt | Path) -> tuple[bool, str]:
    """`airlock receipt verify FILE` with the airlock's config (a stored receipt: its bytes as
    stored): (exit 0?, its output)."""
    path = receipt.file() if isinstance(receipt, StoredReceipt) else receipt
    proc = gate.cli("receipt", "verify", str(path), check=False)
    return proc.returncode == 0, proc.stdout + proc.stderr


def epoch(t: str) -> int:
    """A receipt timestamp (`2026-02-26T12:00:00Z`) in seconds since the epoch."""
    return calendar.timegm(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ"))


def utc(t: str, delta: int) -> str:
    """A receipt timestamp moved by `delta` seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch(t) + delta))


# --- moto resources ---------------------------------------------------------------------------


def new_db(moto: Moto, name: str | None = None) -> str:
    db = name or unique("db")
    moto.client("rds").create_db_instance(
        DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
        MasterUsername="airlock", MasterUserPassword="not-a-real-password-1")
    return db


def db_status(moto: Moto, db: str) -> str | None:
    try:
        [instance] = moto.client("rds").describe_db_instances(DBInstanceIdentifier=db)["DBInstances"]
    except ClientError as e:
        assert e.response["Error"]["Code"] == "DBInstanceNotFound", e.response
        return None
    return instance["DBInstanceStatus"]


def new_table(moto: Moto, name: str | None = None) -> str:
    table = name or unique("table")
    moto.client("dynamodb").create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    return table


def table_exists(moto: Moto, table: str) -> bool:
    try:
        moto.client("dynamodb").describe_table(TableName=table)
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ResourceNotFoundException", e.response
        return False
    return True


def lambda_client(moto: Moto) -> Any:
    """A Lambda client straight to moto. moto 5.2.1 checks the signature of a bodiless Lambda
    call (GetFunction) only with `x-amz-content-sha256` signed, which botocore leaves out."""
    client = moto.client("lambda")

    def add_payload_hash(request: Any, **_: Any) -> None:
        body = request.body or b""
        request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(
            body.encode() if isinstance(body, str) else body).hexdigest()

    client.meta.events.register("before-sign.lambda", add_payload_hash)
    return client


_IMAGE: list[str] = []


def image_id(moto: Moto) -> str:
    if not _IMAGE:
        _IMAGE.append(moto.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"])
    return _IMAGE[0]


# --- airlocks -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate(start_gated_airlock: Callable[..., GatedAirlock], state_store: str) -> GatedAirlock:
    """The airlock most tests here go through: alice and bob may approve; one use per receipt."""
    return start_gated_airlock("airlock-receipts", approvers=("alice", "bob"), store=state_store,
                               settings={("approval", "uses"): 1, ("approval", "receipt_ttl_secs"): 900})


@pytest.fixture(scope="module")
def agent_a(gate: GatedAirlock) -> Agent:
    return gate.add_agent(unique("agent-a"))


@pytest.fixture(scope="module")
def agent_b(gate: GatedAirlock) -> Agent:
    return gate.add_agent(unique("agent-b"))


@pytest.fixture(scope="module")
def short_ttl_gate(start_gated_airlock: Callable[..., GatedAirlock], state_store: str) -> GatedAirlock:
    return start_gated_airlock("airlock-receipts-ttl", settings={("approval", "receipt_ttl_secs"): 2},
                               store=state_store)


@pytest.fixture(scope="module")
def crash_gate(start_gated_airlock: Callable[..., GatedAirlock], state_store: str) -> GatedAirlock:
    """An airlock the tests kill with SIGKILL and start again on the same state."""
    return start_gated_airlock("airlock-receipts-crash", store=state_store)


@pytest.fixture(scope="module")
def three_use_gate(start_gated_airlock: Callable[..., GatedAirlock], state_store: str) -> GatedAirlock:
    return start_gated_airlock("airlock-receipts-3-uses", settings={("approval", "uses"): 3}, store=state_store)


# --- 1. approve, go through once, refused again -----------------------------------------------


@dataclass
class Target:
    """A resource in moto and the call that destroys it, as the AWS CLI and boto3 make it."""

    action: str
    resource: str
    cli: list[str]
    service: str
    op: str
    kwargs: dict[str, Any]
    present: Callable[[], None]
    gone: Callable[[], None]
    irreversible: bool = False


def _db_instance(moto: Moto) -> Target:
    db = new_db(moto)

    def present() -> None:
        assert db_status(moto, db) == "available"

    def gone() -> None:
        assert db_status(moto, db) is None

    return Target("rds:DeleteDBInstance", db,
                  ["rds", "delete-db-instance", "--db-instance-identifier", db, "--skip-final-snapshot",
                   "--delete-automated-backups"],
                  "rds", "delete_db_instance",
                  {"DBInstanceIdentifier": db, "SkipFinalSnapshot": True, "DeleteAutomatedBackups": True},
                  present, gone, irreversible=True)


def _db_snapshot(moto: Moto) -> Target:
    rds = moto.client("rds")
    db = new_db(moto)
    snapshot = unique("snap")
    rds.create_db_snapshot(DBSnapshotIdentifier=snapshot, DBInstanceIdentifier=db)

    def present() -> None:
        [s] = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"]
        assert s["DBInstanceIdentifier"] == db

    def gone() -> None:
        assert error_code(rds.describe_db_snapshots, DBSnapshotIdentifier=snapshot) == "DBSnapshotNotFound"
        assert db_status(moto, db) == "available"

    return Target("rds:DeleteDBSnapshot", snapshot,
                  ["rds", "delete-db-snapshot", "--db-snapshot-identifier", snapshot],
                  "rds", "delete_db_snapshot", {"DBSnapshotIdentifier": snapshot}, present, gone,
                  irreversible=True)


def _ec2_instance(moto: Moto) -> Target:
    ec2 = moto.client("ec2")
    [instance] = ec2.run_instances(ImageId=image_id(moto), InstanceType="t3.micro", MinCount=1,
                                   MaxCount=1)["Instances"]
    iid = instance["InstanceId"]

    def state() -> str:
        [seen] = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"]
        return seen["State"]["Name"]

    def present() -> None:
        assert state() in ("pending", "running")

    def gone() -> None:
        assert state() in ("shutting-down", "terminated")

    return Target("ec2:TerminateInstances", iid, ["ec2", "terminate-instances", "--instance-ids", iid],
                  "ec2", "terminate_instances", {"InstanceIds": [iid]}, present, gone)


def _vpc(moto: Moto) -> Target:
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]

    def present() -> None:
        assert [v["VpcId"] for v in ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"]] == [vpc]

    def gone() -> None:
        assert error_code(ec2.describe_vpcs, VpcIds=[vpc]) == "InvalidVpcID.NotFound"

    return Target("ec2:DeleteVpc", vpc, ["ec2", "delete-vpc", "--vpc-id", vpc], "ec2", "delete_vpc",
                  {"VpcId": vpc}, present, gone)


def _bucket(moto: Moto) -> Target:
    s3 = moto.client("s3")
    bucket = unique("bucket")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

    def present() -> None:
        s3.head_bucket(Bucket=bucket)

    def gone() -> None:
        assert error_code(s3.head_bucket, Bucket=bucket) == "404"

    return Target("s3:DeleteBucket", bucket, ["s3api", "delete-bucket", "--bucket", bucket], "s3",
                  "delete_bucket", {"Bucket": bucket}, present, gone)


def _objects(moto: Moto) -> Target:
    s3 = moto.client("s3")
    bucket = unique("objects")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    for key in ("a.txt", "b/c.txt", "keep.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    delete = {"Objects": [{"Key": "a.txt"}, {"Key": "b/c.txt"}], "Quiet": False}

    def keys() -> list[str]:
        return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))

    def present() -> None:
        assert keys() == ["a.txt", "b/c.txt", "keep.txt"]

    def gone() -> None:
        assert keys() == ["keep.txt"]

    return Target("s3:DeleteObjects", bucket,
                  ["s3api", "delete-objects", "--bucket", bucket, "--delete", json.dumps(delete)],
                  "s3", "delete_objects", {"Bucket": bucket, "Delete": delete}, present, gone)


def _table(moto: Moto) -> Target:
    table = new_table(moto)

    def present() -> None:
        assert table_exists(moto, table)

    def gone() -> None:
        assert not table_exists(moto, table)

    return Target("dynamodb:DeleteTable", table, ["dynamodb", "delete-table", "--table-name", table],
                  "dynamodb", "delete_table", {"TableName": table}, present, gone)


def _function(moto: Moto) -> Target:
    name = unique("fn")
    create_lambda_function(moto, name)
    lam = lambda_client(moto)

    def present() -> None:
        assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name

    def gone() -> None:
        assert error_code(lam.get_function, FunctionName=name) == "ResourceNotFoundException"

    return Target("lambda:DeleteFunction", name, ["lambda", "delete-function", "--function-name", name],
                  "lambda", "delete_function", {"FunctionName": name}, present, gone)


TARGETS: dict[str, Callable[[Moto], Target]] = {
    "DeleteDBInstance": _db_instance,
    "DeleteDBSnapshot": _db_snapshot,
    "TerminateInstances": _ec2_instance,
    "DeleteVpc": _vpc,
    "DeleteBucket": _bucket,
    "DeleteObjects": _objects,
    "DeleteTable": _table,
    "DeleteFunction": _function,
}


@pytest.mark.parametrize("client", ["cli", "boto3"])
@pytest.mark.parametrize("target", TARGETS)
def test_approved_call_goes_through_once(target: str, client: str, gate: GatedAirlock, agent_a: Agent,
                                         moto: Moto) -> None:
    t = TARGETS[target](moto)
    if client == "cli":
        call = cli_call(agent_a, *t.cli)
    else:
        call = boto3_call(agent_a.client(t.service, config=NO_RETRIES), t.op, **t.kwargs)

    # Refused with the link; the identical retry attaches to the same pending approval.
    first = held(gate, moto, call)
    assert held(gate, moto, call) == first, "an identical retry opened a second approval"
    t.present()
    [row] = [r for r in gate.approvals() if r["id"] == first]
    assert row["status"] == "pending" and row["attempts"] == 2, row
    assert (row["action"], row["agent"]) == (t.action, agent_a.name), row
    assert t.resource in {r["value"] for r in row["resources"]}, row
    assert row["irreversible"] is t.irreversible, row
    assert row["link"] == gate.approval_link(row["link"]), row

    gate.approve(first)
    assert first not in gate.pending_ids()
    assert status_of(gate, first) == "approved"
    goes_through(moto, call)
    t.gone()
    assert status_of(gate, first) == "closed", "a spent approval stays open"

    # Spent: the identical call asks again.
    again = held(gate, moto, call)
    assert again != first


# --- 2. refused even with an approval in place -------------------------------------------------


def _delete_db(agent: Agent, db: str, *extra: str) -> Callable[[], Outcome]:
    return cli_call(agent, "rds", "delete-db-instance", "--db-instance-identifier", db, *extra)


def test_receipt_for_prod_db_does_not_cover_staging_db(gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    suffix = unique("x")
    prod, staging = new_db(moto, f"prod-db-{suffix}"), new_db(moto, f"staging-db-{suffix}")
    skip = ("--skip-final-snapshot",)
    prod_approval = held(gate, moto, _delete_db(agent_a, prod, *skip))
    gate.approve(prod_approval)

    staging_approval = held(gate, moto, _delete_db(agent_a, staging, *skip))
    assert staging_approval != prod_approval
    assert db_status(moto, staging) == "available" and db_status(moto, prod) == "available"
    assert status_of(gate, prod_approval) == "approved", "the prod receipt was spent on another call"

    goes_through(moto, _delete_db(agent_a, prod, *skip))
    assert db_status(moto, prod) is None
    assert db_status(moto, staging) == "available"
    assert staging_approval in gate.pending_ids()


def test_approval_record_pointing_at_another_calls_receipt(gate: GatedAirlock, agent_a: Agent,
                                                           moto: Moto) -> None:
    """The approval store is not trusted either: a pending approval edited to name the receipt
    granted for another call (prod-db) does not let staging-db's call through."""
    suffix = unique("x")
    prod, staging = new_db(moto, f"prod-db-{suffix}"), new_db(moto, f"staging-db-{suffix}")
    prod_approval = held(gate, moto, _delete_db(agent_a, prod, "--skip-final-snapshot"))
    staging_approval = held(gate, moto, _delete_db(agent_a, staging, "--skip-final-snapshot"))
    receipt = gate.approve(prod_approval)

    record = gate.approval_record(staging_approval)
    record.update(status="approved", receipt_id=receipt.id, decided_by="alice",
                  decided_at=gate.approval_record(prod_approval)["decided_at"])
    gate.state.put_approval(record)

    out = blocked(gate, moto, _delete_db(agent_a, staging, "--skip-final-snapshot"))
    assert "does not verify" in out.message, out.message
    assert db_status(moto, staging) == "available" and db_status(moto, prod) == "available"
    goes_through(moto, _delete_db(agent_a, prod, "--skip-final-snapshot"))
    assert db_status(moto, staging) == "available"


def test_receipt_with_final_snapshot_does_not_cover_skipping_it(gate: GatedAirlock, agent_a: Agent,
                                                                moto: Moto) -> None:
    db = new_db(moto)
    final = unique("final")
    keep = _delete_db(agent_a, db, "--no-skip-final-snapshot", "--final-db-snapshot-identifier", final)
    skip = _delete_db(agent_a, db, "--skip-final-snapshot")
    approved = held(gate, moto, keep)
    assert gate.approval_record(approved)["call"]["params"]["SkipFinalSnapshot"] == "false"
    gate.approve(approved)

    skipping = held(gate, moto, skip)
    assert skipping != approved
    assert gate.approval_record(skipping)["irreversible"] is True
    assert db_status(moto, db) == "available"
    assert status_of(gate, approved) == "approved"

    # The approved call itself still goes through, keeping its final snapshot.
    goes_through(moto, keep)
    assert db_status(moto, db) is None
    [s] = moto.client("rds").describe_db_snapshots(DBSnapshotIdentifier=final)["DBSnapshots"]
    assert s["DBInstanceIdentifier"] == db


def test_receipt_for_some_objects_does_not_cover_more(gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    """DeleteObjects names its keys in the XML body: a receipt for two keys covers those two."""
    s3 = moto.client("s3")
    bucket = unique("objects")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    for key in ("a.txt", "b.txt", "keep.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    client = agent_a.client("s3", config=NO_RETRIES)

    def delete(*keys: str) -> Callable[[], Outcome]:
        return boto3_call(client, "delete_objects", Bucket=bucket,
                          Delete={"Objects": [{"Key": k} for k in keys], "Quiet": False})

    two = held(gate, moto, delete("a.txt", "b.txt"))
    gate.approve(two)
    for other in (("a.txt", "b.txt", "keep.txt"), ("keep.txt", "b.txt"), ("keep.txt",)):
        assert held(gate, moto, delete(*other)) != two, other
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == ["a.txt", "b.txt", "keep.txt"]
    goes_through(moto, delete("a.txt", "b.txt"))
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["keep.txt"]


def test_expired_receipt(short_ttl_gate: GatedAirlock, moto: Moto) -> None:
    gate = short_ttl_gate
    agent = gate.add_agent(unique("ttl-agent"))
    table = new_table(moto)
    call = boto3_call(agent.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    first = held(gate, moto, call)
    receipt = read_receipt(gate.approve(first))
    assert epoch(receipt["body"]["expires_at"]) - epoch(receipt["body"]["issued_at"]) == 2, receipt["body"]

    time.sleep(3)
    second = held(gate, moto, call)
    assert second != first, "an expired receipt's approval still collects retries"
    assert status_of(gate, first) == "closed"
    assert table_exists(moto, table)

    # A fresh approval still works. It is granted for longer (a copy of the config beside it,
    # same state), so a slow machine cannot let it expire before the call is made again.
    longer = gate.config.with_name("config-longer-ttl.toml")
    text, n = re.subn(r"(?m)^receipt_ttl_secs\s*=.*$", "receipt_ttl_secs = 900", gate.config.read_text())
    assert n == 1, "no receipt_ttl_secs in the config"
    longer.write_text(text)
    gate.approve(second, config=longer)
    goes_through(moto, call)
    assert not table_exists(moto, table)


# Edits to a stored receipt. Each names what it changes; none is re-signed.
def _other_hex(n: int) -> str:
    return secrets.token_hex(n // 2)


def _edit_body(field: str, value: Callable[[dict[str, Any], GatedAirlock], Any]) -> Callable[..., None]:
    def edit(receipt: dict[str, Any], gate: GatedAirlock) -> None:
        receipt["body"][field] = value(receipt["body"], gate)
    return edit


def _bob_key_id(body: dict[str, Any], gate: GatedAirlock) -> str:
    return key_id_of(gate.keys["bob"])


EDITS: dict[str, Callable[[dict[str, Any], GatedAirlock], None]] = {
    "format": _edit_body("format", lambda b, g: "airlock-receipt/2"),
    "id": _edit_body("id", lambda b, g: _other_hex(32)),
    "agent": _edit_body("agent", lambda b, g: b["agent"] + "-x"),
    "environment": _edit_body("environment", lambda b, g: "prod"),
    "account": _edit_body("account", lambda b, g: "999999999999"),
    "region": _edit_body("region", lambda b, g: "eu-west-1"),
    "service": _edit_body("service", lambda b, g: "s3"),
    "operation": _edit_body("operation", lambda b, g: "DescribeTable"),
    "resources": _edit_body("resources", lambda b, g: [r.replace("table/", "table/other-") for r in b["resources"]]),
    "resources-added": _edit_body("resources", lambda b, g: b["resources"] + ["TableName=everything"]),
    "params_digest": _edit_body("params_digest", lambda b, g: hashlib.sha256(b"{}").hexdigest()),
    "issued_at": _edit_body("issued_at", lambda b, g: utc(b["issued_at"], -60)),
    "not_before": _edit_body("not_before", lambda b, g: utc(b["not_before"], -3600)),
    "expires_at": _edit_body("expires_at", lambda b, g: utc(b["expires_at"], 86400)),
    "uses": _edit_body("uses", lambda b, g: 1000),
    "approver": _edit_body("approver", lambda b, g: "bob"),
    "approver_key_id": _edit_body("approver_key_id", _bob_key_id),
    "approval_id": _edit_body("approval_id", lambda b, g: "a" * 26),
    "webauthn": _edit_body("webauthn", lambda b, g: {
        "credential_id": "AAAA", "authenticator_data": "AAAA", "client_data_json": "AAAA",
        "signature": "AAAA", "batch": []}),
    "unknown-field": _edit_body("note", lambda b, g: "approved by the agent"),
    "signature": lambda r, g: r["signatures"][0].update(
        signature=base64.b64encode(bytes(64)).decode()),
    "signature-key_id": lambda r, g: r["signatures"][0].update(key_id=key_id_of(g.keys["bob"])),
    "signatures-removed": lambda r, g: r.update(signatures=[]),
}


def _approved_table(gate: GatedAirlock, agent: Agent, moto: Moto) -> tuple[str, Callable[[], Outcome], str,
                                                                          StoredReceipt]:
    table = new_table(moto)
    call = boto3_call(agent.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    approval = held(gate, moto, call)
    return table, call, approval, gate.approve(approval)


@pytest.mark.parametrize("edit", EDITS)
def test_receipt_edited_after_signing(edit: str, gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    table, call, approval, path = _approved_table(gate, agent_a, moto)
    ok, out = receipt_verifies(gate, path)
    assert ok, out
    receipt = read_receipt(path)
    EDITS[edit](receipt, gate)
    write_receipt(path, receipt)
    ok, out = receipt_verifies(gate, path)
    assert not ok, f"`airlock receipt verify` accepts a receipt with {edit} edited:\n{out}"

    out = blocked(gate, moto, call)
    assert "does not verify" in out.message, out.message
    assert table_exists(moto, table)
    # Asking again opens a fresh approval; approved, the call goes through.
    fresh = held(gate, moto, call)
    assert fresh != approval
    gate.approve(fresh)
    goes_through(moto, call)
    assert not table_exists(moto, table)
    assert call_events(gate, table) == ["approval_required", "receipt_invalid", "approval_required",
                                        "receipt_used"]


def test_receipt_with_a_duplicated_key(gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    """JSON readers disagree on duplicate keys; the file's second `uses` must not be read."""
    table, call, _, path = _approved_table(gate, agent_a, moto)
    text = path.read_text()
    assert text.count('"uses": 1,') == 1, text
    path.write_text(text.replace('"uses": 1,', '"uses": 1,\n    "uses": 50,'))
    assert not receipt_verifies(gate, path)[0]
    blocked(gate, moto, call)
    assert table_exists(moto, table)


def test_python_signer_reproduces_airlocks_signature(gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    """The forging tests below sign in Python; here that signer is shown to be airlock's."""
    _, _, _, path = _approved_table(gate, agent_a, moto)
    receipt = read_receipt(path)
    assert receipt["signatures"] == [signature(gate.keys["alice"], receipt["body"])]


# Receipts re-signed by a TRUSTED approver after the edit: the signature is genuine, so only the
# binding (and the decision, and the times) can refuse them.
RESIGNED: dict[str, Callable[[dict[str, Any], GatedAirlock], None]] = {
    name: EDITS[name] for name in
    ("agent", "environment", "account", "region", "service", "operation", "resources", "resources-added",
     "params_digest")
}
RESIGNED["decision-deny"] = _edit_body("decision", lambda b, g: "deny")
RESIGNED["expired"] = lambda r, g: r["body"].update(issued_at=utc(r["body"]["issued_at"], -7200),
                                                     not_before=utc(r["body"]["not_before"], -7200),
                                                     expires_at=utc(r["body"]["issued_at"], -3600))
RESIGNED["not-yet-valid"] = lambda r, g: r["body"].update(issued_at=utc(r["body"]["issued_at"], 3600),
                                                           not_before=utc(r["body"]["not_before"], 3600),
                                                           expires_at=utc(r["body"]["expires_at"], 7200))
RESIGNED["zero-uses"] = _edit_body("uses", lambda b, g: 0)


@pytest.mark.parametrize("edit", RESIGNED)
def test_receipt_resigned_for_something_else(edit: str, gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    table, call, approval, path = _approved_table(gate, agent_a, moto)
    receipt = read_receipt(path)
    RESIGNED[edit](receipt, gate)
    receipt["signatures"] = [signature(gate.keys["alice"], receipt["body"])]
    write_receipt(path, receipt)
    out = blocked(gate, moto, call)
    if edit in ("expired", "not-yet-valid"):
        # Not valid now: closed, and the call asks again.
        assert gate.approval_id(out.message) != approval
    else:
        assert "does not verify" in out.message, out.message
    assert table_exists(moto, table)


def test_receipt_resigned_with_more_uses_is_alices_to_give(gate: GatedAirlock, agent_a: Agent,
                                                          moto: Moto) -> None:
    """Control for the tests above: an edit the approver signs herself is her decision."""
    table, call, _, path = _approved_table(gate, agent_a, moto)
    receipt = read_receipt(path)
    receipt["body"]["uses"] = 2
    receipt["signatures"] = [signature(gate.keys["alice"], receipt["body"])]
    write_receipt(path, receipt)
    assert receipt_verifies(gate, path)[0]
    goes_through(moto, call)
    assert not table_exists(moto, table)
    new_table(moto, table)
    goes_through(moto, call)
    assert not table_exists(moto, table)
    new_table(moto, table)
    held(gate, moto, call)
    assert table_exists(moto, table)


def _untrusted_config(gate: GatedAirlock, key: ApproverKey) -> Path:
    """A config like the gate's (same state dir, same certs) that trusts only `key`: what someone
    who can write airlock's state but not its config could sign with."""
    text = gate.config.read_text()
    head = text[: text.index("\n[[approver]]")] if "\n[[approver]]" in text else text
    path = gate.config.parent / f"untrusted-{key.name}-{secrets.token_hex(4)}.toml"
    path.write_text(head + "\n" + key.block)
    return path


def test_receipt_signed_by_a_key_not_in_the_config(gate: GatedAirlock, agent_a: Agent, moto: Moto,
                                                    tmp_path: Path) -> None:
    # A key that calls itself alice, but is not the key the config trusts for alice.
    mallory = keygen(gate, "alice", tmp_path / "mallory")
    assert key_id_of(mallory) != key_id_of(gate.keys["alice"])
    table = new_table(moto)
    call = boto3_call(agent_a.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    approval = held(gate, moto, call)

    refused = gate.cli("approve", approval, "--key", str(mallory.path), "--insecure-plaintext-key", check=False)
    assert refused.returncode != 0, "`airlock approve` signed with a key the config does not trust"
    assert status_of(gate, approval) == "pending"

    receipt = gate.approve(approval, mallory, config=_untrusted_config(gate, mallory))
    ok, out = receipt_verifies(gate, receipt)
    assert not ok and "not a trusted key" in out, out
    out = blocked(gate, moto, call).message
    assert "does not verify" in out, out
    assert table_exists(moto, table)


def test_receipt_with_an_extra_untrusted_signature(gate: GatedAirlock, agent_a: Agent, moto: Moto,
                                                   tmp_path: Path) -> None:
    table, call, _, path = _approved_table(gate, agent_a, moto)
    stranger = keygen(gate, "stranger", tmp_path / "stranger")
    receipt = read_receipt(path)
    receipt["signatures"].append(signature(stranger, receipt["body"]))
    write_receipt(path, receipt)
    blocked(gate, moto, call)
    assert table_exists(moto, table)


def test_receipt_signed_by_airlocks_own_key(gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    """airlock's own key (state/airlock.key) countersigns passkey approvals; alone it approves
    nothing, even naming itself as the approver."""
    own = gate.state_dir / "airlock.key"
    assert own.is_file()
    table, call, _, path = _approved_table(gate, agent_a, moto)
    receipt = read_receipt(path)
    receipt["body"].update(approver="airlock", approver_key_id=key_id_of(own))
    receipt["signatures"] = [signature(own, receipt["body"])]
    write_receipt(path, receipt)
    blocked(gate, moto, call)
    assert table_exists(moto, table)


def test_denied_call(gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    table = new_table(moto)
    call = boto3_call(agent_a.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    approval = held(gate, moto, call)
    gate.deny(approval)
    assert status_of(gate, approval) == "denied"
    flipped = gate.cli("approve", approval, "--key", str(gate.keys["bob"].path), "--insecure-plaintext-key",
                        check=False)
    assert flipped.returncode != 0, "a denied call was approved afterwards"

    out = blocked(gate, moto, call)
    assert "denied" in out.message and "alice" in out.message, out.message
    assert table_exists(moto, table)
    # Retrying asks again.
    assert held(gate, moto, call) != approval
    assert table_exists(moto, table)
    # The record of the refused retry names the approver's denial, not a missing approval.
    assert call_events(gate, table) == ["approval_required", "denied_by_approver", "approval_required"]


def test_another_agents_receipt(gate: GatedAirlock, agent_a: Agent, agent_b: Agent, moto: Moto) -> None:
    table = new_table(moto)
    call_a = boto3_call(agent_a.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    call_b = boto3_call(agent_b.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    approval_a = held(gate, moto, call_a)
    gate.approve(approval_a)

    approval_b = held(gate, moto, call_b)
    assert approval_b != approval_a
    assert gate.approval_record(approval_b)["agent"] == agent_b.name
    assert table_exists(moto, table)
    assert status_of(gate, approval_a) == "approved"

    goes_through(moto, call_a)
    assert not table_exists(moto, table)


def test_receipt_used_then_airlock_killed(crash_gate: GatedAirlock, moto: Moto) -> None:
    gate = crash_gate
    agent = gate.add_agent(unique("crash-agent"))
    table = new_table(moto)
    call = boto3_call(agent.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    gate.approve(held(gate, moto, call))
    goes_through(moto, call)
    assert not table_exists(moto, table)

    new_table(moto, table)  # a replay would now destroy something
    gate.kill()
    gate.start()
    agent = gate.agent_here(agent)
    call = boto3_call(agent.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    held(gate, moto, call)
    assert table_exists(moto, table)


def test_receipt_approved_then_airlock_killed_before_use(crash_gate: GatedAirlock, moto: Moto) -> None:
    gate = crash_gate
    agent = gate.add_agent(unique("crash-agent"))
    table = new_table(moto)
    call = boto3_call(agent.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    approval = held(gate, moto, call)
    gate.approve(approval)
    gate.kill()
    gate.start()
    agent = gate.agent_here(agent)
    call = boto3_call(agent.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    goes_through(moto, call)
    assert not table_exists(moto, table)
    new_table(moto, table)
    assert held(gate, moto, call) != approval
    assert table_exists(moto, table)


class Relay:
    """An HTTP/1.1 relay between airlock and moto (airlock's `[upstream] endpoint`), for what
    moto alone cannot do:

    - `answers` cleared: moto's answers are held, so airlock can be killed after moto acted on a
      call and before airlock heard back;
    - `fail_next(marker, status, body)`: the next request containing `marker` is answered by the
      relay itself with that status, and never reaches moto."""

    def __init__(self, moto: Moto):
        self.target = ("127.0.0.1", moto.port)
        self.access_key_id, self.secret_access_key = moto.access_key_id, moto.secret_access_key
        self.answers = threading.Event()
        self.answers.set()
        self._fail: list[tuple[bytes, int, bytes]] = []
        self.failed = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def fail_next(self, marker: bytes, status: int, body: bytes) -> None:
        self._fail.append((marker, status, body))

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _requests(self, src: socket.socket, dst: socket.socket) -> None:
        """Request by request (airlock sends Content-Length bodies to moto here)."""
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = src.recv(65536)
                    if not data:
                        raise EOFError
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
                length = int(m.group(1)) if m else 0
                assert not re.search(rb"(?im)^transfer-encoding:", head), "the relay reads Content-Length bodies only"
                while len(buf) < length:
                    data = src.recv(65536)
                    if not data:
                        raise EOFError
                    buf += data
                body, buf = buf[:length], buf[length:]
                request = head + b"\r\n\r\n" + body
                if self._fail and self._fail[0][0] in request:
                    _, status, answer = self._fail.pop(0)
                    self.failed += 1
                    src.sendall(b"HTTP/1.1 %d Relay\r\nContent-Type: application/x-amz-json-1.0\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (status, len(answer), answer))
                    continue
                dst.sendall(request)
        except (OSError, EOFError):
            pass
        self._close(src, dst)

    def _answers(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.answers.wait()
                dst.sendall(data)
        except OSError:
            pass
        self._close(src, dst)

    def close(self) -> None:
        self.answers.set()
        self.server.close()


@pytest.fixture(scope="module")
def relay(moto: Moto) -> Iterator[Relay]:
    r = Relay(moto)
    yield r
    r.close()


@pytest.fixture(scope="module")
def relayed_gate(start_gated_airlock: Callable[..., GatedAirlock], relay: Relay, state_store: str) -> GatedAirlock:
    return start_gated_airlock("airlock-receipts-relayed", upstream=relay, store=state_store)


DELETE_TABLE = b"DynamoDB_20120810.DeleteTable"


def test_use_given_back_when_the_upstream_fails(relayed_gate: GatedAirlock, relay: Relay, moto: Moto) -> None:
    """A 500 from the upstream releases the use: the SDK's own retry of the approved call goes
    through (once), and the receipt is spent after that."""
    gate = relayed_gate
    agent = gate.add_agent(unique("retrying"))
    table = new_table(moto)
    retrying = Config(retries={"mode": "standard", "total_max_attempts": 3})
    call = boto3_call(agent.client("dynamodb", config=retrying), "delete_table", TableName=table)
    gate.approve(held(gate, moto, call))

    relay.fail_next(DELETE_TABLE, 500, b'{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError",'
                                       b'"message":"injected by the test relay"}')
    failed = relay.failed
    goes_through(moto, call)
    assert relay.failed == failed + 1, "the relay's 500 was never sent (the test proves nothing)"
    assert not table_exists(moto, table)
    new_table(moto, table)
    held(gate, moto, call)
    assert table_exists(moto, table)


def test_use_counts_when_the_upstream_refuses(relayed_gate: GatedAirlock, moto: Moto) -> None:
    """A final error from the upstream (the table is already gone: 400) spends the use."""
    gate = relayed_gate
    agent = gate.add_agent(unique("final-error"))
    table = new_table(moto)
    call = boto3_call(agent.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
    gate.approve(held(gate, moto, call))
    moto.client("dynamodb").delete_table(TableName=table)
    before = moto.request_count()
    out = call()
    assert (out.ok, out.code) == (False, "ResourceNotFoundException"), out
    assert moto.request_count() == before + 1
    new_table(moto, table)
    held(gate, moto, call)
    assert table_exists(moto, table)


def test_use_counts_when_airlock_dies_mid_call(start_gated_airlock: Callable[..., GatedAirlock],
                                               moto: Moto, state_store: str) -> None:
    """A crash between forwarding and answering counts the use: moto may have acted.

    On the files the restarted airlock knows the reservation was its own and counts it at
    once: the next identical call opens a new approval. In PostgreSQL the reservation could
    be another replica's call still in flight, so it is held as such (503, retry) until it is
    older than any call can take, and never honoured again either way."""
    relay = Relay(moto)
    try:
        gate = start_gated_airlock("airlock-receipts-mid-call", upstream=relay, store=state_store)
        agent = gate.add_agent(unique("mid-call"))
        table = new_table(moto)
        slow = NO_RETRIES.merge(Config(read_timeout=60))
        call = boto3_call(agent.client("dynamodb", config=slow), "delete_table", TableName=table)
        receipt = gate.approve(held(gate, moto, call)).id

        relay.answers.clear()
        outcome: list[Outcome | Exception] = []

        def in_flight() -> None:
            try:
                outcome.append(call())
            except Exception as e:  # noqa: BLE001 (the connection dies with airlock)
                outcome.append(e)

        caller = threading.Thread(target=in_flight)
        caller.start()
        deadline = time.monotonic() + 30
        while table_exists(moto, table):
            assert time.monotonic() < deadline, "the approved call never reached moto"
            time.sleep(0.1)
        gate.kill()
        relay.answers.set()
        caller.join(60)
        [answer] = outcome
        assert isinstance(answer, Exception), f"the agent heard back from a killed airlock: {answer}"

        events = gate.state.ledger_events(receipt)
        assert events == ["reserve"], events

        new_table(moto, table)
        gate.start()
        agent = gate.agent_here(agent)
        call = boto3_call(agent.client("dynamodb", config=NO_RETRIES), "delete_table", TableName=table)
        if state_store == "postgres":
            before = moto.request_count()
            out = call()
            assert (out.ok, out.code) == (False, "ServiceUnavailable"), out
            assert "in flight" in out.message, out.message
            assert moto.request_count() == before, "a call on the killed call's use reached moto"
            assert gate.state.ledger_events(receipt) == ["reserve"], "the reservation was given back"
        else:
            held(gate, moto, call)
        assert table_exists(moto, table)
        audit_verifies(gate)
    finally:
        relay.close()


def test_approved_after_restart_with_a_spent_approval_from_the_same_second(crash_gate: GatedAirlock,
                                                                            moto: Moto) -> None:
    """After a restart, an identical call finds the approval a human is looking at.

    For each table: approval A is granted and spent, the next identical call opens B; both in the
    same second. airlock is killed and started again, a human approves B, and the call must go
    through under B (not open a third approval C that nobody approved)."""
    gate = crash_gate
    agent = gate.add_agent(unique("same-second"))
    client = agent.client("dynamodb", config=NO_RETRIES)
    cases: list[tuple[str, str, str]] = []
    for _ in range(40):
        if len(cases) == 8:
            break
        table = new_table(moto)
        call = boto3_call(client, "delete_table", TableName=table)
        time.sleep(1 - time.time() % 1 + 0.02)  # start at the top of a second: the most time in it
        first = gate.approval_id(call().message)
        gate.approve(first)
        assert call().ok
        new_table(moto, table)
        second = gate.approval_id(call().message)
        a, b = gate.approval_record(first), gate.approval_record(second)
        if a["created_at"] == b["created_at"]:
            cases.append((table, first, second))
    assert len(cases) == 8, "could not make approvals in the same second"

    gate.kill()
    gate.start()
    client = gate.agent_here(agent).client("dynamodb", config=NO_RETRIES)
    stuck = []
    for table, _, second in cases:
        assert second in gate.pending_ids()
        gate.approve(second)
        out = boto3_call(client, "delete_table", TableName=table)()
        if not out.ok:
            stuck.append((table, second, out.message))
    assert not stuck, (f"{len(stuck)} of {len(cases)} approved calls were refused after a restart; "
                       f"each opened a new approval instead:\n" + "\n".join(map(str, stuck)))


# --- 3. concurrent identical calls under one receipt -------------------------------------------


def _storm(n: int, call: Callable[[], Outcome]) -> list[Outcome]:
    barrier = threading.Barrier(n)
    results: list[Outcome | BaseException] = [RuntimeError("not run")] * n

    def worker(i: int) -> None:
        try:
            barrier.wait(30)
            results[i] = call()
        except BaseException as e:  # noqa: BLE001 (reported below)
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} calls raised: {errors[:3]}"
    return [r for r in results if isinstance(r, Outcome)]


def test_50_concurrent_calls_under_one_receipt(gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    table = new_table(moto)
    client = agent_a.client("dynamodb", config=NO_RETRIES.merge(Config(max_pool_connections=64)))
    call = boto3_call(client, "delete_table", TableName=table)
    receipt = gate.approve(held(gate, moto, call)).id

    before = moto.request_count()
    results = _storm(50, call)
    through = [r for r in results if r.ok]
    others = {(r.code, "airlock" in r.message) for r in results if not r.ok}
    assert len(through) == 1, f"{len(through)} of 50 concurrent calls went through under one receipt"
    assert others <= {(code, True) for code in ACCESS_DENIED}, others
    assert moto.request_count() - before == 1, "more than one call reached moto"
    assert not table_exists(moto, table)
    events = [r["event"] for r in gate.state.audit_records() if r.get("receipt") == receipt]
    assert events == ["approved", "receipt_used"], events


def test_50_concurrent_calls_wait_on_one_approval(gate: GatedAirlock, agent_a: Agent, moto: Moto) -> None:
    """Identical calls arriving together, before any approval, open one approval between them."""
    table = new_table(moto)
    client = agent_a.client("dynamodb", config=NO_RETRIES.merge(Config(max_pool_connections=64)))
    call = boto3_call(client, "delete_table", TableName=table)
    before = moto.request_count()
    results = _storm(50, call)
    assert moto.request_count() == before
    assert not any(r.ok for r in results)
    ids = {gate.approval_id(r.message) for r in results}
    assert len(ids) == 1, f"50 identical calls opened {len(ids)} approvals"
    [approval] = ids
    assert gate.approval_record(approval)["attempts"] == 50
    assert table_exists(moto, table)


def test_50_concurrent_calls_under_a_three_use_receipt(three_use_gate: GatedAirlock, moto: Moto) -> None:
    gate = three_use_gate
    agent = gate.add_agent(unique("three-uses"))
    bucket = unique("three-uses")
    moto.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    client = agent.client("s3", config=NO_RETRIES.merge(Config(max_pool_connections=64)))
    call = boto3_call(client, "delete_object", Bucket=bucket, Key="log.txt")
    receipt = read_receipt(gate.approve(held(gate, moto, call)))
    assert receipt["body"]["uses"] == 3

    before = moto.request_count()
    results = _storm(50, call)
    assert sum(r.ok for r in results) == 3, [r for r in results if r.ok]
    assert {r.code for r in results if not r.ok} == {"AccessDenied"}
    assert moto.request_count() - before == 3


# --- 4. offline verification, and the audit log -------------------------------------------------


def test_receipt_verify_offline(gate: GatedAirlock, short_ttl_gate: GatedAirlock, agent_a: Agent, moto: Moto,
                                tmp_path: Path) -> None:
    _, _, _, path = _approved_table(gate, agent_a, moto)
    ok, out = receipt_verifies(gate, path)
    assert ok, out
    assert "alice" in out, out
    copy_path = tmp_path / "edited.json"
    copy_path.write_bytes(path.read_bytes())
    receipt = read_receipt(copy_path)
    receipt["body"]["resources"] = ["arn:aws:dynamodb:*:*:table/*"]
    write_receipt(copy_path, receipt)
    ok, out = receipt_verifies(gate, copy_path)
    assert not ok, out
    # Checked against the config's keys only: another airlock's config trusts neither alice's
    # key nor this airlock's own.
    ok, out = receipt_verifies(short_ttl_gate, path)
    assert not ok and "not a trusted key" in out, out


def call_records(gate: GatedAirlock, name: str) -> list[dict[str, Any]]:
    """The audit log's records of the agents' calls naming `name` in a resource, in order."""
    return [r for r in gate.state.audit_records()
            if "request_id" in r and any(name in resource for resource in r.get("resources") or [])]


def call_events(gate: GatedAirlock, name: str) -> list[str]:
    return [r["event"] for r in call_records(gate, name)]


def test_credential_vending_is_denied_by_policy_on_the_record(gate: GatedAirlock, agent_a: Agent,
                                                              moto: Moto) -> None:
    user = unique("vending-user")
    moto.client("iam").create_user(UserName=user)
    call = boto3_call(agent_a.client("iam", config=NO_RETRIES), "create_access_key", UserName=user)
    out = blocked(gate, moto, call)
    assert "builtin:credential-vending" in out.message, out.message
    assert moto.client("iam").list_access_keys(UserName=user)["AccessKeyMetadata"] == []
    assert call_events(gate, user) == ["denied_by_policy"]
    # Times carry milliseconds, so calls within one second keep their order for a reader.
    [record] = call_records(gate, user)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), record["time"]


def audit_verifies(gate: GatedAirlock) -> None:
    proc = gate.cli("audit", "verify", check=False)
    assert proc.returncode == 0, f"`airlock audit verify` failed for {gate.home}:\n{proc.stdout}{proc.stderr}"


def test_audit_logs_verify(gate: GatedAirlock, short_ttl_gate: GatedAirlock, crash_gate: GatedAirlock,
                           three_use_gate: GatedAirlock, relayed_gate: GatedAirlock) -> None:
    """Run last: every airlock of this module, after all of the above (crashes included)."""
    for server in (gate, short_ttl_gate, crash_gate, three_use_gate, relayed_gate):
        audit_verifies(server)
