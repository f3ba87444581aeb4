"""The team store from the command line, against a private PostgreSQL cluster: `airlock db
migrate` makes the schema, `airlock audit verify` checks the chain in the database, and `serve`
with a database starts and serves on it without ever echoing the URL (it may carry a password).

The store's own guarantees (single use across pools, one chain from two writers, a newer schema
refused, the database down) are tested in tests/team_store.rs."""

from __future__ import annotations

import re
import time
from pathlib import Path

from botocore.exceptions import ClientError

from support import Airlock, Moto, Postgres, configure, run, scrubbed_env, unique


def test_a_database_url_is_migrated_verified_and_served(
        postgres: Postgres, moto: Moto, tmp_path: Path) -> None:
    url = postgres.create_database("cli")
    airlock = Airlock(tmp_path / "airlock", moto)
    airlock.home.mkdir()
    airlock.init("enforce")
    env = scrubbed_env()
    env["AIRLOCK_DATABASE_URL"] = url
    base = [str(airlock.binary), "--config", str(airlock.config)]

    migrated = run([*base, "db", "migrate"], env, cwd=airlock.home)
    # Version 2 holds the approvals; a newer airlock may add more.
    found = re.search(r"from version 0 to (\d+)", migrated.stdout)
    assert found and int(found.group(1)) >= 2, migrated.stdout
    again = run([*base, "db", "migrate"], env, cwd=airlock.home)
    assert f"already at version {found.group(1)}" in again.stdout, again.stdout
    verified = run([*base, "audit", "verify"], env, cwd=airlock.home)
    assert "audit chain intact: 0 records in PostgreSQL" in verified.stdout, verified.stdout

    # serve on the database: an allowed call goes through and its record is in the chain.
    on_files = airlock.config.read_text()
    configure(airlock.config, {("state", "database_url"): url})
    airlock.start()
    try:
        agent = airlock.add_agent(unique("db-agent"))
        # The agent is in the database; serve learns of it by NOTIFY (within a second).
        deadline = time.monotonic() + 5
        while True:
            try:
                assert agent.client("sts").get_caller_identity()["Account"]
                break
            except ClientError as e:
                if e.response["Error"]["Code"] != "InvalidClientTokenId" or time.monotonic() > deadline:
                    raise
    finally:
        airlock.stop()
    log = airlock.log_path.read_text(errors="replace")
    # The URL (it may carry a password) is never echoed.
    assert url not in log, "serve logged the database URL"
    verified = run([*base, "audit", "verify"], env, cwd=airlock.home)
    found = re.search(r"audit chain intact: (\d+) records in PostgreSQL", verified.stdout)
    assert found and int(found.group(1)) >= 2, verified.stdout  # serve_started, the call

    airlock.config.write_text(on_files)
    # Without the database the same config serves as before, on the files.
    airlock.start()
    try:
        assert airlock.proxy_url
    finally:
        airlock.stop()
