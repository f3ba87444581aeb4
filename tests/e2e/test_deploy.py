"""The protected setups as shipped: `docker-compose.yml` (validated by Debian's `docker-compose
config`; no container engine runs here, so the image is not built) and the systemd unit
(`systemd-analyze verify`, and its sandbox scored by `systemd-analyze security`)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from support import REPO, airlock_binary, require_tool, run, scrubbed_env


def test_docker_compose_publishes_on_loopback_only_and_keeps_secrets_in_volumes(tmp_path: Path) -> None:
    compose = require_tool("docker-compose")
    shutil.copy(REPO / "docker-compose.yml", tmp_path / "docker-compose.yml")
    # Without the credentials file compose refuses the project: it is where the real keys go.
    missing = run([compose, "config"], scrubbed_env(), cwd=tmp_path, check=False)
    assert missing.returncode != 0 and "airlock.env" in missing.stderr, missing.stderr
    env_file = tmp_path / "airlock.env"
    database_url = "postgres://airlock:example-password@/airlock?host=/var/run/postgresql"
    env_file.write_text("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE\nAWS_SECRET_ACCESS_KEY=example\n"
                        f"AIRLOCK_DATABASE_URL={database_url}\n")
    (tmp_path / "airlock-db-password").write_text("example-password\n")
    out = run([compose, "config"], scrubbed_env(), cwd=tmp_path).stdout
    project = yaml.safe_load(out)
    service = project["services"]["airlock"]

    ports = service["ports"]
    assert ports and all(str(p).startswith("127.0.0.1:") for p in ports), ports
    assert {str(p).split(":")[2].split("/")[0] for p in ports} == {"8443", "8444"}, ports
    mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
    # State and certificates (with ca.key) in named volumes; the one host directory gets ca.pem.
    assert mounts["/var/lib/airlock/state"] == "airlock-state"
    assert mounts["/var/lib/airlock/certs"] == "airlock-certs"
    # PostgreSQL through its Unix socket, in a volume only the two services mount: no TLS
    # needed, none of its traffic on a network (airlock refuses plaintext to another host).
    assert mounts["/var/run/postgresql"] == "airlock-db-socket"
    host_dirs = {target: source for target, source in mounts.items() if source.startswith("/")}
    assert set(host_dirs) == {"/var/lib/airlock/ca"}, host_dirs
    # The real keys come from the env file, not from the compose file itself.
    assert service["environment"].get("AWS_ACCESS_KEY_ID") == "AKIAIOSFODNN7EXAMPLE"
    assert "AKIA" not in (REPO / "docker-compose.yml").read_text()
    assert service["cap_drop"] == ["ALL"] and service["read_only"] is True
    assert "no-new-privileges:true" in service["security_opt"]

    # PostgreSQL: its data in a named volume, not published, healthy before airlock starts;
    # airlock's database URL (with the password) from the env file, the database's password
    # from a secret file: neither in the compose file nor in airlock's baked-in config.
    db = project["services"]["postgres"]
    assert db["image"].startswith("postgres:"), db["image"]
    db_mounts = {m.split(":")[1]: m.split(":")[0] for m in db["volumes"]}
    assert db_mounts == {"/var/lib/postgresql/data": "airlock-db",
                         "/var/run/postgresql": "airlock-db-socket"}, db_mounts
    assert "airlock-db" in project["volumes"]
    assert "ports" not in db, db.get("ports")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"]), db["healthcheck"]
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy", service["depends_on"]
    assert service["environment"]["AIRLOCK_DATABASE_URL"] == database_url
    assert db["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")
    assert "POSTGRES_PASSWORD" not in db["environment"]
    secret = project["secrets"]["airlock-db-password"]["file"]
    assert Path(secret).resolve() == (tmp_path / "airlock-db-password").resolve(), secret
    for shipped in (REPO / "docker-compose.yml", REPO / "deploy" / "docker" / "airlock.toml"):
        assert "postgres://" not in shipped.read_text().replace("postgres://airlock:PASSWORD@", ""), shipped

    # The image: a build stage, then a slim runtime stage that runs as a non-root user.
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    assert len(stages) == 2 and " AS build" in stages[0].splitlines()[0], stages
    assert "slim" in stages[1].splitlines()[0]
    users = re.findall(r"^USER (\S+)", stages[1], re.M)
    assert users and users[-1] not in ("root", "0"), users


def test_systemd_unit_verifies_and_is_sandboxed(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    unit_text = (REPO / "deploy" / "systemd" / "airlock.service").read_text()
    for directive in ("User=airlock", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                      "PrivateTmp=yes", "StateDirectory=airlock", "LoadCredential=aws-credentials:"):
        assert re.search(rf"^{re.escape(directive)}", unit_text, re.M), directive
    # verify wants the program to exist: point it at the binary under test.
    unit = tmp_path / "airlock.service"
    unit.write_text(unit_text.replace("/usr/local/bin/airlock", str(airlock_binary())))
    verified = run([analyze, "verify", str(unit)], scrubbed_env(), check=False)
    assert verified.returncode == 0 and "airlock.service" not in verified.stderr, verified.stderr
    security = run([analyze, "security", "--offline=yes", str(unit)], scrubbed_env(), check=False)
    m = re.search(r"Overall exposure level for airlock\.service: (\d+\.\d+)", security.stdout + security.stderr)
    assert m, security.stdout + security.stderr
    print(f"systemd-analyze security: exposure {m.group(1)} (0 = fully sandboxed, 10 = not at all)")
    assert float(m.group(1)) <= 2.0, security.stdout
