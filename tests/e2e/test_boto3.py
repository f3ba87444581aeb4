"""boto3, holding only an agent's proxy-only credentials, works through airlock.

The same service families as the CLI tests, with the SDK's own code paths: put_object and
get_object bytes, upload_file/download_file for multipart, and a SigV4 presigned GET.
"""

from __future__ import annotations

from pathlib import Path

import requests
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from support import (
    MIB, ODD_KEYS, REGION, Agent, DataFile, Moto, create_lambda_function, error_code,
    multipart_etag, sha256_file, unique,
)


def test_caller_identity_is_the_real_user(agent: Agent, moto: Moto) -> None:
    identity = agent.client("sts").get_caller_identity()
    real = moto.client("sts").get_caller_identity()
    assert (identity["Arn"], identity["UserId"], identity["Account"]) == (
        real["Arn"], real["UserId"], real["Account"])


def test_rds_instance_and_snapshot_lifecycle(agent: Agent, moto: Moto) -> None:
    rds, direct = agent.client("rds"), moto.client("rds")
    db, snap = unique("sdk-db"), unique("sdk-snap")

    rds.create_db_instance(DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=20, MasterUsername="airlock",
                           MasterUserPassword="not-a-real-password-1",
                           Tags=[{"Key": "owner", "Value": "agent"}])
    [instance] = direct.describe_db_instances(DBInstanceIdentifier=db)["DBInstances"]
    assert instance["Engine"] == "postgres"
    assert {"Key": "owner", "Value": "agent"} in instance["TagList"]
    assert [i["DBInstanceIdentifier"] for i in
            rds.describe_db_instances(DBInstanceIdentifier=db)["DBInstances"]] == [db]

    rds.create_db_snapshot(DBInstanceIdentifier=db, DBSnapshotIdentifier=snap)
    [snapshot] = direct.describe_db_snapshots(DBSnapshotIdentifier=snap)["DBSnapshots"]
    assert snapshot["DBInstanceIdentifier"] == db

    rds.delete_db_snapshot(DBSnapshotIdentifier=snap)
    assert error_code(direct.describe_db_snapshots, DBSnapshotIdentifier=snap) == "DBSnapshotNotFound"

    rds.delete_db_instance(DBInstanceIdentifier=db, SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
    assert error_code(direct.describe_db_instances, DBInstanceIdentifier=db) == "DBInstanceNotFound"


def test_ec2_instance_and_vpc_lifecycle(agent: Agent, moto: Moto) -> None:
    ec2, direct = agent.client("ec2"), moto.client("ec2")
    image = direct.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    ran = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=2, MaxCount=2)
    ids = sorted(i["InstanceId"] for i in ran["Instances"])
    seen = direct.describe_instances(InstanceIds=ids)["Reservations"][0]["Instances"]
    assert sorted(i["InstanceId"] for i in seen) == ids
    listed = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    assert sorted(i["InstanceId"] for r in listed for i in r["Instances"]) == ids

    ec2.terminate_instances(InstanceIds=ids)
    states = {i["State"]["Name"] for r in direct.describe_instances(InstanceIds=ids)["Reservations"]
              for i in r["Instances"]}
    assert states == {"terminated"}

    vpc_id = ec2.create_vpc(CidrBlock="10.92.0.0/16")["Vpc"]["VpcId"]
    assert direct.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"] == "10.92.0.0/16"
    ec2.delete_vpc(VpcId=vpc_id)
    assert error_code(direct.describe_vpcs, VpcIds=[vpc_id]) == "InvalidVpcID.NotFound"


def test_dynamodb_table_and_items(agent: Agent, moto: Moto) -> None:
    ddb, direct = agent.client("dynamodb"), moto.client("dynamodb")
    table = unique("sdk-table")
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    assert direct.describe_table(TableName=table)["Table"]["TableName"] == table

    blob = bytes(range(256))
    item = {"pk": {"S": "ünïcödé key"}, "blob": {"B": blob}, "n": {"N": "-1.5"}}
    ddb.put_item(TableName=table, Item=item)
    got = ddb.get_item(TableName=table, Key={"pk": item["pk"]}, ConsistentRead=True)["Item"]
    assert got == item
    assert direct.get_item(TableName=table, Key={"pk": item["pk"]})["Item"]["blob"] == {"B": blob}

    ddb.delete_table(TableName=table)
    assert table not in direct.list_tables()["TableNames"]


def test_lambda_list_functions(agent: Agent, moto: Moto) -> None:
    name = unique("sdk-fn")
    create_lambda_function(moto, name)
    assert name in [f["FunctionName"] for f in agent.client("lambda").list_functions()["Functions"]]


def test_s3_objects_and_presigned_get(agent: Agent, moto: Moto) -> None:
    s3, direct = agent.client("s3"), moto.client("s3")
    bucket = unique("sdk-small")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    direct.head_bucket(Bucket=bucket)

    bodies = {key: f"{key} :: put by boto3 through airlock\n".encode() * 64 for key in ODD_KEYS}
    bodies["empty.txt"] = b""
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/plain",
                      Metadata={"origin": "agent"})
    for key, body in bodies.items():
        stored = direct.get_object(Bucket=bucket, Key=key)
        assert stored["Body"].read() == body, key
        assert stored["Metadata"] == {"origin": "agent"}
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key

    ranged = s3.get_object(Bucket=bucket, Key=ODD_KEYS[0], Range="bytes=5-24")
    assert ranged["Body"].read() == bodies[ODD_KEYS[0]][5:25]

    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(bodies)

    # SigV4 presigning has to be asked for; boto3 would otherwise sign with SigV2.
    presigner = agent.client("s3", config=Config(signature_version="s3v4",
                                                  s3={"addressing_style": "path"}))
    url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": ODD_KEYS[0]}, ExpiresIn=300)
    assert url.startswith(agent.endpoint + "/") and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url, url
    response = requests.get(url, verify=agent.ca_bundle, timeout=60)
    assert response.status_code == 200, response.text
    assert response.content == bodies[ODD_KEYS[0]]

    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in bodies]})
    assert direct.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    s3.delete_bucket(Bucket=bucket)
    assert error_code(direct.head_bucket, Bucket=bucket) == "404"


def test_s3_upload_file_multipart_and_download(agent: Agent, moto: Moto, big_file: DataFile,
                                               tmp_path: Path) -> None:
    s3, direct = agent.client("s3"), moto.client("s3")
    bucket = unique("sdk-big")
    key = "uploads/big blob.bin"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

    part = 8 * MIB
    s3.upload_file(str(big_file.path), bucket, key,
                   Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part))
    head = direct.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == big_file.size
    assert head["ETag"].strip('"') == multipart_etag(big_file.path, part)

    back = tmp_path / "back.bin"
    s3.download_file(bucket, key, str(back))
    assert sha256_file(back) == big_file.sha256

    s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)
    assert error_code(direct.head_bucket, Bucket=bucket) == "404"

