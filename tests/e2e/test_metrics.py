"""`/metrics` and `/healthz` on the approval listener, read as Prometheus and a load balancer
would read them, after real traffic from boto3 through an enforcing airlock to moto.

Each test starts an airlock of its own, so its counters hold exactly what the test sent: the
counts asserted are the calls made here, by outcome, with the approval granted by
`airlock approve ID --key FILE` as a human would. Nothing in the exposition may name the agent
or its key.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from support import REGION, GatedAirlock, Moto, error_code, unique

NO_RETRIES = Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})

# One sample of the Prometheus text format: `name{label="value",...} number`.
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Scrape:
    """One `GET /metrics`, parsed."""

    def __init__(self, airlock: GatedAirlock):
        r = requests.get(f"{airlock.approvals_url}/metrics", timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
        self.text = r.text
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in r.text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            assert m, f"not a Prometheus sample: {line!r}"
            labels = dict(_LABEL.findall(m.group(2) or ""))
            self.samples.append((m.group(1), labels, float(m.group(3))))

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 if none)."""
        return sum(v for n, ls, v in self.samples
                   if n == name and all(ls.get(k) == want for k, want in labels.items()))

    def requests(self, service: str, cls: str, outcome: str) -> float:
        return self.value("airlock_requests_total", service=service, outcome=outcome, **{"class": cls})

    def phase_count(self, phase: str) -> float:
        return self.value("airlock_phase_seconds_count", phase=phase)


def health(airlock: GatedAirlock) -> requests.Response:
    return requests.get(f"{airlock.approvals_url}/healthz", timeout=10)


def wait_for(what: str, check: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_metrics_count_the_calls_sent(start_gated_airlock: Callable[..., GatedAirlock], moto: Moto) -> None:
    gate = start_gated_airlock("metrics")
    agent = gate.add_agent(unique("metrics-agent"))
    sts = agent.client("sts", config=NO_RETRIES)
    s3 = agent.client("s3", config=NO_RETRIES)
    iam = agent.client("iam", config=NO_RETRIES)
    bucket = unique("metrics-bucket")

    # Allowed: three STS calls and a bucket.
    for _ in range(3):
        assert sts.get_caller_identity()["Arn"] == moto.user_arn
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    # Refused before identification: a wrong secret.
    forged = agent.client("sts", secret="wrong" + agent.secret_access_key, config=NO_RETRIES)
    assert error_code(forged.get_caller_identity) == "SignatureDoesNotMatch"
    # Denied by the catalogue: a call that hands out credentials.
    assert error_code(iam.create_access_key, UserName="someone") == "AccessDenied"
    # Gated: refused with the approval link, which is pending now.
    with pytest.raises(ClientError) as refused:
        s3.delete_bucket(Bucket=bucket)
    approval = gate.approval_id(refused.value.response["Error"]["Message"])

    pending = Scrape(gate)
    assert pending.value("airlock_pending_approvals") == 1, pending.text
    assert pending.value("airlock_held_calls") == 0, pending.text

    # Approved by a human, the retry goes through under the receipt.
    gate.approve(approval)
    s3.delete_bucket(Bucket=bucket)
    assert bucket not in [b["Name"] for b in moto.client("s3").list_buckets()["Buckets"]]

    m = Scrape(gate)
    assert m.requests("sts", "none", "forwarded") == 3, m.text
    assert m.requests("s3", "none", "forwarded") == 1, m.text
    assert m.requests("-", "-", "refused") == 1, m.text
    assert m.requests("iam", "credential-vending", "denied_by_policy") == 1, m.text
    assert m.requests("s3", "destructive-verb", "approval_required") == 1, m.text
    assert m.requests("s3", "destructive-verb", "receipt_used") == 1, m.text
    assert m.value("airlock_requests_total") == 8, m.text
    # Each phase saw the calls that reached it.
    assert m.phase_count("authenticate") == 8, m.text
    assert m.phase_count("identify") == 7, m.text
    assert m.phase_count("decide") == 7, m.text
    assert m.phase_count("redeem") == 2, m.text
    assert m.phase_count("resign") == 5, m.text
    assert m.phase_count("forward") == 5, m.text
    assert m.value("airlock_receipt_uses_total", settled="committed") == 1, m.text
    assert m.value("airlock_receipt_uses_total", settled="released") == 0, m.text
    assert m.value("airlock_pending_approvals") == 0, m.text
    # One record per call, and serve's own start.
    assert m.value("airlock_audit_write_seconds_count") == 9, m.text
    assert m.value("airlock_audit_write_failures_total") == 0, m.text
    assert m.value("airlock_upstream_errors_total") == 0, m.text
    # The spent receipt's record was synced at once.
    assert m.value("airlock_audit_sync_seconds_count") >= 1, m.text
    # Nothing that names the agent or its keys.
    for secret in (agent.name, agent.access_key_id, agent.secret_access_key, moto.access_key_id, bucket):
        assert secret not in m.text


def test_a_held_call_is_a_gauge_until_it_is_approved(start_gated_airlock: Callable[..., GatedAirlock],
                                                     moto: Moto) -> None:
    gate = start_gated_airlock("metrics-held", settings={("approval", "hold_seconds"): 30})
    agent = gate.add_agent(unique("metrics-held-agent"))
    s3 = agent.client("s3", config=NO_RETRIES.merge(Config(read_timeout=60)))
    bucket = unique("metrics-held")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})

    result: dict[str, Any] = {}

    def delete() -> None:
        try:
            s3.delete_bucket(Bucket=bucket)
            result["ok"] = True
        except ClientError as e:
            result["error"] = e.response["Error"]

    caller = threading.Thread(target=delete, daemon=True)
    caller.start()
    wait_for("the call to be held", lambda: Scrape(gate).value("airlock_held_calls") == 1)
    held = Scrape(gate)
    assert held.value("airlock_pending_approvals") == 1, held.text
    [approval] = gate.pending_ids()
    gate.approve(approval)
    caller.join(60)
    assert result == {"ok": True}, result
    assert bucket not in [b["Name"] for b in moto.client("s3").list_buckets()["Buckets"]]

    m = Scrape(gate)
    assert m.value("airlock_held_calls") == 0, m.text
    assert m.value("airlock_pending_approvals") == 0, m.text
    assert m.requests("s3", "destructive-verb", "receipt_used") == 1, m.text
    assert m.value("airlock_receipt_uses_total", settled="committed") == 1, m.text
    # The redeem phase includes the time the call was held (at least one look at the store).
    assert m.phase_count("redeem") == 1, m.text
    assert m.value("airlock_phase_seconds_sum", phase="redeem") >= 0.2, m.text


def test_an_unreachable_upstream_is_counted_by_kind(start_moto: Callable[[str], Moto],
                                                   start_gated_airlock: Callable[..., GatedAirlock]) -> None:
    upstream = start_moto("metrics-moto")
    gate = start_gated_airlock("metrics-upstream", upstream=upstream)
    sts = gate.add_agent(unique("metrics-upstream-agent")).client("sts", config=NO_RETRIES)
    assert sts.get_caller_identity()["Arn"] == upstream.user_arn
    upstream.stop()
    assert error_code(sts.get_caller_identity) == "ServiceUnavailable"

    m = Scrape(gate)
    assert m.requests("sts", "none", "forwarded") == 1, m.text
    assert m.requests("sts", "none", "upstream_failure") == 1, m.text
    assert m.value("airlock_upstream_errors_total", kind="unreachable") == 1, m.text
    assert m.value("airlock_upstream_errors_total") == 1, m.text
    # Served under the approval page's own host names only, as every page there (DNS rebinding).
    port = gate.approvals_url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        ok = requests.get(f"{gate.approvals_url}/metrics", headers={"Host": host}, timeout=10)
        assert ok.status_code == 200, host
    rebound = requests.get(f"{gate.approvals_url}/metrics", headers={"Host": f"attacker.example:{port}"},
                           timeout=10)
    assert rebound.status_code == 421 and "airlock_" not in rebound.text, rebound.text


def test_healthz_says_503_while_the_audit_log_cannot_be_written(
        start_gated_airlock: Callable[..., GatedAirlock]) -> None:
    gate = start_gated_airlock("metrics-health")
    agent = gate.add_agent(unique("metrics-health-agent"))
    sts = agent.client("sts", config=NO_RETRIES)
    ok = health(gate)
    assert (ok.status_code, ok.text) == (200, "ok\n")

    # The log's directory is moved aside and a file takes its place: nothing can be appended.
    log = gate.state_dir / "audit"
    aside = gate.state_dir / "audit.aside"
    log.rename(aside)
    log.write_text("")
    try:
        broken = health(gate)
        assert broken.status_code == 503, broken.text
        assert broken.text.startswith("unhealthy:") and "audit" in broken.text, broken.text
        assert str(gate.state_dir) not in broken.text
        # Allowed calls are still served; their records are lost, and counted as lost.
        sts.get_caller_identity()
        m = Scrape(gate)
        assert m.value("airlock_audit_write_failures_total") == 1, m.text
        assert health(gate).status_code == 503
    finally:
        log.unlink()
        aside.rename(log)
    # The log is back; the next record written says so, and so does /healthz.
    assert health(gate).status_code == 503, "healthy before any record could be written"
    sts.get_caller_identity()
    back = health(gate)
    assert (back.status_code, back.text) == (200, "ok\n")
    assert Scrape(gate).value("airlock_audit_write_failures_total") == 1
