"""A Terraform plan that deletes a snapshot, approved by two people (M-of-N quorum for plans).

The plan is `terraform show -json` output that destroys one `aws_db_snapshot` (a snapshot made
in moto for the test). The airlock's config needs two approvers for `rds:DeleteDBSnapshot`
(`approvals = 2`, only alice and bob count; or `[approval] irreversible_quorum = 2` with no
rule). The agent deletes the snapshot through airlock with boto3 against moto with signature
checking. What a user would check: what `plan submit` and the page say the plan needs, whether
the delete reached moto and the snapshot is gone, the plan's status, `receipt verify`, and the
audit log. Once through the CLI (`plan approve|deny ID --key FILE`), once through two Chromium
browser contexts with two passkeys.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import _RUNNING as RUNNING
from support import REGION, Agent, GatedAirlock, Moto, audit_records, run, scrubbed_env, unique
from test_quorum import TWO_FOR_SNAPSHOTS, delete_snapshot, enroll_bob, goes_through, new_snapshot, refused, \
    snapshot_exists

ACCOUNT = "123456789012"


def snapshot_plan(directory: Path, snap: str) -> Path:
    """A destroy plan, as `terraform show -json plan.bin` writes it, for snapshot `snap`."""
    arn = f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:{snap}"
    doc = {
        "format_version": "1.2",
        "terraform_version": "1.9.8",
        "timestamp": "2026-12-05T12:00:00Z",
        "configuration": {"provider_config": {"aws": {"name": "aws", "full_name": "registry.terraform.io/hashicorp/aws",
                                                      "expressions": {"region": {"constant_value": REGION}}}}},
        "prior_state": {"format_version": "1.0", "terraform_version": "1.9.8", "values": {"root_module": {}}},
        "resource_changes": [{
            "address": "aws_db_snapshot.nightly", "mode": "managed", "type": "aws_db_snapshot", "name": "nightly",
            "provider_name": "registry.terraform.io/hashicorp/aws",
            "change": {"actions": ["delete"], "after": None,
                       "before": {"id": snap, "db_snapshot_identifier": snap, "db_snapshot_arn": arn,
                                  "db_instance_identifier": "quorum-db"}},
        }],
    }
    path = directory / f"{snap}.json"
    path.write_text(json.dumps(doc))
    return path


def submit(gate: Any, directory: Path, snap: str, agent: str) -> tuple[str, str]:
    """`airlock plan submit PLAN --agent NAME`: the plan id and what it printed."""
    out = gate.cli("plan", "submit", str(snapshot_plan(directory, snap)), "--agent", agent).stdout
    m = re.search(r"^approve at http://localhost:\d+/plans/([a-z0-9]+)$", out, re.M)
    assert m, out
    return m.group(1), out


def decide(gate: GatedAirlock, verb: str, plan_id: str, who: str) -> Any:
    """`airlock plan approve|deny ID --key WHO.key`, whatever its exit code."""
    return run([str(gate.binary), "plan", verb, plan_id, "--key", str(gate.keys[who].path),
                "--insecure-plaintext-key", "--config", str(gate.config)],
               scrubbed_env(), cwd=gate.home, timeout=60, check=False)


def plan_record(gate: Any, plan_id: str) -> dict[str, Any]:
    return json.loads(gate.cli("plan", "show", plan_id, "--json").stdout)


def plan_events(state_dir: Path, plan_id: str) -> list[dict[str, Any]]:
    return [r for r in audit_records(state_dir) if r.get("plan") == plan_id]


def plan_receipt(gate: Any, plan_id: str) -> Path:
    return gate.home / "state" / "receipts" / f"{plan_record(gate, plan_id)['receipt_id']}.json"


# --- through the CLI --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gate(start_gated_airlock: Callable[..., GatedAirlock]) -> GatedAirlock:
    return start_gated_airlock("airlock-plan-quorum", approvers=("alice", "bob", "carol"),
                               extra_config=TWO_FOR_SNAPSHOTS)


@pytest.fixture(scope="module")
def agent(gate: GatedAirlock) -> Agent:
    return gate.add_agent(unique("plan-quorum-agent"))


def test_a_plan_needs_two_distinct_approvers_for_a_snapshot_delete(gate: GatedAirlock, agent: Agent, moto: Moto,
                                                                    tmp_path: Path) -> None:
    snap = new_snapshot(moto)
    plan_id, printed = submit(gate, tmp_path, snap, agent.name)
    arn = f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:{snap}"
    assert f"needs 2 approvers: rds:DeleteDBSnapshot on {arn} (only alice, bob count)" in printed, printed
    assert plan_record(gate, plan_id)["quorums"] == [{"approvals": 2, "approvers": ["alice", "bob"]}]
    call = delete_snapshot(agent, snap)

    # One approval of two: the plan stays pending and covers nothing; the delete is refused.
    first = decide(gate, "approve", plan_id, "alice")
    assert first.returncode == 0, first.stderr
    assert "1 of 2 approvals — waiting for another approver" in first.stdout, first.stdout
    record = plan_record(gate, plan_id)
    assert record["status"] == "pending" and record["approved_by"] == ["alice"], record
    refused(moto, call, snap)
    shown = gate.cli("plan", "show", plan_id).stdout
    assert "1 of 2 approvals — waiting for another approver (approved by alice)" in shown, shown
    partial = gate.cli("receipt", "verify", str(plan_receipt(gate, plan_id)), check=False)
    assert partial.returncode != 0 and "needs 2" in partial.stderr, partial

    # The same approver twice counts once; a name the rule does not list does not count.
    again = decide(gate, "approve", plan_id, "alice")
    assert again.returncode != 0 and "already approved this plan" in again.stderr, again
    carol = decide(gate, "approve", plan_id, "carol")
    assert carol.returncode != 0 and "not among the approvers" in carol.stderr, carol
    assert plan_record(gate, plan_id)["approved_by"] == ["alice"]
    refused(moto, call, snap)

    # A second, distinct approver completes it: the delete goes through at once, unheld.
    second = decide(gate, "approve", plan_id, "bob")
    assert second.returncode == 0, second.stderr
    assert f"approved plan {plan_id}: 1 calls covered" in second.stdout, second.stdout
    record = plan_record(gate, plan_id)
    assert record["status"] == "approved" and record["approved_by"] == ["alice", "bob"], record
    approvals_before = len(gate.approvals(all=True))
    goes_through(moto, call, snap)
    assert len(gate.approvals(all=True)) == approvals_before, "the covered delete opened an approval"

    # One plan receipt, two approvers; it verifies offline against the config's quorum.
    receipt = json.loads(plan_receipt(gate, plan_id).read_text())
    assert receipt["body"]["quorum"] == 2 and receipt["body"]["approver"] == "alice"
    assert [c["approver"] for c in receipt["cosigners"]] == ["bob"]
    verified = gate.cli("receipt", "verify", str(plan_receipt(gate, plan_id)))
    assert "quorum 2 of 2 distinct approvers (alice, bob), as airlock's config requires for every call" \
        in verified.stdout, verified.stdout
    # Bob's approval dropped from the file: one approver, refused.
    lone = tmp_path / "lone.json"
    del receipt["cosigners"]
    lone.write_text(json.dumps(receipt))
    short = gate.cli("receipt", "verify", str(lone), check=False)
    assert short.returncode != 0 and "needs 2" in short.stderr, short

    events = [(e["event"], e.get("approver"), e.get("approvals"), e.get("quorum"))
              for e in plan_events(gate.state_dir, plan_id)]
    assert events[:4] == [
        ("plan_submitted", None, None, None),
        ("quorum_signature", "alice", 1, 2),
        ("quorum_signature", "bob", 2, 2),
        ("plan_approved", "alice, bob", None, 2),
    ], events
    assert ("plan_entry_used", None, None, None) in events and events[-1][0] == "plan_spent", events
    assert gate.cli("audit", "verify").returncode == 0


@pytest.mark.parametrize("first_approves", [True, False], ids=["after-one-approval", "first"])
def test_a_denial_by_either_approver_denies_the_plan(first_approves: bool, gate: GatedAirlock, agent: Agent,
                                                     moto: Moto, tmp_path: Path) -> None:
    snap = new_snapshot(moto)
    plan_id, _ = submit(gate, tmp_path, snap, agent.name)
    denier = "bob" if first_approves else "alice"
    if first_approves:
        assert decide(gate, "approve", plan_id, "alice").returncode == 0
    no = decide(gate, "deny", plan_id, denier)
    assert no.returncode == 0 and f"denied plan {plan_id}" in no.stdout, no.stderr
    record = plan_record(gate, plan_id)
    assert record["status"] == "denied" and record["decided_by"] == denier, record
    late = decide(gate, "approve", plan_id, "alice" if denier == "bob" else "bob")
    assert late.returncode != 0 and "not pending" in late.stderr, late
    refused(moto, delete_snapshot(agent, snap), snap)
    last = plan_events(gate.state_dir, plan_id)[-1]
    assert (last["event"], last["approver"], last["approvals_before"]) == \
        ("plan_denied", denier, ["alice"] if first_approves else []), last


def test_irreversible_quorum_applies_to_a_plans_snapshot_delete_only(
        start_gated_airlock: Callable[..., GatedAirlock], moto: Moto, tmp_path: Path) -> None:
    gate = start_gated_airlock("airlock-plan-irreversible", approvers=("alice", "bob"),
                               settings={("approval", "irreversible_quorum"): 2})
    agent = gate.add_agent(unique("plan-irreversible"))
    snap = new_snapshot(moto)
    plan_id, printed = submit(gate, tmp_path, snap, agent.name)
    assert "needs 2 approvers: rds:DeleteDBSnapshot on" in printed and "(only" not in printed, printed
    call = delete_snapshot(agent, snap)
    assert decide(gate, "approve", plan_id, "alice").returncode == 0
    refused(moto, call, snap)
    assert decide(gate, "approve", plan_id, "bob").returncode == 0
    goes_through(moto, call, snap)


# --- through the plan page, two people, two passkeys ------------------------------------------


@pytest.fixture(scope="module")
def web(moto: Moto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A plan page with alice's passkey and bob's, a webhook, the two-approver rule, and a
    short hold (a call the plan does not cover waits this long, then is refused)."""
    from test_approvals_web import Webhook, start_web_airlock

    hook = Webhook()
    w = start_web_airlock("airlock-plan-quorum-web", moto, tmp_path_factory, 3, hook, TWO_FOR_SNAPSHOTS)
    try:
        enroll_bob(w)
        w.webhook = hook
        yield w
    finally:
        RUNNING.pop("airlock-plan-quorum-web", None)
        w.airlock.stop()
        hook.stop()


def plan_notes(web: Any, plan_id: str) -> list[str]:
    return [json.loads(r["body"])["text"] for r in web.webhook.received
            if json.loads(r["body"]).get("airlock", {}).get("plan_id") == plan_id]


def test_two_passkeys_in_two_browsers_approve_a_plan(web: Any, moto: Moto, tmp_path: Path) -> None:
    from test_approvals_web import drive

    snap = new_snapshot(moto)
    plan_id, _ = submit(web.airlock, tmp_path, snap, web.agent.name)
    page = f"{web.origin}/plans/{plan_id}"
    call = delete_snapshot(web.agent, snap)

    # Alice, in her browser: one approval of two. The page says so, and the plan covers nothing.
    alice = drive({"cmd": "decide", "credfile": str(web.credfile), "decision": "approve", "approval_url": page})
    assert "needs 2 approvers: rds:DeleteDBSnapshot on" in alice["text"], alice["text"]
    assert alice["result"]["kind"] == "ok", alice
    assert "1 of 2 approvals — waiting for another approver" in alice["result"]["text"], alice["result"]
    assert "1 of 2 approvals — waiting for another approver" in alice["status_after"], alice["status_after"]
    message = refused(moto, call, snap)
    assert "rds:DeleteDBSnapshot" in message, message

    # Alice again, in a fresh browser: refused, she counts once.
    twice = drive({"cmd": "decide", "credfile": str(web.credfile), "decision": "approve", "approval_url": page})
    assert twice["result"]["kind"] == "error" and "already approved" in twice["result"]["text"], twice["result"]
    assert plan_record(web.airlock, plan_id)["approved_by"] == ["alice"]

    # The approvers are told again that the plan waits for another one.
    deadline = time.monotonic() + 10
    while not plan_notes(web, plan_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    notes = plan_notes(web, plan_id)
    assert notes and "1 of 2 approvals — waiting for another approver" in notes[0], notes

    # Bob, in another browser with his own passkey: complete. The delete then goes through
    # with no hold, and no approval is opened for it.
    bob = drive({"cmd": "decide", "credfile": str(web.bob_credfile), "decision": "approve", "approval_url": page,
                 "passkey_index": 1})
    assert bob["result"] == {"text": "Approved the plan: one receipt for 1 calls.", "kind": "ok"}, bob["result"]
    assert bob["status_after"].startswith("Approved by alice, bob"), bob["status_after"]
    pending_before = len(json.loads(web.airlock.cli("approvals", "--json", "--all").stdout))
    started = time.monotonic()
    goes_through(moto, call, snap)
    assert time.monotonic() - started < web.hold, "the covered delete was held"
    assert len(json.loads(web.airlock.cli("approvals", "--json", "--all").stdout)) == pending_before

    receipt = plan_receipt(web.airlock, plan_id)
    body = json.loads(receipt.read_text())
    assert body["body"]["webauthn"] and body["cosigners"][0]["webauthn"], body
    verified = web.airlock.cli("receipt", "verify", str(receipt))
    assert "quorum 2 of 2 distinct approvers (alice, bob)" in verified.stdout, verified.stdout
    events = [(e["event"], e.get("approver"), e.get("via")) for e in plan_events(web.airlock.home / "state", plan_id)]
    assert events[1:4] == [("quorum_signature", "alice", "passkey"), ("quorum_signature", "bob", "passkey"),
                           ("plan_approved", "alice, bob", "passkey")], events


def test_a_passkey_denial_after_one_approval_denies_the_plan(web: Any, moto: Moto, tmp_path: Path) -> None:
    from test_approvals_web import drive

    snap = new_snapshot(moto)
    plan_id, _ = submit(web.airlock, tmp_path, snap, web.agent.name)
    page = f"{web.origin}/plans/{plan_id}"
    alice = drive({"cmd": "decide", "credfile": str(web.credfile), "decision": "approve", "approval_url": page})
    assert "1 of 2" in alice["result"]["text"], alice["result"]
    bob = drive({"cmd": "decide", "credfile": str(web.bob_credfile), "decision": "deny", "approval_url": page,
                 "passkey_index": 1})
    assert bob["result"] == {"text": "Denied the plan: one receipt for 1 calls.", "kind": "ok"}, bob["result"]
    assert bob["status_after"] == "Denied by bob", bob["status_after"]
    record = plan_record(web.airlock, plan_id)
    assert record["status"] == "denied" and record["approved_by"] == ["alice"], record
    refused(moto, delete_snapshot(web.agent, snap), snap)
    assert snapshot_exists(moto, snap)
    assert plan_events(web.airlock.home / "state", plan_id)[-1]["event"] == "plan_denied"
