"""Terraform applies and destroys a small stack through airlock with only an agent's credentials.

The stack (terraform/main.tf) holds what the 2026-02-26 incident lost: a VPC, security group,
database and snapshot, plus an S3 bucket with an object and a DynamoDB table. Terraform's AWS
provider (Go SDK v2) signs differently from botocore (it signs content-length and amz-sdk-*
headers) and sends calls in parallel.

Between apply and destroy, the same `terraform destroy` goes through an airlock that enforces
the shipped policy: it must destroy nothing and point at the approval page.

Set AIRLOCK_E2E_TF_DIRECT=1 to also run the stack straight against moto with the real
credentials: when the airlock run fails and the direct one passes, the failure is airlock's.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from support import (
    REGION, TERRAFORM_DIR, Airlock, Moto, error_code, require_tool, run, scrubbed_env, unique,
)

PLUGIN_MIRROR = Path(os.environ.get("AIRLOCK_E2E_TF_MIRROR", "/opt/tf-plugins"))
ROUTES = ["airlock"] + (["moto-direct"] if os.environ.get("AIRLOCK_E2E_TF_DIRECT") else [])


def terraform_workdir(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the stack, and a CLI config that installs the provider from the local mirror."""
    if not (PLUGIN_MIRROR / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        message = f"no Terraform provider mirror at {PLUGIN_MIRROR} (set AIRLOCK_E2E_TF_MIRROR)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    workdir = tmp_path / "stack"
    workdir.mkdir()
    shutil.copy(TERRAFORM_DIR / "main.tf", workdir / "main.tf")
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text(
        "provider_installation {\n"
        f"  filesystem_mirror {{\n    path = {json.dumps(str(PLUGIN_MIRROR))}\n  }}\n"
        "}\n")
    return workdir, cli_config


@pytest.mark.parametrize("route", ROUTES)
def test_stack_applies_and_destroys(route: str, start_moto: Callable[[str], Moto],
                                    start_airlock: Callable[..., Airlock], tmp_path: Path) -> None:
    terraform = require_tool("terraform")
    workdir, cli_config = terraform_workdir(tmp_path)
    # A moto of its own: moto 5.2.1 gives every RDS instance the same DbiResourceId, and the
    # provider finds an instance by that id, so no other test's database may be there.
    moto = start_moto(f"moto-terraform-{route}")
    if route == "airlock":
        env = dict(start_airlock("airlock-terraform", upstream=moto).add_agent(unique("tf-agent")).env)
    else:
        env = scrubbed_env()
        env.update(AWS_ACCESS_KEY_ID=moto.access_key_id, AWS_SECRET_ACCESS_KEY=moto.secret_access_key,
                   AWS_ENDPOINT_URL=moto.url, AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION)
    tf_settings = {"TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    env.update(tf_settings)
    name = unique("tf")

    def tf(*args: str) -> str:
        return run([terraform, *args, "-no-color"], env, cwd=workdir, timeout=900).stdout

    tf("init", "-input=false")
    tf("apply", "-input=false", "-auto-approve", f"-var=name={name}")
    out = {k: v["value"] for k, v in json.loads(tf("output", "-json")).items()}

    ec2, s3, ddb, rds = (moto.client(s) for s in ("ec2", "s3", "dynamodb", "rds"))

    def stack_is_in_moto() -> None:
        [vpc] = ec2.describe_vpcs(VpcIds=[out["vpc_id"]])["Vpcs"]
        assert vpc["CidrBlock"] == "10.42.0.0/16"
        assert {"Key": "Name", "Value": name} in vpc["Tags"]
        [subnet] = ec2.describe_subnets(SubnetIds=[out["subnet_id"]])["Subnets"]
        assert (subnet["VpcId"], subnet["CidrBlock"]) == (out["vpc_id"], "10.42.1.0/24")
        [group] = ec2.describe_security_groups(GroupIds=[out["security_group_id"]])["SecurityGroups"]
        assert group["VpcId"] == out["vpc_id"]
        assert [(p["FromPort"], p["ToPort"]) for p in group["IpPermissions"]] == [(5432, 5432)]
        body = s3.get_object(Bucket=f"{name}-data", Key="docs/read me.txt")["Body"].read()
        assert body == b"written by terraform through airlock\n"
        table = ddb.describe_table(TableName=f"{name}-items")["Table"]
        assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
        [db] = rds.describe_db_instances(DBInstanceIdentifier=f"{name}-db")["DBInstances"]
        assert db["Engine"] == "postgres"
        assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [out["security_group_id"]]
        [snapshot] = rds.describe_db_snapshots(DBSnapshotIdentifier=f"{name}-snap")["DBSnapshots"]
        assert snapshot["DBInstanceIdentifier"] == f"{name}-db"

    def destroy_and_check_gone() -> None:
        tf("destroy", "-input=false", "-auto-approve", f"-var=name={name}")
        assert error_code(ec2.describe_vpcs, VpcIds=[out["vpc_id"]]) == "InvalidVpcID.NotFound"
        assert error_code(ec2.describe_subnets, SubnetIds=[out["subnet_id"]]) == "InvalidSubnetID.NotFound"
        assert error_code(ec2.describe_security_groups,
                          GroupIds=[out["security_group_id"]]) == "InvalidGroup.NotFound"
        assert error_code(s3.head_bucket, Bucket=f"{name}-data") == "404"
        assert error_code(ddb.describe_table, TableName=f"{name}-items") == "ResourceNotFoundException"
        assert error_code(rds.describe_db_instances, DBInstanceIdentifier=f"{name}-db") == "DBInstanceNotFound"
        assert error_code(rds.describe_db_snapshots,
                          DBSnapshotIdentifier=f"{name}-snap") == "DBSnapshotNotFound"
        state = json.loads((workdir / "terraform.tfstate").read_text())
        assert state["resources"] == []

    stack_is_in_moto()
    if route != "airlock":
        destroy_and_check_gone()
        return
    try:
        # The incident: `terraform destroy` run by an agent. Through an airlock that enforces the
        # shipped policy it destroys nothing and tells where to approve.
        enforcing = start_airlock("airlock-terraform-enforce", policy_mode="enforce", upstream=moto)
        held_env = {**enforcing.add_agent(unique("tf-agent")).env, **tf_settings}
        held = run([terraform, "destroy", "-input=false", "-auto-approve", f"-var=name={name}", "-no-color"],
                   held_env, cwd=workdir, timeout=900, check=False)
        assert held.returncode != 0, f"terraform destroy went through an enforcing airlock:\n{held.stdout}"
        assert "AccessDenied" in held.stderr, held.stderr
        enforcing.approval_link(held.stderr)
        stack_is_in_moto()
    finally:
        destroy_and_check_gone()
