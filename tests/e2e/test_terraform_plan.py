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
import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from support import (
    REGION, TERRAFORM_DIR, Airlock, GatedAirlock, Moto, error_code, require_tool, run, scrubbed_env,
    set_toml_value, unique,
)
from test_terraform import terraform_workdir

TF_SETTINGS = {"TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
OUT_OF_BAND_OBJECTS = 25


def audit_events(gate: Airlock) -> list[dict[str, Any]]:
    lines = (gate.home / "state" / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def submit(gate: GatedAirlock, plan: Path, agent: str, env: dict[str, str],
           config: Path | None = None) -> tuple[str, str]:
    """`airlock plan submit PLAN --agent NAME`: the plan id and what it printed."""
    proc = run([str(gate.binary), "plan", "submit", str(plan), "--agent", agent,
                "--config", str(config or gate.config)], env, cwd=plan.parent, timeout=180)
    m = re.search(r"^approve at (http://localhost:\d+/plans/([a-z0-9]+))$", proc.stdout, re.M)
    assert m, proc.stdout + proc.stderr
    return m.group(2), proc.stdout


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
    workdir, cli_config = terraform_workdir(tmp_path)
    moto = start_moto("moto-terraform-plan")
    creator = start_airlock("airlock-plan-create", upstream=moto)
    gate = start_gated_airlock("airlock-plan-gate", upstream=moto)
    tf_settings = {**TF_SETTINGS, "TF_CLI_CONFIG_FILE": str(cli_config)}
    create_env = {**creator.add_agent(unique("tf-create")).env, **tf_settings}
    agent = gate.add_agent(unique("tf-agent"))
    env = {**agent.env, **tf_settings}
    name = unique("tfp")

    def tf(*args: str, via: dict[str, str] = env, check: bool = True) -> Any:
        command, *rest = args
        return run([terraform, command, "-input=false", "-no-color", *rest], via, cwd=workdir, timeout=900,
                   check=check)

    tf("init", via=create_env)
    tf("apply", "-auto-approve", f"-var=name={name}", via=create_env)
    out = {k: v["value"] for k, v in json.loads(
        run([terraform, "output", "-json"], env, cwd=workdir).stdout).items()}
    ec2, s3, ddb, rds = (moto.client(s) for s in ("ec2", "s3", "dynamodb", "rds"))
    bucket = f"{name}-data"
    for i in range(OUT_OF_BAND_OBJECTS):
        s3.put_object(Bucket=bucket, Key=f"out-of-band/{i:03}.txt", Body=f"object {i}\n".encode())

    # Planning destroys nothing: reads only, all allowed.
    tf("plan", "-destroy", "-out", "plan.bin", f"-var=name={name}")
    plan_id, printed = submit(gate, workdir / "plan.bin", agent.name, {**scrubbed_env(), **tf_settings})
    record = plan_record(gate, plan_id)
    destroyed = {d["address"]: d for d in record["destroyed"]}
    assert set(destroyed) == {
        "aws_vpc.main", "aws_subnet.a", "aws_security_group.db", "aws_s3_bucket.data",
        "aws_s3_object.readme", "aws_dynamodb_table.items", "aws_db_instance.db", "aws_db_snapshot.db",
    }, printed
    assert all(d["coverage"]["kind"] == "covered" for d in destroyed.values()), printed
    assert any("no final snapshot" in w for w in destroyed["aws_db_instance.db"]["irreversible"]), printed
    assert destroyed["aws_db_snapshot.db"]["irreversible"], printed
    assert any("force_destroy" in w for w in destroyed["aws_s3_bucket.data"]["irreversible"]), printed
    assert "IRREVERSIBLE:" in printed and out["vpc_id"] in printed, printed
    assert re.fullmatch(r"[0-9a-f]{64}", record["digest"]), record
    assert record["status"] == "pending"

    receipt = approve_plan(gate, plan_id)
    verified = gate.cli("receipt", "verify", str(receipt)).stdout
    assert f"plan {plan_id} digest {record['digest']}" in verified, verified
    assert "ec2:DeleteVpc" in verified and "rds:DeleteDBSnapshot" in verified, verified

    started = time.monotonic()
    tf("apply", "plan.bin")
    took = time.monotonic() - started
    print(f"terraform apply plan.bin through one plan approval: {took:.1f} s")

    # Zero held calls: no approval was ever opened, and nothing was refused for want of one.
    assert gate.approvals(all=True) == [], gate.approvals(all=True)
    events = audit_events(gate)
    assert not [e for e in events if e["event"] in ("approval_required", "denied_by_policy")], events
    used = [e for e in events if e["event"] == "plan_entry_used"]
    assert {e["action"] for e in used} >= {
        "ec2:DeleteVpc", "ec2:DeleteSubnet", "ec2:DeleteSecurityGroup", "rds:DeleteDBInstance",
        "rds:DeleteDBSnapshot", "s3:DeleteBucket", "s3:DeleteObjects", "dynamodb:DeleteTable",
    }, used
    assert all(e["plan"] == plan_id and e["agent"] == agent.name for e in used), used
    assert [e["event"] for e in events if e.get("plan") == plan_id][:2] == ["plan_submitted", "plan_approved"]
    assert [e for e in events if e["event"] == "plan_spent" and e["plan"] == plan_id], events
    assert plan_record(gate, plan_id)["status"] == "spent"

    # moto is empty.
    assert error_code(ec2.describe_vpcs, VpcIds=[out["vpc_id"]]) == "InvalidVpcID.NotFound"
    assert error_code(ec2.describe_subnets, SubnetIds=[out["subnet_id"]]) == "InvalidSubnetID.NotFound"
    assert error_code(ec2.describe_security_groups, GroupIds=[out["security_group_id"]]) == "InvalidGroup.NotFound"
    assert error_code(s3.head_bucket, Bucket=bucket) == "404"
    assert error_code(ddb.describe_table, TableName=f"{name}-items") == "ResourceNotFoundException"
    assert error_code(rds.describe_db_instances, DBInstanceIdentifier=f"{name}-db") == "DBInstanceNotFound"
    assert error_code(rds.describe_db_snapshots, DBSnapshotIdentifier=f"{name}-snap") == "DBSnapshotNotFound"
    assert json.loads((workdir / "terraform.tfstate").read_text())["resources"] == []

    # The spent receipt covers no second use: a table of the same name, deleted again, is held.
    ddb.create_table(TableName=f"{name}-items", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    assert error_code(agent.client("dynamodb").delete_table, TableName=f"{name}-items") == "AccessDenied"
    assert ddb.describe_table(TableName=f"{name}-items")["Table"]["TableName"] == f"{name}-items"
    assert gate.cli("audit", "verify", check=False).returncode == 0
