"""S3 uploads in the framings that do not come from boto3's defaults, sent on the wire by hand.

`STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (every chunk signed; what SDKs send over plain HTTP and some
tools always send) is signed here by this file's own small SigV4 chunk signer, written from the
AWS documentation, independently of airlock's verifier. airlock must verify every chunk, forward
the decoded bytes (never the framing) and abort the upload when a chunk signature fails.

Also here: a declared x-amz-content-sha256 that the body does not match, and HTTP/2 through curl's
own SigV4 signer (`--aws-sigv4`).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import http.client
import os
import ssl
import subprocess
import zlib
from urllib.parse import quote, urlsplit

import pytest

from support import REGION, require_tool, unique

EMPTY = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class ChunkSigner:
    """SigV4 for one S3 PUT with a signed aws-chunked body."""

    def __init__(self, key_id: str, secret: str, when: datetime.datetime):
        self.key_id = key_id
        self.amz_date = when.strftime("%Y%m%dT%H%M%SZ")
        self.date = when.strftime("%Y%m%d")
        self.scope = f"{self.date}/{REGION}/s3/aws4_request"
        k = _hmac(("AWS4" + secret).encode(), self.date)
        k = _hmac(k, REGION)
        k = _hmac(k, "s3")
        self.key = _hmac(k, "aws4_request")

    def sign(self, string_to_sign: str) -> str:
        return hmac.new(self.key, string_to_sign.encode(), hashlib.sha256).hexdigest()

    def seed(self, method: str, path: str, headers: dict[str, str], payload: str) -> str:
        names = sorted(headers)
        canonical = "\n".join([
            method, path, "",
            "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names),
            ";".join(names), payload,
        ])
        sts = "\n".join(["AWS4-HMAC-SHA256", self.amz_date, self.scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
        return self.sign(sts), ";".join(names)

    def chunk(self, previous: str, data: bytes) -> str:
        return self.sign("\n".join(["AWS4-HMAC-SHA256-PAYLOAD", self.amz_date, self.scope, previous,
                                    EMPTY, hashlib.sha256(data).hexdigest()]))

    def trailer(self, previous: str, trailers: list[tuple[str, str]]) -> str:
        canonical = "".join(f"{n}:{v}\n" for n, v in sorted(trailers))
        return self.sign("\n".join(["AWS4-HMAC-SHA256-TRAILER", self.amz_date, self.scope, previous,
                                    hashlib.sha256(canonical.encode()).hexdigest()]))


def signed_chunked_put(agent, bucket: str, key: str, chunks: list[bytes], *, trailer: bool = False,
                       corrupt_chunk: int | None = None) -> tuple[int, str]:
    """PUTs `chunks` as a signed aws-chunked upload; returns (status, response body)."""
    url = urlsplit(agent.endpoint)
    host = f"{url.hostname}:{url.port}"
    path = f"/{bucket}/{quote(key, safe='/~')}"
    when = datetime.datetime.now(datetime.timezone.utc)
    signer = ChunkSigner(agent.access_key_id, agent.secret_access_key, when)
    payload = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    data = b"".join(chunks)
    headers = {
        "host": host,
        "x-amz-date": signer.amz_date,
        "x-amz-content-sha256": payload,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
    }
    if trailer:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
    seed, signed_names = signer.seed("PUT", path, headers, payload)

    body = bytearray()
    previous = seed
    for i, c in enumerate(chunks + [b""]):
        sig = signer.chunk(previous, c)
        previous = sig
        if corrupt_chunk == i:
            sig = ("0" if sig[0] != "0" else "1") + sig[1:]
        body += f"{len(c):x};chunk-signature={sig}\r\n".encode() + c + b"\r\n"
    if trailer:
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        trailers = [("x-amz-checksum-crc32", crc)]
        body = body[:-2]  # the final chunk's CRLF is followed by the trailer instead
        tsig = signer.trailer(previous, trailers)
        body += b"".join(f"{n}:{v}\r\n".encode() for n, v in trailers)
        body += f"x-amz-trailer-signature:{tsig}\r\n\r\n".encode()

    send = dict(headers)
    send["authorization"] = (f"AWS4-HMAC-SHA256 Credential={agent.access_key_id}/{signer.scope}, "
                             f"SignedHeaders={signed_names}, Signature={seed}")
    send["content-length"] = str(len(body))
    del send["host"]
    ctx = ssl.create_default_context(cafile=agent.ca_bundle)
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=60)
    try:
        conn.request("PUT", path, body=bytes(body), headers=send)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def bucket(agent) -> str:
    name = unique("stream")
    agent.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def stored(moto, bucket: str, key: str) -> bytes | None:
    """The object's bytes as moto holds them, or None if there is no such object."""
    from botocore.exceptions import ClientError
    try:
        return moto.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if e.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise


def test_signed_chunks_are_verified_and_forwarded_decoded(agent, moto, bucket):
    chunks = [os.urandom(64 * 1024), os.urandom(64 * 1024), os.urandom(1000)]
    status, text = signed_chunked_put(agent, bucket, "signed-chunks.bin", chunks)
    assert status == 200, text
    assert stored(moto, bucket, "signed-chunks.bin") == b"".join(chunks), "stored bytes differ (framing leaked?)"


def test_signed_chunks_with_a_signed_checksum_trailer(agent, moto, bucket):
    chunks = [os.urandom(70_000), os.urandom(5)]
    status, text = signed_chunked_put(agent, bucket, "signed-trailer.bin", chunks, trailer=True)
    assert status == 200, text
    assert stored(moto, bucket, "signed-trailer.bin") == b"".join(chunks)


def test_a_bad_third_chunk_signature_aborts_the_upload(agent, moto, bucket):
    chunks = [os.urandom(64 * 1024) for _ in range(4)]
    status, text = signed_chunked_put(agent, bucket, "bad-third-chunk.bin", chunks, corrupt_chunk=2)
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in text, (status, text)
    assert stored(moto, bucket, "bad-third-chunk.bin") is None, "a partly verified upload was stored"


def test_a_body_that_does_not_match_its_declared_hash_is_not_stored(agent, moto, bucket):
    import requests
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{agent.endpoint}/{bucket}/swapped.bin"
    signed_body = b"A" * 300_000
    req = AWSRequest(method="PUT", url=url, data=signed_body,
                     headers={"x-amz-content-sha256": hashlib.sha256(signed_body).hexdigest()})
    S3SigV4Auth(Credentials(agent.access_key_id, agent.secret_access_key), "s3", REGION).add_auth(req)
    prepared = req.prepare()
    sent_body = b"B" * len(signed_body)  # same length, other bytes
    r = requests.put(prepared.url, data=sent_body, headers=dict(prepared.headers), verify=agent.ca_bundle,
                     timeout=60)
    assert r.status_code == 400 and "<Code>XAmzContentSHA256Mismatch</Code>" in r.text, (r.status_code, r.text)
    assert stored(moto, bucket, "swapped.bin") is None, "a body that failed its hash was stored"
    # The same request with the body it was signed over goes through.
    r = requests.put(prepared.url, data=signed_body, headers=dict(prepared.headers), verify=agent.ca_bundle,
                     timeout=60)
    assert r.status_code == 200, r.text
    assert stored(moto, bucket, "swapped.bin") == signed_body


def test_http2_through_curls_own_sigv4_signer(agent, moto):
    curl = require_tool("curl")
    proc = subprocess.run(
        [curl, "-sS", "--http2", "--cacert", agent.ca_bundle,
         "--aws-sigv4", f"aws:amz:{REGION}:sts", "--user", f"{agent.access_key_id}:{agent.secret_access_key}",
         "-H", "content-type: application/x-www-form-urlencoded; charset=utf-8",
         "--data", "Action=GetCallerIdentity&Version=2011-06-15",
         "-w", "\nHTTP_VERSION=%{http_version} STATUS=%{http_code}", agent.endpoint + "/"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HTTP_VERSION=2 STATUS=200" in proc.stdout, proc.stdout
    assert f"<Arn>{moto.user_arn}</Arn>" in proc.stdout, proc.stdout
