"""Bypasses tried from the agent's seat: airlock out of the agent's reach.

Two throwaway operating-system users (`useradd --system`, random suffixes, deleted after):
one runs `airlock serve` (its state dir 0700, its config and CA key its own), the other is the
agent, with nothing but the proxy-only credentials `airlock agent add` printed and the CA
certificate. Everything the agent tries runs as the agent user (`setpriv`), and each attempt
must fail and leave moto unchanged (moto's own request count and state). The human approver
types the key's passphrase on a terminal (a pty driven here); without one, no approval.

A passkey registered while another is enrolled is the third part: it waits for an enrolled
approver's confirmation on the page (real Chromium, virtual authenticators), and until then
approves nothing.

Creating users needs root (CI runs as root); elsewhere these tests are skipped, under CI they
fail.
"""

from __future__ import annotations

import json
import os
import pty
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from conftest import _RUNNING as RUNNING
from support import REGION, REPO, Agent, Airlock, Moto, airlock_binary, audit_records, configure, require_tool, scrubbed_env, unique
from osusers import OsUser, require_root, throwaway_user
from test_receipts import new_table, table_exists

PASSPHRASE = "a passphrase the agent never sees"
NO_TERMINAL = "no terminal"


# --- operating-system users ----------------------------------------------------------------


def need_root() -> None:
    require_root()
    for tool in ("useradd", "userdel", "setpriv", "setsid"):
        require_tool(tool)


# --- a terminal ------------------------------------------------------------------------------


def on_terminal(argv: list[str], env: dict[str, str], cwd: Path, answers: list[str],
                timeout: float = 60) -> tuple[int, str]:
    """Run `argv` on a new pty (its controlling terminal), typing `answers` one by one as it
    asks for a passphrase. Its exit code and everything it wrote to the terminal."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes argv
        try:
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    output = b""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            prompts = len(re.findall(rb"(?i)passphrase[^\r\n]*: ", output))
            while answered < prompts and answered < len(answers):
                os.write(fd, answers[answered].encode() + b"\n")
                answered += 1
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


# --- the protected install -------------------------------------------------------------------


@dataclass
class Seat:
    base: Path
    airlock_user: OsUser
    agent_user: OsUser
    binary: Path
    server: Airlock
    agent: Agent
    agent_home: Path
    key: Path

    @property
    def home(self) -> Path:
        return self.server.home

    @property
    def state(self) -> Path:
        return self.home / "state"

    def as_airlock(self, *args: str) -> list[str]:
        return self.airlock_user.argv("env", f"HOME={self.home}", str(self.binary), *args)

    def as_agent(self, *cmd: str, check: bool = False, stdin: int | None = subprocess.DEVNULL,
                 new_session: bool = True) -> subprocess.CompletedProcess[str]:
        """`cmd` as the agent user, with the agent's environment, no terminal."""
        env = {**self.agent.env, "HOME": str(self.agent_home)}
        proc = subprocess.run(self.agent_user.argv(*cmd), env=env, cwd=self.agent_home, stdin=stdin,
                              capture_output=True, text=True, timeout=120, start_new_session=new_session)
        if check:
            assert proc.returncode == 0, proc
        return proc

    def approvals(self) -> dict[str, dict]:
        return {p.stem: json.loads(p.read_text()) for p in (self.state / "approvals").glob("*.json")}


@pytest.fixture(scope="module")
def seat(moto: Moto) -> Iterator[Seat]:
    need_root()
    base = Path(tempfile.mkdtemp(prefix="airlock-seat-"))
    base.chmod(0o755)
    homes = base / "homes"
    homes.mkdir(mode=0o755)
    server: Airlock | None = None
    stack_users = ExitStack()  # the users are removed (homes included) after serve stops
    try:
        airlock_user = stack_users.enter_context(throwaway_user("airlock", homes))
        agent_user = stack_users.enter_context(throwaway_user("agent", homes))
        bin_dir = base / "bin"
        bin_dir.mkdir(mode=0o755)
        binary = bin_dir / "airlock"
        shutil.copy(airlock_binary(), binary)
        binary.chmod(0o755)
        home = base / "airlock"
        home.mkdir(mode=0o711)
        os.chown(home, airlock_user.uid, airlock_user.gid)
        agent_home = base / "agent"
        agent_home.mkdir(mode=0o700)
        os.chown(agent_home, agent_user.uid, agent_user.gid)
        # `airlock` as airlock's own user: the management commands and `serve` (exec'd in
        # place, so the process the test holds is serve itself).
        wrapper = bin_dir / "airlock-as-airlock"
        wrapper.write_text("#!/bin/sh\nexec " + " ".join(
            airlock_user.argv("env", f"HOME={home}", str(binary))) + ' "$@"\n')
        wrapper.chmod(0o755)

        server = Airlock(home, moto)
        server.binary = wrapper
        server.init("enforce")
        configure(server.config, {("notify", "desktop"): False})
        # The human approver's key, locked with a passphrase typed on a terminal.
        keys = home / "keys"
        subprocess.run(airlock_user.argv("mkdir", "-m", "700", str(keys)), check=True, timeout=30)
        key = keys / "alice.key"
        code, out = on_terminal([str(wrapper), "keygen", "--out", str(key), "--name", "alice"],
                                scrubbed_env(), home, [PASSPHRASE, PASSPHRASE])
        assert code == 0, out
        assert out.count("assphrase") >= 2, f"keygen did not ask twice:\n{out}"
        assert PASSPHRASE not in out, "the passphrase was echoed"
        out = out.replace("\r\n", "\n")
        block = out[re.search(r"^\[\[approver\]\]$", out, re.M).start():]
        with open(server.config, "a") as f:
            f.write("\n" + block)
        assert json.loads(key.read_text())["format"] == "airlock-ed25519-key-locked/1"

        # The protected layout: what `airlock init` made (state 0700, CA key 0600) plus a
        # config only airlock reads; the CA certificate stays readable for the agent.
        for path, mode in [(server.config.parent, 0o700), (server.config, 0o600),
                           (home / "certs", 0o711)]:
            path.chmod(mode)
        for path in [server.config.parent, server.config, *(home / "certs").iterdir()]:
            os.chown(path, airlock_user.uid, airlock_user.gid)
        assert (home / "state").stat().st_mode & 0o777 == 0o700
        assert (home / "certs" / "ca.key").stat().st_mode & 0o777 == 0o600
        assert (home / "state").stat().st_uid == airlock_user.uid

        server.start()
        RUNNING["airlock-seat"] = server
        status = Path(f"/proc/{server.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{airlock_user.uid}\s+{airlock_user.uid}", status, re.M), status
        agent = server.add_agent(unique("seat-agent"))
        yield Seat(base, airlock_user, agent_user, binary, server, agent, agent_home, key)
    finally:
        RUNNING.pop("airlock-seat", None)
        if server:
            server.stop()
        stack_users.close()
        shutil.rmtree(base, ignore_errors=True)


def delete_table_as_agent(seat: Seat, table: str) -> tuple[int, str]:
    """DynamoDB DeleteTable through the proxy, as the agent user, signed by curl's own SigV4
    signer with the agent's credentials (the AWS CLI of this machine may live where only root
    can read it). The HTTP status and the body."""
    curl = require_tool("curl")
    a = seat.agent
    proc = seat.as_agent(
        curl, "-sS", "--cacert", a.ca_bundle, "--aws-sigv4", f"aws:amz:{REGION}:dynamodb",
        "--user", f"{a.access_key_id}:{a.secret_access_key}",
        "-H", "content-type: application/x-amz-json-1.0", "-H", "x-amz-target: DynamoDB_20120810.DeleteTable",
        "--data", json.dumps({"TableName": table}), "-w", "\nSTATUS=%{http_code}", a.endpoint + "/")
    assert proc.returncode == 0, proc.stderr
    body, _, status = proc.stdout.rpartition("\nSTATUS=")
    return int(status), body


def held_approval(seat: Seat, table: str) -> str:
    """The agent's destructive call: refused with the approval link; the approval's id."""
    status, body = delete_table_as_agent(seat, table)
    assert status == 403 and "needs a human's approval" in body, (status, body)
    link = seat.server.approval_link(body)
    m = re.search(r"/approvals/([a-z0-9]+)$", link)
    assert m, link
    return m.group(1)


# --- the agent's seat ------------------------------------------------------------------------


def test_every_bypass_from_the_agents_seat_fails_and_moto_is_unchanged(seat: Seat, moto: Moto) -> None:
    table = new_table(moto)
    before = moto.request_count()
    config_before = seat.server.config.read_bytes()
    approval = held_approval(seat, table)
    pid = seat.server.pid

    # The agent's own config, pointing at airlock's state: the CLI's checks, not only the
    # file modes, must stop it.
    own_config = seat.agent_home / "airlock.toml"
    example = (REPO / "config" / "airlock.example.toml").read_text()
    assert 'dir = "../state"' in example and 'dir = "../certs"' in example, "the example's dirs moved"
    own_config.write_text(example.replace('dir = "../state"', f'dir = "{seat.state}"')
                                 .replace('dir = "../certs"', f'dir = "{seat.home / "certs"}"'))
    os.chown(own_config, seat.agent_user.uid, seat.agent_user.gid)
    # A copy of the approver's locked key the agent can read.
    stolen = seat.agent_home / "alice.key"
    shutil.copy(seat.key, stolen)
    os.chown(stolen, seat.agent_user.uid, seat.agent_user.gid)
    stolen.chmod(0o600)

    config = str(seat.server.config)
    attempts: dict[str, tuple[list[str], str]] = {
        "list the state dir": (["ls", str(seat.state)], "Permission denied"),
        "read state/agents.json": (["cat", str(seat.state / "agents.json")], "Permission denied"),
        "read state/airlock.key": (["cat", str(seat.state / "airlock.key")], "Permission denied"),
        "read certs/ca.key": (["cat", str(seat.home / "certs" / "ca.key")], "Permission denied"),
        "read the config": (["cat", config], "Permission denied"),
        "read serve's environment": (["cat", f"/proc/{pid}/environ"], "Permission denied"),
        "signal serve (TERM)": (["kill", "-TERM", str(pid)], "not permitted"),
        "signal serve (KILL)": (["kill", "-KILL", str(pid)], "not permitted"),
        "edit the config": (["sh", "-c", f"echo '[[approver]]' >> {config}"], "Permission denied"),
        # `approve` reads the pending call first (to show what it signs), so the agent is
        # stopped at airlock's state before the passphrase; without a terminal it would be
        # stopped there next (test_the_passphrase_is_read_from_a_terminal_only, where the
        # state is readable).
        "approve with the locked key, no terminal":
            ([str(seat.binary), "approve", approval, "--key", str(stolen), "--config", str(own_config)],
             "Permission denied"),
        "approve with the locked key, --insecure-plaintext-key":
            ([str(seat.binary), "approve", approval, "--key", str(stolen), "--insecure-plaintext-key",
              "--config", str(own_config)], "Permission denied"),
        "approve with airlock's config": ([str(seat.binary), "approve", approval, "--key", str(stolen),
                                           "--config", config], "Permission denied"),
        "enroll a passkey (airlock's config)": ([str(seat.binary), "approver", "enroll", "mallory",
                                                 "--config", config], "Permission denied"),
        "enroll a passkey (own config)": ([str(seat.binary), "approver", "enroll", "mallory",
                                           "--config", str(own_config)], "only the owner of"),
        "revoke the approver (own config)": ([str(seat.binary), "approver", "revoke", "alice",
                                              "--config", str(own_config)], "only the owner of"),
        "issue itself agent credentials": ([str(seat.binary), "agent", "add", "mallory",
                                            "--config", str(own_config)], "Permission denied"),
    }
    outcomes = {}
    for what, (argv, expected) in attempts.items():
        proc = seat.as_agent(*argv)
        outcomes[what] = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else proc.stdout
        assert proc.returncode != 0, f"{what}: succeeded as the agent:\n{proc.stdout}"
        assert expected in proc.stderr, f"{what}: {proc.stderr}"
    print(json.dumps(outcomes, indent=1))

    # The destructive call, once more: still refused with the link.
    status, body = delete_table_as_agent(seat, table)
    assert status == 403 and f"/approvals/{approval}" in body, (status, body)

    # Nothing changed: serve runs, the config is the same, the approval waits, no passkey or
    # enrollment exists, and moto answered no request and still has the table.
    assert seat.server.proc is not None and seat.server.proc.poll() is None, "serve was stopped"
    assert seat.server.config.read_bytes() == config_before
    assert seat.approvals()[approval]["status"] == "pending"
    assert not (seat.state / "passkeys.json").exists()
    enrollments = seat.state / "enrollments.json"
    assert not enrollments.exists() or json.loads(enrollments.read_text())["enrollments"] == []
    assert moto.request_count() == before, "moto was called"
    assert table_exists(moto, table)


def test_the_passphrase_is_read_from_a_terminal_only(seat: Seat, moto: Moto) -> None:
    """As airlock's own user (the worst case: an agent running as that user, able to read the
    key): no terminal, no approval; a wrong passphrase, no approval; the right one on a
    terminal approves exactly the held call."""
    table = new_table(moto)
    approval = held_approval(seat, table)
    approve = seat.as_airlock("approve", approval, "--key", str(seat.key), "--config", str(seat.server.config))
    before = moto.request_count()

    # No terminal (a new session, as an agent's tool call or a daemon), the passphrase on stdin.
    for argv in (approve, ["setsid", "-w", *approve], [*approve, "--insecure-plaintext-key"]):
        proc = subprocess.run(argv, input=PASSPHRASE + "\n", capture_output=True, text=True,
                              env=scrubbed_env(), cwd=seat.home, timeout=60, start_new_session=True)
        assert proc.returncode != 0, proc.stdout
        assert NO_TERMINAL in proc.stderr and "/dev/tty" in proc.stderr, proc.stderr
    # A wrong passphrase on the terminal.
    code, out = on_terminal(approve, scrubbed_env(), seat.home, ["not " + PASSPHRASE])
    assert code != 0 and "wrong passphrase" in out, out
    assert seat.approvals()[approval]["status"] == "pending"
    assert moto.request_count() == before and table_exists(moto, table)

    # The right one: approved, and the agent's retry goes through once. What is signed was
    # shown before the passphrase was asked for.
    code, out = on_terminal(approve, scrubbed_env(), seat.home, [PASSPHRASE])
    assert code == 0, out
    assert PASSPHRASE not in out
    shown = out.find(f"Approving {approval}: dynamodb:DeleteTable")
    assert 0 <= shown < out.find("assphrase") and table in out[shown:out.find("assphrase")], out
    assert seat.approvals()[approval]["status"] == "approved"
    status, body = delete_table_as_agent(seat, table)
    assert status == 200, (status, body)
    assert not table_exists(moto, table)


def test_keygen_asks_twice_on_the_terminal(seat: Seat) -> None:
    out_dir = seat.home / "keys"
    for answers, expected in [([PASSPHRASE, PASSPHRASE + "x"], "differ"), (["short", "short"], "at least 8")]:
        path = out_dir / f"{secrets.token_hex(4)}.key"
        code, out = on_terminal(seat.as_airlock("keygen", "--out", str(path), "--name", "bob"),
                                scrubbed_env(), seat.home, answers)
        assert code != 0 and expected in out, out
        assert not path.exists()
    # No terminal: nothing is written either (there is no other way to give a passphrase).
    path = out_dir / "bob.key"
    proc = subprocess.run(seat.as_airlock("keygen", "--out", str(path), "--name", "bob"), input="x\nx\n",
                          capture_output=True, text=True, timeout=60, start_new_session=True, cwd=seat.home)
    assert proc.returncode != 0 and NO_TERMINAL in proc.stderr, proc.stderr
    assert not path.exists()


# --- a passkey registered while another is enrolled ------------------------------------------


def test_a_new_passkey_waits_for_an_enrolled_approvers_confirmation(
        moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> None:
    from test_approvals_web import Held, delete_db, db_exists, drive, start_web_airlock

    # The fresh install's first passkey (alice's) counts at once, as before.
    web = start_web_airlock("airlock-gated-enroll", moto, tmp_path_factory, 45, None)
    state = web.airlock.home / "state"
    try:
        def passkey_names() -> list[str]:
            return [p["name"] for p in json.loads((state / "passkeys.json").read_text())["passkeys"]]

        def waiting() -> list[dict]:
            return [e for e in json.loads((state / "enrollments.json").read_text())["enrollments"]
                    if e.get("pending") and not e.get("settled")]

        # A second passkey through a fresh link (the agent's browser, say): registered, waiting.
        out = web.airlock.cli("approver", "enroll", "bob").stdout
        assert "confirms it on the approval page" in out, out
        link = re.search(r"http://localhost:\d+/enroll/\S+", out).group(0)
        bob_cred = web.airlock.home / "bob-passkey.json"
        reg = drive({"cmd": "enroll", "link": link, "credfile": str(bob_cred)})
        assert reg["status"] == 200 and "ok" in reg["result"]["kind"], reg
        assert "counts only after" in reg["result"]["text"], reg["result"]
        assert passkey_names() == ["alice"]
        [pending] = waiting()
        bob_key = pending["pending"]["passkey"]["key_id"]
        assert pending["pending"]["remote_addr"].startswith("127.0.0.1:")
        assert "Chrome" in pending["pending"]["user_agent"]

        # The pending passkey approves nothing and cannot confirm itself.
        rds = moto.client("rds")
        db = unique("gated-db")
        rds.create_db_instance(DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro",
                               AllocatedStorage=20, MasterUsername="airlock", MasterUserPassword="not-a-real-password-1")
        call = Held(delete_db(web, db))
        call.start()
        deadline = time.monotonic() + 15
        rows: list[dict] = []
        while not rows and time.monotonic() < deadline:
            rows = [a for a in requests.get(f"{web.base}/api/approvals", timeout=5).json()["pending"]
                    if db in a["targets"]]
            time.sleep(0.2)
        [row] = rows
        page = requests.get(f"{web.origin}/approvals/{row['id']}", timeout=5)
        assert bob_key not in page.text, "the pending passkey is offered on the approval page"
        csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)
        headers = {"Origin": web.origin, "X-Airlock-CSRF": csrf, "Content-Type": "application/json"}
        r = requests.post(f"{web.origin}/api/decide/begin", headers=headers, timeout=5, data=json.dumps(
            {"decision": "approve", "ids": [row["id"]], "passkey": bob_key, "ttl_secs": 900}))
        assert r.status_code == 403 and "no such enrolled passkey" in r.json()["error"], r.text
        r = requests.post(f"{web.origin}/api/confirm/begin", headers=headers, timeout=5, data=json.dumps(
            {"enrollment": pending["pending"]["id"], "confirm": True, "passkey": bob_key}))
        assert r.status_code == 403, r.text

        # The list shows it to the approvers; alice reads who asked, when and from where, and
        # confirms with her passkey.
        listing = requests.get(f"{web.origin}/", timeout=5).text
        confirm_url = f"{web.origin}/enrollments/{pending['pending']['id']}"
        assert f"/enrollments/{pending['pending']['id']}" in listing
        done = drive({"cmd": "confirm", "credfile": str(web.credfile), "url": confirm_url, "decision": "confirm"})
        assert done["status"] == 200 and done["result"]["kind"] == "ok", done
        for shown in ["bob", pending["pending"]["registered_at"], "127.0.0.1", "Chrome", bob_key]:
            assert shown in done["text"], f"{shown!r} not on the confirmation page:\n{done['text']}"
        assert passkey_names() == ["alice", "bob"]
        assert requests.get(confirm_url, timeout=5).status_code == 404, "confirmed twice"

        # Now bob's passkey approves the held call, which completes.
        out = drive({"cmd": "decide", "credfile": str(bob_cred), "decision": "approve",
                     "approval_url": f"{web.origin}/approvals/{row['id']}", "passkey_index": 1})
        assert out["result"] == {"text": "Approved 1 call.", "kind": "ok"}, out
        call.finished(web.hold + 10)
        assert call.error is None, call.error
        assert not db_exists(moto, db)
        assert web.approval(row["id"])["decided_by"] == "bob"

        # A rejection: carol's passkey never counts.
        out = web.airlock.cli("approver", "enroll", "carol").stdout
        link = re.search(r"http://localhost:\d+/enroll/\S+", out).group(0)
        reg = drive({"cmd": "enroll", "link": link, "credfile": str(web.airlock.home / "carol.json")})
        assert "counts only after" in reg["result"]["text"], reg
        [carol] = waiting()
        rejected = drive({"cmd": "confirm", "credfile": str(web.credfile), "decision": "reject",
                          "url": f"{web.origin}/enrollments/{carol['pending']['id']}"})
        assert rejected["result"]["kind"] == "ok" and "Rejected" in rejected["result"]["text"], rejected
        assert passkey_names() == ["alice", "bob"] and waiting() == []

        # Revoking bob: his passkey is gone at once; a receipt he signed before and the
        # agent has not used yet is refused by the running serve, and the page refuses him.
        db2 = unique("gated-db")
        rds.create_db_instance(DBInstanceIdentifier=db2, Engine="postgres", DBInstanceClass="db.t3.micro",
                               AllocatedStorage=20, MasterUsername="airlock", MasterUserPassword="not-a-real-password-1")
        impatient = web.agent.client("rds", config=Config(retries={"total_max_attempts": 1}, read_timeout=2))
        with pytest.raises(ReadTimeoutError):
            impatient.delete_db_instance(DBInstanceIdentifier=db2, SkipFinalSnapshot=True,
                                         DeleteAutomatedBackups=True)
        [row2] = [a for a in requests.get(f"{web.base}/api/approvals", timeout=5).json()["pending"]
                  if db2 in a["targets"]]
        out = drive({"cmd": "decide", "credfile": str(bob_cred), "decision": "approve",
                     "approval_url": f"{web.origin}/approvals/{row2['id']}", "passkey_index": 1})
        assert out["result"]["kind"] == "ok", out
        assert web.approval(row2["id"])["status"] == "approved"
        revoked = web.airlock.cli("approver", "revoke", "bob")
        assert "1 passkey(s) removed" in revoked.stdout, revoked.stdout
        assert passkey_names() == ["alice"]
        time.sleep(1)
        retry = Held(delete_db(web, db2))
        retry.start()
        retry.finished(web.hold + 10)
        assert isinstance(retry.error, ClientError), retry.error
        assert "does not verify" in retry.error.response["Error"]["Message"], retry.error.response
        assert db_exists(moto, db2)
        rds.delete_db_instance(DBInstanceIdentifier=db2, SkipFinalSnapshot=True)
        page = requests.get(f"{web.origin}/", timeout=5)
        csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)
        r = requests.post(f"{web.origin}/api/decide/begin", timeout=5, data=json.dumps(
            {"decision": "approve", "ids": [row["id"]], "passkey": bob_key, "ttl_secs": 900}),
            headers={**headers, "X-Airlock-CSRF": csrf})
        assert r.status_code == 403 and "no such enrolled passkey" in r.json()["error"], r.text
        unknown = web.airlock.cli("approver", "revoke", "nobody", check=False)
        assert unknown.returncode != 0 and "no approver named" in unknown.stderr

        # Each change to who may approve is in the audit log, and the chain holds.
        audit = audit_records(state)
        changes = [(r["event"], r["approver"], r["by"]) for r in audit
                   if r["event"].startswith(("passkey_", "approver_"))]
        assert changes == [
            ("passkey_enrolled", "alice", "enrollment link"),
            ("passkey_pending", "bob", "enrollment link"),
            ("passkey_enrolled", "bob", "alice"),
            ("passkey_pending", "carol", "enrollment link"),
            ("passkey_rejected", "carol", "alice"),
            ("approver_revoked", "bob", "cli"),
        ], changes
        web.airlock.cli("audit", "verify")
    finally:
        RUNNING.pop("airlock-gated-enroll", None)
        web.airlock.stop()
