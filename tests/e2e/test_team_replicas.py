"""Three `airlock serve` replicas on one PostgreSQL database, as a team runs them: each its own
home (config, certificates, ports), all with the same `[state] database_url`, driven by real
boto3 clients through moto with signature checking.

- A destructive call held on replica 1 goes on, on the same connection and without a retry,
  when an approver approves it with `airlock approve` under replica 3's config, or on replica
  3's approval page with a passkey (headless Chromium): the approval, its decision and the
  wake-up travel through the database. It reaches moto exactly once.
- 60 identical calls under one approved three-use receipt, spread over the three replicas at
  once: exactly three reach moto (the database's ledger, not any replica's memory, counts the
  uses); the rest get the AWS-shaped refusal with a link to approve again.
- `airlock audit verify` passes over the one chain the three replicas wrote.
- An agent revoked with replica 2's CLI is refused by all three within a second; a gated call
  reads its key in the database before it spends a use, so a revocation its replica has not
  yet heard of spends none.
- A receipt whose last use is reserved by a call in flight on another replica answers 503
  and keeps its approval; the retry goes through once that use is given back.
- A call held on a replica that is then killed: the agent's connection ends, the approval
  stays pending in the database; approved through replica 3, the agent's retry through
  replica 2 goes through once.
- `kill -9` of replica 1 under load spends no use twice; restarted on its state dir, it drains
  its spool and the chain verifies.
- The database stopped and started under load: gated calls get 503 while it is down, allowed
  calls go on (their records spooled), and none of their records is lost.

The replicas share nothing but the database: each has its own `[state] dir` (its audit spool
and its countersigning key); the agent added through replica 1's CLI is known to all three."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from support import (
    REGION, Agent, GatedAirlock, Moto, Postgres, configure, keygen, run, scrubbed_env, unique,
)

REPLICAS = 3

NO_RETRIES = Config(retries={"total_max_attempts": 1}, read_timeout=90, max_pool_connections=64,
                    s3={"addressing_style": "path"})


class Team:
    """Three replicas on one database, trusting one approver key ("alice")."""

    def __init__(self, root: Path, moto: Moto, database_url: str, *, hold_seconds: int, uses: int):
        self.database_url = database_url
        self.replicas: list[GatedAirlock] = []
        for n in range(1, REPLICAS + 1):
            replica = GatedAirlock(root / f"replica-{n}", moto)
            replica.home.mkdir(parents=True)
            replica.init("enforce")
            configure(replica.config, {
                ("state", "database_url"): database_url,
                ("approval", "hold_seconds"): hold_seconds,
                ("approval", "uses"): uses,
                ("notify", "desktop"): False,
            })
            self.replicas.append(replica)
        self.key = keygen(self.replicas[0], "alice", root / "keys")
        for replica in self.replicas:
            with open(replica.config, "a") as f:
                f.write("\n" + self.key.block)
            replica.keys["alice"] = self.key

    def start(self) -> None:
        for replica in self.replicas:
            replica.start()
        # serve migrates the schema at its first contact with the database, in the background:
        # until then the CLI (`agent add`) refuses an unmigrated database.
        self.wait_healthy(30)

    def wait_healthy(self, seconds: float) -> float:
        """Until every replica's `/healthz` says OK (schema migrated, audit spool drained): how
        long it took."""
        started = time.monotonic()
        for n, replica in enumerate(self.replicas, 1):
            while requests.get(f"{replica.approvals_url}/healthz", timeout=10).status_code != 200:
                assert time.monotonic() - started < seconds, f"replica {n} not healthy after {seconds} s\n{self.logs()}"
                time.sleep(0.1)
        return time.monotonic() - started

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def logs(self) -> str:
        return "\n".join(f"--- replica {n} ---\n{r.log_tail()}" for n, r in enumerate(self.replicas, 1))

    def approve(self, through: GatedAirlock, approval_id: str) -> str:
        """`airlock approve ID --key alice.key` under `through`'s config: its output."""
        proc = run([str(through.binary), "approve", approval_id, "--key", str(self.key.path),
                    "--insecure-plaintext-key", "--config", str(through.config)], scrubbed_env(),
                   cwd=through.home, timeout=60)
        assert f"approved {approval_id}" in proc.stdout, proc.stdout + proc.stderr
        assert re.search(r"^receipt: \S+ \(in PostgreSQL", proc.stdout, re.M), proc.stdout
        return proc.stdout

    def audit_verified(self, through: GatedAirlock) -> int:
        """`airlock audit verify` over the chain in the database: how many records it holds."""
        proc = through.cli("audit", "verify")
        m = re.search(r"audit chain intact: (\d+) records in PostgreSQL", proc.stdout)
        assert m, proc.stdout + proc.stderr
        return int(m.group(1))


@pytest.fixture
def team_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every airlock process started from here (serve and the CLI) inherits the environment:
    # the replicas' database is the one their configs name.
    monkeypatch.delenv("AIRLOCK_DATABASE_URL", raising=False)


def client_through(replica: GatedAirlock, agent: Agent, service: str) -> Any:
    """`agent`'s boto3 client pointed at `replica` (its port, trusting its CA)."""
    return boto3.session.Session(
        aws_access_key_id=agent.access_key_id, aws_secret_access_key=agent.secret_access_key,
        region_name=REGION,
    ).client(service, endpoint_url=replica.proxy_url, verify=str(replica.ca_pem), config=NO_RETRIES)


def outcome(call: Any, **kwargs: Any) -> tuple[bool, str, str]:
    """(went through, error code, message) of one attempt."""
    try:
        call(**kwargs)
    except ClientError as e:
        err = e.response.get("Error", {})
        return False, err.get("Code", ""), err.get("Message", "")
    return True, "", ""


def create_table(ddb: Any, table: str) -> None:
    """A DynamoDB table in moto, made directly (not through airlock)."""
    ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])


def test_a_call_held_on_one_replica_goes_on_when_approved_through_another(
        postgres: Postgres, moto: Moto, tmp_path: Path, team_env: None) -> None:
    database = "held"
    team = Team(tmp_path, moto, postgres.create_database(database), hold_seconds=45, uses=1)
    team.start()
    try:
        first, second, third = team.replicas
        agent = first.add_agent(unique("team-agent"))
        table = unique("team-held")
        ddb = moto.client("dynamodb")
        create_table(ddb, table)

        before = moto.request_count()
        result: dict[str, Any] = {}

        def delete() -> None:
            result["outcome"] = outcome(client_through(first, agent, "dynamodb").delete_table, TableName=table)
            result["at"] = time.monotonic()

        held = threading.Thread(target=delete, daemon=True)
        held.start()
        # The held call's approval, as replica 3's CLI lists it from the database.
        row = wait_pending(team, third, "dynamodb:DeleteTable", held)
        assert row["action"] == "dynamodb:DeleteTable" and row["attempts"] == 1, row
        # Replica 2's approval page lists it too, with its link.
        listed = requests.get(f"{second.approvals_url}/api/approvals", timeout=10).json()
        assert [(p["id"], p["link"]) for p in listed["pending"]] == [(row["id"], f"/approvals/{row['id']}")], listed
        assert held.is_alive(), f"the call was answered before any decision: {result}"
        assert moto.request_count() == before, "the held call reached moto before its approval"

        approved_at = time.monotonic()
        team.approve(third, row["id"])
        held.join(30)
        assert not held.is_alive(), "the held call was not released\n" + team.logs()
        went_through, code, message = result["outcome"]
        assert went_through, f"the approved call was refused: {code}: {message}\n{team.logs()}"
        waited = result["at"] - approved_at
        print(f"the call held on replica 1 went on {waited:.3f} s after `airlock approve` through replica 3 began")
        assert waited < 10, f"released {waited:.1f} s after the approval"
        assert moto.request_count() - before == 1, "the approved call did not reach moto exactly once"
        with pytest.raises(ClientError) as gone:
            ddb.describe_table(TableName=table)
        assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"

        # Replica 2 sees what replicas 1 and 3 did: the approval decided, its use spent.
        [decided] = [r for r in second.approvals(all=True) if r["id"] == row["id"]]
        assert decided["status"] in ("approved", "closed"), decided
        assert decided["approvals"] == ["alice"], decided
        shown = requests.get(f"{second.approvals_url}/api/approvals/{row['id']}", timeout=10).json()
        assert shown["status"] in ("approved", "closed") and shown["decided_at"], shown
        assert not requests.get(f"{second.approvals_url}/api/approvals", timeout=10).json()["pending"]
        # One chain holds the CLI's decision and replica 1's use of the receipt (in the order
        # they reached the database: the held call goes on as soon as the decision commits).
        events = postgres.query(database, "SELECT record::jsonb->>'event' FROM airlock_audit ORDER BY seq").split()
        assert sorted(e for e in events if e in ("approved", "receipt_used")) == ["approved", "receipt_used"], events
        assert team.audit_verified(second) == len(events)
    finally:
        team.stop()


def test_identical_approved_calls_over_three_replicas_reach_aws_exactly_uses_times(
        postgres: Postgres, moto: Moto, tmp_path: Path, team_env: None) -> None:
    uses, calls = 3, 60
    database = "storm"
    team = Team(tmp_path, moto, postgres.create_database(database), hold_seconds=0, uses=uses)
    team.start()
    try:
        first, second, third = team.replicas
        agent = first.add_agent(unique("team-storm"))
        bucket = unique("team-storm")
        moto.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        clients = [client_through(r, agent, "s3") for r in team.replicas]

        # Refused on replica 2 with its link; approved with replica 3's CLI.
        before = moto.request_count()
        went_through, code, message = outcome(clients[1].delete_object, Bucket=bucket, Key="log.txt")
        assert not went_through and code == "AccessDenied", (code, message)
        assert moto.request_count() == before
        approval = second.approval_id(message)
        team.approve(third, approval)

        barrier = threading.Barrier(calls)
        results: list[tuple[bool, str, str] | BaseException] = [RuntimeError("not run")] * calls

        def worker(i: int) -> None:
            try:
                barrier.wait(30)
                results[i] = outcome(clients[i % REPLICAS].delete_object, Bucket=bucket, Key="log.txt")
            except BaseException as e:  # noqa: BLE001 (reported below)
                results[i] = e

        before = moto.request_count()
        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - started
        assert not any(t.is_alive() for t in threads), "calls still running after 60 s\n" + team.logs()
        raised = [r for r in results if isinstance(r, BaseException)]
        assert not raised, f"{len(raised)} calls raised: {raised[:3]}"
        done = [r for r in results if not isinstance(r, BaseException)]
        through = [i for i, r in enumerate(done) if r[0]]
        refused = {r[1] for r in done if not r[0]}
        print(f"{calls} identical calls over {REPLICAS} replicas in {elapsed:.2f} s: {len(through)} went through "
              f"(replicas {sorted({i % REPLICAS + 1 for i in through})}), the rest refused with {refused}")
        assert len(through) == uses, f"{len(through)} of {calls} calls went through a {uses}-use receipt"
        # Refused once the uses are spent (AccessDenied, with a link to approve again), or
        # while the last uses were reserved by calls in flight on another replica (503: they
        # might have given them back).
        assert "AccessDenied" in refused and refused <= {"AccessDenied", "ServiceUnavailable"}, refused
        assert all("airlock" in r[2] for r in done if not r[0]), "a refusal without airlock's message"
        assert moto.request_count() - before == uses, "not exactly `uses` calls reached moto"
        deletes = moto.log_path.read_text(errors="replace").count(f'"DELETE /{bucket}/log.txt HTTP/1.1" 204')
        assert deletes == uses, f"moto answered {deletes} DeleteObject calls for the bucket"

        # The ledger and the chain are the database's: three uses, on record once each.
        assert postgres.query(database, "SELECT committed, reserved FROM airlock_ledger") == f"{uses}|0"
        used = postgres.query(database,
                              "SELECT count(*) FROM airlock_audit WHERE record::jsonb->>'event' = 'receipt_used'")
        assert used == str(uses), used
        records = int(postgres.query(database, "SELECT count(*) FROM airlock_audit"))
        assert records >= calls + 2, f"{records} records for {calls + 1} calls and an approval"
        assert team.audit_verified(first) == records
    finally:
        team.stop()


def test_a_call_held_on_one_replica_goes_on_when_approved_on_another_replicas_page(
        postgres: Postgres, moto: Moto, tmp_path: Path, team_env: None) -> None:
    """The approval page of replica 3, in headless Chromium with a virtual passkey: its list
    shows the call held on replica 1 (read from the database), and one touch of the passkey
    there releases it on replica 1."""
    from test_approvals_web import browser_tools, drive  # the page's browser driver

    browser_tools()
    database = "page"
    team = Team(tmp_path, moto, postgres.create_database(database), hold_seconds=45, uses=1)
    team.start()
    try:
        first, _, third = team.replicas
        page = f"http://localhost:{third.approvals_url.rsplit(':', 1)[1]}"
        printed = third.cli("approver", "enroll", "alice").stdout
        token = re.search(r"http://localhost:\d+(/enroll/[A-Za-z0-9_-]{43})", printed)
        assert token, printed
        credfile = tmp_path / "passkey.json"
        enrolled = drive({"cmd": "enroll", "link": page + token.group(1), "credfile": str(credfile)})
        assert enrolled["status"] == 200 and enrolled["result"]["kind"] == "ok", enrolled

        agent = first.add_agent(unique("team-page"))
        table = unique("team-page")
        ddb = moto.client("dynamodb")
        create_table(ddb, table)
        before = moto.request_count()
        result: dict[str, Any] = {}

        def delete() -> None:
            result["outcome"] = outcome(client_through(first, agent, "dynamodb").delete_table, TableName=table)

        held = threading.Thread(target=delete, daemon=True)

        def on_event(event: dict[str, Any]) -> None:
            # The human has replica 3's list open; the agent's call arrives at replica 1.
            if event["event"] == "list-open":
                held.start()

        decided = drive({"cmd": "decide", "credfile": str(credfile), "decision": "approve",
                         "list_url": page + "/", "match": table, "wait_s": 30}, on_event)
        assert decided["result"]["kind"] == "ok", decided
        assert decided["url"].startswith(f"{page}/approvals/"), decided["url"]
        held.join(30)
        assert not held.is_alive(), "the held call was not released\n" + team.logs()
        went_through, code, message = result["outcome"]
        assert went_through, f"the approved call was refused: {code}: {message}\n{team.logs()}"
        assert moto.request_count() - before == 1, "the approved call did not reach moto exactly once"
        with pytest.raises(ClientError) as gone:
            ddb.describe_table(TableName=table)
        assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
        via = postgres.query(database,
                             "SELECT record::jsonb->>'via' FROM airlock_audit WHERE record::jsonb->>'event' = 'approved'")
        assert via == "passkey", via
        team.audit_verified(first)
    finally:
        team.stop()


# --- revocation, a killed replica, a database outage ------------------------------------------


@dataclass
class Attempt:
    """One call as its client saw it: "ok" (with the AWS request id it was answered with),
    "refused" (an AWS error code) or "cut" (no answer: the connection was closed or refused)."""
    replica: int
    operation: str
    kind: str
    code: str
    request_id: str
    started: float
    ended: float


def attempt(replica: int, operation: str, call: Any, **kwargs: Any) -> Attempt:
    started = time.monotonic()
    try:
        response = call(**kwargs)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        return Attempt(replica, operation, "refused", code, "", started, time.monotonic())
    except (BotoCoreError, requests.RequestException) as e:
        return Attempt(replica, operation, "cut", type(e).__name__, "", started, time.monotonic())
    request_id = response.get("ResponseMetadata", {}).get("RequestId", "")
    return Attempt(replica, operation, "ok", "", request_id, started, time.monotonic())


def wait_known(team: Team, agent: Agent) -> None:
    """Until every replica serves `agent` (added through one of them, learned by the others
    from the database's notification)."""
    for n, replica in enumerate(team.replicas, 1):
        sts = client_through(replica, agent, "sts")
        deadline = time.monotonic() + 10
        while not outcome(sts.get_caller_identity)[0]:
            assert time.monotonic() < deadline, f"replica {n} never learned of {agent.name}\n{team.logs()}"
            time.sleep(0.05)


def wait_pending(team: Team, through: GatedAirlock, action: str, holder: threading.Thread) -> dict[str, Any]:
    """The pending approval for `action` (held by `holder`'s call), as the database lists it."""
    deadline = time.monotonic() + 30
    while True:
        rows = [r for r in through.approvals() if r["action"] == action]
        if rows:
            return rows[0]
        assert time.monotonic() < deadline, f"no pending approval for {action}\n{team.logs()}"
        assert holder.is_alive(), f"the {action} call was answered instead of held"
        time.sleep(0.1)


def moto_deletes(moto: Moto, bucket: str, key: str) -> int:
    """DeleteObject calls of bucket/key that moto answered."""
    return moto.log_path.read_text(errors="replace").count(f'"DELETE /{bucket}/{key} HTTP/1.1" 204')


def forwarded_ids(postgres: Postgres, database: str, agent: Agent, action: str) -> list[str]:
    """The AWS request ids of `agent`'s forwarded `action` calls in the chain."""
    return postgres.query(database, f"SELECT record::jsonb->>'aws_request_id' FROM airlock_audit "
                f"WHERE record::jsonb->>'agent' = '{agent.name}' AND record::jsonb->>'action' = '{action}' "
                f"AND record::jsonb ? 'upstream_status'").split()


def test_an_agent_revoked_through_one_replica_is_refused_by_all(
        postgres: Postgres, moto: Moto, tmp_path: Path, team_env: None) -> None:
    database = "revoked"
    team = Team(tmp_path, moto, postgres.create_database(database), hold_seconds=0, uses=1)
    team.start()
    try:
        first, second, _ = team.replicas
        agent = first.add_agent(unique("team-doomed"))
        wait_known(team, agent)
        clients = [client_through(r, agent, "sts") for r in team.replicas]

        second.cli("agent", "revoke", agent.name)
        revoked_at = time.monotonic()
        refused_after: dict[int, float] = {}
        while len(refused_after) < REPLICAS:
            for n, sts in enumerate(clients, 1):
                if n in refused_after:
                    continue
                sent = time.monotonic()
                went_through, code, message = outcome(sts.get_caller_identity)
                if went_through:
                    # A call sent 1 s after the revocation must be refused, wherever it lands.
                    assert sent - revoked_at < 1.0, f"replica {n} served the revoked agent 1 s on\n{team.logs()}"
                else:
                    assert code == "InvalidClientTokenId", (n, code, message)
                    refused_after[n] = time.monotonic() - revoked_at
            time.sleep(0.02)
        print("revoked through replica 2; refused by replica " + ", ".join(
            f"{n} after {t:.3f} s" for n, t in sorted(refused_after.items())))

        before = moto.request_count()
        for n, replica in enumerate(team.replicas, 1):
            assert outcome(clients[n - 1].get_caller_identity)[1] == "InvalidClientTokenId", n
            code = outcome(client_through(replica, agent, "s3").list_buckets)[1]
            assert code in ("InvalidClientTokenId", "InvalidAccessKeyId"), (n, code)
        assert moto.request_count() == before, "a revoked agent's request reached moto"
        # Replica 3's CLI lists the agent as revoked (from the database).
        listed = [line for line in team.replicas[2].cli("agent", "list").stdout.splitlines() if agent.name in line]
        assert len(listed) == 1 and " revoked " in listed[0], listed
        team.audit_verified(first)
    finally:
        team.stop()


def test_a_gated_call_looks_up_its_key_and_waits_for_a_use_in_flight(
        postgres: Postgres, moto: Moto, tmp_path: Path, team_env: None) -> None:
    """Just before a gated call reserves a use, its replica reads the agent's key in the
    database: a key revoked a moment ago, which the replica's followed agents still hold,
    spends no use. And a receipt whose last use is reserved by a call in flight on another
    replica answers 503 (retry) and keeps its approval: once that call gives the use back,
    the retry goes through."""
    database = "gated_fresh"
    team = Team(tmp_path, moto, postgres.create_database(database), hold_seconds=0, uses=1)
    team.start()
    try:
        first, second, third = team.replicas
        agent = first.add_agent(unique("team-fresh"))
        wait_known(team, agent)
        bucket = unique("team-fresh")
        moto.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3 = client_through(second, agent, "s3")

        def approved(key: str) -> tuple[str, str]:
            """(approval id, receipt id) of an approved DeleteObject of `key`."""
            went_through, code, message = outcome(s3.delete_object, Bucket=bucket, Key=key)
            assert not went_through and code == "AccessDenied", (code, message)
            approval = second.approval_id(message)
            team.approve(third, approval)
            receipt = postgres.query(database,
                           f"SELECT record->>'receipt_id' FROM airlock_approvals WHERE id = '{approval}'")
            return approval, receipt

        def status(approval: str) -> str:
            return postgres.query(database, f"SELECT status FROM airlock_approvals WHERE id = '{approval}'")

        # The receipt's one use, reserved by a call in flight on another replica.
        approval, receipt = approved("a.txt")
        postgres.query(database, f"INSERT INTO airlock_ledger (key, reserved) VALUES ('{receipt}', 1)")
        before = moto.request_count()
        went_through, code, message = outcome(s3.delete_object, Bucket=bucket, Key="a.txt")
        assert (went_through, code) == (False, "ServiceUnavailable"), (code, message, team.logs())
        assert "in flight" in message, message
        assert status(approval) == "approved", "the approval was closed while its use was only in flight"
        assert moto.request_count() == before
        # That call never reached AWS: its use is given back, and the retry goes through.
        postgres.query(database, f"UPDATE airlock_ledger SET reserved = 0 WHERE key = '{receipt}'")
        went_through, code, message = outcome(s3.delete_object, Bucket=bucket, Key="a.txt")
        assert went_through, (code, message, team.logs())
        assert moto_deletes(moto, bucket, "a.txt") == 1
        assert postgres.query(database, f"SELECT committed, reserved FROM airlock_ledger WHERE key = '{receipt}'") == "1|0"

        # The key revoked in the database, and not yet announced: replica 2's followed agents
        # still hold it (an allowed call still goes through there), as in the moment after a
        # revocation on another replica.
        approval, receipt = approved("b.txt")
        postgres.query(database,
             "UPDATE airlock_agents SET record = jsonb_set(record, '{revoked_at}', '\"2026-01-01T00:00:00Z\"') "
             f"WHERE key = '{agent.access_key_id}'")
        assert outcome(s3.list_objects_v2, Bucket=bucket)[0], "the followed agents already dropped the key"
        before = moto.request_count()
        went_through, code, message = outcome(s3.delete_object, Bucket=bucket, Key="b.txt")
        assert (went_through, code) == (False, "InvalidAccessKeyId"), (code, message, team.logs())
        assert moto.request_count() == before, "the revoked key's gated call reached moto"
        assert moto_deletes(moto, bucket, "b.txt") == 0
        assert postgres.query(database, f"SELECT count(*) FROM airlock_ledger WHERE key = '{receipt}'") == "0", \
            "the revoked key reserved a use"
        team.audit_verified(first)
    finally:
        team.stop()


def test_a_replica_killed_mid_call_under_load_spends_no_use_twice(
        postgres: Postgres, moto: Moto, tmp_path: Path, team_env: None) -> None:
    """kill -9 of replica 1 while its calls are in flight. A call held there (waiting for an
    approval) ends for its client with the connection closed, and nothing of it reaches AWS;
    a gated call it had reserved a use for keeps that use counted (reserved, never given
    back: fail closed), so the ledger never lets more than `uses` through. Restarted on its
    state dir, replica 1 drains what it spooled, and the one chain verifies."""
    uses, hold, workers = 5, 6, 12
    database = "killed"
    team = Team(tmp_path, moto, postgres.create_database(database), hold_seconds=hold, uses=uses)
    team.start()
    try:
        first, second, third = team.replicas
        agent = first.add_agent(unique("team-killed"))
        wait_known(team, agent)
        bucket, key = unique("team-killed"), "log.txt"
        moto.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        table = unique("team-killed")
        ddb = moto.client("dynamodb")
        create_table(ddb, table)
        s3 = [client_through(r, agent, "s3") for r in team.replicas]

        # The receipt: a DeleteObject held on replica 2, approved through replica 3 (one use).
        receipt_call: list[Attempt] = []
        approved = threading.Thread(target=lambda: receipt_call.append(
            attempt(2, "delete", s3[1].delete_object, Bucket=bucket, Key=key)), daemon=True)
        approved.start()
        team.approve(third, wait_pending(team, second, "s3:DeleteObject", approved)["id"])
        approved.join(30)
        assert [a.kind for a in receipt_call] == ["ok"], f"{receipt_call}\n{team.logs()}"

        # A call with no receipt held on replica 1: it is there when replica 1 dies.
        held_result: list[Attempt] = []
        held = threading.Thread(target=lambda: held_result.append(
            attempt(1, "delete_table", client_through(first, agent, "dynamodb").delete_table, TableName=table)),
            daemon=True)
        held.start()
        wait_pending(team, third, "dynamodb:DeleteTable", held)

        stop = threading.Event()
        load: list[Attempt] = []

        def worker(i: int) -> None:
            n = i % REPLICAS
            for _ in range(200):
                if stop.is_set():
                    return
                if i % 2:
                    load.append(attempt(n + 1, "list", s3[n].list_objects_v2, Bucket=bucket))
                else:
                    load.append(attempt(n + 1, "delete", s3[n].delete_object, Bucket=bucket, Key=key))
                if load[-1].kind == "cut":
                    return  # its replica is gone

        before_moto = moto.request_count()
        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 15
        while sum(1 for a in load if a.replica == 1 and a.kind == "ok") < 3:
            assert time.monotonic() < deadline, "replica 1 answered no calls under load\n" + team.logs()
            time.sleep(0.02)
        in_flight = 1 + sum(1 for i in range(workers) if i % REPLICAS == 0)  # the held call, its workers
        first.kill()
        killed_at = time.monotonic()
        held.join(10)
        assert not held.is_alive(), "the call held on the killed replica was not ended"
        [held_end] = held_result
        # Its client sees the connection closed: no AWS answer, no approval of anything.
        assert held_end.kind == "cut", held_end
        time.sleep(1.5)  # replicas 2 and 3 go on under load
        stop.set()
        for t in threads:
            t.join(hold + 30)
        assert not any(t.is_alive() for t in threads), "calls still running\n" + team.logs()

        first.start()  # the same home and state dir: it drains its spool
        healthy_after = team.wait_healthy(20)

        ends = {(a.replica, a.operation, a.kind, a.code) for a in load}
        cut = [a for a in load if a.kind == "cut"]
        assert all(a.replica == 1 and a.ended >= killed_at - 0.5 for a in cut), cut
        assert all(a.kind == "ok" for a in load if a.operation == "list" and a.replica != 1), ends
        # A use reserved by a call in flight on another replica (or left reserved by the
        # killed one, until it is older than any call can take) is a 503, not "used up".
        assert {a.code for a in load if a.kind == "refused"} <= {"AccessDenied", "ServiceUnavailable"}, ends
        gated_ok = sum(1 for a in receipt_call + load if a.operation == "delete" and a.kind == "ok")
        deleted = moto_deletes(moto, bucket, key)
        committed, reserved = map(int, postgres.query(database,
                                                      "SELECT committed, reserved FROM airlock_ledger").split("|"))
        used = int(postgres.query(database,
                                  "SELECT count(*) FROM airlock_audit WHERE record::jsonb->>'event' = 'receipt_used'"))
        print(f"{len(load)} calls under load over {REPLICAS} replicas, replica 1 killed with about {in_flight} "
              f"calls on it ({len(cut)} cut); DeleteObject: {gated_ok} answered OK, {deleted} reached moto, "
              f"ledger committed {committed} + reserved {reserved} of {uses}, {used} receipt_used records; "
              f"all replicas healthy {healthy_after:.2f} s after the restart")
        # No use spent twice: what reached moto is within what the ledger counts, within `uses`.
        # (A use can be committed without its receipt_used record: replica 1 killed after AWS
        # answered and the ledger counted it, before the record was written; its client never
        # heard back. The ledger, not the chain, caps the uses.)
        assert gated_ok <= used <= committed + reserved, (gated_ok, used, committed, reserved)
        assert gated_ok <= committed <= deleted <= committed + reserved <= uses, \
            (gated_ok, committed, deleted, reserved)
        # The held call's DeleteTable never reached moto: the table is still there.
        assert ddb.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE"
        assert moto.request_count() - before_moto >= sum(1 for a in load if a.kind == "ok")

        # Every call answered OK (replica 1's too, written before it answered) is in the chain.
        listed = forwarded_ids(postgres, database, agent, "s3:ListObjectsV2")
        answered = [a.request_id for a in load if a.operation == "list" and a.kind == "ok"]
        assert answered and all(answered), "calls answered without a request id"
        missing = set(answered) - set(listed)
        assert not missing, f"{len(missing)} answered calls have no audit record"
        records = int(postgres.query(database, "SELECT count(*) FROM airlock_audit"))
        assert team.audit_verified(second) == records
    finally:
        team.stop()


def test_the_database_stopped_and_started_under_load(moto: Moto, tmp_path: Path, team_env: None) -> None:
    """A cluster of its own (stopping it must not disturb the other tests). While it is down,
    calls that need a receipt get 503 ServiceUnavailable and allowed calls still reach AWS,
    their records spooled; once it is back the gated calls go through again, every allowed
    call's record is in the one chain, and it verifies."""
    pg = Postgres()
    pg.start()
    try:
        database = "outage"
        team = Team(tmp_path, moto, pg.create_database(database), hold_seconds=0, uses=1000)
        team.start()
        try:
            run_outage(pg, database, team, moto)
        finally:
            team.stop()
    finally:
        pg.stop()


def run_outage(pg: Postgres, database: str, team: Team, moto: Moto) -> None:
    first, second, third = team.replicas
    agent = first.add_agent(unique("team-outage"))
    wait_known(team, agent)
    bucket, key = unique("team-outage"), "log.txt"
    moto.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3 = [client_through(r, agent, "s3") for r in team.replicas]
    went_through, code, message = outcome(s3[1].delete_object, Bucket=bucket, Key=key)
    assert not went_through and code == "AccessDenied", (code, message)
    team.approve(third, second.approval_id(message))

    stop = threading.Event()
    load: list[Attempt] = []

    def worker(i: int) -> None:
        n = i % REPLICAS
        for _ in range(400):
            if stop.is_set():
                return
            if i % 2:
                load.append(attempt(n + 1, "list", s3[n].list_objects_v2, Bucket=bucket))
            else:
                load.append(attempt(n + 1, "delete", s3[n].delete_object, Bucket=bucket, Key=key))
            time.sleep(0.05)

    before_moto = moto.request_count()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)
        pg.halt()
        down_from = time.monotonic()
        time.sleep(4)
        down_until = time.monotonic()
        pg.start()
        back_at = time.monotonic()
        # Gated calls go through again on every replica once the keeper has drained its spool.
        deadline = back_at + 30
        recovered: dict[int, float] = {}
        while len(recovered) < REPLICAS:
            assert time.monotonic() < deadline, f"gated calls still refused 30 s on: {recovered}\n{team.logs()}"
            for a in list(load):
                if a.operation == "delete" and a.kind == "ok" and a.started > back_at:
                    recovered.setdefault(a.replica, a.ended - back_at)
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads), "calls still running\n" + team.logs()
    healthy_after = team.wait_healthy(20)

    # Nothing cut; allowed calls all answered; gated ones answered or 503 (never anything else).
    ends = {(a.operation, a.kind, a.code) for a in load}
    assert ends <= {("list", "ok", ""), ("delete", "ok", ""), ("delete", "refused", "ServiceUnavailable")}, ends
    down = [a for a in load if a.started > down_from and a.ended < down_until]
    down_gated = [a for a in down if a.operation == "delete"]
    down_allowed = [a for a in down if a.operation == "list"]
    assert down_gated and all(a.code == "ServiceUnavailable" for a in down_gated), \
        [(a.replica, a.kind, a.code) for a in down_gated]
    assert down_allowed and all(a.kind == "ok" for a in down_allowed)
    assert {a.replica for a in down_allowed} == {1, 2, 3}

    # What reached moto: every call answered OK, the gated ones as the ledger counts them.
    gated_ok = sum(1 for a in load if a.operation == "delete" and a.kind == "ok")
    assert moto_deletes(moto, bucket, key) == gated_ok
    assert moto.request_count() - before_moto == sum(1 for a in load if a.kind == "ok")
    # A use reserved just before the database went down and forwarded stays reserved (its
    # commit failed): still counted, never given back.
    committed, reserved = map(int, pg.query(database, "SELECT committed, reserved FROM airlock_ledger").split("|"))
    assert committed + reserved == gated_ok, (committed, reserved, gated_ok)

    # Nothing lost: every allowed call's record (by its AWS request id) is in the chain once.
    answered = [a.request_id for a in load if a.operation == "list"]
    assert all(answered), "calls answered without a request id"
    listed = forwarded_ids(pg, database, agent, "s3:ListObjectsV2")
    assert sorted(listed) == sorted(answered), \
        f"{len(set(answered) - set(listed))} answered calls missing from the chain, {len(listed)} records"
    records = int(pg.query(database, "SELECT count(*) FROM airlock_audit"))
    assert team.audit_verified(first) == records
    print(f"{len(load)} calls over {REPLICAS} replicas; database down {down_until - down_from:.1f} s: "
          f"{len(down_gated)} gated calls got 503, {len(down_allowed)} allowed calls went through; gated calls "
          f"through again {', '.join(f'on replica {n} {t:.2f} s' for n, t in sorted(recovered.items()))} after "
          f"it was back; all healthy {healthy_after:.2f} s later; ledger {committed} committed + {reserved} "
          f"reserved; {len(answered)} allowed calls, all in the chain of {records} records")


def test_a_call_held_on_a_replica_that_dies_is_approved_and_retried_through_another(
        postgres: Postgres, moto: Moto, tmp_path: Path, team_env: None) -> None:
    """What becomes of a held call when its replica dies: the agent's connection ends (no
    answer, nothing forwarded), the pending approval stays in the database for any replica's
    approvers, and once approved the agent's retry through another replica goes through
    exactly once; a second retry is refused again. The killed replica comes back on its state."""
    database = "held_dies"
    # Held long enough to be seen held and killed; short, since the last call waits it out.
    team = Team(tmp_path, moto, postgres.create_database(database), hold_seconds=10, uses=1)
    team.start()
    try:
        first, second, third = team.replicas
        agent = first.add_agent(unique("team-held-dies"))
        wait_known(team, agent)
        table = unique("team-held-dies")
        ddb = moto.client("dynamodb")
        create_table(ddb, table)
        before = moto.request_count()
        result: dict[str, Any] = {}

        def delete() -> None:
            try:
                result["outcome"] = outcome(client_through(first, agent, "dynamodb").delete_table, TableName=table)
            except BotoCoreError as e:  # the connection dies with the replica
                result["error"] = e

        held = threading.Thread(target=delete, daemon=True)
        held.start()
        row = wait_pending(team, third, "dynamodb:DeleteTable", held)

        first.kill()
        held.join(30)
        assert not held.is_alive(), "the agent's held call outlived its replica"
        assert "error" in result, f"the agent heard back from a killed replica: {result}"
        assert moto.request_count() == before, "a held call reached moto when its replica died"
        # The approval outlives the replica that opened it.
        assert [r["id"] for r in second.approvals()] == [row["id"]], "the pending approval died with its replica"

        team.approve(third, row["id"])
        went_through, code, message = outcome(client_through(second, agent, "dynamodb").delete_table,
                                              TableName=table)
        assert went_through, f"the retry through replica 2 was refused: {code}: {message}\n{team.logs()}"
        assert moto.request_count() - before == 1, "the approved call did not reach moto exactly once"
        with pytest.raises(ClientError) as gone:
            ddb.describe_table(TableName=table)
        assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
        # The receipt had one use: the same call again is held for a new approval, and refused
        # when its hold ends.
        create_table(ddb, table)
        before = moto.request_count()
        again = outcome(client_through(third, agent, "dynamodb").delete_table, TableName=table)
        assert again[:2] == (False, "AccessDeniedException"), again
        assert moto.request_count() == before, "the second retry reached moto"

        first.start()
        team.wait_healthy(30)
        team.audit_verified(first)
    finally:
        team.stop()
