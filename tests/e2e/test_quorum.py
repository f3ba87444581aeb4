"""Two approvers for what cannot be undone (M-of-N quorum), end to end.

An enforcing airlock whose config says `approvals = 2` (only alice and bob count) for
`rds:DeleteDBSnapshot`, or `[approval] irreversible_quorum = 2` with no rule at all. The agent
deletes a snapshot through airlock with boto3 (moto with signature checking), and humans decide
with `airlock approve/deny ID --key FILE` or, in real Chromium, with two passkeys in two browser
contexts. What a user would check: whether the snapshot is still in moto, what the agent was
told, the approval's status, the receipt (`airlock receipt verify`) and the audit log.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import _RUNNING as RUNNING
from support import Agent, GatedAirlock, Moto, audit_records, run, scrubbed_env, unique

NO_RETRIES = Config(retries={"total_max_attempts": 1})

TWO_FOR_SNAPSHOTS = """
[[rule]]
name = "two-people-delete-snapshots"
effect = "require_receipt"
actions = ["rds:DeleteDBSnapshot"]
approvals = 2
approvers = ["alice", "bob"]
"""


# --- moto's side ------------------------------------------------------------------------------


def new_snapshot(moto: Moto) -> str:
    """A database and a manual snapshot of it, in moto."""
    rds = moto.client("rds")
    db, snap = unique("quorum-db"), unique("quorum-snap")
    rds.create_db_instance(DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=20, MasterUsername="airlock", MasterUserPassword="not-a-real-password-1")
    rds.create_db_snapshot(DBSnapshotIdentifier=snap, DBInstanceIdentifier=db)
    rds.delete_db_instance(DBInstanceIdentifier=db, SkipFinalSnapshot=True)
    return snap


def snapshot_exists(moto: Moto, snap: str) -> bool:
    try:
        moto.client("rds").describe_db_snapshots(DBSnapshotIdentifier=snap)
    except ClientError as e:
        assert e.response["Error"]["Code"] == "DBSnapshotNotFound", e.response
        return False
    return True


def delete_snapshot(agent: Agent, snap: str) -> Callable[[], tuple[bool, str, str]]:
    """The agent's call (one attempt): (went through, error code, message)."""
    # Read timeout past the longest hold here (the two-browser tests hold for 100 s: three
    # Chromium launches must fit in it on a loaded machine).
    rds = agent.client("rds", config=NO_RETRIES.merge(Config(read_timeout=130)))

    def call() -> tuple[bool, str, str]:
        try:
            rds.delete_db_snapshot(DBSnapshotIdentifier=snap)
        except ClientError as e:
            err = e.response["Error"]
            return False, err.get("Code", ""), err.get("Message", "")
        return True, "", ""
    return call


def refused(moto: Moto, call: Callable[[], tuple[bool, str, str]], snap: str) -> str:
    """The call is refused with AccessDenied, reaches no moto, and the snapshot stays."""
    before = moto.request_count()
    ok, code, message = call()
    assert not ok and code == "AccessDenied", (code, message)
    assert moto.request_count() == before, f"a refused call reached moto: {message}"
    assert snapshot_exists(moto, snap)
    return message


def goes_through(moto: Moto, call: Callable[[], tuple[bool, str, str]], snap: str) -> None:
    before = moto.request_count()
    ok, code, message = call()
    assert ok, f"the approved call was refused: {code}: {message}"
    assert moto.request_count() == before + 1, "the approved call did not reach moto exactly once"
    assert not snapshot_exists(moto, snap)


# --- airlock's side ---------------------------------------------------------------------------


def decide(gate: GatedAirlock, verb: str, approval: str, who: str) -> Any:
    """`airlock approve|deny ID --key WHO.key`, whatever its exit code."""
    return run([str(gate.binary), verb, approval, "--key", str(gate.keys[who].path), "--insecure-plaintext-key",
                "--config", str(gate.config)], scrubbed_env(), cwd=gate.home, timeout=60, check=False)


def record(gate: GatedAirlock, approval: str) -> dict[str, Any]:
    return gate.approval_record(approval)


def audit(gate: GatedAirlock, approval: str) -> list[dict[str, Any]]:
    return [r for r in audit_records(gate.state_dir) if r.get("approval") == approval]


def receipt_path(gate: GatedAirlock, approval: str) -> Path:
    return gate.state_dir / "receipts" / f"{record(gate, approval)['receipt_id']}.json"


@pytest.fixture(scope="module")
def two_gate(start_gated_airlock: Callable[..., GatedAirlock]) -> GatedAirlock:
    return start_gated_airlock("airlock-quorum", approvers=("alice", "bob", "carol"),
                               extra_config=TWO_FOR_SNAPSHOTS)


@pytest.fixture(scope="module")
def two_agent(two_gate: GatedAirlock) -> Agent:
    return two_gate.add_agent(unique("quorum-agent"))


# --- through the CLI --------------------------------------------------------------------------


def test_two_distinct_approvers_release_a_snapshot_delete(two_gate: GatedAirlock, two_agent: Agent,
                                                          moto: Moto) -> None:
    gate, snap = two_gate, new_snapshot(moto)
    call = delete_snapshot(two_agent, snap)
    approval = gate.approval_id(refused(moto, call, snap))

    # One approval of two: still pending, and the call is still refused.
    first = decide(gate, "approve", approval, "alice")
    assert first.returncode == 0, first.stderr
    assert "1 of 2 approvals — waiting for another approver" in first.stdout, first.stdout
    assert record(gate, approval)["status"] == "pending"
    assert record(gate, approval)["approved_by"] == ["alice"]
    refused(moto, call, snap)
    partial = gate.cli("receipt", "verify", str(receipt_path(gate, approval)), check=False)
    assert partial.returncode != 0 and "needs 2" in partial.stderr, partial

    # The same approver twice counts once; a name the rule does not list does not count.
    again = decide(gate, "approve", approval, "alice")
    assert again.returncode != 0 and "already approved" in again.stderr, again
    carol = decide(gate, "approve", approval, "carol")
    assert carol.returncode != 0 and "not among the approvers" in carol.stderr, carol
    assert record(gate, approval)["approved_by"] == ["alice"]
    refused(moto, call, snap)

    # A second, distinct approver completes it: the call goes through, once.
    second = decide(gate, "approve", approval, "bob")
    assert second.returncode == 0, second.stderr
    assert re.search(rf"^approved {approval}: ", second.stdout, re.M), second.stdout
    assert record(gate, approval)["status"] == "approved"
    goes_through(moto, call, snap)

    # One receipt, one body, two approvers; it states its quorum and verifies offline.
    receipt = json.loads(receipt_path(gate, approval).read_text())
    assert receipt["body"]["quorum"] == 2 and receipt["body"]["approver"] == "alice"
    assert [c["approver"] for c in receipt["cosigners"]] == ["bob"]
    verified = gate.cli("receipt", "verify", str(receipt_path(gate, approval)))
    assert "quorum 2 of 2 distinct approvers (alice, bob)" in verified.stdout, verified.stdout
    # A config that now needs three refuses the same receipt.
    three = gate.config.with_name("three.toml")
    three.write_text(gate.config.read_text().replace("approvals = 2", "approvals = 3")
                     .replace('approvers = ["alice", "bob"]', 'approvers = ["alice", "bob", "carol"]'))
    stricter = run([str(gate.binary), "receipt", "verify", str(receipt_path(gate, approval)), "--config", str(three)],
                   scrubbed_env(), cwd=gate.home, check=False)
    assert stricter.returncode != 0 and "needs 3" in stricter.stderr, stricter
    # Dropping bob's approval from the file leaves one: refused.
    lone = gate.home / "lone.json"
    del receipt["cosigners"]
    lone.write_text(json.dumps(receipt))
    short = gate.cli("receipt", "verify", str(lone), check=False)
    assert short.returncode != 0 and "needs 2" in short.stderr, short

    # The audit log: each signature as it arrived (who, k of M), then the completion.
    events = [(r["event"], r.get("approver"), r.get("approvals"), r.get("quorum")) for r in audit(gate, approval)]
    assert events == [
        ("quorum_signature", "alice", 1, 2),
        ("quorum_signature", "bob", 2, 2),
        ("approved", "alice, bob", None, 2),
    ], events
    assert gate.cli("audit", "verify").returncode == 0


@pytest.mark.parametrize("first_approves", [True, False], ids=["after-one-approval", "first"])
def test_a_denial_by_either_approver_denies(first_approves: bool, two_gate: GatedAirlock, two_agent: Agent,
                                            moto: Moto) -> None:
    gate, snap = two_gate, new_snapshot(moto)
    call = delete_snapshot(two_agent, snap)
    approval = gate.approval_id(refused(moto, call, snap))
    denier = "bob" if first_approves else "alice"
    if first_approves:
        assert decide(gate, "approve", approval, "alice").returncode == 0
    no = decide(gate, "deny", approval, denier)
    assert no.returncode == 0, no.stderr
    assert record(gate, approval)["status"] == "denied"
    late = decide(gate, "approve", approval, "alice" if denier == "bob" else "bob")
    assert late.returncode != 0, "an approval after the denial was taken"
    message = refused(moto, call, snap)
    assert f"denied by {denier}" in message, message
    assert [r["event"] for r in audit(gate, approval)][-1] == "denied"


def test_irreversible_quorum_needs_two_for_a_catalogue_call_without_any_rule(
        start_gated_airlock: Callable[..., GatedAirlock], moto: Moto) -> None:
    gate = start_gated_airlock("airlock-irreversible-quorum", approvers=("alice", "bob"),
                               settings={("approval", "irreversible_quorum"): 2})
    agent = gate.add_agent(unique("irreversible-agent"))
    snap = new_snapshot(moto)
    call = delete_snapshot(agent, snap)
    approval = gate.approval_id(refused(moto, call, snap))
    assert record(gate, approval)["quorum"]["approvals"] == 2
    assert decide(gate, "approve", approval, "alice").returncode == 0
    refused(moto, call, snap)
    assert decide(gate, "approve", approval, "bob").returncode == 0
    goes_through(moto, call, snap)

    # A call that can be undone (a table with nothing said about backups) still needs one.
    table = unique("quorum-table")
    moto.client("dynamodb").create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    ddb = agent.client("dynamodb", config=NO_RETRIES)
    with pytest.raises(ClientError) as err:
        ddb.delete_table(TableName=table)
    table_approval = gate.approval_id(err.value.response["Error"]["Message"])
    assert record(gate, table_approval)["quorum"]["approvals"] == 1
    gate.approve(table_approval, gate.keys["alice"])
    ddb.delete_table(TableName=table)
    assert table not in moto.client("dynamodb").list_tables()["TableNames"]


def test_a_held_call_waits_for_the_whole_quorum(start_gated_airlock: Callable[..., GatedAirlock],
                                                moto: Moto) -> None:
    from test_approvals_web import Held

    gate = start_gated_airlock("airlock-quorum-hold", approvers=("alice", "bob"),
                               settings={("approval", "hold_seconds"): 30}, extra_config=TWO_FOR_SNAPSHOTS)
    agent = gate.add_agent(unique("quorum-held"))
    snap = new_snapshot(moto)
    held = Held(delete_snapshot(agent, snap))
    held.start()
    deadline = time.monotonic() + 15
    while not gate.pending_ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    [approval] = gate.pending_ids()
    assert decide(gate, "approve", approval, "alice").returncode == 0
    time.sleep(2)
    assert held.is_alive(), f"the call was answered after one approval of two: {held.result}"
    assert snapshot_exists(moto, snap)
    assert decide(gate, "approve", approval, "bob").returncode == 0
    held.finished(15)
    assert held.error is None and held.result == (True, "", ""), (held.error, held.result)
    assert not snapshot_exists(moto, snap)


# --- through the approval page, two people, two passkeys ----------------------------------------


def enroll_bob(web: Any) -> None:
    """Bob enrolls a passkey in his own browser (`web.bob_credfile`); alice confirms it with hers."""
    from test_approvals_web import drive

    out = web.airlock.cli("approver", "enroll", "bob").stdout
    link = re.search(r"http://localhost:\d+/enroll/\S+", out).group(0)
    web.bob_credfile = web.airlock.home / "bob-passkey.json"
    reg = drive({"cmd": "enroll", "link": link, "credfile": str(web.bob_credfile)})
    assert reg["status"] == 200 and "ok" in reg["result"]["kind"], reg
    state = web.airlock.home / "state"
    [pending] = [e for e in json.loads((state / "enrollments.json").read_text())["enrollments"]
                 if e.get("pending") and not e.get("settled")]
    done = drive({"cmd": "confirm", "credfile": str(web.credfile), "decision": "confirm",
                  "url": f"{web.origin}/enrollments/{pending['pending']['id']}"})
    assert done["result"]["kind"] == "ok", done
    names = [p["name"] for p in json.loads((state / "passkeys.json").read_text())["passkeys"]]
    assert names == ["alice", "bob"]


@pytest.fixture(scope="module")
def two_web(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An approval page with alice's passkey (enrolled first) and bob's (confirmed by alice),
    a webhook, and the two-approver rule."""
    from test_approvals_web import Webhook, start_web_airlock

    hook = Webhook()
    web = start_web_airlock("airlock-quorum-web", moto, tmp_path_factory, 100, hook, TWO_FOR_SNAPSHOTS)
    try:
        enroll_bob(web)
        web.webhook = hook
        yield web
    finally:
        RUNNING.pop("airlock-quorum-web", None)
        web.airlock.stop()
        hook.stop()


def listed_approval(web: Any, snap: str) -> str:
    """The id of the pending approval for the held delete of `snap`, as `airlock approvals` lists it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = [a for a in json.loads(web.airlock.cli("approvals", "--json").stdout) if snap in json.dumps(a)]
        if rows:
            return str(rows[0]["id"])
        time.sleep(0.2)
    pytest.fail("the held call is not listed", pytrace=False)


def test_two_passkeys_in_two_browsers_release_a_held_snapshot_delete(two_web: Any, moto: Moto) -> None:
    from test_approvals_web import Held, drive

    web, snap = two_web, new_snapshot(moto)
    held = Held(delete_snapshot(web.agent, snap))
    held.start()
    approval = listed_approval(web, snap)
    page = f"{web.origin}/approvals/{approval}"

    # Alice, in her browser: one approval of two. The call stays held; the page says so.
    alice = drive({"cmd": "decide", "credfile": str(web.credfile), "decision": "approve", "approval_url": page})
    assert alice["result"]["kind"] == "ok", alice
    assert "2 distinct (only alice, bob count); approved by nobody yet" in alice["text"], alice["text"]
    assert "1 of 2 approvals — waiting for another approver" in alice["result"]["text"], alice["result"]
    assert "1 of 2 approvals — waiting for another approver" in alice["status_after"], alice["status_after"]
    assert held.is_alive() and snapshot_exists(moto, snap)

    # Alice again (same passkey, fresh browser): refused, it counts once.
    twice = drive({"cmd": "decide", "credfile": str(web.credfile), "decision": "approve", "approval_url": page})
    assert twice["result"]["kind"] == "error" and "already approved" in twice["result"]["text"], twice["result"]
    assert held.is_alive() and snapshot_exists(moto, snap)

    # The approvers are told again that it waits for another one.
    deadline = time.monotonic() + 10
    while len(web.webhook.messages_for(approval)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    first_note, second_note = web.webhook.messages_for(approval)[:2]
    assert "1 of 2" not in first_note["text"]
    assert "1 of 2 approvals — waiting for another approver" in second_note["text"], second_note["text"]

    # Bob, in another browser with his own passkey: complete; the held call goes through.
    bob = drive({"cmd": "decide", "credfile": str(web.bob_credfile), "decision": "approve", "approval_url": page,
                 "passkey_index": 1})
    assert bob["result"] == {"text": "Approved 1 call.", "kind": "ok"}, bob["result"]
    # The held call may already have spent the receipt (the approval then reads as closed):
    # either way the page names both approvers.
    assert bob["status_after"] in ("Approved by alice, bob", "Closed (decided by alice, bob)") or \
        bob["status_after"].startswith("Approved by alice, bob"), bob["status_after"]
    held.finished(web.hold + 10)
    assert held.error is None and held.result == (True, "", ""), (held.error, held.result)
    assert not snapshot_exists(moto, snap)

    # One receipt with both passkey approvals; it verifies offline.
    receipt = web.approval(approval)["receipt_id"]
    path = web.airlock.home / "state" / "receipts" / f"{receipt}.json"
    body = json.loads(path.read_text())
    assert body["body"]["webauthn"] and body["cosigners"][0]["webauthn"]
    verified = web.airlock.cli("receipt", "verify", str(path))
    assert "quorum 2 of 2 distinct approvers (alice, bob)" in verified.stdout, verified.stdout


def test_a_passkey_denial_after_one_approval_denies(two_web: Any, moto: Moto) -> None:
    from test_approvals_web import Held, drive

    web, snap = two_web, new_snapshot(moto)
    held = Held(delete_snapshot(web.agent, snap))
    held.start()
    approval = listed_approval(web, snap)
    page = f"{web.origin}/approvals/{approval}"
    alice = drive({"cmd": "decide", "credfile": str(web.credfile), "decision": "approve", "approval_url": page})
    assert "1 of 2" in alice["result"]["text"], alice["result"]
    bob = drive({"cmd": "decide", "credfile": str(web.bob_credfile), "decision": "deny", "approval_url": page,
                 "passkey_index": 1})
    assert bob["result"] == {"text": "Denied 1 call.", "kind": "ok"}, bob["result"]
    held.finished(web.hold + 10)
    ok, code, message = held.result
    assert not ok and code == "AccessDenied" and "denied by bob" in message, held.result
    assert snapshot_exists(moto, snap)


def test_a_receipt_whose_call_is_gone_is_held_to_the_configs_quorum(
        start_gated_airlock: Callable[..., GatedAirlock], moto: Moto, tmp_path: Path) -> None:
    """`airlock receipt verify` of a receipt whose approval is not in the state (pruned,
    another machine, a copy): the quorum comes from the rules matching what it binds, not
    from the receipt's own word."""
    gate = start_gated_airlock("airlock-verify-gone", approvers=("alice", "bob"))
    agent = gate.add_agent(unique("verify-agent"))
    snap = new_snapshot(moto)
    call = delete_snapshot(agent, snap)
    approval = gate.approval_id(refused(moto, call, snap))
    assert record(gate, approval)["quorum"]["approvals"] == 1
    copy = tmp_path / "receipt.json"
    copy.write_bytes(gate.approve(approval, gate.keys["alice"]).read_bytes())
    (gate.state_dir / "approvals" / f"{approval}.json").unlink()

    # Under the config that granted it, the one-approver receipt verifies.
    ok = gate.cli("receipt", "verify", str(copy), check=False)
    assert ok.returncode == 0, ok.stderr
    assert "quorum 1 of 1" in ok.stdout and "not in airlock's state" in ok.stdout, ok.stdout

    # Once the config wants two people for snapshot deletes, it no longer does.
    with open(gate.config, "a") as f:
        f.write(TWO_FOR_SNAPSHOTS)
    no = gate.cli("receipt", "verify", str(copy), check=False)
    assert no.returncode != 0, no.stdout
    assert "needs 2 distinct approvers under this config; the receipt has 1" in no.stderr, no.stderr
