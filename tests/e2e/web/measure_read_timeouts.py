"""Measure how long AWS clients wait for an answer before they give up (their read timeout),
to choose `[approval] hold_seconds`: a held call must be answered before its client stops
waiting. Not part of the suite (it takes minutes); run by hand:

    python3 tests/e2e/web/measure_read_timeouts.py [boto3] [awscli] [terraform]

A local "black hole" accepts each connection, reads the request and never answers. Every
connection's arrival is logged, so the gap between two connections is one attempt's read
timeout, and the number of connections is the client's attempts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CAP_SECONDS = float(os.environ.get("MEASURE_CAP_SECONDS", "420"))


class BlackHole:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.arrivals: list[float] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.arrivals.append(time.monotonic())
            self.held.append(conn)  # never answered, never closed by us

    def close(self) -> None:
        self.sock.close()
        for c in self.held:
            c.close()


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    e.update(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret", AWS_REGION="us-west-2",
             AWS_DEFAULT_REGION="us-west-2", AWS_CONFIG_FILE="/dev/null",
             AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true")
    return e


def measure(name: str, cmd: list[str], hole: BlackHole, cwd: str | None = None,
            extra: dict[str, str] | None = None) -> dict[str, object]:
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, env={**env(), **(extra or {})}, cwd=cwd, capture_output=True,
                              text=True, timeout=CAP_SECONDS)
        ended, out = "exited", (proc.stderr or proc.stdout)[-400:]
    except subprocess.TimeoutExpired:
        ended, out = f"still waiting after {CAP_SECONDS:.0f} s (stopped)", ""
    total = time.monotonic() - start
    times = [round(t - start, 1) for t in hole.arrivals]
    gaps = [round(b - a, 1) for a, b in zip(times, times[1:])]
    return {"client": name, "ended": ended, "total_s": round(total, 1), "attempts": len(times),
            "attempt_starts_s": times, "gaps_s": gaps, "tail": out.strip().splitlines()[-3:]}


def main() -> None:
    which = sys.argv[1:] or ["boto3", "awscli", "terraform"]
    results = []
    for client in which:
        hole = BlackHole()
        url = f"http://127.0.0.1:{hole.port}"
        if client == "boto3":
            code = ("import boto3; boto3.client('sts', endpoint_url=%r).get_caller_identity()" % url)
            results.append(measure("boto3 (defaults)", [sys.executable, "-c", code], hole))
        elif client == "awscli":
            results.append(measure("aws cli (defaults)", ["aws", "sts", "get-caller-identity",
                                                          "--endpoint-url", url], hole))
        elif client == "terraform":
            tf = shutil.which("terraform")
            if not tf:
                continue
            work = tempfile.mkdtemp()
            Path(work, "main.tf").write_text(
                'terraform {\n  required_providers {\n    aws = { source = "hashicorp/aws", version = "5.100.0" }\n  }\n}\n'
                'provider "aws" {\n  region = "us-west-2"\n  skip_credentials_validation = true\n'
                '  skip_requesting_account_id = true\n  skip_metadata_api_check = true\n}\n'
                'data "aws_vpcs" "all" {}\n')
            rc = Path(work, "terraformrc")
            rc.write_text('provider_installation {\n  filesystem_mirror {\n    path = "/opt/tf-plugins"\n  }\n}\n')
            extra = {"TF_CLI_CONFIG_FILE": str(rc), "AWS_ENDPOINT_URL": url, "CHECKPOINT_DISABLE": "1"}
            subprocess.run([tf, "init", "-input=false"], cwd=work, env={**env(), **extra},
                           capture_output=True, check=True)
            results.append(measure("terraform aws provider 5.100.0 (plan, defaults)",
                                   [tf, "plan", "-input=false", "-no-color"], hole, cwd=work, extra=extra))
        hole.close()
        print(json.dumps(results[-1]), flush=True)


if __name__ == "__main__":
    main()
