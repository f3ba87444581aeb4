"""HTTPS_PROXY mode: clients given nothing but `HTTPS_PROXY`, a CA bundle and an agent's keys.

airlock's `[listen] connect` answers `CONNECT aws-name:443` with a leaf certificate for that name
from its CA, and serves the calls inside the tunnel as on the endpoint listener; `[upstream]
endpoint` sends them on to moto (signature checking on), while the Host the client signed stays
AWS's own name. No client here has an endpoint setting: the AWS CLI v1 even goes to
`rds.amazonaws.com` in us-east-1, which it does whatever AWS_ENDPOINT_URL says.

Also here: CONNECT to other hosts is refused (a `[connect] passthrough` host is tunnelled
unread), plain-HTTP proxy requests are refused, a client that does not trust airlock's CA fails
inside the tunnel, and the CA is name-constrained: a certificate it signs for another name is
rejected by curl and by Python's ssl.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from support import (
    REGION, Airlock, Moto, altered, audit_records, configure, require_tool, run, scrubbed_env, unique,
)
from test_rust_sdk import refused_assume_role, rust_client  # noqa: F401  (the fixture that builds the client)

# The AWS CLI v1 pins rds.amazonaws.com in us-east-1: the case AWS_ENDPOINT_URL cannot reach.
PINNED_REGION = "us-east-1"
SYSTEM_ROOTS = "/etc/ssl/certs/ca-certificates.crt"


# --- servers the tests start ---------------------------------------------------------------------


class EchoServer:
    """A TCP server on 127.0.0.1 (port 0) that answers every line with `echo: LINE`: the
    passthrough host. Bounded: at most 8 connections, each closed after 10 s."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set() and self.connections < 8:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(10)
                try:
                    data = conn.recv(4096)
                    conn.sendall(b"echo: " + data)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


class ConnectAirlock(Airlock):
    """An enforcing airlock with the HTTPS_PROXY listener on (port 0) and one passthrough host."""

    def __init__(self, home: Path, moto: Moto, passthrough: str):
        super().__init__(home, moto)
        self.passthrough = passthrough
        self.connect_url = ""

    def init(self, policy_mode: str) -> None:
        super().init(policy_mode)
        configure(self.config, {("listen", "connect"): "127.0.0.1:0",
                                ("connect", "passthrough"): [self.passthrough]})  # type: ignore[dict-item]

    def start(self) -> None:
        super().start()
        listen = json.loads((self.home / "state" / "listen.json").read_text())
        self.connect_url = f"http://{listen['connect']}"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", self.connect_url), listen

    def tunnels_logged(self, start: int) -> list[str]:
        """The AWS names tunnels were opened to since log offset `start`."""
        return re.findall(r"tunnel open.*?host=(\S+)", self.log_tail(start))

    def audit(self, *events: str) -> list[dict[str, Any]]:
        """The audit records of these events, oldest first."""
        return [r for r in audit_records(self.home / "state") if r["event"] in events]


PEER = re.compile(r"127\.0\.0\.1:\d+")


@dataclass
class ProxyAgent:
    """An agent set up from `airlock agent add --json` in HTTPS_PROXY mode."""

    name: str
    access_key_id: str
    secret_access_key: str
    proxy: str
    ca: str
    env: dict[str, str]

    def aws_run(self, *args: str, region: str = REGION) -> subprocess.CompletedProcess[str]:
        aws = require_tool("aws")
        return run([aws, *args, "--region", region, "--output", "json"], self.env, timeout=300, check=False)

    def aws(self, *args: str, region: str = REGION) -> Any:
        proc = self.aws_run(*args, region=region)
        assert proc.returncode == 0, f"aws {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def boto3(self, service: str, region: str = REGION) -> Any:
        """A boto3 client with no endpoint: AWS's own names, through the proxy, airlock's CA."""
        session = boto3.session.Session(aws_access_key_id=self.access_key_id,
                                        aws_secret_access_key=self.secret_access_key, region_name=region)
        config = Config(proxies={"https": self.proxy}, retries={"total_max_attempts": 1},
                        s3={"addressing_style": "virtual"})
        return session.client(service, verify=self.ca, config=config)


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy_airlock(tmp_path_factory: pytest.TempPathFactory, moto: Moto, echo: EchoServer) -> Iterator[ConnectAirlock]:
    server = ConnectAirlock(tmp_path_factory.mktemp("airlock-connect"), moto, f"127.0.0.1:{echo.port}")
    server.init("enforce")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def add_proxy_agent(airlock: ConnectAirlock, name: str) -> ProxyAgent:
    printed = json.loads(airlock.cli("agent", "add", name, "--json").stdout)
    # What `agent add` prints in this mode: the proxy and the CA, no endpoint.
    assert "AWS_ENDPOINT_URL" not in printed, printed
    assert printed["HTTPS_PROXY"] == airlock.connect_url, printed
    assert printed["NO_PROXY"] == "localhost,127.0.0.1,::1", printed
    ca = printed["AWS_CA_BUNDLE"]
    assert Path(ca).resolve() == airlock.ca_pem.resolve(), printed
    assert Path(printed["NODE_EXTRA_CA_CERTS"]).resolve() == airlock.ca_pem.resolve(), printed
    # SSL_CERT_FILE: the system's roots and airlock's CA, so other TLS still verifies.
    bundle = Path(printed["SSL_CERT_FILE"]).read_text()
    assert airlock.ca_pem.read_text().strip() in bundle and bundle.count("BEGIN CERTIFICATE") > 1
    env = scrubbed_env()
    for k in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env.pop(k, None)
    env.update(printed)
    env["AWS_DEFAULT_REGION"] = REGION
    return ProxyAgent(name, printed["AWS_ACCESS_KEY_ID"], printed["AWS_SECRET_ACCESS_KEY"],
                      printed["HTTPS_PROXY"], ca, env)


@pytest.fixture(scope="module")
def proxy_agent(proxy_airlock: ConnectAirlock) -> ProxyAgent:
    return add_proxy_agent(proxy_airlock, unique("proxy-agent"))


# --- the AWS CLI v1 ------------------------------------------------------------------------------


def test_cli_rds_in_us_east_1_goes_through_the_tunnel(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent,
                                                      moto: Moto) -> None:
    db = unique("pinned-db")
    rds = boto3.session.Session(aws_access_key_id=moto.access_key_id, aws_secret_access_key=moto.secret_access_key,
                                region_name=PINNED_REGION).client("rds", endpoint_url=moto.url)
    rds.create_db_instance(DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=20, MasterUsername="airlock", MasterUserPassword="not-a-real-password-1")
    start = proxy_airlock.log_size()
    out = proxy_agent.aws("rds", "describe-db-instances", region=PINNED_REGION)
    assert db in [i["DBInstanceIdentifier"] for i in out["DBInstances"]], out
    assert "rds.amazonaws.com" in proxy_airlock.tunnels_logged(start), proxy_airlock.log_tail(start)

    # The destructive call stops at airlock, with the link in the CLI's error output.
    before = moto.request_count()
    proc = proxy_agent.aws_run("rds", "delete-db-instance", "--db-instance-identifier", db,
                               "--skip-final-snapshot", region=PINNED_REGION)
    assert proc.returncode != 0 and "AccessDenied" in proc.stderr, proc.stderr
    proxy_airlock.approval_link(proc.stderr)
    assert moto.request_count() == before, "a gated call reached moto"
    [instance] = rds.describe_db_instances(DBInstanceIdentifier=db)["DBInstances"]
    assert instance["DBInstanceStatus"] == "available"


def test_cli_s3_virtual_hosted_sts_and_dynamodb(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent,
                                                moto: Moto, tmp_path: Path) -> None:
    bucket = unique("proxy-cli")
    start = proxy_airlock.log_size()
    proxy_agent.aws("s3api", "create-bucket", "--bucket", bucket,
                    "--create-bucket-configuration", f"LocationConstraint={REGION}")
    body = tmp_path / "hello.txt"
    body.write_bytes(b"through the tunnel\n")
    proxy_agent.aws("s3api", "put-object", "--bucket", bucket, "--key", "hello.txt", "--body", str(body))
    got = tmp_path / "got.txt"
    proxy_agent.aws("s3api", "get-object", "--bucket", bucket, "--key", "hello.txt", str(got))
    assert got.read_bytes() == body.read_bytes()
    # Addressed virtual-hosted, by AWS's own name; in moto with the real credentials.
    assert f"{bucket}.s3.{REGION}.amazonaws.com" in proxy_airlock.tunnels_logged(start), proxy_airlock.log_tail(start)
    assert moto.client("s3").get_object(Bucket=bucket, Key="hello.txt")["Body"].read() == body.read_bytes()

    proc = proxy_agent.aws_run("s3api", "delete-object", "--bucket", bucket, "--key", "hello.txt")
    assert proc.returncode != 0 and "AccessDenied" in proc.stderr, proc.stderr
    proxy_airlock.approval_link(proc.stderr)
    moto.client("s3").head_object(Bucket=bucket, Key="hello.txt")

    me = proxy_agent.aws("sts", "get-caller-identity")
    assert me["Arn"] == moto.user_arn, me

    table = unique("proxy-cli-table")
    proxy_agent.aws("dynamodb", "create-table", "--table-name", table,
                    "--attribute-definitions", "AttributeName=pk,AttributeType=S",
                    "--key-schema", "AttributeName=pk,KeyType=HASH", "--billing-mode", "PAY_PER_REQUEST")
    assert table in proxy_agent.aws("dynamodb", "list-tables")["TableNames"]
    proc = proxy_agent.aws_run("dynamodb", "delete-table", "--table-name", table)
    assert proc.returncode != 0 and "AccessDenied" in proc.stderr, proc.stderr
    proxy_airlock.approval_link(proc.stderr)
    assert moto.client("dynamodb").describe_table(TableName=table)["Table"]["TableName"] == table


# --- boto3 ---------------------------------------------------------------------------------------


def test_boto3_through_the_proxy(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent, moto: Moto) -> None:
    bucket = unique("proxy-boto3")
    s3 = proxy_agent.boto3("s3")
    start = proxy_airlock.log_size()
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=bucket, Key="k.bin", Body=b"\x00\x01 boto3")
    assert s3.get_object(Bucket=bucket, Key="k.bin")["Body"].read() == b"\x00\x01 boto3"
    assert f"{bucket}.s3.{REGION}.amazonaws.com" in proxy_airlock.tunnels_logged(start)
    with pytest.raises(ClientError) as denied:
        s3.delete_object(Bucket=bucket, Key="k.bin")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    proxy_airlock.approval_link(str(denied.value))
    moto.client("s3").head_object(Bucket=bucket, Key="k.bin")

    assert proxy_agent.boto3("sts").get_caller_identity()["Arn"] == moto.user_arn
    ddb = proxy_agent.boto3("dynamodb")
    table = unique("proxy-boto3-table")
    ddb.create_table(TableName=table, AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName=table, Item={"pk": {"S": "a"}})
    assert ddb.get_item(TableName=table, Key={"pk": {"S": "a"}})["Item"] == {"pk": {"S": "a"}}
    assert "DBInstances" in proxy_agent.boto3("rds").describe_db_instances()


# --- curl and raw connections ------------------------------------------------------------------


def curl(agent: ProxyAgent, *args: str, cacert: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = require_tool("curl")
    return run([exe, "-sS", "--max-time", "30", "--proxy", agent.proxy, "--cacert", cacert or agent.ca,
                "-w", "\n%{http_code}", *args], agent.env, timeout=60, check=False)


STS_CALL = "https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"


def test_curl_signed_and_unsigned(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent, moto: Moto) -> None:
    before = moto.request_count()
    unsigned = curl(proxy_agent, STS_CALL)
    assert unsigned.returncode == 0, unsigned.stderr
    assert unsigned.stdout.endswith("\n403"), unsigned.stdout
    assert "<Code>MissingAuthenticationToken</Code>" in unsigned.stdout, unsigned.stdout
    wrong = curl(proxy_agent, "--aws-sigv4", "aws:amz:us-east-1:sts",
                 "--user", f"{proxy_agent.access_key_id}:{altered(proxy_agent.secret_access_key)}", STS_CALL)
    assert wrong.stdout.endswith("\n403") and "<Code>SignatureDoesNotMatch</Code>" in wrong.stdout, wrong.stdout
    assert moto.request_count() == before, "an unverified request reached moto"

    # Both HTTP versions inside the tunnel (ALPN: h2, http/1.1).
    for flag, version in (("--http2", "2"), ("--http1.1", "1.1")):
        signed = curl(proxy_agent, flag, "--aws-sigv4", "aws:amz:us-east-1:sts",
                      "--user", f"{proxy_agent.access_key_id}:{proxy_agent.secret_access_key}",
                      "-w", "\n%{http_code} http=%{http_version}", STS_CALL)
        assert signed.stdout.endswith(f"\n200 http={version}"), signed.stdout
        assert f"<Arn>{moto.user_arn}</Arn>" in signed.stdout, signed.stdout


def signed_curl(agent: ProxyAgent, service: str, *args: str) -> tuple[int, str]:
    """curl's own SigV4 signer with the agent's keys, through the proxy: the status and body."""
    proc = curl(agent, "--aws-sigv4", f"aws:amz:{REGION}:{service}",
                "--user", f"{agent.access_key_id}:{agent.secret_access_key}", *args)
    assert proc.returncode == 0, proc.stderr
    body, _, status = proc.stdout.rpartition("\n")
    return int(status), body


def test_curl_s3_dynamodb_and_rds(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent, moto: Moto,
                                  tmp_path: Path) -> None:
    """curl signing for itself, with AWS's own names: S3 virtual-hosted (PUT, GET, a DELETE that
    waits for a human), DynamoDB's JSON protocol and RDS's query protocol."""
    bucket, table, db = unique("proxy-curl"), unique("proxy-curl-table"), unique("proxy-curl-db")
    moto.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    body = tmp_path / "curl.bin"
    body.write_bytes(b"curl through the tunnel\n" + bytes(range(256)))
    url = f"https://{bucket}.s3.{REGION}.amazonaws.com/curl.bin"
    # This curl (7.88) signs no payload hash for S3 by itself: it is given one, which it signs.
    def content_sha256(data: bytes) -> str:
        return f"x-amz-content-sha256: {hashlib.sha256(data).hexdigest()}"

    start = proxy_airlock.log_size()
    status, text = signed_curl(proxy_agent, "s3", "-X", "PUT", "-H", "content-type: application/octet-stream",
                               "-H", content_sha256(body.read_bytes()), "--data-binary", f"@{body}", url)
    assert status == 200, text
    assert moto.client("s3").get_object(Bucket=bucket, Key="curl.bin")["Body"].read() == body.read_bytes()
    got = tmp_path / "got.bin"
    status, _ = signed_curl(proxy_agent, "s3", "-H", content_sha256(b""), "-o", str(got), url)
    assert status == 200 and got.read_bytes() == body.read_bytes()
    assert f"{bucket}.s3.{REGION}.amazonaws.com" in proxy_airlock.tunnels_logged(start), proxy_airlock.log_tail(start)
    before = moto.request_count()
    status, text = signed_curl(proxy_agent, "s3", "-H", content_sha256(b""), "-X", "DELETE", url)
    assert status == 403 and "<Code>AccessDenied</Code>" in text, text
    proxy_airlock.approval_link(text)
    assert moto.request_count() == before, "a gated call reached moto"
    moto.client("s3").head_object(Bucket=bucket, Key="curl.bin")

    def dynamodb(target: str, payload: dict[str, Any]) -> tuple[int, str]:
        return signed_curl(proxy_agent, "dynamodb", "-H", "content-type: application/x-amz-json-1.0",
                           "-H", f"x-amz-target: DynamoDB_20120810.{target}", "--data", json.dumps(payload),
                           f"https://dynamodb.{REGION}.amazonaws.com/")

    status, text = dynamodb("CreateTable", {
        "TableName": table, "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]})
    assert status == 200, text
    status, text = dynamodb("PutItem", {"TableName": table, "Item": {"pk": {"S": "curl"}}})
    assert status == 200, text
    status, text = dynamodb("GetItem", {"TableName": table, "Key": {"pk": {"S": "curl"}}})
    assert status == 200 and json.loads(text)["Item"] == {"pk": {"S": "curl"}}, text
    before = moto.request_count()
    status, text = dynamodb("DeleteTable", {"TableName": table})
    assert status == 403 and json.loads(text)["__type"].endswith("AccessDeniedException"), text
    proxy_airlock.approval_link(text)
    assert moto.request_count() == before, "a gated call reached moto"
    assert moto.client("dynamodb").describe_table(TableName=table)["Table"]["TableName"] == table

    moto.client("rds").create_db_instance(DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro",
                                          AllocatedStorage=20, MasterUsername="airlock",
                                          MasterUserPassword="not-a-real-password-1")
    rds = f"https://rds.{REGION}.amazonaws.com/"
    # In sorted order: this curl signs the query string as written, not sorted as SigV4 says.
    status, text = signed_curl(proxy_agent, "rds", f"{rds}?Action=DescribeDBInstances&DBInstanceIdentifier={db}"
                                                   "&Version=2014-10-31")
    assert status == 200 and f"<DBInstanceIdentifier>{db}</DBInstanceIdentifier>" in text, text
    before = moto.request_count()
    status, text = signed_curl(proxy_agent, "rds", "-H", "content-type: application/x-www-form-urlencoded",
                               "--data", f"Action=DeleteDBInstance&Version=2014-10-31&DBInstanceIdentifier={db}"
                                         "&SkipFinalSnapshot=true", rds)
    assert status == 403 and "<Code>AccessDenied</Code>" in text, text
    proxy_airlock.approval_link(text)
    assert moto.request_count() == before, "a gated call reached moto"
    [instance] = moto.client("rds").describe_db_instances(DBInstanceIdentifier=db)["DBInstances"]
    assert instance["DBInstanceStatus"] == "available"


def test_exec_gives_the_proxy_and_no_endpoint(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent,
                                             moto: Moto) -> None:
    """`airlock exec` in this mode: HTTPS_PROXY and the CA, no AWS_ENDPOINT_URL; the AWS CLI
    run under it reaches moto through the tunnel with the agent's identity mapped to airlock's."""
    aws = require_tool("aws")
    env = {**scrubbed_env(), "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = run([str(proxy_airlock.binary), "exec", proxy_agent.name, "--config", str(proxy_airlock.config), "--",
                aws, "sts", "get-caller-identity", "--output", "json"], env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Arn"] == moto.user_arn
    shown = run([str(proxy_airlock.binary), "exec", proxy_agent.name, "--config", str(proxy_airlock.config), "--",
                 "env"], env, timeout=60).stdout
    variables = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    assert variables["HTTPS_PROXY"] == proxy_airlock.connect_url, shown
    assert not any(k.startswith("AWS_ENDPOINT_URL") for k in variables), shown


def test_plain_http_to_aws_is_refused(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent, moto: Moto) -> None:
    before = moto.request_count()
    proc = curl(proxy_agent, "http://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15")
    assert proc.stdout.endswith("\n403") and "plaintext" in proc.stdout, proc.stdout
    assert moto.request_count() == before
    record = proxy_airlock.audit("connect_refused")[-1]
    assert (record["method"], record["host"], record["port"]) == ("GET", "sts.amazonaws.com", 80), record
    assert PEER.fullmatch(record["peer"]) and "plaintext" in record["reason"], record


def test_connect_to_another_host_is_refused(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent) -> None:
    start = proxy_airlock.log_size()
    proc = curl(proxy_agent, "https://example.com/", cacert=SYSTEM_ROOTS)
    # curl: "CONNECT tunnel failed, response 403" (exit 56).
    assert proc.returncode == 56 and "403" in proc.stderr, (proc.returncode, proc.stderr)
    log = proxy_airlock.log_tail(start)
    assert "CONNECT refused" in log and "example.com:443" in log, log
    # On the record: who asked for what, and why not.
    record = proxy_airlock.audit("connect_refused")[-1]
    assert (record["method"], record["host"], record["port"]) == ("CONNECT", "example.com", 443), record
    assert PEER.fullmatch(record["peer"]), record
    assert "not an AWS endpoint and not listed in [connect] passthrough" in record["reason"], record


def raw_connect(proxy: str, target: str) -> tuple[socket.socket, str]:
    host, port = proxy.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 8192:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head.decode(errors="replace")


def test_passthrough_host_is_tunnelled_unread(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent,
                                              echo: EchoServer) -> None:
    sock, head = raw_connect(proxy_agent.proxy, f"127.0.0.1:{echo.port}")
    with sock:
        assert head.startswith("HTTP/1.1 200"), head
        sock.sendall(b"not tls, not http\n")
        assert sock.recv(4096) == b"echo: not tls, not http\n"
    # The tunnel is on the record (where to, for whom), not what it carried.
    record = proxy_airlock.audit("connect_passthrough")[-1]
    assert (record["host"], record["port"], record["to"]) == ("127.0.0.1", echo.port, f"127.0.0.1:{echo.port}"), record
    assert PEER.fullmatch(record["peer"]), record
    assert "not tls" not in json.dumps(record)
    refused_before = len(proxy_airlock.audit("connect_refused"))
    # The same host on a port the glob does not name: refused.
    sock, head = raw_connect(proxy_agent.proxy, f"127.0.0.1:{echo.port + 1 if echo.port < 65535 else 1}")
    with sock:
        assert head.startswith("HTTP/1.1 403"), head
    # Brackets around anything but an IPv6 address, or userinfo: refused, nothing reaches the host.
    before = echo.connections
    answered = 0
    for target in [f"[127.0.0.1]:{echo.port}", f"secret-user:secret-pw@127.0.0.1:{echo.port}"]:
        sock, head = raw_connect(proxy_agent.proxy, target)
        with sock:
            assert head.startswith("HTTP/1.1 403") or head.startswith("HTTP/1.1 400"), (target, head)
            answered += head.startswith("HTTP/1.1 403")  # airlock's answer, not HTTP parsing's
    assert echo.connections == before
    # The other port and each unreadable target airlock answered: recorded, an unreadable one
    # with no host and none of its text.
    other, *unreadable = proxy_airlock.audit("connect_refused")[refused_before:]
    assert (other["host"], other["port"]) == ("127.0.0.1", echo.port + 1 if echo.port < 65535 else 1), other
    assert len(unreadable) == answered, unreadable
    assert all(r["host"] is None and r["reason"] == "the target is not host:port" for r in unreadable), unreadable
    assert "secret" not in json.dumps(proxy_airlock.audit("connect_refused", "connect_passthrough"))


def test_a_flood_of_refused_connects_is_counted_not_written(tmp_path: Path, moto: Moto, echo: EchoServer) -> None:
    """Any local process can knock: per minute, 20 refusals are written one by one and the rest
    counted in one `connect_refused_suppressed` record, written when the window ends or, as
    here, when serve stops. The chain still verifies."""
    server = ConnectAirlock(tmp_path / "airlock-flood", moto, f"127.0.0.1:{echo.port}")
    (tmp_path / "airlock-flood").mkdir()
    server.init("enforce")
    server.start()
    try:
        for n in range(25):
            sock, head = raw_connect(server.connect_url, f"knock-{n:02}.example.org:443")
            with sock:
                assert head.startswith("HTTP/1.1 403"), head
        written = server.audit("connect_refused")
        assert [r["host"] for r in written] == [f"knock-{n:02}.example.org" for n in range(20)], written
        assert server.audit("connect_refused_suppressed") == []
    finally:
        server.stop()
    [counted] = server.audit("connect_refused_suppressed")
    assert counted["count"] == 5 and counted["peers"] == ["127.0.0.1"], counted
    assert counted["targets"] == [f"knock-{n:02}.example.org:443" for n in range(20, 25)], counted
    assert "5 more connect_refused left out" in counted["reason"], counted
    assert server.cli("audit", "verify").returncode == 0
    assert "connect_refused_suppressed" in server.cli("audit", "tail", "-n", "3").stdout


def test_a_client_that_does_not_trust_airlocks_ca_fails_in_the_tunnel(proxy_airlock: ConnectAirlock,
                                                                     proxy_agent: ProxyAgent, moto: Moto) -> None:
    before = moto.request_count()
    proc = curl(proxy_agent, STS_CALL, cacert=SYSTEM_ROOTS)
    assert proc.returncode == 60, (proc.returncode, proc.stderr)  # peer certificate cannot be verified
    sock, head = raw_connect(proxy_agent.proxy, "sts.amazonaws.com:443")
    with sock, pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context(cafile=SYSTEM_ROOTS).wrap_socket(sock, server_hostname="sts.amazonaws.com")
    assert head.startswith("HTTP/1.1 200"), head
    assert moto.request_count() == before


# --- the name-constrained CA ---------------------------------------------------------------------


def sign_with_ca(ca_pem: Path, ca_key: Path, name: str, out: Path) -> tuple[Path, Path]:
    """A server certificate for `name` signed with airlock's CA key (what a thief of ca.key could make)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(signer, hashes.SHA256()))  # type: ignore[arg-type]
    cert_path, key_path = out / f"{name}.pem", out / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsServer:
    """A TLS server on 127.0.0.1 (port 0) with one certificate, answering each connection with a
    tiny HTTP response. Bounded: at most 8 connections, each 10 s."""

    def __init__(self, cert: Path, key: Path):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for _ in range(8):
            while not self.stopped.is_set():
                try:
                    conn, _ = self.sock.accept()
                    break
                except TimeoutError:
                    continue
            else:
                return
            conn.settimeout(10)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4096)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except (OSError, ssl.SSLError):
                conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(15)
        self.sock.close()


@pytest.mark.parametrize("name,accepted", [("example.com", False), ("sts.amazonaws.com", True)])
def test_a_certificate_the_ca_signs_for_another_name_is_rejected(proxy_airlock: ConnectAirlock, tmp_path: Path,
                                                                 name: str, accepted: bool) -> None:
    exe = require_tool("curl")
    cert, key = sign_with_ca(proxy_airlock.ca_pem, proxy_airlock.home / "certs" / "ca.key", name, tmp_path)
    server = TlsServer(cert, key)
    try:
        # curl (OpenSSL), only ever to 127.0.0.1.
        proc = run([exe, "-sS", "--max-time", "10", "--noproxy", "*", "--resolve", f"{name}:{server.port}:127.0.0.1",
                    "--cacert", str(proxy_airlock.ca_pem), f"https://{name}:{server.port}/"],
                   scrubbed_env(), timeout=30, check=False)
        if accepted:
            assert proc.returncode == 0 and proc.stdout == "ok", (proc.returncode, proc.stderr)
        else:
            assert proc.returncode == 60, (proc.returncode, proc.stderr)
            assert "name constraint" in proc.stderr.lower() or "permitted" in proc.stderr.lower(), proc.stderr
        # Python's ssl.
        context = ssl.create_default_context(cafile=str(proxy_airlock.ca_pem))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            if accepted:
                with context.wrap_socket(raw, server_hostname=name) as tls:
                    tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            else:
                with pytest.raises(ssl.SSLCertVerificationError) as rejected:
                    context.wrap_socket(raw, server_hostname=name)
                assert "name constraint" in str(rejected.value).lower() or "permitted" in str(rejected.value).lower()
    finally:
        server.stop()


def test_rotate_ca_replaces_an_unconstrained_ca(tmp_path: Path, moto: Moto) -> None:
    """An install from before name constraints: `init --rotate-ca` makes a constrained CA, and
    `doctor` names the old one."""
    openssl = require_tool("openssl")
    (tmp_path / "old-install").mkdir()
    airlock = Airlock(tmp_path / "old-install", moto)
    airlock.cli("init")
    configure(airlock.config, {("listen", "proxy"): "127.0.0.1:0", ("listen", "approvals"): "127.0.0.1:0"})
    certs = airlock.home / "certs"
    for f in ("ca.pem", "ca.key", "server.pem", "server.key"):
        (certs / f).unlink()
    run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(certs / "ca.key"), "-out", str(certs / "ca.pem"), "-days", "30",
         "-subj", "/CN=an old airlock CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign"], scrubbed_env(), timeout=60)
    airlock.cli("init")  # the server certificate, from the old CA
    doctor = airlock.cli("doctor", "--json", check=False)
    assert "ca-unconstrained" in doctor.stdout, doctor.stdout
    airlock.start()  # serve says so too
    airlock.stop()
    assert "not name-constrained" in airlock.log_tail(), airlock.log_tail()

    proc = airlock.cli("init", "--rotate-ca")
    assert "name-constrained" in proc.stdout and "replaced" in proc.stdout, proc.stdout
    text = run([openssl, "x509", "-in", str(certs / "ca.pem"), "-noout", "-text"], scrubbed_env(), timeout=60).stdout
    assert "Name Constraints" in text and "amazonaws.com" in text, text
    assert list(certs.glob("ca.pem.replaced-*")), list(certs.iterdir())
    verified = run([openssl, "verify", "-CAfile", str(certs / "ca.pem"), str(certs / "server.pem")],
                   scrubbed_env(), timeout=60, check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    doctor = airlock.cli("doctor", "--json", check=False)
    assert "ca-unconstrained" not in doctor.stdout, doctor.stdout


# --- Terraform -----------------------------------------------------------------------------------


def test_terraform_with_the_provider_at_its_defaults(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent,
                                                    moto: Moto, tmp_path: Path) -> None:
    from test_terraform import PLUGIN_MIRROR, terraform_workdir

    terraform = require_tool("terraform")
    workdir, cli_config = terraform_workdir(tmp_path)
    (workdir / "main.tf").write_text((Path(__file__).parent / "terraform-connect" / "main.tf").read_text())
    assert PLUGIN_MIRROR.is_dir()
    env = {**proxy_agent.env, "TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1",
           "CHECKPOINT_DISABLE": "1", "AWS_REGION": REGION}
    name = unique("tf-proxy")

    def tf(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([terraform, *args, "-no-color"], env, cwd=workdir, timeout=900, check=check)

    tf("init", "-input=false")
    start = proxy_airlock.log_size()
    tf("apply", "-input=false", "-auto-approve", f"-var=name={name}")
    out = {k: v["value"] for k, v in json.loads(tf("output", "-json").stdout).items()}
    assert out["caller_arn"] == moto.user_arn, out
    assert isinstance(out["db_instances"], list), out
    tunnels = proxy_airlock.tunnels_logged(start)
    assert f"{name}.s3.{REGION}.amazonaws.com" in tunnels, tunnels
    assert f"dynamodb.{REGION}.amazonaws.com" in tunnels, tunnels
    s3 = moto.client("s3")
    assert s3.get_object(Bucket=name, Key="README.txt")["Body"].read() == b"written by terraform through the tunnel\n"
    assert moto.client("dynamodb").describe_table(TableName=name)["Table"]["TableStatus"] == "ACTIVE"

    # The enforcing airlock destroys nothing and says where to approve.
    destroy = tf("destroy", "-input=false", "-auto-approve", f"-var=name={name}", check=False)
    assert destroy.returncode != 0, destroy.stdout
    assert "AccessDenied" in destroy.stderr, destroy.stderr
    proxy_airlock.approval_link(destroy.stderr)
    s3.head_bucket(Bucket=name)
    moto.client("dynamodb").describe_table(TableName=name)


# --- the JS SDK v3 -------------------------------------------------------------------------------


def test_js_sdk_through_the_proxy(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent, moto: Moto,
                                  tmp_path: Path) -> None:
    from test_js_sdk import js, ok, s3

    bucket, table = unique("proxy-js"), unique("proxy-js-table")
    body = "hello from the JS SDK through the tunnel\n"
    env = {**proxy_agent.env, "AWS_REGION": REGION}
    agent = ProxyAgent(proxy_agent.name, proxy_agent.access_key_id, proxy_agent.secret_access_key,
                       proxy_agent.proxy, proxy_agent.ca, env)
    calls = [
        s3("CreateBucket", Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}),
        s3("PutObject", Bucket=bucket, Key="js.txt", Body=body),
        s3("GetObject", Bucket=bucket, Key="js.txt"),
        {"service": "sts", "command": "GetCallerIdentity", "input": {}},
        {"service": "dynamodb", "command": "CreateTable", "input": {
            "TableName": table, "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]}},
        {"service": "dynamodb", "command": "PutItem", "input": {"TableName": table, "Item": {"pk": {"S": "js"}}}},
        {"service": "rds", "command": "DescribeDBInstances", "input": {}},
    ]
    start = proxy_airlock.log_size()
    out = js(agent, calls, tmp_path)  # type: ignore[arg-type]
    ok(out, calls)
    assert out[2]["output"]["Body"]["sha256"] == hashlib.sha256(body.encode()).hexdigest(), out[2]
    assert out[3]["output"]["Arn"] == moto.user_arn, out[3]
    tunnels = proxy_airlock.tunnels_logged(start)
    assert f"{bucket}.s3.{REGION}.amazonaws.com" in tunnels, tunnels
    assert moto.client("s3").get_object(Bucket=bucket, Key="js.txt")["Body"].read() == body.encode()
    assert moto.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": "js"}})["Item"] == {"pk": {"S": "js"}}

    calls = [s3("DeleteObject", Bucket=bucket, Key="js.txt"),
             {"service": "dynamodb", "command": "DeleteTable", "input": {"TableName": table}}]
    for outcome in js(agent, calls, tmp_path):  # type: ignore[arg-type]
        assert not outcome["ok"] and outcome["code"] in ("AccessDenied", "AccessDeniedException"), outcome
        proxy_airlock.approval_link(outcome["message"])
    moto.client("s3").head_object(Bucket=bucket, Key="js.txt")
    moto.client("dynamodb").describe_table(TableName=table)


# --- aws-sdk-rust --------------------------------------------------------------------------------


def test_rust_sdk_through_the_proxy(proxy_airlock: ConnectAirlock, proxy_agent: ProxyAgent, moto: Moto,
                                    rust_client: Path, tmp_path: Path) -> None:
    """The SDK's default client reads HTTPS_PROXY (behaviour version 2025-08-07 and later) and
    trusts SSL_CERT_FILE; S3 is virtual-hosted, STS the SDK's regional endpoint."""
    bucket, table, db = unique("proxy-rust"), unique("proxy-rust-table"), unique("proxy-rust-db")
    env = {**proxy_agent.env, "AWS_REGION": REGION, "AWS_MAX_ATTEMPTS": "1"}

    def sdk(*args: str) -> dict[str, Any]:
        proc = run([str(rust_client), *args], env, timeout=300, check=False)
        [line] = [json.loads(x) for x in proc.stdout.splitlines() if x.strip()] or [{"stderr": proc.stderr}]
        return line

    def sdk_ok(*args: str) -> dict[str, Any]:
        result = sdk(*args)
        assert result.get("ok"), result
        return result

    data = tmp_path / "rust.bin"
    data.write_bytes(b"rust through the tunnel\n" * 100)
    start = proxy_airlock.log_size()
    sdk_ok("create-bucket", bucket)
    sdk_ok("put-object", bucket, "rust.bin", str(data))
    got = sdk_ok("get-object", bucket, "rust.bin")
    assert got["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest(), got
    assert f"{bucket}.s3.{REGION}.amazonaws.com" in proxy_airlock.tunnels_logged(start)
    assert moto.client("s3").get_object(Bucket=bucket, Key="rust.bin")["Body"].read() == data.read_bytes()

    sdk_ok("create-table", table)
    sdk_ok("put-item", table, "k", "v")
    assert sdk_ok("get-item", table, "k")["value"] == "v"
    sdk_ok("create-db-instance", db)
    assert [i["id"] for i in sdk_ok("describe-db-instance", db)["instances"]] == [db]

    start = proxy_airlock.log_size()
    assert sdk_ok("get-caller-identity")["arn"] == moto.user_arn
    assert f"sts.{REGION}.amazonaws.com" in proxy_airlock.tunnels_logged(start), proxy_airlock.log_tail(start)
    refused_assume_role(sdk, proxy_airlock, moto, proxy_agent.name)

    for args in (("delete-object", bucket, "rust.bin"), ("delete-table", table), ("delete-db-instance", db)):
        refused = sdk(*args)
        assert not refused.get("ok") and refused.get("code") in ("AccessDenied", "AccessDeniedException"), refused
        proxy_airlock.approval_link(refused["error"])
    moto.client("s3").head_object(Bucket=bucket, Key="rust.bin")
    moto.client("dynamodb").describe_table(TableName=table)
    moto.client("rds").describe_db_instances(DBInstanceIdentifier=db)
