#!/usr/bin/env python3
"""airlock next to nginx, on this machine, in one run (see BENCHMARKS.md).

    python3 bench/run.py                 # request rate, latency, CPU, and the 512 MiB PUT
    python3 bench/run.py --load 60       # then 60 s of mixed allowed/refused calls at peak rate
    python3 bench/run.py --tunnel        # only: the HTTPS_PROXY path next to the endpoint path
    python3 bench/run.py --baseline BIN  # also another airlock binary (a saved build), interleaved
    python3 bench/run.py --scaling --protocols   # only: 1 to 1,024 connections, then HTTP/1.1 and h2

Three contenders answer the same signed request (signed once with botocore, replayed by wrk):

- stub:    wrk straight at the upstream stub (plain HTTP): the ceiling of this machine.
- nginx:   nginx as a tuned TLS reverse proxy in front of the stub (one worker per core,
           keep-alive pool upstream, no access log, request buffering off).
- airlock: airlock doing its full work (TLS, SigV4 verification, identification, policy,
           audit record, re-signing with the real credentials) in front of the same stub.

It needs wrk, nginx and curl (Debian: `apt-get install wrk nginx-light curl`), botocore, and
builds airlock and the stub in release mode first (about 10 minutes the first time).
Everything listens on 127.0.0.1 ports chosen by the kernel and stops at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ROOT = Path(__file__).resolve().parent.parent
# Where the binaries are: target/release (`--profile debug`: target/debug, for a quick look only).
BUILD = ROOT / "target/release"
# `--binary`: another airlock binary than the build's (e.g. a saved build of main).
AIRLOCK: Path | None = None
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
REGION = "us-east-1"
BUCKET = "bench-bucket"


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not path:
        sys.exit(f"bench: `{tool}` not found; on Debian: apt-get install wrk nginx-light curl")
    return path


# ---------------------------------------------------------------- processes and /proc


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_by_pid(pids).values())


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        out[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return out


def cpu_since(before: dict[int, float], pids: list[int]) -> float:
    """CPU used since `before` by `pids` (a process started meanwhile counts from zero, so a
    database's new backends count whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in cpu_by_pid(pids).items())


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(p.name))
    return out


class Proc:
    """A server process, waited for until it prints a line matching `ready` (its match is
    kept) or, for one that prints nothing, until `port` accepts connections."""

    def __init__(self, name: str, cmd: list[str], ready: str = "", env: dict[str, str] | None = None,
                 log: Path | None = None, port: int | None = None):
        self.name = name
        self.log = log
        out = open(log, "w") if log else subprocess.DEVNULL
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=out, text=True, env=env)
        self.match: re.Match[str] | None = None
        started = False
        deadline = time.monotonic() + 30
        assert self.p.stdout
        while port and not started and time.monotonic() < deadline and self.p.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                started = True
            except OSError:
                time.sleep(0.05)
        while not port and not started and time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            self.match = re.search(ready, line)
            started = self.match is not None
        if not started:
            self.stop()
            tail = log.read_text()[-2000:] if log else ""
            sys.exit(f"bench: {name} did not start\n{tail}")
        # Keep draining stdout so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.p.stdout], daemon=True).start()

    @property
    def pid(self) -> int:
        return self.p.pid

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def stop_all(procs: list[Proc], work: Path | None = None) -> None:
    """Stops the servers, last started first, and removes the run's directory."""
    for p in reversed(procs):
        p.stop()
    procs.clear()
    if work:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- the contenders


@dataclass
class Target:
    name: str
    url: str
    pids: Callable[[], list[int]]  # the processes whose CPU counts
    rss_pid: Callable[[], list[int]]  # the processes whose peak RSS counts


def start_stub(work: Path) -> Proc:
    binary = BUILD / "examples/bench-stub"
    return Proc("stub", [str(binary), "0"], r"listening on 127\.0\.0\.1:(\d+)", log=work / "stub.log")


def start_passthrough(work: Path, stub_port: int, certs: Path) -> Proc:
    binary = BUILD / "examples/bench-passthrough"
    return Proc("passthrough", [str(binary), str(stub_port), str(certs / "server.pem"), str(certs / "server.key")],
                r"listening on 127\.0\.0\.1:(\d+)", log=work / "passthrough.log")


def start_airlock(work: Path, stub_port: int, log_level: str, connect: bool = False, binary: Path | None = None,
                  name: str = "airlock", edit: Callable[[str], str] | None = None,
                  before_agent: Callable[[Path], None] | None = None) -> tuple[Proc, Credentials, Path]:
    """`edit` changes the config's text further; `before_agent` runs once it is written."""
    binary = str(binary or AIRLOCK or BUILD / "airlock")
    config = work / f"{name}/config/airlock.toml"
    subprocess.run([binary, "init", "--config", str(config)], check=True, capture_output=True)
    text = config.read_text()
    replacements = {
        **({r'(?m)^# connect = .*$': 'connect = "127.0.0.1:0"'} if connect else {}),
        r'(?m)^proxy = .*$': 'proxy = "127.0.0.1:0"',
        r'(?m)^approvals = .*$': 'approvals = "127.0.0.1:0"',
        r'(?m)^# endpoint = .*$': f'endpoint = "http://127.0.0.1:{stub_port}"',
        r'(?m)^hold_seconds = .*$': "hold_seconds = 0",
        r'(?m)^desktop = .*$': "desktop = false",
    }
    for pattern, value in replacements.items():
        text, n = re.subn(pattern, value, text)
        if n != 1:
            sys.exit(f"bench: the config `airlock init` wrote has no line matching {pattern}")
    # The load test's refused calls: one denied outright by a rule.
    text += '\n[[rule]]\nname = "bench-deny"\neffect = "deny"\nactions = ["s3:PutBucketPolicy"]\n' \
            'reason = "the benchmark denies bucket policies"\n'
    config.write_text(edit(text) if edit else text)
    if before_agent:
        before_agent(config)
    agent = json.loads(subprocess.run([binary, "agent", "add", "bench", "--json", "--config", str(config)],
                                      check=True, capture_output=True, text=True).stdout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="AKIABENCHREALKEY0001", AWS_SECRET_ACCESS_KEY="bench/real/secret/not/used/by/the/stub",
               AIRLOCK_LOG=log_level)
    ready = r"airlock listening proxy=https://127\.0\.0\.1:(\d+) \S+" + (r" connect=http://127\.0\.0\.1:(\d+)" if connect else "")
    proc = Proc(name, [binary, "serve", "--config", str(config)], ready, env=env, log=work / f"{name}.log")
    creds = Credentials(agent["AWS_ACCESS_KEY_ID"], agent["AWS_SECRET_ACCESS_KEY"])
    return proc, creds, config


NGINX_CONF = """
worker_processes {workers};
user root;
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    upstream stub {{
        server 127.0.0.1:{stub_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        client_max_body_size 0;
        location / {{
            proxy_pass http://stub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
        }}
    }}
}}
"""


def start_nginx(work: Path, stub_port: int, certs: Path) -> tuple[Proc, int]:
    with socket.socket() as s:  # a free port for nginx (it cannot report one it chose)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=os.cpu_count(), work=work, stub_port=stub_port, port=port,
                                      cert=certs / "server.pem", key=certs / "server.key"))
    proc = Proc("nginx", [need("nginx"), "-c", str(conf), "-e", f"{work}/nginx-error.log"], port=port)
    return proc, port


def nginx_pids(master: Proc) -> list[int]:
    return [master.pid, *children(master.pid)]


# ---------------------------------------------------------------- signed requests


def signed(creds: Credentials, method: str, host: str, path: str, *, query: str = "", body: bytes = b"",
           headers: dict[str, str] | None = None, service: str = "s3", unsigned_payload: bool = False) -> dict[str, str]:
    url = f"https://{host}{path}" + (f"?{query}" if query else "")
    req = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    signer = UnsignedPayload if unsigned_payload else S3SigV4Auth if service == "s3" else SigV4Auth
    signer(creds, service, REGION).add_auth(req)
    out = {k: v for k, v in req.headers.items()}
    out["Host"] = host  # wrk connects to 127.0.0.1 but must say the host that was signed
    return out


class UnsignedPayload(S3SigV4Auth):
    """S3 over TLS with `X-Amz-Content-SHA256: UNSIGNED-PAYLOAD`, as the SDKs upload."""

    def payload(self, request: AWSRequest) -> str:
        return "UNSIGNED-PAYLOAD"


def lua_string(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def wrk_script(requests: list[tuple[str, str, dict[str, str], bytes]], work: Path, name: str) -> Path:
    """A wrk script cycling through pre-formatted requests and counting statuses."""
    lines = ["local reqs = {}"]
    for method, path, headers, body in requests:
        hs = ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items())
        lines.append(f"table.insert(reqs, wrk.format({lua_string(method)}, {lua_string(path)}, {{{hs}}}, "
                     f"{lua_string(body.decode()) if body else 'nil'}))")
    lines += [
        "local i = 0",
        "counts = {}",
        "function request() i = i % #reqs + 1; return reqs[i] end",
        "function response(status) counts[status] = (counts[status] or 0) + 1 end",
        "local threads = {}",
        "function setup(thread) table.insert(threads, thread) end",
        "function done()",
        "  local total = {}",
        "  for _, t in ipairs(threads) do",
        "    for s, n in pairs(t:get('counts')) do total[s] = (total[s] or 0) + n end",
        "  end",
        "  local parts = {}",
        "  for s, n in pairs(total) do table.insert(parts, '\"' .. s .. '\":' .. n) end",
        "  io.write('STATUS {' .. table.concat(parts, ',') .. '}\\n')",
        "end",
    ]
    path = work / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict[str, float]:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            raise ValueError(f"wrk printed no {pct}% latency:\n{out}")
        return float(m.group(1)) * UNITS[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"STATUS (\{.*\})", out)
    statuses = {int(k): v for k, v in json.loads(m.group(1)).items()} if m else {}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(x) for x in errors.groups()) if errors else 0
    return {"rps": rps, "p50_ms": latency("50"), "p99_ms": latency("99"), "requests": total,
            "statuses": statuses, "socket_errors": socket_errors, "timeouts": int(errors.group(4)) if errors else 0}


def run_wrk(url: str, script: Path, seconds: float, connections: int, threads: int, timeout: int = 2) -> str:
    cmd = [need("wrk"), f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", f"--timeout={timeout}s", "--latency",
           "-s", str(script), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        sys.exit(f"bench: wrk failed: {done.stdout}{done.stderr}")
    return done.stdout


# ---------------------------------------------------------------- the measurements


@dataclass
class Result:
    name: str
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_per_10k: list[float] = field(default_factory=list)
    put_mib_s: list[float] = field(default_factory=list)
    put_peak_rss_mib: float = 0.0
    whole_run_peak_rss_mib: float = 0.0
    put_cpu_s: list[float] = field(default_factory=list)


def rate(target: Target, script: Path, seconds: float, connections: int, threads: int, result: Result,
         path: str = f"/{BUCKET}/hello.txt", timeout: int = 2) -> dict[str, float]:
    """One wrk run into `result`. Any answer but 200, or any socket error, stops the bench; with a
    `timeout` above wrk's default (the scaling runs), wrk's own timeouts are counted instead."""
    before = cpu_by_pid(target.pids())
    out = run_wrk(target.url + path, script, seconds, connections, threads, timeout)
    cpu = cpu_since(before, target.pids())
    r = parse_wrk(out)
    bad = {s: n for s, n in r["statuses"].items() if s != 200}
    if bad or r["socket_errors"] - (r["timeouts"] if timeout > 2 else 0):
        sys.exit(f"bench: {target.name} answered {bad} and had {r['socket_errors']} socket errors:\n{out}")
    result.rps.append(r["rps"])
    result.p50.append(r["p50_ms"])
    result.p99.append(r["p99_ms"])
    result.cpu_per_10k.append(cpu / r["requests"] * 10_000 if target.name != "stub" else float("nan"))
    return r


def put(target: Target, headers: dict[str, str], data: Path, ca: Path, result: Result) -> None:
    rss_pids = target.rss_pid()
    for pid in rss_pids:
        reset_peak(pid)
    pids = target.pids()
    before = cpu_seconds(pids)
    host = headers.pop("Host")
    cmd = [need("curl"), "-sS", "--fail-with-body", "--http1.1", "--resolve", f"{host}:127.0.0.1", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_upload}",
           "--cacert", str(ca), "-T", str(data), "-H", "Expect:"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"{'http' if target.name == 'stub' else 'https'}://{host}/{BUCKET}/big.bin")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    code, seconds, sent = done.stdout.split()
    if done.returncode != 0 or code != "200" or int(float(sent)) != data.stat().st_size:
        sys.exit(f"bench: PUT through {target.name}: {done.stdout} {done.stderr}")
    result.put_cpu_s.append(cpu_seconds(pids) - before)
    result.put_mib_s.append(data.stat().st_size / (1 << 20) / float(seconds))
    peak = sum(status_kib(p, "VmHWM") for p in rss_pids) / 1024
    result.put_peak_rss_mib = max(result.put_peak_rss_mib, peak)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def table(results: dict[str, Result], put_mib: int) -> str:
    for n in ("stub", "nginx", "passthrough", "airlock"):
        results.setdefault(n, Result(n))
    ng = results["nginx"]
    rows = [
        ("requests/s", "rps", "{:,.0f}"),
        ("p50 latency (ms)", "p50", "{:.3f}"),
        ("p99 latency (ms)", "p99", "{:.3f}"),
        ("CPU s per 10,000 requests", "cpu_per_10k", "{:.3f}"),
        (f"{put_mib} MiB PUT (MiB/s)", "put_mib_s", "{:.0f}"),
        ("PUT CPU s", "put_cpu_s", "{:.2f}"),
    ]
    names = ("stub", "nginx", "passthrough", "airlock")
    out = ["| measure | stub direct | nginx | same stack, no work | airlock | airlock / nginx | no work / nginx |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for label, attr, fmt in rows:
        vals = {n: median(getattr(results[n], attr)) for n in names}
        ratios = [vals[n] / vals["nginx"] if vals["nginx"] else float("nan") for n in ("airlock", "passthrough")]
        cells = [fmt.format(vals[n]) if vals[n] == vals[n] else "—" for n in names]
        out.append(f"| {label} | {' | '.join(cells)} | {ratios[0]:.2f}× | {ratios[1]:.2f}× |")
    rss = {n: results[n].put_peak_rss_mib for n in names}
    if not ng.put_peak_rss_mib:  # no PUT run
        return "\n".join(out)
    out.append(f"| peak RSS during the PUT (MiB) | {' | '.join(f'{rss[n]:.1f}' for n in names)} | "
               f"{rss['airlock'] / ng.put_peak_rss_mib:.2f}× | {rss['passthrough'] / ng.put_peak_rss_mib:.2f}× |")
    whole = {n: results[n].whole_run_peak_rss_mib for n in names}
    out.append(f"| peak RSS, last PUT and the rate rounds (MiB) | {' | '.join(f'{whole[n]:.1f}' for n in names)} | "
               f"{whole['airlock'] / whole['nginx']:.2f}× | {whole['passthrough'] / whole['nginx']:.2f}× |")
    return "\n".join(out)


def builds_table(results: dict[str, Result]) -> str:
    """With --baseline: each airlock build next to nginx, measured in the same run."""
    names = ("stub", "nginx", "passthrough", "airlock")
    rows = [("requests/s", "rps", "{:,.0f}"), ("p50 latency (ms)", "p50", "{:.3f}"),
            ("p99 latency (ms)", "p99", "{:.3f}"), ("CPU s per 10,000 requests", "cpu_per_10k", "{:.3f}")]
    out: list[str] = []
    builds = [n for n in results if n not in names] + ["airlock"]
    if len(builds) > 1:
        out += ["| measure | nginx | " + " | ".join(builds) + " | " + " | ".join(f"{b} / nginx" for b in builds)
                + f" | airlock / {builds[0]} |", "|---|" + "---:|" * (2 * len(builds) + 2)]
        for label, attr, fmt in rows[:4]:
            vals = {n: median(getattr(results[n], attr)) for n in ["nginx", *builds]}
            out.append(f"| {label} | {fmt.format(vals['nginx'])} | {' | '.join(fmt.format(vals[b]) for b in builds)} | "
                       + " | ".join(f"{vals[b] / vals['nginx']:.2f}×" for b in builds)
                       + f" | {vals['airlock'] / vals[builds[0]]:.2f}× |")
    return "\n".join(out)


def load(target: Target, airlock: Proc, config: Path, creds: Credentials, host: str, work: Path,
         seconds: int, connections: int, threads: int) -> dict[str, object]:
    """Mixed allowed and refused calls at full speed for `seconds`, RSS sampled every second."""
    reqs = []
    for path, method, query, body, svc, extra in [
        (f"/{BUCKET}/hello.txt", "GET", "", b"", "s3", {}),                       # allowed: 200
        (f"/{BUCKET}/other.txt", "GET", "", b"", "s3", {}),                       # allowed: 200
        (f"/{BUCKET}", "DELETE", "", b"", "s3", {}),                              # gated: 403 + link
        (f"/{BUCKET}", "PUT", "policy", b'{"Version":"2012-10-17"}', "s3", {}),   # denied by a rule: 403
        ("/", "POST", "", b"Action=ListUsers&Version=2010-05-08", "iam",
         {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}),  # allowed: 200
    ]:
        h = signed(creds, method, host, path, query=query, body=body, headers=extra, service=svc)
        reqs.append((method, path + (f"?{query}" if query else ""), h, body))
    # One bad signature: refused 403 SignatureDoesNotMatch.
    forged = dict(reqs[0][2])
    forged["Authorization"] = forged["Authorization"][:-4] + ("0000" if not forged["Authorization"].endswith("0000") else "1111")
    reqs.append(("GET", f"/{BUCKET}/hello.txt", forged, b""))
    script = wrk_script(reqs, work, "load")
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.wait(1.0):
            samples.append((time.monotonic() - t0, status_kib(airlock.pid, "VmRSS")))

    sampler = threading.Thread(target=sample, daemon=True)
    reset_peak(airlock.pid)
    sampler.start()
    before = cpu_seconds([airlock.pid])
    out = run_wrk(target.url, script, seconds, connections, threads)
    cpu = cpu_seconds([airlock.pid]) - before
    peak = status_kib(airlock.pid, "VmHWM")
    stop.set()
    sampler.join()
    r = parse_wrk(out)
    verify = subprocess.run([str(AIRLOCK or BUILD / "airlock"), "audit", "verify", "--config", str(config)],
                            capture_output=True, text=True, timeout=600)
    rss = [kib for _, kib in samples]
    return {"wrk": r, "cpu_s": cpu, "rss_kib": rss, "peak_rss_kib": peak, "audit_verify": (verify.returncode, verify.stdout.strip() or verify.stderr.strip()),
            "samples": samples}


# ---------------------------------------------------------------- the HTTPS_PROXY path


def curl_requests(url: str, headers: dict[str, str], count: int, ca: Path, proxy: str | None) -> subprocess.Popen[str]:
    """One curl process making `count` requests to `url` one after another on one kept-alive
    connection (through the proxy's tunnel when `proxy` is set)."""
    cmd = [need("curl"), "-sS", "--cacert", str(ca), "-w", "%{http_code} %{num_connects}\n"]
    cmd += ["--proxy", proxy] if proxy else ["--noproxy", "*", "--resolve", f"localhost:{url.split(':')[2].split('/')[0]}:127.0.0.1"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    for _ in range(count):
        cmd += ["-o", "/dev/null", url]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kept_alive(name: str, url: str, headers: dict[str, str], ca: Path, proxy: str | None, airlock: Proc,
               clients: int, per_client: int) -> dict[str, float]:
    """`clients` curl processes at once, each `per_client` requests on one connection: requests
    per second, and airlock's CPU per request."""
    before = cpu_seconds([airlock.pid])
    started = time.monotonic()
    procs = [curl_requests(url, headers, per_client, ca, proxy) for _ in range(clients)]
    outs = [p.communicate(timeout=600) for p in procs]
    wall = time.monotonic() - started
    cpu = cpu_seconds([airlock.pid]) - before
    lines = [line.split() for out, _ in outs for line in out.splitlines()]
    bad = [line for line in lines if line[0] != "200"]
    connects = sum(int(line[1]) for line in lines)
    if bad or len(lines) != clients * per_client:
        sys.exit(f"bench: {name}: {len(bad)} answers not 200 ({bad[:3]}), {len(lines)} lines; "
                 f"{[err for _, err in outs][:2]}")
    n = len(lines)
    return {"rps": n / wall, "cpu_ms_per_request": cpu / n * 1000, "requests": n, "connections": connects}


def first_connect(url_of: Callable[[str], str], headers_of: Callable[[str], dict[str, str]], names: list[str],
                  ca: Path, proxy: str, airlock: Proc) -> dict[str, float]:
    """One new connection per name, one after another: curl's time to the end of the TLS
    handshake inside the tunnel (CONNECT, then TLS with the name's leaf), and airlock's CPU."""
    times = []
    before = cpu_seconds([airlock.pid])
    for name in names:
        cmd = [need("curl"), "-sS", "--cacert", str(ca), "--proxy", proxy, "-o", "/dev/null",
               "-w", "%{http_code} %{time_appconnect}"]
        for k, v in headers_of(name).items():
            cmd += ["-H", f"{k}: {v}"]
        done = subprocess.run(cmd + [url_of(name)], capture_output=True, text=True, timeout=60)
        status, appconnect = done.stdout.split()
        if status != "200":
            sys.exit(f"bench: {url_of(name)} answered {status}: {done.stderr}")
        times.append(float(appconnect) * 1000)
    cpu = cpu_seconds([airlock.pid]) - before
    return {"p50_ms": median(times), "max_ms": max(times), "cpu_ms_per_connection": cpu / len(names) * 1000}


def tunnel_bench(args: argparse.Namespace) -> dict[str, object]:
    """The HTTPS_PROXY path next to the endpoint path, both through the same airlock to the stub,
    with the same client (curl: C, kept-alive, so the figures are airlock's and not a Python
    client's); then the cost of a first CONNECT to a name with no leaf yet."""
    work = Path(tempfile.mkdtemp(prefix="airlock-bench-tunnel-"))
    procs: list[Proc] = []
    try:
        stub = start_stub(work)
        procs.append(stub)
        airlock, creds, config = start_airlock(work, int(stub.match.group(1)), args.airlock_log, connect=True)
        procs.append(airlock)
        port, connect_port = int(airlock.match.group(1)), int(airlock.match.group(2))
        proxy = f"http://127.0.0.1:{connect_port}"
        ca = config.parent.parent / "certs" / "ca.pem"
        endpoint_host, aws_host = f"localhost:{port}", f"s3.{REGION}.amazonaws.com"
        paths = {
            "endpoint": (f"https://{endpoint_host}/{BUCKET}/hello.txt",
                         signed(creds, "GET", endpoint_host, f"/{BUCKET}/hello.txt"), None),
            "tunnel": (f"https://{aws_host}/{BUCKET}/hello.txt",
                       signed(creds, "GET", aws_host, f"/{BUCKET}/hello.txt"), proxy),
        }
        results: dict[str, object] = {}
        for name, (url, headers, via) in paths.items():  # warm-up
            kept_alive(name, url, headers, ca, via, airlock, 2, 50)
        for round_ in range(args.rounds):
            for name, (url, headers, via) in paths.items():
                r = kept_alive(name, url, headers, ca, via, airlock, args.tunnel_clients, args.tunnel_requests)
                results.setdefault(name, []).append(r)  # type: ignore[union-attr]
                print(f"round {round_ + 1} {name:8} {r['rps']:8,.0f} req/s  airlock CPU {r['cpu_ms_per_request']:.3f} ms/request  "
                      f"({r['requests']} requests on {r['connections']} connections)", flush=True)
        tag = os.urandom(3).hex()
        fresh = [f"bench-{tag}-{i}" for i in range(args.tunnel_names)]

        def vhost(bucket: str) -> str:
            return f"{bucket}.s3.{REGION}.amazonaws.com"

        new_leaf = first_connect(lambda b: f"https://{vhost(b)}/hello.txt",
                                 lambda b: signed(creds, "GET", vhost(b), "/hello.txt"), fresh, ca, proxy, airlock)
        cached = first_connect(lambda b: f"https://{vhost(b)}/hello.txt",
                               lambda b: signed(creds, "GET", vhost(b), "/hello.txt"), fresh, ca, proxy, airlock)
        results["first_connect_new_leaf"] = new_leaf
        results["first_connect_cached_leaf"] = cached
        print()
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; binaries: {BUILD}; curl × {args.tunnel_clients} processes "
              f"× {args.tunnel_requests} requests each, {args.rounds} rounds (medians)")
        print("| path | requests/s | airlock CPU per request |")
        print("|---|---:|---:|")
        for name in paths:
            rows: list[dict[str, float]] = results[name]  # type: ignore[assignment]
            print(f"| {name} | {median([r['rps'] for r in rows]):,.0f} | "
                  f"{median([r['cpu_ms_per_request'] for r in rows]):.3f} ms |")
        print(f"\nnew connection through the tunnel, to end of TLS ({args.tunnel_names} names): "
              f"new leaf p50 {new_leaf['p50_ms']:.1f} ms (max {new_leaf['max_ms']:.1f}), airlock CPU "
              f"{new_leaf['cpu_ms_per_connection']:.2f} ms per connection; cached leaf p50 {cached['p50_ms']:.1f} ms, "
              f"{cached['cpu_ms_per_connection']:.2f} ms")
        return results
    finally:
        stop_all(procs, work)

# ---------------------------------------------------------------- as the connections grow


def parse_h2load(out: str) -> dict[str, float]:
    """h2load's summary: requests/s, mean latency, and every request's status."""
    done = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    reqs = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if not (done and reqs and codes and mean):
        sys.exit(f"bench: h2load printed no summary:\n{out}")
    return {"rps": float(done.group(2)), "requests": int(reqs.group(3)), "failed": int(reqs.group(5)) + int(reqs.group(6)),
            "not_2xx": sum(int(x) for x in codes.groups()[1:]), "mean_ms": float(mean.group(1)) * UNITS[mean.group(2)]}


def run_h2load(target: Target, port: int, headers: dict[str, str], seconds: int, connections: int, streams: int,
               h1: bool) -> dict[str, float]:
    """`h2load` (nghttp2) on one connection set: HTTP/1.1 (`--h1`) or h2 with `streams` requests in
    flight per connection. The request is the one wrk sends, its host the one it was signed for."""
    cmd = [need("h2load"), "-t1", f"-c{connections}", f"-m{streams}", f"-D{seconds}", "--warm-up-time=1"]
    cmd += ["--h1"] if h1 else []
    for k, v in headers.items():
        if k.lower() != "host":
            cmd += ["-H", f"{k}: {v}"]
    cmd.append(f"https://{headers['Host']}/{BUCKET}/hello.txt")
    before = cpu_by_pid(target.pids())
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    cpu = cpu_since(before, target.pids())
    r = parse_h2load(done.stdout)
    if done.returncode != 0 or r["failed"] or r["not_2xx"] or not r["requests"]:
        sys.exit(f"bench: h2load on {target.name}: exit {done.returncode}\n{done.stdout}{done.stderr}")
    r["cpu_per_10k"] = cpu / r["requests"] * 10_000
    return r


def scaling_bench(args: argparse.Namespace) -> dict[str, object]:
    """airlock and nginx at 1, 32, 256 and 1,024 connections (requests/s, p99, memory per
    connection), each level on freshly started servers; then HTTP/1.1 next to h2."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))  # wrk and the servers inherit it
    levels = [int(c) for c in args.scaling.split(",")]
    work = Path(tempfile.mkdtemp(prefix="airlock-bench-scaling-"))
    procs: list[Proc] = []
    report: dict[str, object] = {"levels": {}, "protocols": {}}

    def servers(tag: str) -> tuple[dict[str, Target], dict[str, int], dict[str, Path], dict[str, dict[str, str]]]:
        stop_all(procs)
        stub = start_stub(work)
        procs.append(stub)
        stub_port = int(stub.match.group(1))
        airlock, creds, config = start_airlock(
            work, stub_port, args.airlock_log, name=f"airlock-{tag}",
            edit=lambda t: re.sub(r"(?m)^max_connections = .*$", f"max_connections = {4 * max(levels)}", t))
        procs.append(airlock)
        certs = config.parent.parent / "certs"
        nginx, nginx_port = start_nginx(work, stub_port, certs)
        procs.append(nginx)
        ports = {"nginx": nginx_port, "airlock": int(airlock.match.group(1))}
        targets = {
            "nginx": Target("nginx", f"https://127.0.0.1:{nginx_port}", lambda: nginx_pids(nginx), lambda: children(nginx.pid)),
            "airlock": Target("airlock", f"https://127.0.0.1:{ports['airlock']}", lambda: [airlock.pid],
                              lambda: [airlock.pid]),
        }
        heads = {n: signed(creds, "GET", f"localhost:{port}", f"/{BUCKET}/hello.txt") for n, port in ports.items()}
        scripts = {n: wrk_script([("GET", f"/{BUCKET}/hello.txt", heads[n], b"")], work, f"{n}-{tag}") for n in ports}
        return targets, ports, scripts, heads

    try:
        for c in levels:
            targets, _, scripts, _ = servers(f"c{c}")
            results = {n: Result(n) for n in targets}
            idle, peak, timeouts = {}, {}, {n: 0 for n in targets}
            for n, t in targets.items():  # the first calls' one-time work (model, keys) before the idle figure
                run_wrk(t.url + f"/{BUCKET}/hello.txt", scripts[n], 2, 1, 1)
                time.sleep(0.5)
                idle[n] = sum(status_kib(p, "VmRSS") for p in t.rss_pid())
                peak[n] = idle[n]
            for round_ in range(args.rounds):
                for n, t in targets.items():
                    for pid in t.rss_pid():
                        reset_peak(pid)
                    r = rate(t, scripts[n], args.duration, c, args.threads, results[n], timeout=10)
                    timeouts[n] += r["timeouts"]
                    peak[n] = max(peak[n], sum(status_kib(p, "VmHWM") for p in t.rss_pid()))
                    print(f"c={c:<5} round {round_ + 1} {n:8} {results[n].rps[-1]:>9,.0f} req/s  p50 {results[n].p50[-1]:.3f} ms  "
                          f"p99 {results[n].p99[-1]:.3f} ms  cpu/10k {results[n].cpu_per_10k[-1]:.3f} s  "
                          f"peak RSS {peak[n] / 1024:.1f} MiB (idle {idle[n] / 1024:.1f}), wrk timeouts {timeouts[n]}",
                          flush=True)
            report["levels"][c] = {n: {**results[n].__dict__, "idle_rss_kib": idle[n], "peak_rss_kib": peak[n],  # type: ignore[index]
                                      "kib_per_connection": (peak[n] - idle[n]) / c, "wrk_timeouts": timeouts[n]}
                                  for n in targets}
        if args.protocols:
            targets, ports, _, heads = servers("protocols")
            ways = [("HTTP/1.1", True, 1), ("h2, 1 stream per connection", False, 1),
                    (f"h2, {args.h2_streams} streams per connection", False, args.h2_streams)]
            rows: dict[str, dict[str, list[dict[str, float]]]] = {}
            for n, t in targets.items():  # warm-up
                run_h2load(t, ports[n], heads[n], 2, 4, 1, True)
            for round_ in range(args.rounds):
                for label, h1, streams in ways:
                    for n, t in targets.items():
                        r = run_h2load(t, ports[n], heads[n], args.duration, args.connections, streams, h1)
                        rows.setdefault(label, {}).setdefault(n, []).append(r)
                        print(f"{label:32} round {round_ + 1} {n:8} {r['rps']:>9,.0f} req/s  mean {r['mean_ms']:.3f} ms  "
                              f"cpu/10k {r['cpu_per_10k']:.3f} s", flush=True)
            report["protocols"] = rows
        print()
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; wrk -t{args.threads} "
              f"-d{args.duration:g}s × {args.rounds} rounds (medians), fresh servers per level; nginx {nginx_version()}")
        print("| connections | nginx req/s | airlock req/s | airlock / nginx | nginx p99 (ms) | airlock p99 (ms) | "
              "airlock CPU s / 10k (× nginx) | nginx KiB per connection | airlock KiB per connection | airlock peak RSS (MiB) | "
              "wrk timeouts (10 s), nginx / airlock |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c, by in report["levels"].items():  # type: ignore[union-attr]
            ng, al = by["nginx"], by["airlock"]
            print(f"| {c:,} | {median(ng['rps']):,.0f} | {median(al['rps']):,.0f} | {median(al['rps']) / median(ng['rps']):.2f}× | "
                  f"{median(ng['p99']):.2f} | {median(al['p99']):.2f} | {median(al['cpu_per_10k']):.3f} "
                  f"({median(al['cpu_per_10k']) / median(ng['cpu_per_10k']):.2f}×) | {ng['kib_per_connection']:.1f} | "
                  f"{al['kib_per_connection']:.1f} | {al['peak_rss_kib'] / 1024:.1f} | {ng['wrk_timeouts']} / {al['wrk_timeouts']} |")
        if report["protocols"]:
            print(f"\nh2load -t1 -c{args.connections} -D{args.duration}, {args.rounds} rounds (medians)")
            print("| protocol | nginx req/s | airlock req/s | airlock / nginx | airlock mean latency (ms) | "
                  "airlock CPU s / 10k (× nginx) |")
            print("|---|---:|---:|---:|---:|---:|")
            for label, by in report["protocols"].items():  # type: ignore[union-attr]
                ng, al = by["nginx"], by["airlock"]
                rn, ra = median([r["rps"] for r in ng]), median([r["rps"] for r in al])
                cn, ca = median([r["cpu_per_10k"] for r in ng]), median([r["cpu_per_10k"] for r in al])
                print(f"| {label} | {rn:,.0f} | {ra:,.0f} | {ra / rn:.2f}× | {median([r['mean_ms'] for r in al]):.2f} | "
                      f"{ca:.3f} ({ca / cn:.2f}×) |")
        return report
    finally:
        stop_all(procs, work)


# ---------------------------------------------------------------- the state stores


GATED = f"/{BUCKET}/gated.txt"  # s3:DeleteObject: gated by the built-in rules, needs a receipt


def postgres_bin() -> Path:
    """PostgreSQL's server binaries (as scripts/with-postgres finds them)."""
    dirs = [Path(shutil.which("initdb")).parent] if shutil.which("initdb") else []
    dirs += [Path("/usr/local/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
    for d in dirs:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    sys.exit("bench: --stores needs PostgreSQL's initdb and pg_ctl (Debian: apt-get install postgresql)")


class Postgres:
    """A private cluster for the run (as scripts/with-postgres makes one): initdb in a
    temporary directory, pg_ctl on a free loopback port (as the `postgres` OS user when run as
    root), with its durability settings as shipped (fsync on, synchronous_commit on, full page
    writes); stopped and removed by `stop`."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="airlock-bench-pg-"))
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_pg:
            shutil.chown(self.dir, "postgres", "postgres")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.data = self.dir / "data"
        self._run("initdb", "-D", str(self.data), "-U", "airlock", "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-instructions")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "postgres.log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on "
                  f"-c synchronous_commit=on -c max_connections=100", "start")

    def _run(self, tool: str, *args: str) -> str:
        done = subprocess.run([*self.as_pg, str(self.bin / tool), *args], capture_output=True, text=True, cwd="/",
                              timeout=120)
        if done.returncode != 0:
            sys.exit(f"bench: {tool} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run([need("psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql,
                               self.url(database)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            sys.exit(f"bench: psql: {done.stderr}")
        return done.stdout.strip()

    def url(self, database: str) -> str:
        return f"postgres://airlock@127.0.0.1:{self.port}/{database}"

    def pids(self) -> list[int]:
        """The postmaster and every process it started (backends, WAL writer, checkpointer)."""
        master = int((self.data / "postmaster.pid").read_text().split()[0])
        return [master, *children(master)]

    def stop(self) -> None:
        subprocess.run([*self.as_pg, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                       capture_output=True, cwd="/", timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


def curl_status(method: str, host: str, path: str, headers: dict[str, str], ca: Path) -> str:
    """One request through airlock with curl: its status and body."""
    headers = {k: v for k, v in headers.items() if k != "Host"}
    cmd = [need("curl"), "-sS", "-X", method, "--resolve", f"{host}:127.0.0.1", "--cacert", str(ca),
           "-w", "\n%{http_code}"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    done = subprocess.run(cmd + [f"https://{host}{path}"], capture_output=True, text=True, timeout=60)
    return done.stdout.rsplit("\n", 1)[-1] + " " + done.stdout.rsplit("\n", 1)[0]


def grant_receipt(binary: str, config: Path, key: Path, creds: Credentials, port: int) -> None:
    """The gated call refused (an approval opened), approved with `airlock approve` and the
    approver's key, then let through: from here on the receipt covers it (many uses)."""
    host, ca = f"localhost:{port}", config.parent.parent / "certs" / "ca.pem"
    deadline = time.monotonic() + 30
    while True:  # the PostgreSQL store refuses gated calls (503) until it has reached the database
        first = curl_status("DELETE", host, GATED, signed(creds, "DELETE", host, GATED), ca)
        if not first.startswith("503") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not first.startswith("403"):
        sys.exit(f"bench: the gated call was not refused before its approval: {first}")
    listed = json.loads(subprocess.run([binary, "approvals", "--json", "--config", str(config)], check=True,
                                       capture_output=True, text=True).stdout)
    [approval] = [a["id"] for a in listed if a["status"] == "pending"]
    subprocess.run([binary, "approve", approval, "--key", str(key), "--insecure-plaintext-key", "--config",
                    str(config)], check=True, capture_output=True, text=True)
    after = curl_status("DELETE", host, GATED, signed(creds, "DELETE", host, GATED), ca)
    if not after.startswith("200"):
        sys.exit(f"bench: the approved gated call did not go through: {after}")


def stores_bench(args: argparse.Namespace) -> dict[str, object]:
    """airlock with the file store next to airlock with the PostgreSQL store (a cluster of
    the run's own), same run, interleaved rounds: allowed calls (one audit record each) and
    approved gated calls (a receipt of many uses: a ledger use and a durable record each)."""
    os.environ.pop("AIRLOCK_DATABASE_URL", None)  # each airlock's store is its config's
    binary = str(AIRLOCK or BUILD / "airlock")
    work = Path(tempfile.mkdtemp(prefix="airlock-bench-stores-"))
    procs: list[Proc] = []
    pg: Postgres | None = None
    try:
        stub = start_stub(work)
        procs.append(stub)
        stub_port = int(stub.match.group(1))
        pg = Postgres()
        settings = {"postgres": "on", "postgres-async": "off"}
        names = ["files"] + [n for n, v in settings.items() if v in args.sync_commit.split(",")]
        contenders: dict[str, tuple[Proc, Credentials, Path]] = {}
        for name in names:
            keyfile = work / f"{name}-approver.key"
            database = "bench_" + name.replace("-", "_")
            if name != "files":
                pg.psql(f"CREATE DATABASE {database}")
                pg.psql(f"ALTER DATABASE {database} SET synchronous_commit = {settings[name]}")

            def edit(text: str, name: str = name, keyfile: Path = keyfile, database: str = database) -> str:
                for pattern, value in {r"(?m)^uses = .*$": "uses = 1000000000",
                                       r"(?m)^receipt_ttl_secs = .*$": "receipt_ttl_secs = 3600"}.items():
                    text, n = re.subn(pattern, value, text)
                    if n != 1:
                        sys.exit(f"bench: the config has no line matching {pattern}")
                if name != "files":
                    text = text.replace("[state]\n", f'[state]\ndatabase_url = "{pg.url(database)}"\n', 1)
                key = subprocess.run([binary, "keygen", "--out", str(keyfile), "--name", "bench",
                                      "--insecure-plaintext-key"], check=True, capture_output=True, text=True).stdout
                return text + "\n" + "".join(line + "\n" for line in key.splitlines() if not line.lstrip().startswith("#"))

            def migrate(config: Path, name: str = name) -> None:
                if name != "files":
                    subprocess.run([binary, "db", "migrate", "--config", str(config)], check=True, capture_output=True)

            proc, creds, config = start_airlock(work, stub_port, args.airlock_log, name=name, edit=edit,
                                                before_agent=migrate)
            procs.append(proc)
            contenders[name] = (proc, creds, config)
            grant_receipt(binary, config, keyfile, creds, int(proc.match.group(1)))

        def pids_of(name: str) -> Callable[[], list[int]]:
            proc = contenders[name][0]
            # The database's CPU counts for the PostgreSQL store: all of the cluster's processes.
            return (lambda: [proc.pid]) if name == "files" else (lambda: [proc.pid, *pg.pids()])

        kinds = {"allowed": ("GET", f"/{BUCKET}/hello.txt"), "gated": ("DELETE", GATED)}
        results = {(name, kind): Result(f"{name} {kind}") for name in names for kind in kinds}
        db_share: dict[tuple[str, str], list[float]] = {key: [] for key in results}

        def one(name: str, kind: str, seconds: float, result: Result | None) -> None:
            proc, creds, _ = contenders[name]
            port = int(proc.match.group(1))
            method, path = kinds[kind]
            # Signed afresh for each run: a signature is good for 15 minutes.
            script = wrk_script([(method, path, signed(creds, method, f"localhost:{port}", path), b"")], work,
                                f"{name}-{kind}")
            target = Target(name, f"https://127.0.0.1:{port}", pids_of(name), pids_of(name))
            if result is None:
                run_wrk(target.url + path, script, seconds, args.connections, args.threads)
                return
            db = pg.pids if name != "files" else list
            profiler = None
            if args.perf and name == args.perf_of and kind == "allowed" and not result.rps:
                # `--perf` with `--perf-of NAME`: airlock's process of that contender, first allowed round.
                profiler = subprocess.Popen(["perf", "record", "-g", "-o", str(args.perf), "-p", str(proc.pid), "--",
                                             "sleep", str(max(1, seconds - 2))],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            before, db_before = cpu_by_pid(target.pids()), cpu_by_pid(db())
            rate(target, script, seconds, args.connections, args.threads, result, path)
            if profiler:
                profiler.wait(timeout=60)
            total, db_cpu = cpu_since(before, target.pids()), cpu_since(db_before, db())
            db_share[(name, kind)].append(db_cpu / total if total else 0.0)

        print(f"warming up ({len(names)} × 2 × 3 s)", flush=True)
        for name in names:
            for kind in kinds:
                one(name, kind, 3, None)
        for round_ in range(args.rounds):
            for kind in kinds:
                for name in names:  # interleaved, so drift hits every store alike
                    r = results[(name, kind)]
                    one(name, kind, args.duration, r)
                    print(f"round {round_ + 1} {name:14} {kind:7} {r.rps[-1]:>8,.0f} req/s  p50 {r.p50[-1]:.3f} ms  "
                          f"p99 {r.p99[-1]:.3f} ms  CPU {r.cpu_per_10k[-1] / 10:.3f} ms/request", flush=True)
        verified = {}
        for name in names:
            done = subprocess.run([binary, "audit", "verify", "--config", str(contenders[name][2])],
                                  capture_output=True, text=True, timeout=600)
            verified[name] = (done.returncode, (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:])
        print()
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; wrk -t{args.threads} "
              f"-c{args.connections} -d{args.duration:g}s × {args.rounds} rounds (medians); PostgreSQL "
              f"{pg.psql('SHOW server_version')}, fsync {pg.psql('SHOW fsync')}, wal_sync_method "
              f"{pg.psql('SHOW wal_sync_method')}")
        print(stores_table(results, names, db_share))
        for name in names[1:]:
            database = "bench_" + name.replace("-", "_")
            rows = pg.psql("SELECT record::jsonb->>'event', count(*), count(DISTINCT xmin::text) FROM airlock_audit "
                           "GROUP BY 1 ORDER BY 2 DESC", database)
            grouped = ", ".join(f"{e} {int(n):,} records in {int(t):,} transactions ({int(n) / int(t):.1f} each)"
                                for e, n, t in (line.split("|") for line in rows.splitlines()))
            print(f"group commit ({name}, whole run): {grouped}")
        for name, (code, line) in verified.items():
            print(f"audit verify ({name}): exit {code}: {' '.join(line)}")
        return {"results": {f"{n} {k}": r.__dict__ for (n, k), r in results.items()}, "audit_verify": verified}
    finally:
        stop_all(procs)
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def stores_table(results: dict[tuple[str, str], Result], names: list[str],
                 db_share: dict[tuple[str, str], list[float]]) -> str:
    cols = " | ".join(names)
    out = [f"| measure | {cols} | " + " | ".join(f"{n} / files" for n in names[1:]) + " |",
           "|---|" + "---:|" * (2 * len(names) - 1)]
    rows = [("requests/s", "rps", "{:,.0f}"), ("p50 latency (ms)", "p50", "{:.3f}"),
            ("p99 latency (ms)", "p99", "{:.3f}"), ("CPU ms per request", "cpu_per_10k", "{:.3f}")]
    for kind, what in (("allowed", "allowed calls (one audit record each)"),
                       ("gated", "approved gated calls (a receipt use each)")):
        for label, attr, fmt in rows:
            vals = [median(getattr(results[(n, kind)], attr)) / (10 if attr == "cpu_per_10k" else 1) for n in names]
            out.append(f"| {what}: {label} | " + " | ".join(fmt.format(v) for v in vals) + " | "
                       + " | ".join(f"{v / vals[0]:.2f}×" for v in vals[1:]) + " |")
        shares = [median(db_share[(n, kind)]) * 100 for n in names]
        out.append(f"| {what}: share of that CPU in PostgreSQL | —"
                   + "".join(f" | {v:.0f} %" for v in shares[1:]) + " |" + " |" * (len(names) - 1))
    return "\n".join(out)



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="runs per contender; medians reported (default 3)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--put-mib", type=int, default=512, help="size of the PUT in MiB (default 512; 0 skips it)")
    ap.add_argument("--load", type=int, default=0, help="then run the mixed load test for this many seconds")
    ap.add_argument("--airlock-log", default="warn", help="AIRLOCK_LOG for airlock (default warn: no line per call)")
    ap.add_argument("--skip-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--tunnel", action="store_true", help="only the HTTPS_PROXY path next to the endpoint path")
    ap.add_argument("--tunnel-clients", type=int, default=4, help="--tunnel: curl processes at once (default 4)")
    ap.add_argument("--tunnel-requests", type=int, default=500, help="--tunnel: requests per curl (default 500)")
    ap.add_argument("--tunnel-names", type=int, default=30, help="--tunnel: new names for the first-CONNECT cost")
    ap.add_argument("--baseline", action="append", default=[], metavar="NAME=BINARY",
                    help="another airlock binary (e.g. main's release build, copied aside) run next to this tree's, "
                    "interleaved: the before/after of a change in one run (repeatable)")
    ap.add_argument("--binary", type=Path, help="the airlock binary to run (default: the build's)")
    ap.add_argument("--only", help="comma-separated contenders to run (stub,nginx,passthrough,airlock and the "
                    "--baseline names)")
    ap.add_argument("--perf", type=Path, help="record a `perf record -g` profile during the first round here")
    ap.add_argument("--perf-of", default="airlock", help="--perf: the contender profiled (default airlock)")
    ap.add_argument("--perf-dwarf", action="store_true", help="--perf: unwind with DWARF (whole call chains in a "
                    "build without frame pointers; heavier)")
    ap.add_argument("--stores", action="store_true", help="only: airlock with the file store next to airlock "
                    "with the PostgreSQL store (a private cluster of the run's own), allowed and approved gated calls")
    ap.add_argument("--sync-commit", default="on,off", help="--stores: the PostgreSQL contenders by the database's "
                    "synchronous_commit (default on,off: both)")
    ap.add_argument("--scaling", nargs="?", const="1,32,256,1024", help="only: nginx and airlock at each of these "
                    "connection counts (default 1,32,256,1024), fresh servers per count: requests/s, p99, memory per "
                    "connection")
    ap.add_argument("--protocols", action="store_true", help="--scaling: then HTTP/1.1 next to h2 with h2load "
                    "(Debian: nghttp2-client) at --connections")
    ap.add_argument("--h2-streams", type=int, default=8, help="--protocols: h2 requests in flight per connection "
                    "in the third row (default 8)")
    ap.add_argument("--profile", choices=["release", "debug"], default="release",
                    help="which build to run (debug: a quick look only, not figures to publish)")
    args = ap.parse_args()
    global BUILD, AIRLOCK
    BUILD = ROOT / "target" / args.profile
    AIRLOCK = args.binary
    for tool in ("curl",) if args.tunnel else ("wrk", "curl", "psql") if args.stores else ("wrk", "nginx", "curl"):
        need(tool)
    if args.protocols:
        need("h2load")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--bin", "airlock", "--example", "bench-stub", "--example", "bench-passthrough"]
                       + (["--release"] if args.profile == "release" else []),
                       cwd=ROOT, check=True)
    if args.tunnel or args.stores or args.scaling:
        report = tunnel_bench(args) if args.tunnel else stores_bench(args) if args.stores else scaling_bench(args)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
        return

    work = Path(tempfile.mkdtemp(prefix="airlock-bench-"))
    procs: list[Proc] = []
    try:
        stub = start_stub(work)
        procs.append(stub)
        stub_port = int(stub.match.group(1))
        airlock, creds, config = start_airlock(work, stub_port, args.airlock_log)
        procs.append(airlock)
        airlock_port = int(airlock.match.group(1))
        certs = config.parent.parent / "certs"
        nginx, nginx_port = start_nginx(work, stub_port, certs)
        procs.append(nginx)
        floor = start_passthrough(work, stub_port, certs)
        procs.append(floor)
        floor_port = int(floor.match.group(1))
        others: dict[str, tuple[Proc, Credentials, Path]] = {}
        for spec in args.baseline:
            name, _, binary = spec.rpartition("=")
            name = name or "baseline"
            proc, other_creds, other_config = start_airlock(work, stub_port, args.airlock_log, binary=Path(binary),
                                                            name=name)
            procs.append(proc)
            others[name] = (proc, other_creds, other_config.parent.parent / "certs" / "ca.pem")

        targets = {
            "stub": Target("stub", f"http://127.0.0.1:{stub_port}", lambda: [stub.pid], lambda: [stub.pid]),
            "nginx": Target("nginx", f"https://127.0.0.1:{nginx_port}", lambda: nginx_pids(nginx),
                            lambda: children(nginx.pid)),
            "passthrough": Target("passthrough", f"https://127.0.0.1:{floor_port}", lambda: [floor.pid],
                                  lambda: [floor.pid]),
            "airlock": Target("airlock", f"https://127.0.0.1:{airlock_port}", lambda: [airlock.pid],
                              lambda: [airlock.pid]),
        }
        ports = {"stub": stub_port, "nginx": nginx_port, "passthrough": floor_port, "airlock": airlock_port}
        if others:
            ports = {k: v for k, v in ports.items() if k != "airlock"}
            mine = targets.pop("airlock")
            for name, (proc, _, _) in others.items():
                ports[name] = int(proc.match.group(1))
                targets[name] = Target(name, f"https://127.0.0.1:{ports[name]}", lambda p=proc: [p.pid],
                                       lambda p=proc: [p.pid])
            ports["airlock"], targets["airlock"] = airlock_port, mine
        if args.only:
            keep = args.only.split(",")
            targets = {k: v for k, v in targets.items() if k in keep}
            ports = {k: v for k, v in ports.items() if k in keep}
        scripts = {}
        for name, port in ports.items():
            h = signed(others[name][1] if name in others else creds, "GET", f"localhost:{port}", f"/{BUCKET}/hello.txt")
            scripts[name] = wrk_script([("GET", f"/{BUCKET}/hello.txt", h, b"")], work, name)
        results = {name: Result(name) for name in targets}
        # The PUT first, on freshly started servers: its peak RSS is the upload's, not what
        # the request-rate rounds' 32 connections left in the allocator (reported apart).
        if args.put_mib:
            data = work / "put.bin"
            with open(data, "wb") as f:
                for _ in range(args.put_mib):
                    f.write(os.urandom(1 << 20))
            ca = certs / "ca.pem"
            for round_ in range(args.rounds):
                for name, t in targets.items():
                    port = ports[name]
                    h = signed(others[name][1] if name in others else creds, "PUT", f"localhost:{port}", f"/{BUCKET}/big.bin", unsigned_payload=True,
                               headers={"Content-Length": str(data.stat().st_size)})
                    h.pop("Content-Length", None)
                    put(t, h, data, others[name][2] if name in others else ca, results[name])
                    print(f"round {round_ + 1} {name:8} PUT {results[name].put_mib_s[-1]:7.0f} MiB/s  "
                          f"cpu {results[name].put_cpu_s[-1]:.2f} s  peak RSS {results[name].put_peak_rss_mib:.1f} MiB",
                          flush=True)
            data.unlink()

        print(f"warming up ({len(targets)} × 3 s)", flush=True)
        for name, t in targets.items():
            run_wrk(t.url + f"/{BUCKET}/hello.txt", scripts[name], 3, args.connections, args.threads)
        for round_ in range(args.rounds):
            for name, t in targets.items():  # interleaved, so drift hits everyone alike
                profiler = None
                if args.perf and name == args.perf_of and round_ == 0:
                    graph = ["--call-graph", "dwarf,16384", "-F", "499"] if args.perf_dwarf else ["-g"]
                    profiler = subprocess.Popen(["perf", "record", *graph, "-o", str(args.perf), "-p", str(t.pids()[0]),
                                                 "--", "sleep", str(max(1, args.duration - 2))],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                rate(t, scripts[name], args.duration, args.connections, args.threads, results[name])
                if profiler:
                    profiler.wait(timeout=60)
                print(f"round {round_ + 1} {name:8} {results[name].rps[-1]:>9,.0f} req/s  "
                      f"p50 {results[name].p50[-1]:.3f} ms  p99 {results[name].p99[-1]:.3f} ms  "
                      f"cpu/10k {results[name].cpu_per_10k[-1]:.3f} s", flush=True)
        for name, t in targets.items():
            results[name].whole_run_peak_rss_mib = sum(status_kib(p, "VmHWM") for p in t.rss_pid()) / 1024

        print()
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; wrk -t{args.threads} "
              f"-c{args.connections} -d{args.duration:g}s × {args.rounds} rounds (medians); nginx {nginx_version()}")
        print(table(results, args.put_mib))
        if args.baseline:
            print()
            print(builds_table(results))
        report: dict[str, object] = {name: r.__dict__ for name, r in results.items()}

        if args.load:
            print(f"\nload: {args.load} s of mixed calls through airlock", flush=True)
            lr = load(targets["airlock"], airlock, config, creds, f"localhost:{airlock_port}", work, args.load,
                      args.connections, args.threads)
            w = lr["wrk"]
            rss = lr["rss_kib"]
            print(f"requests {w['requests']:,} ({w['rps']:,.0f}/s), statuses {w['statuses']}, "
                  f"socket errors {w['socket_errors']}, p50 {w['p50_ms']:.3f} ms, p99 {w['p99_ms']:.3f} ms")
            if rss:
                tenth = max(1, len(rss) // 10)
                print(f"RSS MiB: first {rss[0] / 1024:.1f}, after 10% {rss[tenth - 1] / 1024:.1f}, "
                      f"max {max(rss) / 1024:.1f}, last {rss[-1] / 1024:.1f}; peak (VmHWM, reset before the "
                      f"load) {lr['peak_rss_kib'] / 1024:.1f}")
            print(f"airlock CPU {lr['cpu_s']:.1f} s; audit verify: exit {lr['audit_verify'][0]}: {lr['audit_verify'][1]}")
            report["load"] = lr
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
    finally:
        stop_all(procs, work)


def nginx_version() -> str:
    done = subprocess.run([need("nginx"), "-v"], capture_output=True, text=True)
    return (done.stderr or done.stdout).strip().split("/")[-1]


if __name__ == "__main__":
    main()
