"""`airlock db import` and `airlock db export` on a state a real `serve` made on the files: an
agent's allowed call, a destructive call refused, approved with `airlock approve` and then
sent through, a second one left pending, and a Terraform plan submitted and approved with
`airlock plan approve`. Imported into an empty PostgreSQL (a private cluster), the chain
verifies there with the same number of records, `agent list` lists the same agent (same access
key id) and `plan show` the plan approved with the same receipt; a second import is refused.
Exported into a new directory, that directory verifies with `airlock audit verify` and holds
the same ledger counts, approvals, plans, agents and receipts, byte for byte, and a key of its
own for airlock."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from botocore.config import Config
from botocore.exceptions import ClientError

from support import GatedAirlock, Moto, Postgres, run, scrubbed_env, unique
from test_plan_quorum import submit
from test_terraform_plan import approve_plan

NO_RETRIES = Config(retries={"total_max_attempts": 1})


def ledger_uses(state: Path) -> dict[str, int]:
    """Each receipt's uses as the file ledger counts them (an unsettled reservation counts)."""
    committed: dict[str, int] = {}
    reserved: dict[str, int] = {}
    for line in (state / "ledger.jsonl").read_text().splitlines():
        event = json.loads(line)
        key = event["receipt"]
        if event["event"] == "reserve":
            reserved[key] = reserved.get(key, 0) + 1
        else:
            reserved[key] = max(reserved.get(key, 0) - 1, 0)
            if event["event"] == "commit":
                committed[key] = committed.get(key, 0) + 1
    uses = {k: committed.get(k, 0) + reserved.get(k, 0) for k in committed.keys() | reserved.keys()}
    return {k: n for k, n in uses.items() if n}


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.json"))


def records_in(text: str) -> int:
    m = re.search(r"intact: (\d+) records", text)
    assert m, text
    return int(m.group(1))


def test_a_served_file_state_moves_into_the_database_and_back(
        start_gated_airlock: Callable[..., GatedAirlock], moto: Moto, tmp_path: Path) -> None:
    gate = start_gated_airlock("airlock-transfer", settings={("approval", "uses"): 2})
    agent = gate.add_agent(unique("transfer-agent"))
    agent.client("sts", config=NO_RETRIES).get_caller_identity()
    dynamodb = agent.client("dynamodb", config=NO_RETRIES)
    tables = [unique("transfer-orders"), unique("transfer-ledger")]
    for table in tables:
        moto.client("dynamodb").create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    approval_ids = []
    for table in tables:
        try:
            dynamodb.delete_table(TableName=table)
            raise AssertionError("a DeleteTable went through without an approval")
        except ClientError as e:
            approval_ids.append(gate.approval_id(e.response["Error"]["Message"]))
    gate.approve(approval_ids[0])
    dynamodb.delete_table(TableName=tables[0])
    plan_id, _ = submit(gate, tmp_path, unique("transfer-snap"), agent.name)
    plan_receipt = approve_plan(gate, plan_id)
    gate.stop()

    state = gate.state_dir
    uses_before = ledger_uses(state)
    assert list(uses_before.values()) == [1], uses_before
    env_files = scrubbed_env()
    agents_before = json.loads((state / "agents.json").read_text())["agents"]
    assert [a["access_key_id"] for a in agents_before] == [agent.access_key_id], agents_before
    assert (state / "airlock.pub").is_file()
    records = records_in(gate.cli("audit", "verify").stdout)
    assert records >= 4, records

    postgres = Postgres()
    try:
        postgres.start()
        env = scrubbed_env()
        env["AIRLOCK_DATABASE_URL"] = postgres.create_database("transfer")
        base = [str(gate.binary), "--config", str(gate.config)]
        imported = run([*base, "db", "import"], env, cwd=gate.home)
        assert f"{records} audit records" in imported.stdout, imported.stdout
        assert "2 approvals, 1 receipts, 1 plans, 1 plan receipts, 1 agent keys" in imported.stdout, \
            imported.stdout
        listed = json.loads(run([*base, "agent", "list", "--json"], env, cwd=gate.home).stdout)
        assert [a["access_key_id"] for a in listed] == [agent.access_key_id], listed
        assert agent.secret_access_key not in json.dumps(listed)
        shown = json.loads(run([*base, "plan", "show", plan_id, "--json"], env, cwd=gate.home).stdout)
        assert shown["status"] == "approved" and shown["receipt_id"] == plan_receipt.stem, shown
        receipt_in_db = run([*base, "plan", "receipt", plan_id], env, cwd=gate.home).stdout
        assert json.loads(receipt_in_db) == json.loads(plan_receipt.read_text())
        verified = run([*base, "audit", "verify"], env, cwd=gate.home)
        assert f"audit chain intact: {records} records in PostgreSQL" in verified.stdout, verified.stdout
        again = run([*base, "db", "import"], env, cwd=gate.home, check=False)
        assert again.returncode != 0 and "EMPTY database" in again.stderr, again.stderr

        # Exported next to a copy of the config, whose `[state] dir` (../state) then names it.
        home = tmp_path / "exported"
        (home / "config").mkdir(parents=True)
        shutil.copy(gate.config, home / "config" / "airlock.toml")
        exported = run([*base, "db", "export", str(home / "state")], env, cwd=gate.home)
        assert f"{records} audit records" in exported.stdout, exported.stdout
    finally:
        postgres.stop()

    files_verify = run([str(gate.binary), "--config", str(home / "config" / "airlock.toml"), "audit", "verify"],
                       env_files, cwd=home)
    assert records_in(files_verify.stdout) == records, files_verify.stdout
    assert ledger_uses(home / "state") == uses_before
    assert names(home / "state" / "approvals") == names(state / "approvals") == sorted(
        f"{i}.json" for i in approval_ids)
    assert names(home / "state" / "receipts") == names(state / "receipts")
    assert len(names(state / "receipts")) == 2, names(state / "receipts")
    for receipt in names(state / "receipts"):
        assert (home / "state" / "receipts" / receipt).read_bytes() == (state / "receipts" / receipt).read_bytes()
    assert names(home / "state" / "plans") == [f"{plan_id}.json"]
    assert json.loads((home / "state" / "plans" / f"{plan_id}.json").read_text()) == \
        json.loads((state / "plans" / f"{plan_id}.json").read_text())
    assert json.loads((home / "state" / "agents.json").read_text())["agents"] == agents_before
    # The database holds no private key: the exported state has one of its own.
    assert (home / "state" / "airlock.key").is_file()
    assert (home / "state" / "airlock.pub").read_text() != (state / "airlock.pub").read_text()
    statuses = {i: json.loads((home / "state" / "approvals" / f"{i}.json").read_text())["status"]
                for i in approval_ids}
    assert statuses[approval_ids[1]] == "pending", statuses
