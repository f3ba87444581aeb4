#!/usr/bin/env python3
"""Writes a valid, chained audit log of a given size, fast (see BENCHMARKS.md).

    python3 bench/audit_log.py STATE_DIR --size 10G [--segment-bytes 64M]

The log goes into STATE_DIR/audit/ as airlock writes it: numbered segments, each closed before a
record would take it past --segment-bytes, every record carrying the hash of the one before (the
chain running across segments), and the head naming the last record. `airlock audit verify`
accepts it. The records are copies of one typical forwarded call's record with their own
sequence number, request id and resource, so a log of 10 GB is written in about the time the
disk takes; nothing is sent through airlock.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
GENESIS = "0" * 64
# Written in one go once this much is buffered.
FLUSH_BYTES = 8 << 20


def size(text: str) -> int:
    """`10G`, `300M`, `4096`: bytes."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in UNITS else ""
    return int(float(text[: len(text) - len(unit)]) * UNITS[unit])


def segment_path(audit_dir: Path, number: int) -> Path:
    return audit_dir / f"{number:08}.jsonl"


def generate(state_dir: Path, total_bytes: int, segment_bytes: int = 64 << 20) -> tuple[int, int]:
    """Writes about `total_bytes` of records into `state_dir`/audit/ (which must hold no log yet).
    Returns (records, segments)."""
    audit = state_dir / "audit"
    audit.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(audit.glob("[0-9]*.jsonl")):
        raise SystemExit(f"{audit} already holds a log")
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    # One forwarded call's record, keys in the order airlock writes them; {seq}, {prev} and the
    # two per-record names are filled in for each.
    template = (
        '{{"account":"123456789012","action":"s3:GetObject","agent":"bench-agent",'
        '"approver":null,"aws_request_id":"{n:016X}","decision":"allow","environment":"default",'
        '"event":"forwarded","latency_ms":1,"prev":"{prev}","receipt":null,"region":"us-east-1",'
        '"request_id":"gen-{n:016x}","resources":["arn:aws:s3:::bench-bucket/key-{n}"],'
        '"rule":"builtin:reads","seq":{n},"service":"s3","time":"' + now + '","upstream_status":200}}'
    )
    prev, seq, number, written = GENESIS, 0, 1, 0
    in_segment = 0
    buffered: list[bytes] = []
    buffered_bytes = 0
    out = open(segment_path(audit, number), "wb")
    os.chmod(out.name, 0o600)
    try:
        while written < total_bytes:
            line = template.format(n=seq, prev=prev).encode()
            if in_segment + len(line) + 1 > segment_bytes and in_segment > 0:
                out.write(b"".join(buffered))
                buffered, buffered_bytes = [], 0
                out.close()
                number += 1
                out = open(segment_path(audit, number), "wb")
                os.chmod(out.name, 0o600)
                in_segment = 0
            prev = hashlib.sha256(line).hexdigest()
            buffered.append(line + b"\n")
            buffered_bytes += len(line) + 1
            in_segment += len(line) + 1
            written += len(line) + 1
            seq += 1
            if buffered_bytes >= FLUSH_BYTES:
                out.write(b"".join(buffered))
                buffered, buffered_bytes = [], 0
        out.write(b"".join(buffered))
    finally:
        out.close()
    head = audit / "head"
    head.write_text(json.dumps({"seq": seq - 1, "hash": prev}, separators=(",", ":")))
    os.chmod(head, 0o600)
    return seq, number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--size", type=size, required=True, help="about this many bytes (10G, 300M)")
    parser.add_argument("--segment-bytes", type=size, default=64 << 20, help="segment size (default 64M)")
    args = parser.parse_args()
    started = time.monotonic()
    records, segments = generate(args.state_dir, args.size, args.segment_bytes)
    took = time.monotonic() - started
    print(f"{records} records in {segments} segments, {args.size / took / (1 << 20):.0f} MiB/s")


if __name__ == "__main__":
    main()
