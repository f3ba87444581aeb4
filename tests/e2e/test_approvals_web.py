"""The approval page, end to end, in real headless Chromium with a passkey.

A human's passkey is a CDP virtual authenticator (user verification on) in Debian's chromium,
driven by playwright-core (tests/e2e/web/driver.mjs). The human enrolls it through the link
`airlock approver enroll` prints, watches held calls appear on the list page, reads what a
call does, and approves or denies it with the passkey while the agent's call is held. The
agent, meanwhile, holds the same link, runs requests (curl) against every endpoint of the
page, and drives a browser of its own: none of it approves or enrolls anything.

Calls go through airlock to moto with signature checking on, so "the call completed" and
"nothing changed" are checked in moto's own state.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import _RUNNING as RUNNING  # failure reports show the logs of what is running
from support import REPO, Agent, Airlock, Moto, audit_records, error_code, require_tool, run, scrubbed_env, unique

DRIVER = Path(__file__).resolve().parent / "web" / "driver.mjs"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# One attempt, botocore's default 60 s read timeout: a held call must be answered within it,
# and is never sent twice by the client (so "not re-run" is airlock's doing).
ONE_ATTEMPT = Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"})
HOLD = 40


def save_artifact(path: Path) -> None:
    """Keep a copy under tests/e2e/artifacts/ (which ignores itself in git)."""
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shutil.copy(path, ARTIFACTS / path.name)


def browser_tools() -> None:
    require_tool("node")
    chromium = os.environ.get("AIRLOCK_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).is_file():
        require_tool("chromium")
    if not (REPO / "node_modules" / "playwright-core").is_dir():
        if os.environ.get("CI"):
            pytest.fail("playwright-core is not installed (npm ci), and CI is set", pytrace=False)
        pytest.skip("playwright-core is not installed: run `npm ci`")


def drive(command: dict[str, Any], on_event: Callable[[dict[str, Any]], None] | None = None,
          timeout: float = 300) -> dict[str, Any]:
    """Run one driver command; its final `done` object (events before it go to on_event)."""
    proc = subprocess.Popen(["node", str(DRIVER), json.dumps(command)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        result: dict[str, Any] | None = None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "done":
                result = event
            elif event["event"] == "error":
                raise AssertionError(f"browser driver failed: {event['message']}")
            elif on_event:
                on_event(event)
        proc.wait()
    finally:
        timer.cancel()
    if result is None:
        raise AssertionError(f"browser driver ended without a result: {proc.stderr.read() if proc.stderr else ''}")
    return result


class Webhook:
    """A local receiver for `[notify] webhook_url`: keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append({"content_type": self.headers.get("Content-Type"), "body": body})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def messages_for(self, approval_id: str) -> list[dict[str, Any]]:
        out = []
        for r in self.received:
            m = json.loads(r["body"])
            if m.get("airlock", {}).get("approval_id") == approval_id:
                out.append(m)
        return out

    def stop(self) -> None:
        self.server.shutdown()


class Held(threading.Thread):
    """An agent's call running in the background while a human decides."""

    def __init__(self, call: Callable[[], Any]):
        super().__init__(daemon=True)
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None
        self.elapsed = 0.0

    def run(self) -> None:
        start = time.monotonic()
        try:
            self.result = self.call()
        except BaseException as e:  # noqa: BLE001 (reported by the test)
            self.error = e
        self.elapsed = time.monotonic() - start

    def finished(self, timeout: float) -> Held:
        self.join(timeout)
        assert not self.is_alive(), f"the call is still held after {timeout} s"
        return self


@dataclass
class WebAirlock:
    airlock: Airlock
    agent: Agent
    credfile: Path
    hold: int
    artifacts: Path
    finish_requests: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return self.airlock.approvals_url

    @property
    def port(self) -> str:
        return self.base.rsplit(":", 1)[1]

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"

    def approval(self, approval_id: str) -> dict[str, Any]:
        return json.loads((self.airlock.home / "state" / "approvals" / f"{approval_id}.json").read_text())

    def enroll_link(self, name: str = "alice") -> str:
        out = self.airlock.cli("approver", "enroll", name).stdout
        m = re.search(rf"http://localhost:{self.port}/enroll/[A-Za-z0-9_-]{{43}}", out)
        assert m, out
        return m.group(0)


def set_raw(text: str, section: str, key: str, toml_value: str) -> str:
    """`key = toml_value` in [section] (a live or commented-out line the example config has)."""
    lines = text.splitlines(keepends=True)
    current = None
    for i, line in enumerate(lines):
        header = re.match(r"^\[([a-z_]+)\]\s*$", line)
        if header:
            current = header.group(1)
        elif current == section and re.match(rf"^#?\s*{key}\s*=", line):
            lines[i] = f"{key} = {toml_value}\n"
            return "".join(lines)
    raise AssertionError(f"no [{section}] {key} line in the config `airlock init` wrote")


def start_web_airlock(label: str, moto: Moto, tmp_path_factory: pytest.TempPathFactory,
                      hold: int, webhook: Webhook | None, extra_config: str = "") -> WebAirlock:
    browser_tools()
    home = tmp_path_factory.mktemp(label)
    server = Airlock(home, moto)
    server.init("enforce")
    text = server.config.read_text()
    text = set_raw(text, "approval", "hold_seconds", str(hold))
    text = set_raw(text, "notify", "desktop", "false")
    if webhook:
        text = set_raw(text, "notify", "webhook_url", json.dumps(webhook.url))
    # Everything at moto's account is production here: the banner must show.
    text += '\n[[environment]]\nname = "production"\naccounts = ["*"]\n' + extra_config
    parsed = tomllib.loads(text)
    assert parsed["approval"]["hold_seconds"] == hold and parsed["notify"]["desktop"] is False
    server.config.write_text(text)
    server.start()
    RUNNING[label] = server
    agent = server.add_agent(unique("web-agent"))
    artifacts = home / "artifacts"
    artifacts.mkdir()
    web = WebAirlock(server, agent, home / "passkey.json", hold, artifacts)
    # The human enrolls a passkey through the printed link.
    link = web.enroll_link()
    out = drive({"cmd": "enroll", "link": link, "credfile": str(web.credfile)})
    assert out["status"] == 200 and out["result"]["kind"] == "ok", out
    assert out["url"].startswith(f"http://localhost:{web.port}/enroll/"), out["url"]
    passkeys = home / "state" / "passkeys.json"
    assert passkeys.stat().st_mode & 0o777 == 0o600
    assert [p["name"] for p in json.loads(passkeys.read_text())["passkeys"]] == ["alice"]
    # The link worked once.
    again = drive({"cmd": "enroll", "link": link, "credfile": str(home / "second.json")})
    assert again["status"] == 404, again
    return web


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.stop()


@pytest.fixture(scope="module")
def web(moto: Moto, tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Iterator[WebAirlock]:
    w = start_web_airlock("airlock-web", moto, tmp_path_factory, HOLD, webhook)
    try:
        yield w
    finally:
        RUNNING.pop("airlock-web", None)
        w.airlock.stop()


@pytest.fixture(scope="module")
def short_hold(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebAirlock]:
    w = start_web_airlock("airlock-short-hold", moto, tmp_path_factory, 4, None)
    try:
        yield w
    finally:
        RUNNING.pop("airlock-short-hold", None)
        w.airlock.stop()


@pytest.fixture
def new_db(moto: Moto) -> Iterator[Callable[[str], str]]:
    """Make a database in moto; whatever a test leaves is deleted after it. (moto gives every
    instance the same dbi-resource-id, so a leftover breaks Terraform's reads elsewhere.)"""
    made: list[str] = []

    def make(prefix: str) -> str:
        db = unique(prefix)
        moto.client("rds").create_db_instance(
            DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro", AllocatedStorage=20,
            MasterUsername="airlock", MasterUserPassword="not-a-real-password-1")
        made.append(db)
        return db

    yield make
    for db in made:
        if db_exists(moto, db):
            moto.client("rds").delete_db_instance(DBInstanceIdentifier=db, SkipFinalSnapshot=True)


def db_exists(moto: Moto, db: str) -> bool:
    try:
        [i] = moto.client("rds").describe_db_instances(DBInstanceIdentifier=db)["DBInstances"]
    except ClientError as e:
        assert e.response["Error"]["Code"] == "DBInstanceNotFound", e.response
        return False
    return i["DBInstanceStatus"] != "deleting"


def delete_db(web: WebAirlock, db: str) -> Callable[[], Any]:
    rds = web.agent.client("rds", config=ONE_ATTEMPT)
    return lambda: rds.delete_db_instance(DBInstanceIdentifier=db, SkipFinalSnapshot=True,
                                          DeleteAutomatedBackups=True)


def hold_and_decide(web: WebAirlock, call: Held, match: str, decision: str, **extra: Any) -> dict[str, Any]:
    """Open the list page first, then start the call: the page must show it without a reload;
    the human opens it and decides with the passkey while the call is held."""
    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "list-open":
            call.start()

    out = drive({"cmd": "decide", "credfile": str(web.credfile), "decision": decision,
                 "list_url": web.base + "/", "match": match, "wait_s": 30, **extra}, on_event)
    if out.get("finish_request"):
        web.finish_requests.append(out["finish_request"])
    return out


def approval_id_of(out: dict[str, Any]) -> str:
    m = re.search(r"/approvals/([a-z0-9]+)$", out["url"])
    assert m, out["url"]
    return m.group(1)


# --- the human approves and denies ------------------------------------------------------------


def test_a_held_call_is_approved_with_a_passkey_and_completes_once(web: WebAirlock, moto: Moto,
                                                                   webhook: Webhook, new_db: Callable[[str], str]) -> None:
    db = new_db("web-db")
    call = Held(delete_db(web, db))
    shot = web.artifacts / "approval-page.png"
    out = hold_and_decide(web, call, db, "approve", screenshot=str(shot),
                          screenshot_after=str(web.artifacts / "approval-page-approved.png"))
    call.finished(web.hold + 10)
    assert call.error is None, f"the approved call failed: {call.error}"
    assert call.elapsed < web.hold, call.elapsed

    # The list showed the call without a reload; the page (on localhost, for passkeys) showed
    # what it does.
    assert not out["list_reloaded"]
    assert "rds:DeleteDBInstance" in out["list_row"] and db in out["list_row"], out["list_row"]
    assert out["url"].startswith(f"http://localhost:{web.port}/approvals/"), out["url"]
    text = out["text"]
    for expected in [
        "rds:DeleteDBInstance",
        f"Deletes database {db}. SkipFinalSnapshot=true: no final snapshot. "
        "DeleteAutomatedBackups=true: its automated backups are deleted too.",
        "IRREVERSIBLE",
        "PRODUCTION",
        f"arn:aws:rds:us-west-2:123456789012:db:{db}",
        "SkipFinalSnapshot", "DeleteAutomatedBackups", "DBInstanceIdentifier",
        web.agent.name, "builtin:", "15 minutes",
    ]:
        assert expected in text, f"{expected!r} not on the page:\n{text}"
    assert out["production_banner"]
    assert out["result"] == {"text": "Approved 1 call.", "kind": "ok"}, out["result"]
    # The held call is woken at the same moment and may spend the receipt before the page
    # reads the status back: either status names alice.
    assert out["status_after"] in ("Approved by alice", "Closed (decided by alice)"), out["status_after"]
    assert shot.stat().st_size > 10_000
    save_artifact(shot)

    # The call reached moto once: the database is gone, and airlock saw one attempt.
    assert not db_exists(moto, db)
    approval_id = approval_id_of(out)
    record = web.approval(approval_id)
    assert record["attempts"] == 1 and record["decided_by"] == "alice", record
    # The decision is in the audit log, made with a passkey, before the call's own record.
    audit = audit_records(web.airlock.home / "state")
    decisions = [r for r in audit if r.get("approval") == approval_id and r["event"] == "approved"]
    assert len(decisions) == 1, decisions
    assert decisions[0]["via"] == "passkey" and decisions[0]["approver"] == "alice", decisions[0]
    assert decisions[0]["receipt"] == record["receipt_id"], decisions[0]
    used = [i for i, r in enumerate(audit) if r["event"] == "receipt_used" and r.get("receipt") == record["receipt_id"]]
    assert used and used[0] > audit.index(decisions[0]), "the receipt use is not recorded after the decision"
    # The receipt carries the human's assertion and airlock's signature; it verifies offline.
    receipt = web.airlock.home / "state" / "receipts" / f"{record['receipt_id']}.json"
    body = json.loads(receipt.read_text())["body"]
    assert body["webauthn"]["batch"] == [] and body["approver"] == "alice"
    verified = web.airlock.cli("receipt", "verify", str(receipt)).stdout
    assert re.search(r"valid signature by airlock \([0-9a-f]{16}\), alice \([0-9a-f]{16}\)", verified), verified
    tampered = json.loads(receipt.read_text())
    tampered["body"]["resources"] = [f"arn:aws:rds:us-west-2:123456789012:db:other-db"]
    bad = web.airlock.home / "tampered.json"
    bad.write_text(json.dumps(tampered))
    refused = web.airlock.cli("receipt", "verify", str(bad), check=False)
    assert refused.returncode != 0 and "does not verify" in refused.stderr, refused

    # One webhook message for the blocked call, with the call, the environment and the link.
    [message] = webhook.messages_for(approval_id)
    assert f"rds:DeleteDBInstance on {db}" in message["text"]
    assert "production" in message["text"].lower()
    assert f"http://localhost:{web.port}/approvals/{approval_id}" in message["text"]
    assert message["blocks"][0]["type"] == "section"


def test_a_held_call_denied_with_a_passkey_ends_in_access_denied(web: WebAirlock, moto: Moto, new_db: Callable[[str], str]) -> None:
    db = new_db("web-deny")
    call = Held(delete_db(web, db))
    out = hold_and_decide(web, call, db, "deny")
    assert out["result"]["kind"] == "ok" and out["result"]["text"] == "Denied 1 call.", out["result"]
    call.finished(web.hold + 10)
    assert call.elapsed < web.hold
    assert isinstance(call.error, ClientError), call.error
    err = call.error.response["Error"]
    assert err["Code"] == "AccessDenied" and "denied by alice" in err["Message"], err
    assert db_exists(moto, db), "a denied call changed moto"
    record = web.approval(approval_id_of(out))
    receipt = web.airlock.home / "state" / "receipts" / f"{record['receipt_id']}.json"
    proc = web.airlock.cli("receipt", "verify", str(receipt), check=False)
    assert proc.returncode != 0 and "denial" in proc.stderr, proc


def test_one_touch_approves_several_calls_each_with_its_own_receipt(web: WebAirlock, moto: Moto) -> None:
    ddb = moto.client("dynamodb")
    tables = [unique("web-batch") for _ in range(3)]
    for t in tables:
        ddb.create_table(TableName=t, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    client = web.agent.client("dynamodb", config=ONE_ATTEMPT)
    calls = [Held(lambda t=t: client.delete_table(TableName=t)) for t in tables]
    first, rest = calls[0], calls[1:]
    for c in rest:
        c.start()
    # The others are pending when the human opens the first one.
    deadline = time.monotonic() + 30
    while not all(t in web.airlock.cli("approvals", "--json").stdout for t in tables[1:]):
        assert time.monotonic() < deadline, "the other calls were never held"
        time.sleep(0.05)
    out = hold_and_decide(web, first, tables[0], "approve", batch=True)
    assert out["batch_count"] == 2, out
    assert out["result"] == {"text": "Approved 3 calls.", "kind": "ok"}, out["result"]
    for c in calls:
        c.finished(web.hold + 10)
        assert c.error is None, c.error
    assert not set(tables) & set(ddb.list_tables()["TableNames"])
    # Three receipts, one assertion; each verifies on its own.
    receipts = []
    for f in (web.airlock.home / "state" / "receipts").glob("*.json"):
        body = json.loads(f.read_text())["body"]
        if body["operation"] == "DeleteTable" and any(t in r for t in tables for r in body["resources"]):
            receipts.append((f, body))
    assert len(receipts) == 3
    assert len({b["webauthn"]["signature"] for _, b in receipts}) == 1
    assert all(len(b["webauthn"]["batch"]) == 3 for _, b in receipts)
    for f, _ in receipts:
        web.airlock.cli("receipt", "verify", str(f))


# --- the agent cannot approve or enroll -----------------------------------------------------


def test_the_agent_cannot_approve_or_enroll(web: WebAirlock, moto: Moto, new_db: Callable[[str], str]) -> None:
    db = new_db("web-agent")
    call = Held(delete_db(web, db))
    call.start()
    deadline = time.monotonic() + 10
    while True:
        pending = [a for a in requests.get(f"{web.base}/api/approvals", timeout=5).json()["pending"]
                   if db in a["targets"]]
        if pending or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    [row] = pending
    approval_id = row["id"]
    page_url = f"{web.origin}/approvals/{approval_id}"
    s = requests.Session()

    # Reading is allowed, and approves nothing.
    r = s.get(f"{web.base}/approvals/{approval_id}", timeout=5)
    assert r.status_code == 200 and r.url == page_url and db in r.text
    assert "default-src 'none'" in r.headers["content-security-policy"]
    csrf = re.search(r'data-csrf="([^"]+)"', r.text).group(1)
    assert s.get(f"{page_url}?decision=approve", timeout=5).status_code == 200
    for method in ("POST", "PUT", "DELETE"):
        assert s.request(method, page_url, timeout=5).status_code == 405

    good = {"Origin": web.origin, "X-Airlock-CSRF": csrf, "Content-Type": "application/json"}
    key_id = json.loads((web.airlock.home / "state" / "passkeys.json").read_text())["passkeys"][0]["key_id"]
    begin = {"decision": "approve", "ids": [approval_id], "passkey": key_id, "ttl_secs": 900}

    def post(path: str, payload: Any, headers: dict[str, str], host: str | None = None) -> requests.Response:
        url = f"{web.base}{path}" if host is None else f"http://127.0.0.1:{web.port}{path}"
        h = dict(headers)
        if host:
            h["Host"] = host
        return s.post(url, data=json.dumps(payload), headers=h, timeout=5)

    refusals = {
        "no Origin": post("/api/decide/begin", begin, {k: v for k, v in good.items() if k != "Origin"}),
        "another Origin": post("/api/decide/begin", begin, {**good, "Origin": "http://evil.localhost:9"}),
        "another port": post("/api/decide/begin", begin, {**good, "Origin": "http://localhost:1"}),
        "cross-site fetch": post("/api/decide/begin", begin, {**good, "Sec-Fetch-Site": "cross-site"}),
        "no CSRF token": post("/api/decide/begin", begin, {k: v for k, v in good.items() if k != "X-Airlock-CSRF"}),
        "forged CSRF token": post("/api/decide/begin", begin, {**good, "X-Airlock-CSRF": secrets.token_urlsafe(32)}),
        "form post": post("/api/decide/begin", begin, {**good, "Content-Type": "application/x-www-form-urlencoded"}),
        "DNS rebinding": post("/api/decide/begin", begin, good, host="evil.example:80"),
        "unknown field": post("/api/decide/begin", {**begin, "approved": True}, good),
    }
    for what, resp in refusals.items():
        assert resp.status_code in (400, 403, 415, 421), f"{what}: {resp.status_code} {resp.text}"

    # A ceremony can be started (it only hands out a challenge) but not finished without the
    # human's passkey: a made-up assertion, then the same ceremony again.
    started = post("/api/decide/begin", begin, good)
    assert started.status_code == 200, started.text
    ceremony = started.json()["ceremony"]
    junk = {"ceremony": ceremony, "credential_id": "AAAA", "authenticator_data": "AAAA",
            "client_data_json": "e30", "signature": "AAAA"}
    r = post("/api/decide/finish", junk, good)
    assert r.status_code == 403 and "passkey refused" in r.json()["error"], r.text
    r = post("/api/decide/finish", junk, good)
    assert r.status_code == 403 and "ceremony" in r.json()["error"], r.text

    # The human's real assertions from earlier tests: replayed as sent, and moved into a
    # fresh ceremony for this call. Both refused.
    assert web.finish_requests, "run with the approval tests first"
    for replay in web.finish_requests:
        r = post("/api/decide/finish", json.loads(replay), good)
        assert r.status_code == 403, r.text
        fresh = post("/api/decide/begin", begin, good).json()["ceremony"]
        moved = {**json.loads(replay), "ceremony": fresh}
        r = post("/api/decide/finish", moved, good)
        assert r.status_code == 403 and "challenge" in r.json()["error"], r.text

    # Enrollment: a forged token, a used one.
    forged = secrets.token_urlsafe(32)
    assert s.get(f"{web.origin}/enroll/{forged}", timeout=5).status_code == 404
    assert post("/api/enroll/begin", {"token": forged}, good).status_code == 403
    used = json.loads((web.airlock.home / "state" / "enrollments.json").read_text())["enrollments"]
    assert all(e["used_at"] for e in used)

    # The agent's own browser, with an authenticator of its own: Approve and Deny fail, and
    # forged or used enrollment links show nothing to register.
    attack = drive({"cmd": "attack", "approval_url": page_url, "own_authenticator": True,
                    "enroll_link": f"{web.origin}/enroll/{forged}"})
    assert attack["approve"]["kind"] == "error" and attack["deny"]["kind"] == "error", attack
    assert attack["status_after"] == "Waiting for a decision"
    assert attack["enroll_status"] == 404

    # Nothing of it approved: still pending, still held, then refused with the link.
    assert web.approval(approval_id)["status"] == "pending"
    assert call.is_alive(), "the held call ended early"
    call.finished(web.hold + 10)
    assert isinstance(call.error, ClientError)
    assert call.error.response["Error"]["Code"] == "AccessDenied"
    assert f"/approvals/{approval_id}" in call.error.response["Error"]["Message"]
    assert db_exists(moto, db)
    passkeys = json.loads((web.airlock.home / "state" / "passkeys.json").read_text())["passkeys"]
    assert [p["name"] for p in passkeys] == ["alice"], "the agent enrolled a passkey"


# --- hold timing ------------------------------------------------------------------------------


def test_a_call_not_approved_in_time_gets_the_link_and_its_retry_goes_through_once(
        short_hold: WebAirlock, moto: Moto, new_db: Callable[[str], str]) -> None:
    w = short_hold
    db = new_db("web-late")
    first = Held(delete_db(w, db))
    first.start()
    first.finished(w.hold + 10)
    assert w.hold <= first.elapsed < w.hold + 3, first.elapsed
    assert isinstance(first.error, ClientError)
    message = first.error.response["Error"]["Message"]
    link = w.airlock.approval_link(message)
    assert db_exists(moto, db)

    # The human approves afterwards; the approval was kept pending.
    out = drive({"cmd": "decide", "credfile": str(w.credfile), "decision": "approve", "approval_url": link})
    assert out["result"]["kind"] == "ok", out
    retry = Held(delete_db(w, db))
    retry.start()
    retry.finished(w.hold + 10)
    assert retry.error is None, retry.error
    assert retry.elapsed < 2, retry.elapsed
    assert not db_exists(moto, db)
    # Once: the same call again is held and refused.
    third = Held(delete_db(w, db))
    third.start()
    third.finished(w.hold + 10)
    assert isinstance(third.error, ClientError) and third.error.response["Error"]["Code"] == "AccessDenied"


def test_agent_supplied_text_is_shown_as_text(short_hold: WebAirlock) -> None:
    """Resource names and parameters come from the agent: the page escapes them and spells
    out characters that would make one name look like another."""
    w = short_hold
    key = "<script>alert(1)</script>/prod\u202edb"
    bucket = unique("web-xss")
    s3 = w.agent.client("s3", config=ONE_ATTEMPT)
    call = Held(lambda: s3.delete_object(Bucket=bucket, Key=key))
    call.start()
    call.finished(w.hold + 10)
    link = w.airlock.approval_link(call.error.response["Error"]["Message"])
    page = requests.get(link, timeout=5)
    assert page.status_code == 200
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;/prod⟨U+202E⟩db" in page.text
    listed = requests.get(f"{w.base}/api/approvals", timeout=5).json()["pending"]
    assert any("⟨U+202E⟩" in a["targets"] for a in listed)


def test_the_webhook_got_one_message_per_blocked_call(web: WebAirlock, webhook: Webhook) -> None:
    ids = [p.stem for p in (web.airlock.home / "state" / "approvals").glob("*.json")]
    assert len(ids) >= 4
    time.sleep(1)
    for approval_id in ids:
        messages = webhook.messages_for(approval_id)
        assert len(messages) == 1, (approval_id, messages)
        [m] = messages
        assert m["text"].startswith("airlock: approval needed for ")
        assert m["airlock"]["link"].endswith(f"/approvals/{approval_id}")
    assert all(r["content_type"] == "application/json" for r in webhook.received)


# --- the incident, replayed: terraform destroy by an agent ----------------------------------


def test_terraform_destroy_under_airlock_exec_waits_for_the_page_and_completes(
        web: WebAirlock, moto: Moto, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """`airlock exec AGENT -- terraform destroy`: every destructive call is held; the human
    approves each wave of them on the page with one passkey touch; Terraform, never re-run,
    completes, and the stack is gone from moto."""
    from test_terraform import terraform_workdir

    terraform = require_tool("terraform")
    workdir, cli_config = terraform_workdir(tmp_path)
    tf_settings = {"TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    name = unique("tfweb")
    # The stack is applied through the shadow-mode airlock the client suites use.
    apply_env = {**request.getfixturevalue("agent").env, **tf_settings}
    run([terraform, "init", "-input=false", "-no-color"], apply_env, cwd=workdir)
    run([terraform, "apply", "-input=false", "-auto-approve", f"-var=name={name}", "-no-color"],
        apply_env, cwd=workdir, timeout=900)
    rds = moto.client("rds")
    assert db_exists(moto, f"{name}-db")

    agent = web.airlock.add_agent(unique("tf-agent"))
    # Nothing of AWS from this process's environment: exec supplies all of it.
    exec_env = {**scrubbed_env(), **tf_settings, "AWS_PROFILE": "should-be-removed",
                "AWS_SESSION_TOKEN": "should-be-removed"}
    destroy = subprocess.Popen(
        [str(web.airlock.binary), "--config", str(web.airlock.config), "exec", agent.name, "--",
         terraform, "destroy", "-input=false", "-auto-approve", f"-var=name={name}", "-no-color"],
        env=exec_env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    pump = threading.Thread(target=lambda: output.extend(destroy.stdout or []), daemon=True)
    pump.start()

    rounds = 0
    deadline = time.monotonic() + 600
    while destroy.poll() is None:
        assert time.monotonic() < deadline, "".join(output)
        pending = [a for a in requests.get(f"{web.base}/api/approvals", timeout=5).json()["pending"]
                   if a["agent"] == agent.name]
        if not pending:
            time.sleep(0.5)
            continue
        time.sleep(1)  # let the rest of this wave arrive
        shot = web.artifacts / f"terraform-round-{rounds}.png"
        out = drive({"cmd": "decide", "credfile": str(web.credfile), "decision": "approve",
                     "approval_url": f"{web.origin}{pending[0]['link']}", "batch": True,
                     "screenshot": str(shot)})
        assert out["result"]["kind"] == "ok", out["result"]
        if rounds == 0:
            save_artifact(shot)
        rounds += 1
    pump.join(10)
    text = "".join(output)
    assert destroy.returncode == 0, text
    assert "Destroy complete!" in text, text
    assert rounds >= 2, f"expected several waves of held calls, approved {rounds}"

    # The stack is gone, and every destructive call was approved once by the human and
    # sent once by Terraform.
    assert not db_exists(moto, f"{name}-db")
    assert error_code(rds.describe_db_snapshots, DBSnapshotIdentifier=f"{name}-snap") == "DBSnapshotNotFound"
    state = json.loads((workdir / "terraform.tfstate").read_text())
    assert state["resources"] == []
    mine = [json.loads(p.read_text()) for p in (web.airlock.home / "state" / "approvals").glob("*.json")]
    mine = [a for a in mine if a["agent"] == agent.name]
    operations = sorted(a["call"]["operation"] for a in mine)
    for op in ["DeleteDBInstance", "DeleteDBSnapshot", "DeleteBucket", "DeleteTable", "DeleteVpc"]:
        assert op in operations, operations
    assert all(a["decided_by"] == "alice" for a in mine), mine
    assert all(a["attempts"] == 1 for a in mine), [(a["call"]["operation"], a["attempts"]) for a in mine]


def test_airlock_exec_gives_the_agent_environment_and_nothing_else(web: WebAirlock) -> None:
    binary, config = str(web.airlock.binary), str(web.airlock.config)
    parent = {**scrubbed_env(), "AWS_ACCESS_KEY_ID": "AKIAREALKEY", "AWS_SECRET_ACCESS_KEY": "real-secret",
              "AWS_SESSION_TOKEN": "real-token", "AWS_PROFILE": "admin", "AWS_ROLE_ARN": "arn:aws:iam::1:role/x",
              "AWS_WEB_IDENTITY_TOKEN_FILE": "/tmp/token", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://x",
              "AWS_ENDPOINT_URL_S3": "https://s3.amazonaws.com", "AWS_REGION": "us-west-2"}
    proc = run([binary, "--config", config, "exec", web.agent.name, "--", "env"], parent)
    env = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert env["AWS_ACCESS_KEY_ID"] == web.agent.access_key_id
    assert env["AWS_SECRET_ACCESS_KEY"] == web.agent.secret_access_key
    assert env["AWS_ENDPOINT_URL"] == f"https://localhost:{web.airlock.proxy_url.rsplit(':', 1)[1]}"
    assert env["AWS_CA_BUNDLE"] == str(web.airlock.ca_pem)
    assert env["AWS_REGION"] == "us-west-2"
    for gone in ["AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL_S3"]:
        assert gone not in env, gone
    assert "AKIAREALKEY" not in proc.stdout and "real-secret" not in proc.stdout
    bundle = Path(env["SSL_CERT_FILE"]).read_text()
    assert env["NODE_EXTRA_CA_CERTS"] == env["SSL_CERT_FILE"]
    assert web.airlock.ca_pem.read_text().strip() in bundle
    assert bundle.count("BEGIN CERTIFICATE") > 10, "the system roots are missing from the bundle"
    # The agent's own call works with exactly this environment, and the exit code is the child's.
    ok = run([binary, "--config", config, "exec", web.agent.name, "--", "aws", "sts", "get-caller-identity"],
             {**scrubbed_env(), "AWS_DEFAULT_REGION": "us-west-2"})
    assert "Arn" in ok.stdout
    failed = run([binary, "--config", config, "exec", web.agent.name, "--", "sh", "-c", "exit 7"],
                 scrubbed_env(), check=False)
    assert failed.returncode == 7
    unknown = run([binary, "--config", config, "exec", "no-such-agent", "--", "true"], scrubbed_env(), check=False)
    assert unknown.returncode != 0 and "no-such-agent" in unknown.stderr
