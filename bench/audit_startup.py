#!/usr/bin/env python3
"""Start-up of `airlock serve` over an empty and over a large audit log (see BENCHMARKS.md).

    python3 bench/audit_startup.py --size 10G [--binary target/debug/airlock] [--verify]

For each log (none, then one of --size written by bench/audit_log.py in 64 MiB segments):
`airlock init` in a temporary directory, then `serve` is started (--rounds times) and timed until its
`serve_started` record is in the log and until it answered its first call (an unsigned request,
refused with a 403), and its peak RSS (VmHWM) is read then. `audit tail -n 20` is timed too, and
with --verify `audit verify` (it reads the whole log); their peak RSS comes from GNU time. Everything is deleted at
the end, the large log included. Nothing listens beyond 127.0.0.1; the upstream is never reached.
"""
from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import re
import shutil
import signal
import statistics
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"airlock listening proxy=https://127\.0\.0\.1:(\d+)")


def load_generator():  # noqa: ANN201 (a module)
    spec = importlib.util.spec_from_file_location("audit_log", ROOT / "bench" / "audit_log.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vm_hwm_kib(pid: int) -> int:
    m = re.search(r"^VmHWM:\s+(\d+) kB$", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) if m else 0


def newest_segment_ends_with_start(state: Path, pid: int) -> bool:
    segments = sorted((state / "audit").glob("[0-9]*.jsonl"), key=lambda p: int(p.stem))
    if not segments:
        return False
    with open(segments[-1], "rb") as f:
        f.seek(max(0, segments[-1].stat().st_size - 65536))
        tail = f.read()
    return b'"event":"serve_started"' in tail and f'"pid":{pid},'.encode() in tail


def first_answer(port: int, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    conn.request("GET", "/")
    status = conn.getresponse().status
    conn.close()
    return status


def timed(cmd: list[str], cwd: Path) -> tuple[float, str, str]:
    """Runs cmd to the end: seconds, its peak RSS (from GNU time, where installed), output."""
    gnu_time = shutil.which("time") or "/usr/bin/time"
    wrapped = [gnu_time, "-f", "%M", "-o", str(cwd / "cmd.rss"), *cmd] if Path(gnu_time).exists() else cmd
    began = time.monotonic()
    out = subprocess.run(wrapped, cwd=cwd, capture_output=True, text=True).stdout
    took = time.monotonic() - began
    rss = cwd / "cmd.rss"
    peak = f"{int(rss.read_text().split()[-1]) / 1024:.1f} MiB" if rss.exists() else "(no GNU time)"
    rss.unlink(missing_ok=True)
    return took, peak, out


def start_once(binary: Path, work: Path, config: Path) -> tuple[float, float, float, int, int]:
    """One start of serve: seconds to its ready line, to its start record, to its first answer;
    that answer's status; its VmHWM then (KiB)."""
    env = {"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "AKIABENCHSTARTUP0001",
           "AWS_SECRET_ACCESS_KEY": "bench/startup/secret/never/used", "AWS_EC2_METADATA_DISABLED": "true"}
    began = time.monotonic()
    proc = subprocess.Popen([str(binary), "serve", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=open(work / "serve.log", "a"), text=True, env=env, cwd=work)
    try:
        assert proc.stdout
        port = 0
        for line in proc.stdout:
            m = READY.search(line)
            if m:
                port = int(m.group(1))
                break
        if not port:
            sys.exit(f"bench: serve did not start:\n{(work / 'serve.log').read_text()[-2000:]}")
        ready = time.monotonic() - began
        deadline = time.monotonic() + 120
        while not newest_segment_ends_with_start(work / "state", proc.pid):
            if time.monotonic() > deadline:
                sys.exit("bench: no serve_started record within 120 s")
            time.sleep(0.002)
        recorded = time.monotonic() - began
        status = first_answer(port, work / "certs" / "ca.pem")
        answered = time.monotonic() - began
        return ready, recorded, answered, status, vm_hwm_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def measure(binary: Path, work: Path, log_bytes: int, verify: bool, rounds: int) -> dict[str, str]:
    config = work / "config" / "airlock.toml"
    subprocess.run([str(binary), "init", "--config", str(config)], check=True, capture_output=True)
    text = config.read_text()
    for pattern, value in {r"(?m)^proxy = .*$": 'proxy = "127.0.0.1:0"',
                           r"(?m)^approvals = .*$": 'approvals = "127.0.0.1:0"',
                           r"(?m)^# endpoint = .*$": 'endpoint = "http://127.0.0.1:9"',
                           r"(?m)^desktop = .*$": "desktop = false"}.items():
        text, n = re.subn(pattern, value, text)
        if n != 1:
            sys.exit(f"bench: the config `airlock init` wrote has no line matching {pattern}")
    config.write_text(text)
    row = {"log": "empty" if not log_bytes else f"{log_bytes / (1 << 30):.1f} GiB"}
    if log_bytes:
        began = time.monotonic()
        records, segments = load_generator().generate(work / "state", log_bytes)
        row["records"] = f"{records:,} in {segments} segments"
        # The generator's dirty pages written back first: otherwise serve's first writes wait
        # for the kernel's writeback of gigabytes, which is the generator's cost, not serve's.
        os.sync()
        print(f"  generated {records:,} records in {segments} segments in {time.monotonic() - began:.0f} s",
              flush=True)
    starts = [start_once(binary, work, config) for _ in range(rounds)]
    # Medians of the times; the highest peak.
    ready, recorded, answered = (statistics.median(s[i] for s in starts) for i in range(3))
    statuses = sorted({s[3] for s in starts})
    peak = max(s[4] for s in starts)
    row.update(ready=f"{ready * 1000:.0f} ms", recorded=f"{recorded * 1000:.0f} ms",
               answered=f"{answered * 1000:.0f} ms (HTTP {statuses})", peak_rss=f"{peak / 1024:.1f} MiB",
               rounds=str(rounds))
    took, tail_peak, _ = timed([str(binary), "audit", "tail", "-n", "20", "--config", str(config)], work)
    row["tail"] = f"{took * 1000:.0f} ms, {tail_peak}"
    if verify:
        took, verify_peak, out = timed([str(binary), "audit", "verify", "--config", str(config)], work)
        row["verify"] = f"{took:.1f} s, {verify_peak}: {out.strip()}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="10G", help="the large log's size (default 10G)")
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "debug" / "airlock")
    parser.add_argument("--verify", action="store_true", help="also time `audit verify` (reads it all)")
    parser.add_argument("--rounds", type=int, default=5, help="starts per log (medians are shown)")
    args = parser.parse_args()
    size = load_generator().size(args.size)
    for log_bytes in (0, size):
        work = Path(tempfile.mkdtemp(prefix="airlock-audit-startup-"))
        try:
            print(measure(args.binary, work, log_bytes, args.verify, args.rounds), flush=True)
        finally:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
