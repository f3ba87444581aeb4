"""Fixtures for the end-to-end suite: moto (signature checking on), a running airlock, agents.

Run with `cargo build && python3 -m pytest -q tests/e2e` (see README.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

import pytest

from support import (
    MIB, Agent, Airlock, DatabaseState, DataFile, GatedAirlock, Moto, Postgres, configure, scrubbed_env, unique,
    write_random_file,
)

# scripts/with-postgres names a private cluster here (an administrator's URL): the suites that
# run on both stores (their airlocks take `state_store`) then keep their state in it.
_ADMIN_URL = os.environ.get("AIRLOCK_TEST_DATABASE_URL")
STATE_STORE = "postgres" if _ADMIN_URL else "file"

# This process makes boto3 clients too: keep the host's AWS settings out of them as well (and
# the database URL out of every process it starts).
_clean = scrubbed_env()
os.environ.clear()
os.environ.update(_clean)

# Every server running now, by label: a failing test's report shows their logs.
_RUNNING: dict[str, Moto | Airlock] = {}
_log_marks = pytest.StashKey[dict[str, int]]()


def _register(label: str, server: Moto | Airlock, started: list[tuple[str, Moto | Airlock]]) -> None:
    if label in _RUNNING:
        raise AssertionError(f"two servers labelled {label!r}")
    started.append((label, server))
    _RUNNING[label] = server


def _stop_all(started: list[tuple[str, Moto | Airlock]]) -> None:
    for label, server in reversed(started):
        _RUNNING.pop(label, None)
        server.stop()


@pytest.fixture(scope="session")
def start_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Moto]]:
    """Start a moto_server with signature checking on (see `Moto`); all are stopped at the end."""
    started: list[tuple[str, Moto | Airlock]] = []

    def start(label: str) -> Moto:
        server = Moto(tmp_path_factory.mktemp(label))
        _register(label, server, started)
        server.start()
        return server

    try:
        yield start
    finally:
        _stop_all(started)


@pytest.fixture(scope="session")
def moto(start_moto: Callable[[str], Moto]) -> Moto:
    """The moto most tests share (resource names are unique per test)."""
    return start_moto("moto")


@pytest.fixture(scope="session", params=[STATE_STORE])
def state_store(request: pytest.FixtureRequest) -> str:
    """The store the suites that run on both keep their airlocks' state in: "file" (the files
    in `[state] dir`), or "postgres" under scripts/with-postgres. It is in those tests' ids
    (`test_denied_call[postgres]`), so a failure says which store it ran on."""
    return request.param


_cluster: list[Postgres] = []


def _use_store(server: Airlock, label: str, store: str) -> str:
    """Put `server`'s state in `store`: on "postgres", a fresh database of its own in the
    cluster scripts/with-postgres runs. The label its log is reported under, naming the store."""
    if store == "file":
        return label
    assert store == "postgres", store
    if not _ADMIN_URL:
        pytest.fail("the PostgreSQL store needs AIRLOCK_TEST_DATABASE_URL (scripts/with-postgres)", pytrace=False)
    if not _cluster:
        _cluster.append(Postgres.running(_ADMIN_URL))
    database = unique("e2e_" + re.sub(r"[^a-z0-9]+", "_", label.lower())[:40]).replace("-", "_")
    _cluster[0].create_database(database)
    server.use_database(DatabaseState(_cluster[0], database))
    return f"{label} [postgres: {database}]"


@pytest.fixture(scope="session")
def start_airlock(tmp_path_factory: pytest.TempPathFactory, moto: Moto) -> Iterator[Callable[..., Airlock]]:
    """Start a fresh airlock: `airlock init`, point it at `upstream` (default: the shared moto)
    on free ports, set the policy mode (see `Airlock.init`), its state in `store` ("file", or
    "postgres": a database of its own), `airlock serve`. All are stopped at the end, before any
    moto."""
    started: list[tuple[str, Moto | Airlock]] = []

    def start(label: str, policy_mode: str = "shadow", upstream: Moto | None = None,
              store: str = "file") -> Airlock:
        server = Airlock(tmp_path_factory.mktemp(label), upstream or moto)
        server.init(policy_mode)
        _register(_use_store(server, label, store), server, started)
        server.start()
        return server

    try:
        yield start
    finally:
        _stop_all(started)


@pytest.fixture(scope="session")
def airlock(start_airlock: Callable[..., Airlock]) -> Airlock:
    """The airlock the client suites go through, in shadow mode: destructive calls are
    forwarded (and recorded), so deleting what a test created works."""
    return start_airlock("airlock")


@pytest.fixture(scope="session")
def enforcing_airlock(start_airlock: Callable[..., Airlock], state_store: str) -> Airlock:
    """An airlock with the shipped policy enforced: destructive calls wait for a receipt."""
    return start_airlock("airlock-enforce", policy_mode="enforce", store=state_store)


@pytest.fixture(scope="session")
def enforced_agent(enforcing_airlock: Airlock) -> Agent:
    return enforcing_airlock.add_agent(unique("enforced-agent"))


@pytest.fixture(scope="session")
def make_agent(airlock: Airlock) -> Callable[[str], Agent]:
    """Register a new agent with the running airlock: `make_agent("name")`."""
    return lambda name: airlock.add_agent(unique(name))


@pytest.fixture(scope="session")
def agent(make_agent: Callable[[str], Agent]) -> Agent:
    """The agent most tests act as."""
    return make_agent("e2e-agent")


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> DataFile:
    """100 MiB of random bytes, big enough that every client uploads it in parts."""
    return write_random_file(tmp_path_factory.mktemp("data") / "big.bin", 100 * MIB)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL cluster for the team store's tests (see `Postgres`), removed after
    the module; each test makes its own database in it."""
    pg = Postgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def start_gated_airlock(tmp_path_factory: pytest.TempPathFactory, moto: Moto) -> Iterator[Callable[..., GatedAirlock]]:
    """Start an enforcing airlock whose config trusts approver keys made with `airlock keygen`
    (default: one, "alice"), answering blocked calls at once (`hold_seconds = 0`), with
    `settings` ({(section, key): value}) applied and `extra_config` (TOML tables such as
    `[[rule]]`) appended before `serve` starts, its state in `store` ("file", or "postgres": a
    database of its own; pass the `state_store` fixture to run on both). Stopped at the end."""
    started: list[tuple[str, Moto | Airlock]] = []

    def start(label: str, *, settings: dict[tuple[str, str], str | int | bool] | None = None,
              approvers: tuple[str, ...] = ("alice",), upstream: Moto | None = None,
              extra_config: str = "", store: str = "file") -> GatedAirlock:
        server = GatedAirlock(tmp_path_factory.mktemp(label), upstream or moto)
        server.init("enforce")
        _register(_use_store(server, label, store), server, started)
        configure(server.config, {("approval", "hold_seconds"): 0, ("notify", "desktop"): False,
                                  **(settings or {})})
        for name in approvers:
            server.add_approver(name)
        if extra_config:
            with open(server.config, "a") as f:
                f.write("\n" + extra_config)
        server.start()
        return server

    try:
        yield start
    finally:
        _stop_all(started)


# --- failure reports: show what airlock and moto logged while the test ran -------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    item.stash[_log_marks] = {name: server.log_size() for name, server in _RUNNING.items()}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        marks = item.stash.get(_log_marks, {})
        for name, server in list(_RUNNING.items()):
            code = server.proc.poll() if server.proc else None
            state = "" if code is None else f" (the process has EXITED with {code})"
            report.sections.append((f"{name} log during this test{state}", server.log_tail(marks.get(name, 0))))

