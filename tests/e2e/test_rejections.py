"""Requests whose signature does not verify are answered with AWS's error, and never forwarded.

Each case is one raw request, signed by botocore exactly as an SDK would and sent with
`requests`, so the test controls the bytes. The answer must carry the AWS error code in the body
shape of the service's protocol (query: XML ErrorResponse; JSON: `__type`; S3: XML Error), and
moto must not have seen a single request more.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import pytest
import requests
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from support import REGION, Agent, Airlock, Moto, error_code, unique

NO_RETRIES = Config(retries={"total_max_attempts": 1})


@dataclass(frozen=True)
class Case:
    """One harmless, read-only call of a service, by protocol."""

    protocol: str
    service: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str]

    def signed(self, endpoint: str, key_id: str, secret: str,
               at: datetime.datetime | None = None) -> AWSRequest:
        request = AWSRequest(method=self.method, url=endpoint + self.path, data=self.body,
                             headers=dict(self.headers))
        signer = (S3SigV4Auth if self.service == "s3" else SigV4Auth)(
            Credentials(key_id, secret), self.service, REGION)
        if at is None:
            signer.add_auth(request)
        else:
            with mock.patch("botocore.auth.get_current_datetime", return_value=at):
                signer.add_auth(request)
        return request


FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
CASES = {
    "sts-query": Case("query", "sts", "POST", "/", b"Action=GetCallerIdentity&Version=2011-06-15", FORM),
    "rds-query": Case("query", "rds", "POST", "/",
                      b"Action=DescribeDBInstances&Version=2014-10-31&MaxRecords=50", FORM),
    "dynamodb-json": Case("json", "dynamodb", "POST", "/", b'{"Limit": 10}', {
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.ListTables"}),
    "s3-rest-xml": Case("rest-xml", "s3", "GET", "/", b"", {}),
}
BODY_CASES = ["sts-query", "rds-query", "dynamodb-json"]

# airlock answers with the pinned codes; S3 names two of them differently itself, and either
# spelling is what an S3 client understands.
S3_SPELLING = {"InvalidClientTokenId": "InvalidAccessKeyId", "RequestExpired": "RequestTimeTooSkewed"}


def send(request: AWSRequest, ca_bundle: str) -> requests.Response:
    prepared = request.prepare()
    return requests.request(prepared.method, prepared.url, headers=dict(prepared.headers),
                            data=prepared.body, verify=ca_bundle, timeout=30)


def aws_error(protocol: str, response: requests.Response) -> str:
    """The error code, read from the body the way the protocol's clients read it."""
    body = response.content
    if protocol == "json":
        parsed = json.loads(body)
        assert "message" in parsed or "Message" in parsed, body
        return parsed["__type"].rsplit("#", 1)[-1]
    root = ET.fromstring(body)
    tag = root.tag.rsplit("}", 1)[-1]
    if protocol == "query":
        assert tag == "ErrorResponse", body
        code = root.find("./{*}Error/{*}Code")
    else:
        assert tag == "Error", body
        code = root.find("./{*}Code")
    assert code is not None and code.text, body
    return code.text


def assert_refused(case: Case, response: requests.Response, code: str) -> None:
    allowed = {code, S3_SPELLING.get(code)} if case.service == "s3" else {code}
    assert response.status_code == 403, (response.status_code, response.text)
    assert aws_error(case.protocol, response) in allowed, response.text


@pytest.mark.parametrize("name", CASES)
def test_wrong_secret(name: str, agent: Agent, moto: Moto) -> None:
    case = CASES[name]
    before = moto.request_count()
    request = case.signed(agent.endpoint, agent.access_key_id, agent.secret_access_key[::-1])
    assert_refused(case, send(request, agent.ca_bundle), "SignatureDoesNotMatch")
    assert moto.request_count() == before, "a request with a wrong signature reached moto"


@pytest.mark.parametrize("name", CASES)
def test_unknown_access_key_id(name: str, agent: Agent, moto: Moto) -> None:
    case = CASES[name]
    before = moto.request_count()
    unknown = "AKIA" + uuid.uuid4().hex[:16].upper()
    request = case.signed(agent.endpoint, unknown, agent.secret_access_key)
    assert_refused(case, send(request, agent.ca_bundle), "InvalidClientTokenId")
    assert moto.request_count() == before, "a request with an unknown key id reached moto"


@pytest.mark.parametrize("name", CASES)
def test_stale_date(name: str, agent: Agent, moto: Moto) -> None:
    case = CASES[name]
    # First the same call signed now: it goes through, so the refusal below is about the date.
    fresh = send(case.signed(agent.endpoint, agent.access_key_id, agent.secret_access_key), agent.ca_bundle)
    assert fresh.status_code == 200, fresh.text
    before = moto.request_count()
    twenty_minutes_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
    request = case.signed(agent.endpoint, agent.access_key_id, agent.secret_access_key, at=twenty_minutes_ago)
    assert request.headers["X-Amz-Date"] == twenty_minutes_ago.strftime("%Y%m%dT%H%M%SZ")
    assert_refused(case, send(request, agent.ca_bundle), "RequestExpired")
    assert moto.request_count() == before, "a request signed 20 minutes ago reached moto"


@pytest.mark.parametrize("name", BODY_CASES)
def test_tampered_body(name: str, agent: Agent, moto: Moto) -> None:
    case = CASES[name]
    request = case.signed(agent.endpoint, agent.access_key_id, agent.secret_access_key)
    body = bytearray(request.body)
    at = body.index(b"0")  # a digit of the version or of the limit: the request stays well-formed
    body[at] = ord("1")
    request.data = bytes(body)
    before = moto.request_count()
    assert_refused(case, send(request, agent.ca_bundle), "SignatureDoesNotMatch")
    assert moto.request_count() == before, "a request with a tampered body reached moto"


def test_sdk_and_cli_read_the_errors(agent: Agent, moto: Moto) -> None:
    """What the agent actually sees: boto3 and the AWS CLI name the error."""
    before = moto.request_count()
    sts = agent.client("sts", secret="wrong" + agent.secret_access_key, config=NO_RETRIES)
    assert error_code(sts.get_caller_identity) == "SignatureDoesNotMatch"
    ddb = agent.client("dynamodb", key_id="AKIA" + uuid.uuid4().hex[:16].upper(), config=NO_RETRIES)
    assert error_code(ddb.list_tables) == "InvalidClientTokenId"

    # The CLI with its default retries: still nothing gets past airlock.
    proc = agent.aws_run("rds", "describe-db-instances",
                         extra_env={"AWS_SECRET_ACCESS_KEY": "wrong" + agent.secret_access_key})
    assert proc.returncode != 0 and "SignatureDoesNotMatch" in proc.stderr, proc.stderr
    assert moto.request_count() == before


def test_revoked_agent_is_refused_within_a_second(airlock: Airlock, make_agent: Callable[[str], Agent],
                                                  moto: Moto) -> None:
    doomed = make_agent("doomed")
    sts = doomed.client("sts", config=NO_RETRIES)
    assert sts.get_caller_identity()["Arn"] == moto.user_arn
    assert doomed.name in airlock.cli("agent", "list").stdout

    airlock.cli("agent", "revoke", doomed.name)
    revoked_at = time.monotonic()
    while True:
        sent = time.monotonic()  # a call sent 1 s after the revocation must be refused
        try:
            sts.get_caller_identity()
        except ClientError as err:
            assert err.response["Error"]["Code"] == "InvalidClientTokenId", err.response
            break
        assert sent - revoked_at < 1.0, "a revoked agent was still served after 1 s"
        time.sleep(0.05)

    before = moto.request_count()
    assert error_code(sts.get_caller_identity) == "InvalidClientTokenId"
    s3 = doomed.client("s3", config=NO_RETRIES)
    assert error_code(s3.list_buckets) in ("InvalidClientTokenId", "InvalidAccessKeyId")
    assert moto.request_count() == before, "a revoked agent's request reached moto"


def test_presigned_url_for_another_key_is_refused(agent: Agent, moto: Moto) -> None:
    s3 = agent.client("s3", config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    bucket = unique("presign")
    moto.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    moto.client("s3").put_object(Bucket=bucket, Key="public.txt", Body=b"may be shared")
    moto.client("s3").put_object(Bucket=bucket, Key="secret.txt", Body=b"must not leak")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "public.txt"})
    assert requests.get(url, verify=agent.ca_bundle, timeout=30).content == b"may be shared"

    before = moto.request_count()
    response = requests.get(url.replace("/public.txt?", "/secret.txt?"), verify=agent.ca_bundle, timeout=30)
    assert response.status_code == 403, response.text
    assert aws_error("rest-xml", response) == "SignatureDoesNotMatch"
    assert b"must not leak" not in response.content
    assert moto.request_count() == before


def test_sigv2_presigned_url_is_refused_with_advice(agent: Agent, moto: Moto) -> None:
    # boto3's default presigner uses SigV2, which airlock does not verify.
    url = agent.client("s3").generate_presigned_url("get_object", Params={"Bucket": "any", "Key": "k"})
    assert "Signature=" in url and "X-Amz-Signature" not in url, url
    before = moto.request_count()
    response = requests.get(url, verify=agent.ca_bundle, timeout=30)
    assert response.status_code in (400, 403), response.text
    assert any(word in response.text.lower() for word in ("s3v4", "sigv4", "signature version 4")), response.text
    assert moto.request_count() == before
