"""Throwaway OS users for tests that need airlock and the agent to be different principals.

CI runs as root: `throwaway_user()` makes a system user with a random name (and a home under a
directory the test owns) and removes it, home included, afterwards. `as_user()` is the command
prefix that runs a program as that user with exactly the environment the test passes (setpriv
changes uid, gid and groups and nothing else). Not root: skipped, except under CI, where it
fails: these tests are the only proof that airlock holds against an agent with a shell.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class OsUser:
    name: str
    uid: int
    gid: int
    home: Path

    def as_user(self) -> list[str]:
        """Prefix a command with this to run it as this user (uid, gid, supplementary groups)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--"]

    def argv(self, *cmd: str) -> list[str]:
        """`cmd` run as this user (`setpriv` execs in place, so the process is `cmd` itself)."""
        return [*self.as_user(), *cmd]


def require_root() -> None:
    """These tests create users: root only. Under CI, not being root is a failure."""
    if os.geteuid() == 0 and shutil.which("useradd") and shutil.which("setpriv"):
        return
    why = "needs root with useradd and setpriv (util-linux) to create throwaway users"
    if os.environ.get("CI"):
        pytest.fail(f"{why}, and CI is set", pytrace=False)
    pytest.skip(why)


@contextmanager
def throwaway_user(prefix: str, homes: Path) -> Iterator[OsUser]:
    """A new system user `<prefix>-<random>` with a home (mode 0755) under `homes`; removed
    (`userdel -r`) when the block ends."""
    require_root()
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    home = homes / name
    for _ in range(20):  # another useradd may hold /etc/passwd's lock for a moment
        made = subprocess.run(["useradd", "--system", "--create-home", "--home-dir", str(home),
                               "--shell", "/bin/sh", "--user-group", name],
                              capture_output=True, text=True, timeout=30)
        if made.returncode == 0 or "lock" not in made.stderr:
            break
        time.sleep(0.5)
    assert made.returncode == 0, f"useradd {name} failed: {made.stderr}"
    try:
        home.chmod(0o755)
        entry = pwd.getpwnam(name)
        yield OsUser(name, entry.pw_uid, entry.pw_gid, home)
    finally:
        for _ in range(20):
            gone = subprocess.run(["userdel", "-r", name], capture_output=True, text=True, timeout=30)
            if gone.returncode == 0 or "lock" not in gone.stderr:
                break
            time.sleep(0.5)
        if home.exists():
            shutil.rmtree(home, ignore_errors=True)
