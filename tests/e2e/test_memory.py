"""airlock streams bodies: moving 256 MiB through it keeps its peak RSS under 64 MiB.

A fresh airlock is started for this test so its peak (VmHWM) is this traffic's and no other
test's. The object goes up three ways — multipart upload_file (8 MiB parts, ten at a time), one
256 MiB put_object streamed from the file (aws-chunked with a trailer) — and comes back down with
download_file; the bytes are checked each way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from support import (
    MIB, REGION, Airlock, Moto, multipart_etag, sha256_file, unique, write_random_file,
)

LIMIT_KIB = 64 * 1024


def test_256_mib_through_airlock_under_64_mib_rss(start_airlock: Callable[..., Airlock], moto: Moto,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    airlock = start_airlock("airlock-memory")
    agent = airlock.add_agent(unique("memory-agent"))
    data = write_random_file(tmp_path / "256.bin", 256 * MIB)
    s3, direct = agent.client("s3"), moto.client("s3")
    bucket = unique("memory")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    at_start = airlock.peak_rss_kib()

    part = 8 * MIB
    s3.upload_file(str(data.path), bucket, "multipart.bin",
                   Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=10))
    head = direct.head_object(Bucket=bucket, Key="multipart.bin")
    assert head["ContentLength"] == data.size
    assert head["ETag"].strip('"') == multipart_etag(data.path, part)
    after_multipart = airlock.peak_rss_kib()

    with open(data.path, "rb") as body:
        s3.put_object(Bucket=bucket, Key="single.bin", Body=body)
    assert direct.head_object(Bucket=bucket, Key="single.bin")["ContentLength"] == data.size
    after_put = airlock.peak_rss_kib()

    back = tmp_path / "back.bin"
    s3.download_file(bucket, "single.bin", str(back),
                     Config=TransferConfig(multipart_threshold=1024 * MIB))  # one streamed GET
    assert sha256_file(back) == data.sha256
    peak = airlock.peak_rss_kib()

    with capsys.disabled():
        print(f"\nairlock peak RSS (VmHWM): {at_start / 1024:.1f} MiB at start, "
              f"{after_multipart / 1024:.1f} MiB after 256 MiB multipart upload, "
              f"{after_put / 1024:.1f} MiB after one 256 MiB PUT, "
              f"{peak / 1024:.1f} MiB after one 256 MiB GET (limit {LIMIT_KIB // 1024} MiB)")
    assert peak < LIMIT_KIB, f"airlock's peak RSS was {peak / 1024:.1f} MiB"

    direct.delete_object(Bucket=bucket, Key="multipart.bin")
    direct.delete_object(Bucket=bucket, Key="single.bin")
