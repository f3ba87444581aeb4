"""Machinery shared by the end-to-end tests.

Everything here drives real processes: moto_server with signature checking on (standing in for
AWS), the `airlock` binary (init, serve, agent add/revoke), and real clients (AWS CLI v1, boto3,
Terraform) that hold nothing but an agent's proxy-only credentials.

Nothing the host has configured may leak into a test: every process gets an environment without
any inherited `AWS_*` variable and with the AWS config and credentials files pointing nowhere.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import tomllib
import urllib.parse
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = Path(__file__).resolve().parent / "terraform"

# The AWS CLI v1 ignores AWS_ENDPOINT_URL for rds, docdb, neptune, sqs, emr and health in
# us-east-1 (it pins rds.amazonaws.com there), so everything runs in another region.
REGION = "us-west-2"

# A path that does not exist, for AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE.
NOWHERE = Path("/nonexistent/airlock-e2e")

MIB = 1024 * 1024


# --- environment and tools ------------------------------------------------------------------


# Database URLs (they may carry a password) that no process we start inherits: airlock gets
# its database from its config, and an agent never learns where airlock keeps its state.
DATABASE_URL_VARIABLES = ("AIRLOCK_DATABASE_URL", "AIRLOCK_TEST_DATABASE_URL")


def scrubbed_env() -> dict[str, str]:
    """This process's environment without any AWS_* variable, without profile files and
    without a database URL, so neither host credentials nor host settings reach a process we
    start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in DATABASE_URL_VARIABLES}
    env["AWS_CONFIG_FILE"] = str(NOWHERE / "config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(NOWHERE / "credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


def require_tool(name: str) -> str:
    """The path of a real client the test needs. Missing tools fail the test under CI (a test
    suite that silently skips its real clients proves nothing) and skip it elsewhere."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail(f"{name} is not installed, and CI is set: real-client tests must run", pytrace=False)
    pytest.skip(f"{name} is not installed")


def airlock_binary() -> Path:
    """The binary under test: $AIRLOCK_BIN, else target/debug/airlock. Never skipped."""
    path = Path(os.environ.get("AIRLOCK_BIN") or REPO / "target" / "debug" / "airlock")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"airlock binary not found at {path}: run `cargo build` first (or set AIRLOCK_BIN)",
            pytrace=False,
        )
    return path


def altered(secret: str) -> str:
    """The same secret with its last character changed (always to a different one)."""
    return secret[:-1] + ("x" if secret[-1] != "x" else "y")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict[str, str], *, cwd: Path | None = None, timeout: float = 600,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its output so the test report shows what went wrong."""
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed with exit code {proc.returncode}: {' '.join(cmd)}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def unique(prefix: str) -> str:
    """A resource name no other test uses (moto is shared by the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- PostgreSQL (the team store) -------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Where PostgreSQL's binaries are (initdb, pg_ctl, psql): PATH, /usr/local/bin, then
    Debian's /usr/lib/postgresql/<version>/bin (newest first)."""
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates.append(Path("/usr/local/bin"))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            # Links into Debian's directory (/usr/local/bin/initdb) lead to psql too.
            return (d / "initdb").resolve().parent
    return None


class Postgres:
    """A private PostgreSQL cluster in a temporary directory of its own (removed by `stop`), on a
    free loopback port, trusting local connections from the `airlock` role (`halt` and `start`
    again make an outage). PostgreSQL refuses to run as root, so as root the cluster runs as the
    `postgres` OS user (Debian's package creates it; scripts/test does when it is missing), in a
    directory directly under the temp dir that it owns (pytest's own temp dirs are closed to
    other users). Missing binaries fail under CI and skip elsewhere.

    `Postgres.running(url)` is a cluster someone else runs (scripts/with-postgres's
    `AIRLOCK_TEST_DATABASE_URL`, an administrator's URL): databases are made in it, and it is
    never started or stopped here."""

    def __init__(self, *, admin_url: str | None = None) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL's initdb/pg_ctl are not installed, and CI is set", pytrace=False)
            pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
        self.bin_dir = bin_dir
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.owned = admin_url is None
        if admin_url is None:
            self.host, self.port, self.user = "127.0.0.1", free_port(), "airlock"
            self.dir = Path(tempfile.mkdtemp(prefix="airlock-pg-"))
        else:
            parsed = urllib.parse.urlsplit(admin_url)
            assert parsed.scheme in ("postgres", "postgresql") and parsed.hostname and parsed.port, admin_url
            assert parsed.password is None, "an administrator's URL with a password (psql is given no password)"
            self.host, self.port, self.user = parsed.hostname, parsed.port, parsed.username or "postgres"
            self.dir = Path("/nonexistent/airlock-pg")
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"

    @classmethod
    def running(cls, admin_url: str) -> Postgres:
        return cls(admin_url=admin_url)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([*self.as_user, str(self.bin_dir / args[0]), *args[1:]], dict(os.environ), cwd=Path("/"),
                   timeout=120)

    def start(self) -> None:
        assert self.owned, "a running cluster is not started here"
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "airlock", "-A", "trust", "-E", "UTF8",
                      "--locale=C", "--no-sync", "--no-instructions")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")

    def halt(self, *, check: bool = True) -> None:
        """Stop the server (fast: open connections are cut) and keep its data, as an outage
        does; `start` brings the same cluster back on the same port."""
        assert self.owned, "a running cluster is not stopped here"
        run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
             "stop"], dict(os.environ), cwd=Path("/"), timeout=120, check=check)

    def stop(self) -> None:
        if not self.owned:
            return
        if self.data.exists():
            self.halt(check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A new database; returns its URL."""
        assert re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name), f"not a plain database name: {name!r}"
        self.query("postgres", f"CREATE DATABASE {name}")
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgres://{self.user}@{self.host}:{self.port}/{database}"

    def query(self, database: str, sql: str) -> str:
        """`psql -At -c SQL` in `database`: the rows, one a line, columns split by `|`."""
        proc = run([str(self.bin_dir / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user,
                    "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql], scrubbed_env(), timeout=60)
        return proc.stdout.strip()


# --- where an airlock keeps its state: files, or a PostgreSQL database ----------------------------


def sql_text(value: str) -> str:
    """`value` as an SQL expression, whatever it holds (base64 inside needs no quoting)."""
    return f"convert_from(decode('{base64.b64encode(value.encode()).decode()}', 'base64'), 'UTF8')"


def plain_id(value: str) -> str:
    """An id (approval, receipt) as it may stand in a query or a path: letters and digits."""
    assert re.fullmatch(r"[A-Za-z0-9_-]+", value), f"not an id: {value!r}"
    return value


class FileState:
    """The state in files under `[state] dir`, read and changed as someone with access to the
    files would."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir

    def receipt(self, receipt_id: str) -> bytes:
        return (self.dir / "receipts" / f"{plain_id(receipt_id)}.json").read_bytes()

    def put_receipt(self, receipt_id: str, data: bytes) -> None:
        (self.dir / "receipts" / f"{plain_id(receipt_id)}.json").write_bytes(data)

    def receipt_id(self, printed: str) -> str:
        """The receipt `airlock approve` named (`receipt: PATH`): it is a file in the state dir."""
        path = Path(printed)
        assert path.is_file(), f"`airlock approve` names {path}, which does not exist"
        assert path.resolve().parent == (self.dir / "receipts").resolve(), path
        return path.stem

    def approval(self, approval_id: str) -> dict[str, Any]:
        """The stored approval (`approvals/ID.json`)."""
        return json.loads((self.dir / "approvals" / f"{plain_id(approval_id)}.json").read_text())

    def put_approval(self, record: dict[str, Any]) -> None:
        (self.dir / "approvals" / f"{plain_id(record['id'])}.json").write_text(json.dumps(record, indent=2))

    def ledger_events(self, key: str) -> list[str]:
        """The single-use ledger's events for one receipt, in order (`ledger.jsonl`)."""
        path = self.dir / "ledger.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [r["event"] for r in map(json.loads, filter(str.strip, lines)) if r["receipt"] == key]

    def audit_records(self) -> list[dict[str, Any]]:
        return audit_records(self.dir)


class DatabaseState:
    """The state in a PostgreSQL database (`[state] database_url`), read and changed with psql
    as someone with access to the database would: `airlock_receipts`, `airlock_approvals`,
    `airlock_ledger_events`, `airlock_audit`."""

    def __init__(self, postgres: Postgres, database: str):
        self.postgres = postgres
        self.database = database
        self.url = postgres.url(database)

    def _query(self, sql: str) -> str:
        return self.postgres.query(self.database, sql)

    def receipt(self, receipt_id: str) -> bytes:
        found = self._query(f"SELECT encode(receipt, 'base64') FROM airlock_receipts "
                            f"WHERE id = '{plain_id(receipt_id)}'")
        assert found, f"no receipt {receipt_id} in airlock_receipts"
        return base64.b64decode("".join(found.split()))

    def put_receipt(self, receipt_id: str, data: bytes) -> None:
        changed = self._query(f"UPDATE airlock_receipts SET receipt = decode('{base64.b64encode(data).decode()}', "
                              f"'base64') WHERE id = '{plain_id(receipt_id)}' RETURNING id")
        assert changed == receipt_id, f"no receipt {receipt_id} in airlock_receipts"

    def receipt_id(self, printed: str) -> str:
        """The receipt `airlock approve` named (`receipt: ID (in PostgreSQL, table airlock_receipts)`)."""
        m = re.fullmatch(r"(\S+) \(in PostgreSQL\b[^)]*\bairlock_receipts\)", printed)
        assert m, f"`airlock approve` names no receipt in PostgreSQL: {printed}"
        self.receipt(m.group(1))
        return m.group(1)

    def approval(self, approval_id: str) -> dict[str, Any]:
        found = self._query(f"SELECT record FROM airlock_approvals WHERE id = '{plain_id(approval_id)}'")
        assert found, f"no approval {approval_id} in airlock_approvals"
        return json.loads(found)

    def put_approval(self, record: dict[str, Any]) -> None:
        """The record over its row, the `status` column with it (as airlock writes them)."""
        changed = self._query(f"UPDATE airlock_approvals SET record = {sql_text(json.dumps(record))}::jsonb, "
                              f"status = {sql_text(record['status'])} "
                              f"WHERE id = '{plain_id(record['id'])}' RETURNING id")
        assert changed == record["id"], f"no approval {record['id']} in airlock_approvals"

    def ledger_events(self, key: str) -> list[str]:
        found = self._query(f"SELECT event FROM airlock_ledger_events WHERE key = '{plain_id(key)}' ORDER BY id")
        return found.splitlines()

    def audit_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._query("SELECT record FROM airlock_audit ORDER BY seq").splitlines()]


# --- files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    path: Path
    size: int
    sha256: str


def write_random_file(path: Path, size: int) -> DataFile:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 * MIB))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return DataFile(path, size, digest.hexdigest())


def multipart_etag(path: Path, part_size: int) -> str:
    """S3's ETag of a multipart upload: md5 of the parts' md5s, then '-' and the part count."""
    digests = []
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(part_size), b""):
            digests.append(hashlib.md5(chunk).digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def log_tail(path: Path, start: int = 0, limit: int = 12000) -> str:
    """The end of a log file from byte offset `start` (at most `limit` bytes)."""
    if not path.exists():
        return "(no log)"
    with open(path, "rb") as f:
        f.seek(max(start, path.stat().st_size - limit))
        return f.read().decode(errors="replace")


def audit_segments(state_dir: Path) -> list[Path]:
    """The audit log's segments (state/audit/00000001.jsonl, ...), oldest first."""
    return sorted((state_dir / "audit").glob("[0-9]*.jsonl"), key=lambda p: int(p.stem))


def audit_records(state_dir: Path) -> list[dict[str, Any]]:
    """Every record of the audit log, oldest first, across its segments."""
    return [json.loads(line) for segment in audit_segments(state_dir)
            for line in segment.read_text().splitlines() if line.strip()]


# --- moto -----------------------------------------------------------------------------------

# werkzeug writes one access-log line per request it answered, e.g.
#   127.0.0.1 - - [26/Nov/2026 13:18:11] "POST / HTTP/1.1" 200 -
_REQUEST_LINE = re.compile(r'"[A-Z]+ \S+ HTTP/\d(?:\.\d)?" \d{3} ')
_SENTINEL = "e2e-sentinel="

ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


class Moto:
    """moto_server on a free port, with an IAM user whose keys are airlock's real credentials,
    and with signature checking switched on (proved, not assumed)."""

    user_name = "airlock-upstream"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.log_path = workdir / "moto.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None
        self.access_key_id = ""
        self.secret_access_key = ""
        self.user_arn = ""

    def start(self) -> None:
        binary = require_tool("moto_server")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=self._log, env=scrubbed_env(), cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"moto_server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/moto-api/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"moto_server did not come up on {self.url}:\n{self.log_tail()}")
            time.sleep(0.2)
        self._provision_and_lock()

    def _provision_and_lock(self) -> None:
        # Authentication is still off: any key works to create the user and its key.
        iam = self._client("iam", "bootstrap", "bootstrap")
        iam.create_user(UserName=self.user_name)
        iam.put_user_policy(UserName=self.user_name, PolicyName="allow-all", PolicyDocument=ALLOW_ALL)
        key = iam.create_access_key(UserName=self.user_name)["AccessKey"]
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]

        # From now on moto checks every signature (and IAM policy) against its own users.
        r = requests.post(f"{self.url}/moto-api/reset-auth", data="0",
                          headers={"Content-Type": "text/plain"}, timeout=10)
        assert r.status_code == 200, f"reset-auth failed: {r.status_code} {r.text}"

        # Prove it: the real key works, the same key with a wrong secret does not.
        self.user_arn = self.client("sts").get_caller_identity()["Arn"]
        assert self.user_arn.endswith(f":user/{self.user_name}"), self.user_arn
        wrong = self._client("sts", self.access_key_id, altered(self.secret_access_key))
        with pytest.raises(ClientError) as err:
            wrong.get_caller_identity()
        assert err.value.response["Error"]["Code"] == "SignatureDoesNotMatch", err.value.response

    def _client(self, service: str, key_id: str, secret: str) -> Any:
        return boto3.session.Session(
            aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=REGION,
        ).client(service, endpoint_url=self.url, config=Config(s3={"addressing_style": "path"}))

    def client(self, service: str) -> Any:
        """A client that talks to moto DIRECTLY with the real credentials: for checking state."""
        return self._client(service, self.access_key_id, self.secret_access_key)

    def request_count(self) -> int:
        """How many requests moto has answered so far (its own sentinel requests excluded).

        A sentinel request is sent first and waited for in the log, so every request answered
        before this call is counted."""
        marker = f"{_SENTINEL}{uuid.uuid4().hex}"
        requests.get(f"{self.url}/moto-api/?{marker}", timeout=10)
        deadline = time.monotonic() + 10
        while True:
            text = self.log_path.read_text(errors="replace")
            if marker in text:
                return sum(1 for line in text.splitlines()
                           if _REQUEST_LINE.search(line) and _SENTINEL not in line)
            if time.monotonic() > deadline:
                raise AssertionError("moto did not log the sentinel request")
            time.sleep(0.05)

    def log_tail(self, start: int = 0) -> str:
        return log_tail(self.log_path, start)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()


# --- airlock config -------------------------------------------------------------------------

_TABLE_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"]+)\s*\]\]?\s*(#.*)?$")


def set_toml_value(text: str, section: str, key: str, value: str | int | bool) -> str:
    """Set `key = value` in table [section] of a TOML document, keeping everything else.

    An existing `key = ...` line in that table is replaced; failing that a commented-out one
    (`# key = ...`, as the example config ships optional keys); failing that the key is added
    right under the table header, or a new table is appended."""
    lines = text.splitlines(keepends=True)
    key_line = re.compile(rf"^\s*(#\s*)?{re.escape(key)}\s*=")
    current: str | None = None
    header_at: int | None = None
    live: int | None = None
    commented: int | None = None
    for i, line in enumerate(lines):
        m = _TABLE_HEADER.match(line)
        if m:
            # An array of tables ([[x]]) is never the table we are looking for.
            current = m.group(2) if m.group(1) == "[" else None
            if current == section:
                header_at = i
            continue
        if current == section:
            k = key_line.match(line)
            if k and k.group(1) is None and live is None:
                live = i
            elif k and k.group(1) is not None and commented is None:
                commented = i
    new_line = f"{key} = {json.dumps(value)}\n"  # JSON spells strings, ints and bools as TOML does
    if live is not None:
        lines[live] = new_line
    elif commented is not None:
        lines[commented] = new_line
    elif header_at is not None:
        lines.insert(header_at + 1, new_line)
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"\n[{section}]\n{new_line}")
    return "".join(lines)


def configure(config_path: Path, settings: dict[tuple[str, str], str | int | bool]) -> None:
    text = config_path.read_text()
    for (section, key), value in settings.items():
        text = set_toml_value(text, section, key, value)
    parsed = tomllib.loads(text)
    for (section, key), value in settings.items():
        assert parsed.get(section, {}).get(key) == value, (
            f"could not set [{section}] {key} in {config_path}:\n{text}")
    config_path.write_text(text)


# --- airlock --------------------------------------------------------------------------------

# serve's log line once it has learned (or failed to learn) its own account from the upstream.
_ACCOUNT_LEARNED = re.compile(r"airlock's own account|could not learn airlock's own account")
_READY = re.compile(r"airlock listening proxy=(\S+) approvals=(\S+)")


@dataclass
class Agent:
    """An agent as a user would set it up: the variables `airlock agent add` printed, the
    endpoint pointed at the running proxy, and nothing else from the host."""

    name: str
    access_key_id: str
    secret_access_key: str
    endpoint: str
    ca_bundle: str
    env: dict[str, str] = field(repr=False)

    def aws_run(self, *args: str, extra_env: dict[str, str] | None = None,
                cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        aws = require_tool("aws")
        env = {**self.env, **(extra_env or {})}
        return run([aws, *args], env, cwd=cwd, timeout=timeout, check=False)

    def aws_text(self, *args: str, extra_env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 600) -> str:
        """Run the AWS CLI as this agent and return its output; raise with stderr on failure."""
        proc = self.aws_run(*args, extra_env=extra_env, cwd=cwd, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(
                f"aws {' '.join(args)} failed with exit code {proc.returncode}:\n"
                f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}")
        return proc.stdout

    def aws(self, *args: str, **kwargs: Any) -> Any:
        """Run the AWS CLI as this agent; its JSON output parsed (None if empty)."""
        out = self.aws_text(*args, "--output", "json", **kwargs)
        return json.loads(out) if out.strip() else None

    def client(self, service: str, *, config: Config | None = None, secret: str | None = None,
               key_id: str | None = None) -> Any:
        """A boto3 client that reaches AWS only through airlock, trusting only airlock's CA."""
        base = Config(s3={"addressing_style": "path"})
        session = boto3.session.Session(
            aws_access_key_id=key_id or self.access_key_id,
            aws_secret_access_key=secret or self.secret_access_key,
            region_name=REGION,
        )
        return session.client(service, endpoint_url=self.endpoint, verify=self.ca_bundle,
                              config=base.merge(config) if config else base)


class Airlock:
    """One `airlock serve` process with its own config, certificates and state."""

    def __init__(self, home: Path, moto: Moto):
        self.binary = airlock_binary()
        self.home = home
        self.moto = moto
        self.config = home / "config" / "airlock.toml"
        self.log_path = home / "airlock.log"
        self.proc: subprocess.Popen[str] | None = None
        self.proxy_url = ""
        self.approvals_url = ""
        # A command prefix that runs airlock as another OS user (osusers.OsUser.as_user()).
        self.run_as: list[str] = []
        # Where its state is: the files in `[state] dir`, unless `use_database` names one.
        self.state: FileState | DatabaseState = FileState(home / "state")

    def use_database(self, state: DatabaseState) -> None:
        """Keep the state in `state`'s database (`[state] database_url` in the config, so the
        URL is in no process's environment), from the next `start` on."""
        configure(self.config, {("state", "database_url"): state.url})
        self.state = state

    # The environment airlock runs in: the real credentials and nothing else of AWS's.
    def _serve_env(self) -> dict[str, str]:
        env = scrubbed_env()
        env["AWS_ACCESS_KEY_ID"] = self.moto.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = self.moto.secret_access_key
        return env

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`airlock ARGS... --config PATH` (the management commands need no AWS credentials)."""
        return run([*self.run_as, str(self.binary), *args, "--config", str(self.config)], scrubbed_env(),
                   cwd=self.home, timeout=timeout, check=check)

    def init(self, policy_mode: str) -> None:
        """`airlock init`, then: free ports, moto as the upstream, and the policy mode.

        "shadow" forwards destructive calls too (only recording what would have been gated): the
        client suites test transport. "enforce" (the shipped default) holds them for a receipt."""
        self.cli("init")
        assert self.config.is_file(), f"airlock init did not create {self.config}"
        assert self.ca_pem.is_file(), f"airlock init did not create {self.ca_pem}"
        settings: dict[tuple[str, str], str | int | bool] = {
            ("listen", "proxy"): "127.0.0.1:0",
            ("listen", "approvals"): "127.0.0.1:0",
            ("upstream", "endpoint"): self.moto.url,
        }
        generated = tomllib.loads(self.config.read_text())
        if "policy" in generated:
            settings[("policy", "mode")] = policy_mode
        elif policy_mode != "shadow":
            raise AssertionError(f"the config `airlock init` wrote has no [policy] table, so "
                                 f"airlock cannot run in policy mode {policy_mode!r}")
        if "hold_seconds" in generated.get("approval", {}):
            # Nobody approves here: refuse a blocked call at once instead of holding it.
            settings[("approval", "hold_seconds")] = 0
        configure(self.config, settings)

    @property
    def ca_pem(self) -> Path:
        return self.home / "certs" / "ca.pem"

    def start(self) -> None:
        log = open(self.log_path, "a")
        log_start = log.tell()
        self.proc = subprocess.Popen(
            [*self.run_as, str(self.binary), "serve", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=log, text=True, env=self._serve_env(), cwd=self.home,
        )
        log.close()
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:  # copy stdout into the log, handing lines to the waiter
            assert self.proc and self.proc.stdout
            with open(self.log_path, "a") as out:
                for line in self.proc.stdout:
                    out.write(line)
                    out.flush()
                    lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 30
        while True:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            m = _READY.search(line)
            if m:
                self.proxy_url, self.approvals_url = m.group(1), m.group(2)
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                state = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                         else "did not print its ready line within 30 s")
                self.stop()
                raise AssertionError(f"airlock serve {state}; its output:\n{self.log_tail()}")
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", self.proxy_url), self.proxy_url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", self.approvals_url), self.approvals_url
        # serve asks the upstream for its own account in the background right after the ready
        # line; wait for that request to be answered, so it cannot land inside a test's count
        # of the requests that reached moto. (An upstream that never answers: give up quietly.)
        deadline = time.monotonic() + 10
        while not _ACCOUNT_LEARNED.search(log_tail(self.log_path, log_start)):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if isinstance(self.state, DatabaseState):
            self._wait_healthy()

    def _wait_healthy(self) -> None:
        """Until `/healthz` answers 200: on PostgreSQL, `serve` reaches the database in the
        background (migrating its schema the first time) and refuses gated calls until then."""
        deadline = time.monotonic() + 30
        while requests.get(f"{self.approvals_url}/healthz", timeout=10).status_code != 200:
            assert self.proc is not None and self.proc.poll() is None, f"airlock serve exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"/healthz not 200 within 30 s:\n{self.log_tail()}"
            time.sleep(0.05)

    def wait_known(self, agent: Agent) -> None:
        """Until `serve` knows `agent`: at once on the files; on PostgreSQL `serve` follows the
        agents (a NOTIFY, or its poll) and learns of a new one within moments, and of all of
        them again after a restart. The probe is signed with a wrong secret, so it reaches no
        upstream: it is refused as SignatureDoesNotMatch once the key is known."""
        if not isinstance(self.state, DatabaseState):
            return
        sts = agent.client("sts", secret=altered(agent.secret_access_key),
                           config=Config(retries={"total_max_attempts": 1}))
        deadline = time.monotonic() + 10
        while True:
            try:
                sts.get_caller_identity()
                raise AssertionError("a call signed with a wrong secret went through")
            except ClientError as e:
                code = e.response["Error"]["Code"]
            if code == "SignatureDoesNotMatch":
                return
            assert code == "InvalidClientTokenId", f"the probe for {agent.name} was refused with {code}"
            assert time.monotonic() < deadline, f"serve did not learn of agent {agent.name} within 10 s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_kib(self) -> int:
        """Peak resident set size (VmHWM) of the serve process, in KiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        m = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.M)
        assert m, status
        return int(m.group(1))

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_tail(self, start: int = 0) -> str:
        return log_tail(self.log_path, start)

    def approval_link(self, text: str) -> str:
        """The approval link in an error message: it must point at this airlock's approvals port."""
        port = self.approvals_url.rsplit(":", 1)[1]
        m = re.search(rf"https?://(?:localhost|127\.0\.0\.1|\[::1\]):{port}/[^\s\"'<>]*", text)
        assert m, f"no approval link for port {port} in: {text}"
        return m.group(0)

    def add_agent(self, name: str) -> Agent:
        out = self.cli("agent", "add", name, "--json").stdout
        if isinstance(self.state, DatabaseState):
            assert self.state.url not in out, "`airlock agent add` printed the database URL"
        try:
            creds = json.loads(out)
        except json.JSONDecodeError as e:
            raise AssertionError(f"`airlock agent add --json` did not print JSON: {e}\n{out}")
        expected = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE"}
        assert expected <= set(creds), f"agent add printed {sorted(creds)}"
        ca = creds["AWS_CA_BUNDLE"]
        assert Path(ca).is_absolute() and Path(ca).resolve() == self.ca_pem.resolve(), f"AWS_CA_BUNDLE={ca!r}"
        assert creds["AWS_ACCESS_KEY_ID"] != self.moto.access_key_id
        assert creds["AWS_SECRET_ACCESS_KEY"] != self.moto.secret_access_key
        env = scrubbed_env()
        env.update({
            "AWS_ACCESS_KEY_ID": creds["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": creds["AWS_SECRET_ACCESS_KEY"],
            # The config's URL names the configured port (0 here); use the one serve bound.
            "AWS_ENDPOINT_URL": self.proxy_url,
            "AWS_CA_BUNDLE": ca,
            "SSL_CERT_FILE": ca,
            "NODE_EXTRA_CA_CERTS": ca,
            "CURL_CA_BUNDLE": ca,
            "REQUESTS_CA_BUNDLE": ca,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        })
        agent = Agent(name, creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"],
                      self.proxy_url, ca, env)
        self.wait_known(agent)
        return agent


# --- shared test data -----------------------------------------------------------------------

# S3 keys that real clients must be able to use. moto 5.2.1 with signature checking rejects keys
# with '+', any other character that needs percent-encoding except ' ', '?' and '#', and
# non-ASCII, even when signed correctly, so those are covered where airlock alone verifies.
ODD_KEYS = ["notes/small file with spaces.txt", "what?#not-a-query.txt", "double//slash.txt"]


def create_assumable_role(moto: Moto, name: str) -> str:
    """A role in moto (created directly) that any principal may assume: its ARN. A refused
    AssumeRole of it is then airlock's doing, not the role's trust policy."""
    return moto.client("iam").create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]


def create_lambda_function(moto: Moto, name: str) -> None:
    """A function in moto (created directly, so listing it through airlock has something to find)."""
    role = moto.client("iam").create_role(
        RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return event\n")
    moto.client("lambda").create_function(FunctionName=name, Runtime="python3.12", Role=role,
                                          Handler="index.handler", Code={"ZipFile": code.getvalue()})


# --- assertions -----------------------------------------------------------------------------


def error_code(call: Any, *args: Any, **kwargs: Any) -> str:
    """The AWS error code `call(*args, **kwargs)` fails with (it must fail)."""
    with pytest.raises(ClientError) as err:
        call(*args, **kwargs)
    return err.value.response["Error"]["Code"]


# --- approvals: approver keys, approve/deny from the command line -----------------------------


@dataclass(frozen=True)
class ApproverKey:
    """An approver's private key file, as `airlock keygen` wrote it, and the `[[approver]]`
    block it printed for the config."""

    name: str
    path: Path
    block: str


def keygen(airlock: Airlock, name: str, directory: Path) -> ApproverKey:
    """`airlock keygen --out DIR/NAME.key --name NAME --insecure-plaintext-key`: the key and the
    printed config block. Plaintext, because nobody types a passphrase here (a locked key's
    passphrase is read from a terminal only: test_agent_seat.py drives one)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.key"
    proc = airlock.cli("keygen", "--out", str(path), "--name", name, "--insecure-plaintext-key")
    assert "not locked with a passphrase" in proc.stderr, proc.stderr
    out = proc.stdout
    assert path.is_file() and path.stat().st_mode & 0o777 == 0o600, f"keygen wrote no 0600 key at {path}"
    block = "".join(line + "\n" for line in out.splitlines() if not line.lstrip().startswith("#"))
    parsed = tomllib.loads(block)
    [entry] = parsed.get("approver", [])
    assert entry["name"] == name and entry["public_key"].startswith("ed25519:"), out
    return ApproverKey(name, path, block)


class GatedAirlock(Airlock):
    """An enforcing airlock with approver keys in its config, driven by the CLI a human uses:
    `airlock approvals --json`, `airlock approve ID --key FILE`, `airlock deny ID --key FILE`."""

    def __init__(self, home: Path, moto: Moto):
        super().__init__(home, moto)
        self.keys: dict[str, ApproverKey] = {}

    @property
    def state_dir(self) -> Path:
        return self.home / "state"

    def add_approver(self, name: str) -> ApproverKey:
        """Make a key and trust it in the config (read when `serve` starts)."""
        key = keygen(self, name, self.home / "keys")
        with open(self.config, "a") as f:
            f.write("\n" + key.block)
        self.keys[name] = key
        return key

    @property
    def key(self) -> ApproverKey:
        """The first approver's key."""
        return next(iter(self.keys.values()))

    def approvals(self, *, all: bool = False) -> list[dict[str, Any]]:
        args = ["approvals", "--json"] + (["--all"] if all else [])
        out = self.cli(*args).stdout
        rows = json.loads(out)
        assert isinstance(rows, list), out
        return rows

    def pending_ids(self) -> list[str]:
        rows = self.approvals()
        assert all(r["status"] == "pending" for r in rows), rows
        return [r["id"] for r in rows]

    def approval_id(self, message: str) -> str:
        """The approval id in a refusal's message (from its link, which must be this airlock's)."""
        link = self.approval_link(message)
        m = re.fullmatch(r".*/approvals/([a-z0-9]+)", link)
        assert m, f"not an approval link: {link}"
        assert f"airlock approve {m.group(1)}" in message, message
        return m.group(1)

    def approval_record(self, approval_id: str) -> dict[str, Any]:
        """The stored approval (`state/approvals/ID.json`, or its row in the database)."""
        return self.state.approval(approval_id)

    def _decide(self, verb: str, approval_id: str, key: ApproverKey | None, config: Path | None) -> StoredReceipt:
        key = key or self.key
        proc = run([str(self.binary), verb, approval_id, "--key", str(key.path), "--insecure-plaintext-key",
                    "--config", str(config or self.config)], scrubbed_env(), cwd=self.home, timeout=60)
        m = re.search(r"^receipt: (.+)$", proc.stdout, re.M)
        assert m, f"`airlock {verb}` printed no receipt:\n{proc.stdout}"
        printed = m.group(1)
        if isinstance(self.state, FileState) and not Path(printed).is_absolute():
            printed = str(self.home / printed)
        return StoredReceipt(self.state.receipt_id(printed), self.state, self.home / "receipts-read")

    def approve(self, approval_id: str, key: ApproverKey | None = None, *,
                config: Path | None = None) -> StoredReceipt:
        """`airlock approve ID --key FILE`: the receipt it stored."""
        return self._decide("approve", approval_id, key, config)

    def deny(self, approval_id: str, key: ApproverKey | None = None, *,
             config: Path | None = None) -> StoredReceipt:
        return self._decide("deny", approval_id, key, config)

    def kill(self) -> None:
        """SIGKILL this serve process (ours alone) and reap it: no graceful anything."""
        assert self.proc is not None and self.proc.poll() is None, "airlock is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def agent_here(self, agent: Agent) -> Agent:
        """The same agent pointed at this airlock's current proxy port (after a restart), once
        `serve` knows it."""
        env = {**agent.env, "AWS_ENDPOINT_URL": self.proxy_url}
        here = Agent(agent.name, agent.access_key_id, agent.secret_access_key, self.proxy_url,
                     agent.ca_bundle, env)
        self.wait_known(here)
        return here


@dataclass(frozen=True)
class StoredReceipt:
    """A receipt as airlock stored it: `state/receipts/ID.json`, or its row in
    `airlock_receipts`. Read and changed in place, as someone with access to the store could."""

    id: str
    state: FileState | DatabaseState
    scratch: Path

    def read_bytes(self) -> bytes:
        return self.state.receipt(self.id)

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_text(self, text: str) -> None:
        self.state.put_receipt(self.id, text.encode())

    def file(self) -> Path:
        """A file holding the stored bytes, for `airlock receipt verify FILE`: the stored file
        itself, or (on PostgreSQL) the row's bytes written out."""
        if isinstance(self.state, FileState):
            return self.state.dir / "receipts" / f"{self.id}.json"
        self.scratch.mkdir(exist_ok=True)
        path = self.scratch / f"{self.id}.json"
        path.write_bytes(self.read_bytes())
        return path
