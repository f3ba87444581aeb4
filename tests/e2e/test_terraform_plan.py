"""Approve a Terraform plan once: `terraform apply plan.bin` then destroys with no held call.

The incident's stack (terraform/main.tf: VPC, subnet, security group, RDS instance and its
snapshot, S3 bucket with `force_destroy`, DynamoDB table) is created through an airlock in
shadow mode, and the bucket is given more objects behind Terraform's back. Against an airlock
that enforces the shipped policy, `terraform plan -destroy -out plan.bin` (reads only) runs as
the agent; `airlock plan submit plan.bin` lists what it destroys; one approval signs one plan
receipt; `terraform apply plan.bin` then completes with zero held calls and moto is empty.

The same airlock then shows what the receipt does not cover: a second use of a covered call,
a call the plan did not have, a receipt past its window, a plan placed in another
environment, and a stored receipt that was edited or forged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from support import (
    Airlock, GatedAirlock, Moto, audit_records, error_code, require_tool, run, scrubbed_env, unique,
)
from test_approvals_web import browser_tools, drive, save_artifact
from test_terraform import terraform_workdir

TF_SETTINGS = {"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
OUT_OF_BAND_OBJECTS = 25


def audit_events(gate: Airlock) -> list[dict[str, Any]]:
    return audit_records(gate.home / "state")


def submit(gate: GatedAirlock, plan: Path, agent: str, env: dict[str, str],
           config: Path | None = None) -> tuple[str, str]:
    """`airlock plan submit PLAN --agent NAME`: the plan id and what it printed."""
    proc = run([str(gate.binary), "plan", "submit", str(plan), "--agent", agent,
                "--config", str(config or gate.config)], env, cwd=plan.parent, timeout=180)
    m = re.search(r"^approve at (http://localhost:\d+/plans/([a-z0-9]+))$", proc.stdout, re.M)
    assert m, proc.stdout + proc.stderr
    return m.group(2), proc.stdout


def config_copy(gate: GatedAirlock, name: str, **approval: int) -> Path:
    """A copy of the gate's config beside it (same state dir) with `[approval]` keys replaced:
    what a `plan approve` may be run with."""
    text = gate.config.read_text()
    for key, value in approval.items():
        text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text)
        assert n == 1, f"no {key} in the config"
    path = gate.config.with_name(name)
    path.write_text(text)
    return path


def approve_plan(gate: GatedAirlock, plan_id: str, config: Path | None = None) -> Path:
    """`airlock plan approve ID --key FILE`: the stored plan receipt."""
    proc = run([str(gate.binary), "plan", "approve", plan_id, "--key", str(gate.key.path),
                "--insecure-plaintext-key", "--config", str(config or gate.config)],
               scrubbed_env(), cwd=gate.home, timeout=60)
    m = re.search(r"^receipt: (\S+)$", proc.stdout, re.M)
    assert m, proc.stdout
    return Path(m.group(1))


def plan_record(gate: GatedAirlock, plan_id: str) -> dict[str, Any]:
    return json.loads(gate.cli("plan", "show", plan_id, "--json").stdout)


def test_destroy_plan_approved_once_runs_with_no_held_call(
        start_moto: Callable[[str], Moto], start_airlock: Callable[..., Airlock],
        start_gated_airlock: Callable[..., GatedAirlock], tmp_path: Path) -> None:
    terraform = require_tool("terraform")
    browser_tools()
    workdir, cli_config = terraform_workdir(tmp_path)
    moto = start_moto("moto-terraform-plan")
    creator = start_airlock("airlock-plan-create", upstream=moto)
    gate = start_gated_airlock("airlock-plan-gate", upstream=moto)
    # Everything in moto's account is "prod" to this airlock.
    gate.stop()
    base_config = gate.config.read_text()
    gate.config.write_text(base_config + f'\n[[environment]]\nname = "prod"\naccounts = ["{ACCOUNT}"]\n')
    gate.start()
    tf_settings = {**TF_SETTINGS, "TF_CLI_CONFIG_FILE": str(cli_config)}
    submit_env = {**scrubbed_env(), **tf_settings}
    create_env = {**creator.add_agent(unique("tf-create")).env, **tf_settings}
    agent = gate.add_agent(unique("tf-agent"))
    env = {**agent.env, **tf_settings}
    name = unique("tfp")
    table = f"{name}-items"

    def tf(*args: str, via: dict[str, str] = env, check: bool = True) -> Any:
        command, *rest = args
        return run([terraform, command, "-input=false", "-no-color", *rest], via, cwd=workdir, timeout=900,
                   check=check)

    def plan(out: str, *targets: str) -> Path:
        tf("plan", "-destroy", "-out", out, f"-var=name={name}", *(f"-target={t}" for t in targets))
        return workdir / out

    def refused(plan_file: Path) -> str:
        """`terraform apply PLAN` fails on airlock's refusal; its stderr."""
        result = tf("apply", plan_file.name, check=False)
        assert result.returncode != 0, result.stdout
        assert "AccessDenied" in result.stderr, result.stderr[-3000:]
        return result.stderr

    def table_exists() -> bool:
        return ddb.describe_table(TableName=table)["Table"]["TableName"] == table

    tf("init", via=create_env)
    tf("apply", "-auto-approve", f"-var=name={name}", via=create_env)
    out = {k: v["value"] for k, v in json.loads(
        run([terraform, "output", "-json"], env, cwd=workdir).stdout).items()}
    ec2, s3, ddb, rds = (moto.client(s) for s in ("ec2", "s3", "dynamodb", "rds"))
    bucket = f"{name}-data"
    for i in range(OUT_OF_BAND_OBJECTS):
        s3.put_object(Bucket=bucket, Key=f"out-of-band/{i:03}.txt", Body=f"object {i}\n".encode())

    # --- what a plan receipt does not cover -----------------------------------------------
    # A plan for staging does not cover prod: submitted where moto's account is "staging".
    staging = gate.config.with_name("staging.toml")
    staging.write_text(base_config + f'\n[[environment]]\nname = "staging"\naccounts = ["{ACCOUNT}"]\n')
    plan_id, printed = submit(gate, plan("staging.bin", "aws_dynamodb_table.items"), agent.name, submit_env,
                              config=staging)
    assert "in environment staging" in printed, printed
    approve_plan(gate, plan_id)
    assert "dynamodb:DeleteTable" in refused(workdir / "staging.bin")
    assert table_exists()

    # An expired plan receipt covers nothing.
    plan_id, _ = submit(gate, plan("expired.bin", "aws_dynamodb_table.items"), agent.name, submit_env)
    approve_plan(gate, plan_id, config=config_copy(gate, "short.toml", receipt_ttl_secs=2))
    time.sleep(3)
    refused(workdir / "expired.bin")
    assert table_exists()
    assert plan_record(gate, plan_id)["status"] == "expired"
    assert [e for e in audit_events(gate) if e["event"] == "plan_expired" and e["plan"] == plan_id]

    # An edited plan receipt is refused: one byte of an entry changed breaks its signature.
    plan_id, _ = submit(gate, plan("edited.bin", "aws_dynamodb_table.items"), agent.name, submit_env)
    receipt = approve_plan(gate, plan_id)
    signed = json.loads(receipt.read_text())
    [entry] = signed["body"]["plan"]["entries"]
    entry["params"]["TableName"] = f"{table}-other"
    receipt.write_text(json.dumps(signed))
    verify = gate.cli("receipt", "verify", str(receipt), check=False)
    assert verify.returncode != 0 and "does not match" in verify.stderr, verify.stderr
    entry["params"]["TableName"] = table
    entry["uses"] = 5
    receipt.write_text(json.dumps(signed))
    refused(workdir / "edited.bin")
    assert table_exists()

    # A forged one too: a body for this plan signed by a key airlock does not trust.
    plan_id, _ = submit(gate, plan("forged.bin", "aws_dynamodb_table.items"), agent.name, submit_env)
    forged = forge(signed["body"], plan_record(gate, plan_id))
    forged_path = gate.home / "state" / "receipts" / f"{forged['body']['id']}.json"
    forged_path.write_text(json.dumps(forged))
    verify = gate.cli("receipt", "verify", str(forged_path), check=False)
    assert verify.returncode != 0 and "not a trusted key" in verify.stderr, verify.stderr
    plans_file = gate.home / "state" / "plans" / f"{plan_id}.json"
    stored = json.loads(plans_file.read_text())
    stored.update(status="approved", receipt_id=forged["body"]["id"], decided_by="alice")
    plans_file.write_text(json.dumps(stored))
    refused(workdir / "forged.bin")
    assert table_exists()

    # An approved plan, then a destroy with one more resource: the approved delete passes,
    # the extra one is held.
    plan_id, _ = submit(gate, plan("one.bin", "aws_dynamodb_table.items"), agent.name, submit_env)
    approve_plan(gate, plan_id)
    stderr = refused(plan("two.bin", "aws_dynamodb_table.items", "aws_db_snapshot.db"))
    assert "rds:DeleteDBSnapshot" in stderr and "needs a human's approval" in stderr, stderr
    assert error_code(ddb.describe_table, TableName=table) == "ResourceNotFoundException"
    assert rds.describe_db_snapshots(DBSnapshotIdentifier=f"{name}-snap")["DBSnapshots"]
    held = [a for a in gate.approvals() if a["action"] == "rds:DeleteDBSnapshot"]
    assert len(held) == 1, gate.approvals()
    assert plan_record(gate, plan_id)["status"] == "spent"

    # --- the incident's destroy, approved once ---------------------------------------------
    plan_file = plan("plan.bin")
    plan_id, printed = submit(gate, plan_file, agent.name, submit_env)
    record = plan_record(gate, plan_id)
    destroyed = {d["address"]: d for d in record["destroyed"]}
    assert set(destroyed) == {
        "aws_vpc.main", "aws_subnet.a", "aws_security_group.db", "aws_s3_bucket.data",
        "aws_s3_object.readme", "aws_db_instance.db", "aws_db_snapshot.db",
    }, printed
    assert all(d["coverage"]["kind"] == "covered" for d in destroyed.values()), printed
    assert any("no final snapshot" in w for w in destroyed["aws_db_instance.db"]["irreversible"]), printed
    assert destroyed["aws_db_snapshot.db"]["irreversible"], printed
    assert any("force_destroy" in w for w in destroyed["aws_s3_bucket.data"]["irreversible"]), printed
    assert "IRREVERSIBLE:" in printed and out["vpc_id"] in printed, printed
    assert re.fullmatch(r"[0-9a-f]{64}", record["digest"]) and record["environments"] == ["prod"], record
    # The same plan as JSON is read alike; without the binary plan's state its digest differs.
    (workdir / "plan.json").write_text(run([terraform, "show", "-json", "plan.bin"], env, cwd=workdir).stdout)
    json_id, json_printed = submit(gate, workdir / "plan.json", agent.name, submit_env)
    as_json = plan_record(gate, json_id)
    assert [d["address"] for d in as_json["destroyed"]] == [d["address"] for d in record["destroyed"]]
    assert as_json["entries"] == record["entries"] and as_json["digest"] != record["digest"]
    warning = ("submitted as JSON: the digest does not bind the state the plan was made against; "
               "submit the binary plan to bind it")
    assert warning in json_printed and warning not in printed, json_printed
    assert as_json["digest_scope"] == "resource_changes" and record["digest_scope"] == "resource_changes+state"
    assert warning in gate.cli("plan", "show", json_id).stdout

    # The human reads the page and touches their passkey once.
    credfile = gate.home / "passkey.json"
    link = re.search(r"http://localhost:\d+/enroll/\S+", gate.cli("approver", "enroll", "alice").stdout)
    assert link, "no enrollment link"
    enrolled = drive({"cmd": "enroll", "link": link.group(0), "credfile": str(credfile)})
    assert enrolled["result"]["kind"] == "ok", enrolled
    page_url = re.search(r"^approve at (\S+)$", printed, re.M).group(1)
    screenshot = gate.home / "plan-page.png"
    page = drive({"cmd": "decide", "credfile": str(credfile), "decision": "approve",
                  "approval_url": page_url, "screenshot": str(screenshot)})
    save_artifact(screenshot)
    text = page["text"]
    assert page["production_banner"], text
    for address, d in destroyed.items():
        assert address in text and d["id"] in text, (address, text)
    head, _, rest = text.partition("What it destroys")
    assert "IRREVERSIBLE" in head and "no final snapshot" in head and "force_destroy" in head, head
    assert record["digest"] in text and "Plan created" in text, text
    assert "resource_changes+state" in text and "does not bind the state" not in text, text
    assert "any (not in the plan)" in rest and "ec2:DeleteVpc" in rest and "rds:DeleteDBInstance" in rest, rest
    assert page["result"]["kind"] == "ok" and "Approved the plan" in page["result"]["text"], page["result"]
    record = plan_record(gate, plan_id)
    assert record["status"] == "approved" and record["decided_by"] == "alice", record
    verified = gate.cli("receipt", "verify", str(gate.home / "state" / "receipts" / f"{record['receipt_id']}.json")).stdout
    assert f"plan {plan_id} digest {record['digest']} (resource_changes+state)" in verified, verified
    assert "ec2:DeleteVpc" in verified and "rds:DeleteDBSnapshot" in verified, verified

    approvals_before = len(gate.approvals(all=True))
    started = time.monotonic()
    tf("apply", "plan.bin")
    took = time.monotonic() - started
    print(f"terraform apply plan.bin through one plan approval: {took:.1f} s")

    # Zero held calls: no approval was opened, nothing was refused for want of one.
    assert len(gate.approvals(all=True)) == approvals_before, gate.approvals(all=True)
    events = audit_events(gate)
    since = max(i for i, e in enumerate(events) if e["event"] == "plan_approved")
    assert not [e for e in events[since:] if e["event"] in ("approval_required", "denied_by_policy")], events[since:]
    used = [e for e in events if e["event"] == "plan_entry_used" and e["plan"] == plan_id]
    assert {e["action"] for e in used} >= {
        "ec2:DeleteVpc", "ec2:DeleteSubnet", "ec2:DeleteSecurityGroup", "rds:DeleteDBInstance",
        "rds:DeleteDBSnapshot", "s3:DeleteBucket", "s3:DeleteObjects", "s3:DeleteObject",
    }, used
    assert all(e["agent"] == agent.name for e in used), used
    timeline = [e for e in events[since:] if e["event"] in ("plan_entry_used", "plan_spent")]
    print("timeline (audit, UTC):", *(f"{e['time']} {e['event']} {e.get('action', '')} {e.get('address', '')}"
                                      for e in timeline), sep="\n  ")
    assert [e["event"] for e in events if e.get("plan") == plan_id][:2] == ["plan_submitted", "plan_approved"]
    assert [e for e in events if e["event"] == "plan_spent" and e["plan"] == plan_id], events
    assert plan_record(gate, plan_id)["status"] == "spent"

    # moto is empty.
    assert error_code(ec2.describe_vpcs, VpcIds=[out["vpc_id"]]) == "InvalidVpcID.NotFound"
    assert error_code(ec2.describe_subnets, SubnetIds=[out["subnet_id"]]) == "InvalidSubnetID.NotFound"
    assert error_code(ec2.describe_security_groups, GroupIds=[out["security_group_id"]]) == "InvalidGroup.NotFound"
    assert error_code(s3.head_bucket, Bucket=bucket) == "404"
    assert error_code(rds.describe_db_instances, DBInstanceIdentifier=f"{name}-db") == "DBInstanceNotFound"
    assert error_code(rds.describe_db_snapshots, DBSnapshotIdentifier=f"{name}-snap") == "DBSnapshotNotFound"
    assert json.loads((workdir / "terraform.tfstate").read_text())["resources"] == []

    # The spent receipt covers no second use: a bucket of the same name, deleted again, is held.
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    assert error_code(agent.client("s3").delete_bucket, Bucket=bucket) == "AccessDenied"
    s3.head_bucket(Bucket=bucket)
    assert gate.cli("audit", "verify", check=False).returncode == 0


ACCOUNT = "123456789012"


def forge(body: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """A plan receipt for `record` signed by a fresh Ed25519 key that airlock does not trust,
    over the body's canonical bytes (sorted keys, no whitespace)."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = hashlib.sha256(public).hexdigest()[:16]
    body = json.loads(json.dumps(body))
    body.update(id=hashlib.sha256(key_id.encode()).hexdigest()[:32], approval_id=record["id"],
                approver_key_id=key_id, webauthn=None)
    body["plan"].update(plan_id=record["id"], digest=record["digest"], entries=record["entries"])
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    signature = base64.b64encode(key.sign(canonical)).decode()
    return {"body": body, "signatures": [{"key_id": key_id, "algorithm": "ed25519", "signature": signature}]}
