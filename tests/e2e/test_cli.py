"""The AWS CLI (v1), holding only an agent's proxy-only credentials, works through airlock.

Every step is checked where a user would look: in moto's state, read directly with the real
credentials, or by comparing downloaded bytes with the original.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from support import (
    ODD_KEYS, REGION, Agent, Airlock, DataFile, Moto, create_lambda_function, error_code,
    require_tool, run, scrubbed_env, sha256_file, unique,
)


def test_agent_add_export_lines_work_in_a_shell(airlock: Airlock, moto: Moto) -> None:
    out = airlock.cli("agent", "add", unique("shell-agent")).stdout
    exported = [line.split("=", 1)[0].removeprefix("export ") for line in out.splitlines()
                if line.startswith("export ")]
    assert sorted(exported) == ["AWS_ACCESS_KEY_ID", "AWS_CA_BUNDLE", "AWS_ENDPOINT_URL",
                                "AWS_SECRET_ACCESS_KEY"], out
    # What a user does: eval the lines (only the port differs: the config asked for port 0).
    script = (f"{out}\nexport AWS_ENDPOINT_URL={shlex.quote(airlock.proxy_url)}\n"
              "exec aws sts get-caller-identity --output json\n")
    env = scrubbed_env()
    env["AWS_DEFAULT_REGION"] = REGION
    require_tool("aws")
    identity = json.loads(run(["bash", "-c", script], env).stdout)
    assert identity["Arn"] == moto.user_arn


def test_caller_identity_is_the_real_user(agent: Agent, moto: Moto) -> None:
    identity = agent.aws("sts", "get-caller-identity")
    real = moto.client("sts").get_caller_identity()
    assert (identity["Arn"], identity["UserId"], identity["Account"]) == (
        real["Arn"], real["UserId"], real["Account"])
    assert agent.access_key_id not in json.dumps(identity)


def test_rds_instance_and_snapshot_lifecycle(agent: Agent, moto: Moto) -> None:
    rds = moto.client("rds")
    db, snap = unique("cli-db"), unique("cli-snap")

    created = agent.aws(
        "rds", "create-db-instance", "--db-instance-identifier", db, "--engine", "postgres",
        "--db-instance-class", "db.t3.micro", "--allocated-storage", "20",
        "--master-username", "airlock", "--master-user-password", "not-a-real-password-1")
    assert created["DBInstance"]["DBInstanceIdentifier"] == db
    [instance] = rds.describe_db_instances(DBInstanceIdentifier=db)["DBInstances"]
    assert (instance["Engine"], instance["DBInstanceClass"]) == ("postgres", "db.t3.micro")

    described = agent.aws("rds", "describe-db-instances", "--db-instance-identifier", db)
    assert [i["DBInstanceIdentifier"] for i in described["DBInstances"]] == [db]

    agent.aws("rds", "create-db-snapshot", "--db-instance-identifier", db,
              "--db-snapshot-identifier", snap)
    [snapshot] = rds.describe_db_snapshots(DBSnapshotIdentifier=snap)["DBSnapshots"]
    assert snapshot["DBInstanceIdentifier"] == db

    agent.aws("rds", "delete-db-snapshot", "--db-snapshot-identifier", snap)
    assert error_code(rds.describe_db_snapshots, DBSnapshotIdentifier=snap) == "DBSnapshotNotFound"

    agent.aws("rds", "delete-db-instance", "--db-instance-identifier", db,
              "--skip-final-snapshot", "--delete-automated-backups")
    assert error_code(rds.describe_db_instances, DBInstanceIdentifier=db) == "DBInstanceNotFound"


def test_ec2_instance_lifecycle(agent: Agent, moto: Moto) -> None:
    ec2 = moto.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    name = unique("cli-instance")

    ran = agent.aws("ec2", "run-instances", "--image-id", image, "--instance-type", "t3.micro",
                    "--count", "1", "--tag-specifications",
                    f"ResourceType=instance,Tags=[{{Key=Name,Value={name}}}]")
    [instance_id] = [i["InstanceId"] for i in ran["Instances"]]
    [seen] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert seen["ImageId"] == image
    assert {"Key": "Name", "Value": name} in seen["Tags"]
    assert seen["State"]["Name"] in ("pending", "running")

    described = agent.aws("ec2", "describe-instances", "--instance-ids", instance_id)
    assert [i["InstanceId"] for r in described["Reservations"] for i in r["Instances"]] == [instance_id]

    agent.aws("ec2", "terminate-instances", "--instance-ids", instance_id)
    [gone] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"]
    assert gone["State"]["Name"] == "terminated"


def test_ec2_vpc_lifecycle(agent: Agent, moto: Moto) -> None:
    ec2 = moto.client("ec2")
    vpc_id = agent.aws("ec2", "create-vpc", "--cidr-block", "10.91.0.0/16")["Vpc"]["VpcId"]
    [vpc] = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    assert vpc["CidrBlock"] == "10.91.0.0/16"

    agent.aws("ec2", "delete-vpc", "--vpc-id", vpc_id)
    assert error_code(ec2.describe_vpcs, VpcIds=[vpc_id]) == "InvalidVpcID.NotFound"


def test_dynamodb_table_and_items(agent: Agent, moto: Moto) -> None:
    ddb = moto.client("dynamodb")
    table = unique("cli-table")
    agent.aws("dynamodb", "create-table", "--table-name", table,
              "--attribute-definitions", "AttributeName=pk,AttributeType=S",
              "--key-schema", "AttributeName=pk,KeyType=HASH", "--billing-mode", "PAY_PER_REQUEST")
    assert ddb.describe_table(TableName=table)["Table"]["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"}]

    item = {"pk": {"S": "agent item / with spaces"}, "count": {"N": "42"}, "tags": {"SS": ["a", "b"]}}
    agent.aws("dynamodb", "put-item", "--table-name", table, "--item", json.dumps(item))
    key = json.dumps({"pk": item["pk"]})
    got = agent.aws("dynamodb", "get-item", "--table-name", table, "--key", key, "--consistent-read")
    assert got["Item"]["count"] == {"N": "42"}
    assert sorted(got["Item"]["tags"]["SS"]) == ["a", "b"]
    assert ddb.get_item(TableName=table, Key={"pk": item["pk"]})["Item"]["count"] == {"N": "42"}

    agent.aws("dynamodb", "delete-table", "--table-name", table)
    assert table not in ddb.list_tables()["TableNames"]


def test_lambda_list_functions(agent: Agent, moto: Moto) -> None:
    # A rest-json GET without a body (moto needs x-amz-content-sha256 on it: airlock re-signs).
    name = unique("cli-fn")
    create_lambda_function(moto, name)
    listed = agent.aws("lambda", "list-functions")
    assert name in [f["FunctionName"] for f in listed["Functions"]]


def test_s3_small_objects_listing_presign_and_cleanup(agent: Agent, moto: Moto, tmp_path: Path) -> None:
    s3 = moto.client("s3")
    bucket = unique("cli-small")
    agent.aws_text("s3", "mb", f"s3://{bucket}")
    s3.head_bucket(Bucket=bucket)

    contents = {}
    for i, key in enumerate(ODD_KEYS):
        local = tmp_path / f"file {i}.txt"
        local.write_bytes(f"object {i} written by the AWS CLI through airlock\n".encode() * 50)
        contents[key] = local.read_bytes()
        agent.aws_text("s3", "cp", str(local), f"s3://{bucket}/{key}")
    for key, data in contents.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data, key

    listing = agent.aws_text("s3", "ls", f"s3://{bucket}", "--recursive")
    assert sorted(line.split(None, 3)[3] for line in listing.splitlines()) == sorted(ODD_KEYS)

    for i, (key, data) in enumerate(contents.items()):
        back = tmp_path / f"back {i}.txt"
        agent.aws_text("s3", "cp", f"s3://{bucket}/{key}", str(back))
        assert back.read_bytes() == data, key

    # `aws s3 presign` signs with SigV2 unless told otherwise; ask for SigV4 the documented way.
    config = tmp_path / "aws-config"
    config.write_text("[default]\ns3 =\n    signature_version = s3v4\n")
    key = ODD_KEYS[0]
    url = agent.aws_text("s3", "presign", f"s3://{bucket}/{key}", "--expires-in", "300",
                         extra_env={"AWS_CONFIG_FILE": str(config)}).strip()
    assert url.startswith(agent.endpoint + "/") and "X-Amz-Signature=" in url, url
    downloaded = tmp_path / "presigned.txt"
    curl = require_tool("curl")
    # curl alone: no AWS credentials, only the URL and airlock's CA.
    run([curl, "--fail", "--silent", "--show-error", "--cacert", agent.ca_bundle,
         "-o", str(downloaded), url], scrubbed_env())
    assert downloaded.read_bytes() == contents[key]

    agent.aws_text("s3", "rm", f"s3://{bucket}", "--recursive")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    agent.aws_text("s3", "rb", f"s3://{bucket}")
    assert error_code(s3.head_bucket, Bucket=bucket) == "404"


def test_s3_multipart_upload_and_download_of_100_mib(agent: Agent, moto: Moto, big_file: DataFile,
                                                    tmp_path: Path) -> None:
    s3 = moto.client("s3")
    bucket = unique("cli-big")
    key = "big files/blob one.bin"
    agent.aws_text("s3", "mb", f"s3://{bucket}")

    agent.aws_text("s3", "cp", str(big_file.path), f"s3://{bucket}/{key}")
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == big_file.size
    assert "-" in head["ETag"], f"expected a multipart upload, got ETag {head['ETag']}"

    back = tmp_path / "back.bin"
    agent.aws_text("s3", "cp", f"s3://{bucket}/{key}", str(back))
    assert sha256_file(back) == big_file.sha256

    agent.aws_text("s3", "rb", f"s3://{bucket}", "--force")
    assert error_code(s3.head_bucket, Bucket=bucket) == "404"
