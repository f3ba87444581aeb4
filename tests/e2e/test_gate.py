"""With the shipped policy enforced, destructive calls stop at airlock: never at moto.

The agent gets `AccessDenied` with the approval link (an agent reads it and passes it on; opening
it approves nothing), the resource is still there, and moto saw no request at all. Reads of the
same resources still pass, so the gate is about the operation, not the agent.

Runs on the store `state_store` names (in each test's id): the files, or under
scripts/with-postgres a PostgreSQL database of the airlock's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from support import REGION, Agent, Airlock, Moto, unique

# Every test here on the store of this run, named in its id.
pytestmark = pytest.mark.usefixtures("state_store")

NO_RETRIES = Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})


def test_cli_delete_db_instance_is_held(enforcing_airlock: Airlock, enforced_agent: Agent, moto: Moto) -> None:
    rds = moto.client("rds")
    db = unique("held-db")
    rds.create_db_instance(DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=20, MasterUsername="airlock",
                           MasterUserPassword="not-a-real-password-1")
    described = enforced_agent.aws("rds", "describe-db-instances", "--db-instance-identifier", db)
    assert [i["DBInstanceIdentifier"] for i in described["DBInstances"]] == [db]

    before = moto.request_count()
    # Exactly the call that lost the database and its backups in the incident.
    proc = enforced_agent.aws_run("rds", "delete-db-instance", "--db-instance-identifier", db,
                                  "--skip-final-snapshot", "--delete-automated-backups")
    assert proc.returncode != 0, proc.stdout
    assert "AccessDenied" in proc.stderr, proc.stderr
    enforcing_airlock.approval_link(proc.stderr)
    assert moto.request_count() == before, "a gated call reached moto"
    [instance] = rds.describe_db_instances(DBInstanceIdentifier=db)["DBInstances"]
    assert instance["DBInstanceStatus"] == "available"


def _s3_bucket(moto: Moto) -> tuple[str, dict[str, Any]]:
    bucket = unique("held-bucket")
    moto.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    return "s3", {"op": "delete_bucket", "args": {"Bucket": bucket},
                  "still_there": lambda: moto.client("s3").head_bucket(Bucket=bucket)}


def _ec2_instance(moto: Moto) -> tuple[str, dict[str, Any]]:
    ec2 = moto.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    [instance] = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"]
    iid = instance["InstanceId"]

    def still_there() -> None:
        [seen] = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"]
        assert seen["State"]["Name"] in ("pending", "running"), seen["State"]

    return "ec2", {"op": "terminate_instances", "args": {"InstanceIds": [iid]}, "still_there": still_there}


def _dynamodb_table(moto: Moto) -> tuple[str, dict[str, Any]]:
    ddb = moto.client("dynamodb")
    table = unique("held-table")
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    return "dynamodb", {"op": "delete_table", "args": {"TableName": table},
                        "still_there": lambda: ddb.describe_table(TableName=table)}


TARGETS: dict[str, Callable[[Moto], tuple[str, dict[str, Any]]]] = {
    "s3-delete-bucket": _s3_bucket,
    "ec2-terminate-instances": _ec2_instance,
    "dynamodb-delete-table": _dynamodb_table,
}


@pytest.mark.parametrize("target", TARGETS)
def test_boto3_destructive_calls_are_held(target: str, enforcing_airlock: Airlock, enforced_agent: Agent,
                                          moto: Moto) -> None:
    service, call = TARGETS[target](moto)
    client = enforced_agent.client(service, config=NO_RETRIES)
    before = moto.request_count()
    with pytest.raises(ClientError) as err:
        getattr(client, call["op"])(**call["args"])
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # JSON-protocol services spell it AccessDeniedException.
    assert err.value.response["Error"]["Code"] in ("AccessDenied", "AccessDeniedException"), err.value.response
    enforcing_airlock.approval_link(err.value.response["Error"].get("Message", ""))
    assert moto.request_count() == before, "a gated call reached moto"
    call["still_there"]()
