"""The team store from the command line, against a private PostgreSQL cluster: `airlock db
migrate` makes the schema, `airlock audit verify` checks the chain in the database, and `serve`
with a database refuses to start while the page's approvals and plans are not kept there (it names
them), so no replica ever keeps those in its own files while sharing the rest.

The store's own guarantees (single use across pools, one chain from two writers, a newer schema
refused, the database down) are tested in tests/team_store.rs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest

from support import Airlock, Moto, Postgres, run, scrubbed_env


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


def test_a_database_url_is_migrated_verified_and_refused_by_serve(
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

    refused = run([*base, "serve"], env, cwd=airlock.home, check=False, timeout=60)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "database_url" in refused.stderr and "approvals" in refused.stderr, refused.stderr
    # The URL (it may carry a password) is never echoed.
    assert url not in refused.stderr + refused.stdout

    # Without the database the same config serves as before, on the files.
    airlock.start()
    try:
        assert airlock.proxy_url
    finally:
        airlock.stop()
