"""airlock as its own principal, seen from the agent's seat.

Two throwaway OS users: one runs `airlock init` and `serve` (enforce mode, against the suite's
moto), the other is the agent, holding only what `airlock agent add` printed. As the agent,
`airlock doctor` finds nothing on this setup, and finds each bypass planted into it: a
`~/.aws/credentials`, a readable approver key, a readable state dir, a `serve` running as the
agent's own user. `serve` refuses to start on files others can change, naming them; and a
`serve` is not dumpable, so even its own user cannot read its environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from osusers import OsUser, require_root, throwaway_user
from support import Agent, Airlock, Moto, airlock_binary, configure, run, scrubbed_env, unique


@dataclass
class Setup:
    airlock_user: OsUser
    agent_user: OsUser
    airlock: Airlock
    agent: Agent
    base: Path

    def agent_env(self) -> dict[str, str]:
        return {**self.agent.env, "HOME": str(self.agent_user.home), "USER": self.agent_user.name}

    def doctor(self, *args: str, as_agent: bool = True) -> tuple[int, dict[str, Any]]:
        """`airlock doctor --json` as the agent (or as root with --agent-user)."""
        prefix = self.agent_user.as_user() if as_agent else []
        extra = [] if as_agent else ["--agent-user", self.agent_user.name]
        proc = run([*prefix, str(airlock_binary()), "doctor", "--json", "--config", str(self.airlock.config),
                    *extra, *args], self.agent_env(), check=False, timeout=60)
        assert proc.returncode in (0, 1), f"doctor failed with {proc.returncode}:\n{proc.stderr}"
        report = json.loads(proc.stdout)
        return proc.returncode, report

    def findings(self, check: str, report: dict[str, Any]) -> list[dict[str, Any]]:
        return [f for f in report["findings"] if f["check"] == check]


def _owned_dir(path: Path, user: OsUser, mode: int = 0o755) -> Path:
    path.mkdir()
    os.chown(path, user.uid, user.gid)
    path.chmod(mode)
    return path


@pytest.fixture(scope="module")
def setup(moto: Moto) -> Iterator[Setup]:
    require_root()
    # Not under pytest's 0700 temporary dirs: both users must reach what they need.
    base = Path(tempfile.mkdtemp(prefix="airlock-protected-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with throwaway_user("airlock", base) as airlock_user, throwaway_user("agent", base) as agent_user:
            home = _owned_dir(base / "srv", airlock_user)
            airlock = Airlock(home, moto)
            airlock.run_as = airlock_user.as_user()
            airlock.init("enforce")
            configure(airlock.config, {("approval", "hold_seconds"): 0, ("notify", "desktop"): False})
            airlock.start()
            try:
                agent = airlock.add_agent(unique("seat"))
                yield Setup(airlock_user, agent_user, airlock, agent, base)
            finally:
                airlock.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_doctor_finds_nothing_on_the_protected_setup(setup: Setup) -> None:
    code, report = setup.doctor()
    assert code == 0 and report["findings"] == [], json.dumps(report, indent=2)
    assert report["user"] == setup.agent_user.name and report["uid"] == setup.agent_user.uid
    # The agent really is in business through airlock, and holds no real credentials.
    assert setup.agent.client("sts").get_caller_identity()["Arn"] == setup.airlock.moto.user_arn
    text = run([*setup.agent_user.as_user(), str(airlock_binary()), "doctor", "--config",
                str(setup.airlock.config)], setup.agent_env(), check=False)
    assert text.returncode == 0 and "no way around airlock found" in text.stdout, text.stdout + text.stderr
    # Judging another user's access takes root.
    other = run([*setup.agent_user.as_user(), str(airlock_binary()), "doctor", "--agent-user", "root", "--config",
                 str(setup.airlock.config)], setup.agent_env(), check=False)
    assert other.returncode == 2 and "needs root" in other.stderr, other.stderr


def test_doctor_finds_a_planted_aws_credentials_file(setup: Setup) -> None:
    aws = _owned_dir(setup.agent_user.home / ".aws", setup.agent_user, 0o700)
    creds = aws / "credentials"
    try:
        creds.write_text("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
                         "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
        os.chown(creds, setup.agent_user.uid, setup.agent_user.gid)
        creds.chmod(0o600)
        code, report = setup.doctor()
        assert code == 1
        found = setup.findings("aws-static-keys", report)
        assert [f["path"] for f in found] == [str(creds)], report
        assert "EXAMPLE" not in json.dumps(report), "doctor must not print the key"
        assert found[0]["fix"]
    finally:
        shutil.rmtree(aws)
    assert setup.doctor()[0] == 0


def test_doctor_finds_a_readable_approver_key(setup: Setup) -> None:
    key = setup.airlock.config.parent / "alice.key"
    setup.airlock.cli("keygen", "--out", str(key), "--name", "alice", "--insecure-plaintext-key")
    try:
        # As `airlock keygen` wrote it (0600, airlock's user), the agent cannot read it.
        code, report = setup.doctor()
        assert code == 0 and report["findings"] == [], report
        key.chmod(0o644)
        code, report = setup.doctor()
        assert code == 1
        assert [f["path"] for f in setup.findings("approver-key", report)] == [str(key)], report
    finally:
        key.unlink()


def test_doctor_finds_a_readable_state_dir_as_the_agent_and_as_root(setup: Setup) -> None:
    state = setup.airlock.home / "state"
    assert state.stat().st_mode & 0o777 == 0o700
    state.chmod(0o755)
    try:
        for as_agent in (True, False):
            code, report = setup.doctor(as_agent=as_agent)
            assert code == 1, report
            assert [f["path"] for f in setup.findings("airlock-secret-readable", report)] == [str(state)], report
            assert report["user"] == setup.agent_user.name
        # With --agent-user, root cannot see the agent's environment, and says so.
        assert any("environment was not checked" in n for n in report["notes"]), report
    finally:
        state.chmod(0o700)


def _enforcing_config(setup: Setup, prefix: str) -> Path:
    """A config `airlock init` wrote as airlock's user, in enforce mode, in a home of its own."""
    home = _owned_dir(setup.base / unique(prefix), setup.airlock_user)
    config = home / "config" / "airlock.toml"
    run([*setup.airlock_user.as_user(), str(airlock_binary()), "init", "--config", str(config)], scrubbed_env())
    configure(config, {("listen", "proxy"): "127.0.0.1:0", ("listen", "approvals"): "127.0.0.1:0",
                       ("policy", "mode"): "enforce", ("notify", "desktop"): False})
    return config


def _serve_briefly(setup: Setup, config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`serve` as airlock's user: one that passes the check would run until the timeout, and
    refusing is quick."""
    return run([*setup.airlock_user.as_user(), str(airlock_binary()), "serve", "--config", str(config)],
               env or scrubbed_env(), check=False, timeout=30)


def test_serve_refuses_a_group_writable_config_or_state_dir(setup: Setup) -> None:
    config = _enforcing_config(setup, "refuse")

    def serve() -> subprocess.CompletedProcess[str]:
        return _serve_briefly(setup, config)

    config.chmod(0o664)
    refused = serve()
    assert refused.returncode != 0 and "refusing to start" in refused.stderr, refused.stderr
    assert f"chmod g-w {config}" in refused.stderr, refused.stderr
    # A config others can change is never trusted, so `mode = "shadow"` in it changes nothing.
    configure(config, {("policy", "mode"): "shadow"})
    config.chmod(0o664)
    refused = serve()
    assert refused.returncode != 0 and f"chmod g-w {config}" in refused.stderr, refused.stderr
    config.chmod(0o644)
    configure(config, {("policy", "mode"): "enforce"})

    state = config.parent.parent / "state"
    state.chmod(0o770)
    refused = serve()
    assert refused.returncode != 0 and f"chmod g-w {state}" in refused.stderr, refused.stderr
    assert "airlock listening" not in refused.stdout


def test_serve_refuses_a_config_linked_from_or_aws_files_in_a_directory_the_agent_owns(setup: Setup) -> None:
    """A symlink is judged where it lies, not only at its target; and airlock's own AWS config
    file (a `credential_process` in it runs as airlock) must be out of the agent's reach too."""
    config = _enforcing_config(setup, "routes")
    agents_dir = _owned_dir(setup.base / unique("agents"), setup.agent_user)
    link = agents_dir / "airlock.toml"
    link.symlink_to(config)
    refused = _serve_briefly(setup, link)
    assert refused.returncode != 0 and "refusing to start" in refused.stderr, refused.stderr
    assert f"{link}: {setup.agent_user.name} (uid {setup.agent_user.uid}), owner of {agents_dir}" in refused.stderr, \
        refused.stderr

    aws_config = agents_dir / "aws-config"
    aws_config.write_text("[default]\nregion = us-west-2\n")
    os.chown(aws_config, setup.airlock_user.uid, setup.airlock_user.gid)
    aws_config.chmod(0o644)
    refused = _serve_briefly(setup, config, {**scrubbed_env(), "AWS_CONFIG_FILE": str(aws_config)})
    assert refused.returncode != 0 and f"{aws_config}: " in refused.stderr, refused.stderr
    assert "airlock listening" not in refused.stdout


def test_shadow_mode_starts_on_an_exposed_state_dir_with_a_warning(setup: Setup) -> None:
    home = _owned_dir(setup.base / unique("shadow"), setup.airlock_user)
    shadow = Airlock(home, setup.airlock.moto)
    shadow.run_as = setup.airlock_user.as_user()
    shadow.init("shadow")
    configure(shadow.config, {("notify", "desktop"): False})
    (home / "state").chmod(0o770)
    shadow.start()
    try:
        log = shadow.log_tail()
        assert "in enforce mode this refuses to start" in log and str(home / "state") in log, log
    finally:
        shadow.stop()


def test_a_serve_of_the_agents_own_user_is_found_and_its_environ_stays_unreadable(setup: Setup) -> None:
    """The one-user setup the quick start makes: doctor says so. And PR_SET_DUMPABLE holds even
    against the same user: /proc/<serve pid>/environ (the real keys) cannot be read."""
    home = _owned_dir(setup.agent_user.home / unique("one-user"), setup.agent_user)
    same_user = Airlock(home, setup.airlock.moto)
    same_user.run_as = setup.agent_user.as_user()
    same_user.init("enforce")
    same_user.start()
    try:
        status = Path(f"/proc/{same_user.pid}/status").read_text()
        assert f"Uid:\t{setup.agent_user.uid}\t" in status, status
        code, report = setup.doctor()
        assert code == 1
        found = setup.findings("serve-same-user", report)
        assert [f"pid {same_user.pid}" in f["problem"] for f in found] == [True], report

        # Control: the agent reads the environment of its own ordinary process...
        env = {**setup.agent_env(), "AIRLOCK_E2E_MARK": "visible"}
        sleeper = subprocess.Popen([*setup.agent_user.as_user(), "sleep", "30"], env=env)
        try:
            # Until setpriv has dropped to the agent's user and exec'd sleep, the process is not
            # yet the agent's to read.
            deadline = time.monotonic() + 15
            while Path(f"/proc/{sleeper.pid}/comm").read_text().strip() != "sleep":
                assert time.monotonic() < deadline, "the agent's sleep never started"
                time.sleep(0.02)
            read = run([*setup.agent_user.as_user(), "cat", f"/proc/{sleeper.pid}/environ"], env, check=False)
            assert read.returncode == 0 and "AIRLOCK_E2E_MARK=visible" in read.stdout, read.stderr
        finally:
            sleeper.kill()
            sleeper.wait()
        # ...but not serve's, although it is the same user, nor its memory.
        for what in ("environ", "mem"):
            read = run([*setup.agent_user.as_user(), "cat", f"/proc/{same_user.pid}/{what}"], env, check=False)
            assert read.returncode != 0 and "Permission denied" in read.stderr, (what, read.returncode, read.stderr)
            assert setup.airlock.moto.secret_access_key not in read.stdout
    finally:
        same_user.stop()
