"""`terraform destroy` through an enforcing airlock: stopped, then approved call by call.

The stack of terraform/main.tf (VPC, subnet, security group, database and its snapshot, S3
bucket with an object, DynamoDB table) is applied through an airlock that enforces the shipped
policy. `terraform destroy`, the incident's command, then stops at the first destructive calls
with airlock's message and approval link in Terraform's own output, and moto still holds every
resource. A human approves what is pending with `airlock approve ID --key FILE`; Terraform
destroys in waves as dependencies allow, so destroy is run again after each round of approvals
until it completes, and then moto holds nothing.

Creating is not entirely free of approvals: for a security group in a VPC the AWS provider
revokes the default allow-all egress rules right after creating it (RevokeSecurityGroupEgress,
once for IPv4 and once for IPv6),
and the built-in catalogue gates every Revoke*. Refused, that call leaves the group tainted, and
the next apply replaces it (DeleteSecurityGroup, then a new group and a new revoke), so apply
never converges with approvals given between runs. It completes when a human approves the revoke
while airlock holds the call (`[approval] hold_seconds`), which is what happens here; the test
checks that this one call is all that creating needed.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from support import GatedAirlock, Moto, error_code, require_tool, run, unique
from test_terraform import terraform_workdir

MAX_ROUNDS = 8


class Approver:
    """A human watching `airlock approvals` while calls are held, approving only `action`."""

    def __init__(self, gate: GatedAirlock, action: str):
        self.gate, self.action = gate, action
        self.approved: list[dict] = []
        self.left: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.error: BaseException | None = None

    def _watch(self) -> None:
        try:
            while not self._stop.wait(0.3):
                for row in self.gate.approvals():
                    if row["action"] == self.action:
                        self.gate.approve(row["id"])
                        self.approved.append(row)
                    else:
                        self.left[row["id"]] = row
        except BaseException as e:  # noqa: BLE001 (raised in the test's thread)
            self.error = e

    def __enter__(self) -> Approver:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(30)
        if self.error and kind is None:
            raise self.error


def summary(rows: list[dict]) -> list[str]:
    return sorted(f"{row['action']} {','.join(r['value'] for r in row['resources'])}" for row in rows)


def test_destroy_stops_and_completes_after_approvals(start_moto: Callable[[str], Moto],
                                                     start_gated_airlock: Callable[..., GatedAirlock],
                                                     tmp_path: Path) -> None:
    terraform = require_tool("terraform")
    workdir, cli_config = terraform_workdir(tmp_path)
    # A moto of its own (see test_terraform.py: moto gives every RDS instance one DbiResourceId).
    moto = start_moto("moto-terraform-approve")
    # Creating: blocked calls are held while the human decides. Destroying: refused at once.
    creator = start_gated_airlock("airlock-terraform-create", upstream=moto,
                                  settings={("approval", "hold_seconds"): 30})
    gate = start_gated_airlock("airlock-terraform-destroy", upstream=moto)
    tf_settings = {"TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    create_env = {**creator.add_agent(unique("tf-create")).env, **tf_settings}
    agent = gate.add_agent(unique("tf-agent"))
    env = {**agent.env, **tf_settings}
    name = unique("tfa")

    def tf(*args: str, check: bool = True, via: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return run([terraform, *args, "-input=false", "-no-color"], via, cwd=workdir, timeout=900, check=check)

    tf("init", via=create_env)
    with Approver(creator, "ec2:RevokeSecurityGroupEgress") as human:
        tf("apply", "-auto-approve", f"-var=name={name}", via=create_env)
    out = {k: v["value"] for k, v in json.loads(
        run([terraform, "output", "-json"], env, cwd=workdir).stdout).items()}
    # The default egress rules (IPv4 and IPv6) of the new group, nothing else.
    assert human.approved and set(summary(human.approved)) == {
        f"ec2:RevokeSecurityGroupEgress {out['security_group_id']}"}, (
        f"creating the stack needed other approvals than revoking default egress: {summary(human.approved)}")
    assert not human.left, f"creating the stack waited for: {summary(list(human.left.values()))}"

    ec2, s3, ddb, rds = (moto.client(s) for s in ("ec2", "s3", "dynamodb", "rds"))

    def stack_is_in_moto() -> None:
        [vpc] = ec2.describe_vpcs(VpcIds=[out["vpc_id"]])["Vpcs"]
        assert {"Key": "Name", "Value": name} in vpc["Tags"]
        [subnet] = ec2.describe_subnets(SubnetIds=[out["subnet_id"]])["Subnets"]
        assert subnet["VpcId"] == out["vpc_id"]
        [group] = ec2.describe_security_groups(GroupIds=[out["security_group_id"]])["SecurityGroups"]
        assert [(p["FromPort"], p["ToPort"]) for p in group["IpPermissions"]] == [(5432, 5432)]
        body = s3.get_object(Bucket=f"{name}-data", Key="docs/read me.txt")["Body"].read()
        assert body == b"written by terraform through airlock\n"
        assert ddb.describe_table(TableName=f"{name}-items")["Table"]["TableStatus"] == "ACTIVE"
        [db] = rds.describe_db_instances(DBInstanceIdentifier=f"{name}-db")["DBInstances"]
        assert db["DBInstanceStatus"] == "available"
        [snapshot] = rds.describe_db_snapshots(DBSnapshotIdentifier=f"{name}-snap")["DBSnapshots"]
        assert snapshot["DBInstanceIdentifier"] == f"{name}-db"

    def stack_is_gone() -> None:
        assert error_code(ec2.describe_vpcs, VpcIds=[out["vpc_id"]]) == "InvalidVpcID.NotFound"
        assert error_code(ec2.describe_subnets, SubnetIds=[out["subnet_id"]]) == "InvalidSubnetID.NotFound"
        assert error_code(ec2.describe_security_groups, GroupIds=[out["security_group_id"]]) == "InvalidGroup.NotFound"
        assert error_code(s3.head_bucket, Bucket=f"{name}-data") == "404"
        assert error_code(ddb.describe_table, TableName=f"{name}-items") == "ResourceNotFoundException"
        assert error_code(rds.describe_db_instances, DBInstanceIdentifier=f"{name}-db") == "DBInstanceNotFound"
        assert error_code(rds.describe_db_snapshots, DBSnapshotIdentifier=f"{name}-snap") == "DBSnapshotNotFound"
        assert json.loads((workdir / "terraform.tfstate").read_text())["resources"] == []

    stack_is_in_moto()

    # The incident's command: it destroys nothing and says where to approve.
    before = moto.request_count()
    result = tf("destroy", "-auto-approve", f"-var=name={name}", check=False)
    assert result.returncode != 0, f"terraform destroy went through an enforcing airlock:\n{result.stdout}"
    assert "AccessDenied" in result.stderr and "needs a human's approval" in result.stderr, result.stderr
    links = set(re.findall(r"http://localhost:\d+/approvals/[a-z0-9]+", result.stderr))
    assert links, result.stderr
    for link in links:
        gate.approval_link(link)
    pending = gate.approvals()
    assert {row["link"] for row in pending} == links, (links, pending)
    assert all(row["agent"] == agent.name for row in pending), pending
    assert moto.request_count() > before, "terraform did not even refresh its state"
    stack_is_in_moto()

    # A human approves what is pending; Terraform goes on as far as dependencies allow.
    rounds: list[list[str]] = []
    while result.returncode != 0:
        pending = gate.approvals()
        assert pending, f"terraform destroy failed with nothing pending:\n{result.stderr[-4000:]}"
        assert len(rounds) < MAX_ROUNDS, f"destroy did not complete in {MAX_ROUNDS} rounds: {rounds}"
        rounds.append(summary(pending))
        for row in pending:
            gate.approve(row["id"])
        result = tf("destroy", "-auto-approve", f"-var=name={name}", check=False)
        if result.returncode != 0:
            assert "AccessDenied" in result.stderr, result.stderr[-4000:]
    print("approval rounds:", json.dumps(rounds, indent=1))
    stack_is_gone()
    assert gate.approvals() == []
    approved = [row for row in gate.approvals(all=True)]
    assert all(row["status"] == "closed" for row in approved), (
        f"approved calls that destroy never made: {[r for r in approved if r['status'] != 'closed']}")
    for server in (creator, gate):
        proc = server.cli("audit", "verify", check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
