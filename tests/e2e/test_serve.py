"""`airlock serve` on its own terms: a fresh start, a broken config, no real credentials, SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from support import REGION, Airlock, Moto, airlock_binary, configure, free_port, scrubbed_env


def _serve(home: Path, env: dict[str, str], config: Path | None = None) -> subprocess.Popen[str]:
    args = [str(airlock_binary()), "serve"] + (["--config", str(config)] if config else [])
    return subprocess.Popen(args, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ready(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[list[str], str]:
    """Lines printed until the ready line, and the proxy URL."""
    assert proc.stdout
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        m = re.search(r"airlock listening proxy=(https://\S+) approvals=(http://\S+)", line)
        if m:
            return lines, m.group(1)
    proc.kill()
    raise AssertionError(f"serve never became ready:\n{lines}\n{proc.stderr.read() if proc.stderr else ''}")


def test_a_fresh_checkout_serves_with_a_first_agent_and_without_real_credentials(tmp_path: Path) -> None:
    """What `cargo run --release -- serve` does in a new checkout: init, a first agent, its
    export lines; with no real credentials it still starts and says why calls fail."""
    # Nothing exists yet, and serve runs with the default config path and ports (8443/8444).
    proc = _serve(tmp_path, scrubbed_env())
    try:
        # No config at the default path yet: serve runs init first.
        lines, proxy = _ready(proc)
        assert (tmp_path / "config" / "airlock.toml").is_file()
        assert (tmp_path / "certs" / "ca.pem").is_file() and (tmp_path / "state").is_dir()
        exports = dict(re.findall(r"^export (AWS_[A-Z_]+)=(.*)$", "\n".join(lines), re.M))
        assert set(exports) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE"}
        assert exports["AWS_ACCESS_KEY_ID"].startswith("AIRLOCK")
        # A call is answered with an AWS-shaped error that says what is missing.
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError
        sts = boto3.session.Session(
            aws_access_key_id=exports["AWS_ACCESS_KEY_ID"], aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
            region_name=REGION,
        ).client("sts", endpoint_url=proxy, verify=str(tmp_path / "certs" / "ca.pem"),
                 config=Config(retries={"total_max_attempts": 1}))
        with pytest.raises(ClientError) as err:
            sts.get_caller_identity()
        assert err.value.response["Error"]["Code"] == "InternalFailure", err.value.response
        assert "credentials" in err.value.response["Error"]["Message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert stderr.count("no AWS credentials found") >= 1
    assert proc.returncode == 0, stderr


def test_without_aws_credentials_the_first_screen_says_what_to_do_in_a_few_clean_lines(tmp_path: Path) -> None:
    """A newcomer's first `serve` with no AWS credentials at all: the credential chain's
    instance-metadata probe runs and fails (here against a closed port on 127.0.0.1, as it
    fails off EC2), and the screen shows one line saying what is missing and how to give it,
    not the chain's multi-line error dumps."""
    config = tmp_path / "config" / "airlock.toml"
    subprocess.run([str(airlock_binary()), "init", "--config", str(config)], check=True, env=scrubbed_env(),
                   capture_output=True)
    configure(config, {("listen", "proxy"): "127.0.0.1:0", ("listen", "approvals"): "127.0.0.1:0"})
    env = scrubbed_env()
    # As on a newcomer's machine: no AWS files (a home without ~/.aws) and the probe on,
    # aimed at a local port nothing listens on.
    for name in ("AWS_EC2_METADATA_DISABLED", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        del env[name]
    env["HOME"] = str(tmp_path)
    env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    env.pop("AIRLOCK_LOG", None)
    proc = _serve(tmp_path, env, config)
    try:
        lines, _ = _ready(proc)
        # The approval page answers: serve is running (and handles SIGTERM) before it stops.
        approvals = re.search(r"approvals=(http://\S+)", lines[-1])
        assert approvals, lines
        with urllib.request.urlopen(approvals.group(1) + "/", timeout=10) as page:
            assert page.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    stderr = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    # Each line a log line of its own (no continuation of a dump), short enough to read.
    assert all(re.match(r"^\S+Z\s+(INFO|WARN|ERROR)\s", line) for line in lines), stderr
    for dump in ("IMDS", "DispatchFailure", "ConnectorError", "source:", "{ "):
        assert dump not in stderr, f"{dump!r} in the first screen:\n{stderr}"
    assert len(lines) <= 6, stderr
    # One warning says what is missing and the ways to give it.
    warning = [line for line in lines if "aws configure" in line]
    assert len(warning) == 1, stderr
    assert "no AWS credentials found" in warning[0], warning
    assert "AWS_PROFILE" in warning[0] and "AWS_ACCESS_KEY_ID" in warning[0], warning
    # The chain's own one-line reason, and where to see the lookup in full.
    assert "(the credential chain: " in warning[0], warning
    assert "AIRLOCK_LOG=aws_config=debug" in warning[0], warning


def test_an_invalid_config_is_reported_before_any_port_is_bound(tmp_path: Path) -> None:
    config = tmp_path / "config" / "airlock.toml"
    subprocess.run([str(airlock_binary()), "init", "--config", str(config)], check=True, env=scrubbed_env(),
                   capture_output=True)
    port = free_port()
    configure(config, {("listen", "proxy"): f"127.0.0.1:{port}", ("upstream", "endpoint"): "ftp://nowhere/x"})
    proc = subprocess.run([str(airlock_binary()), "serve", "--config", str(config)], env=scrubbed_env(),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert str(config) in proc.stderr and "[upstream] endpoint" in proc.stderr, proc.stderr
    assert "listening" not in proc.stdout
    # Nothing is listening on the configured port.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_sigterm_lets_an_in_flight_held_call_finish(tmp_path: Path, moto: Moto) -> None:
    """SIGTERM stops new connections but the request in flight still gets its answer."""
    server = Airlock(tmp_path, moto)
    server.init("enforce")
    configure(server.config, {("approval", "hold_seconds"): 6})
    server.start()
    agent = server.add_agent("sigterm-agent")
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    client = agent.client("dynamodb", config=Config(retries={"total_max_attempts": 1}))
    import threading
    result: dict[str, str] = {}

    def call() -> None:
        try:
            client.delete_table(TableName="held-through-sigterm")
            result["code"] = "ok"
        except ClientError as e:
            result["code"] = e.response["Error"]["Code"]
        except Exception as e:  # the connection was cut
            result["code"] = f"{type(e).__name__}"

    t = threading.Thread(target=call)
    t.start()
    # Wait until the call is held (its approval is pending), then stop airlock under it.
    deadline = time.monotonic() + 15
    while not json.loads(server.cli("approvals", "--json").stdout):
        assert time.monotonic() < deadline, "the call was never held"
        time.sleep(0.05)
    assert server.proc
    server.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert result.get("code") == "AccessDeniedException", result  # the JSON protocol's name for it
    assert server.proc.wait(30) == 0
