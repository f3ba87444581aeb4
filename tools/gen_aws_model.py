#!/usr/bin/env python3
# Regenerate with:  python3 tools/gen_aws_model.py
#
# Builds data/aws-model.json, the compact AWS service/endpoint model that the
# airlock binary embeds (include_str!) and parses with serde at start-up.
#
# Input: the AWS service models shipped inside the installed `botocore`
# package (Apache-2.0):
#   botocore/data/<service>/<newest version>/service-2.json[.gz]
#   botocore/data/endpoints.json   (partitions, regions, legacy endpoint data)
#   botocore/data/partitions.json  (fills gaps endpoints.json lacks)
# Only the raw service-2.json files are read; the client-side
# service-2.sdk-extras.json overlays are deliberately not merged.
#
# Per operation: method, uri, labels, query_literals, required_query, resources,
# body_member; and, left out when empty/false/null (read with #[serde(default)]):
#   optional_resources  naming members used when the operation has no required one
#   required_headers    lower-case names of required header members (x-amz-copy-source)
#   deprecated          the operation is deprecated (an alias loses to its replacement)
#   host_prefix         endpoint.hostPrefix ({AccountId}. for S3 Control)
#   query_members       REST: query key -> member ("*" for a map member taking all keys)
#   list_query          REST: query keys whose member is a list (they may repeat)
#   header_members      REST: lower-case header name -> member
#   body_members        REST: top-level body member wire name -> member (no payload)
#   payload_type        shape type of the payload member (structure, blob, string, ...)
#   static_context      static context params set true (UseS3ExpressControlEndpoint)
#
# Requirements: Python 3.11+, standard library, and botocore installed.
# Output is deterministic for a given botocore version (sorted keys, compact
# separators, one service per line).

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys

import botocore

DEFAULT_HOSTNAME = "{service}.{region}.{dnsSuffix}"

# Top-level input members with these exact names identify the resource acted
# on (when required), in addition to the name-suffix rule below.
RESOURCE_EXACT = {
    "Bucket",
    "Key",
    "TableName",
    "FunctionName",
    "QueueUrl",
    "TopicArn",
    "ResourceArn",
}
RESOURCE_SUFFIXES = (
    "Identifier",
    "Id",
    "Ids",
    "Name",
    "Names",
    "Arn",
    "ARN",
    "Arns",
    # Extension beyond the brief: same words, other spelling (e.g. drs "jobID").
    "ID",
    "IDs",
)
# Extension beyond the brief: lowerCamel models (rest-json) name the member
# plainly "id" / "name" / "arn"; these are the degenerate case of the suffixes.
RESOURCE_WHOLE_WORDS = {"id", "ids", "identifier", "name", "names", "arn", "arns"}

LABEL_RE = re.compile(r"\{([^{}]+)\}")


# --------------------------------------------------------------------------
# Loading


def data_dir() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(botocore.__file__)), "data")


def load_json(path_without_gz: str):
    """Load a botocore data file, which may be stored plain or gzip'd."""
    if os.path.exists(path_without_gz):
        with open(path_without_gz, "rb") as fh:
            return json.load(fh)
    gz = path_without_gz + ".gz"
    if os.path.exists(gz):
        with gzip.open(gz, "rb") as fh:
            return json.load(fh)
    raise FileNotFoundError(path_without_gz)


def has_service_model(version_dir: str) -> bool:
    base = os.path.join(version_dir, "service-2.json")
    return os.path.exists(base) or os.path.exists(base + ".gz")


def newest_service_models(root: str):
    """Yield (service_dir_name, version, path) for the newest model of each service."""
    for name in sorted(os.listdir(root)):
        sdir = os.path.join(root, name)
        if not os.path.isdir(sdir):
            continue
        versions = sorted(
            v
            for v in os.listdir(sdir)
            if os.path.isdir(os.path.join(sdir, v)) and has_service_model(os.path.join(sdir, v))
        )
        if not versions:
            continue
        newest = versions[-1]  # API versions are ISO dates: lexical order works
        yield name, newest, os.path.join(sdir, newest, "service-2.json"), versions


# --------------------------------------------------------------------------
# Partitions / endpoints


def build_partitions(endpoints: dict, partitions_json: dict, notes: list):
    """Return (partition list for output, lookup dict keyed by partition id)."""
    extra = {p["id"]: p for p in partitions_json.get("partitions", [])}
    out = []
    info = {}
    seen = set()
    for p in endpoints["partitions"]:
        pid = p["partition"]
        seen.add(pid)
        regex = p.get("regionRegex") or extra.get(pid, {}).get("regionRegex", "")
        dns = p.get("dnsSuffix") or extra.get(pid, {}).get("outputs", {}).get("dnsSuffix", "")
        regions = list(p.get("regions", {}).keys())
        # partitions.json may know regions endpoints.json doesn't list yet; it
        # also lists pseudo-regions such as "aws-global", which we skip by
        # requiring a match against the partition's region regex.
        rx = re.compile(regex) if regex else None
        for r in extra.get(pid, {}).get("regions", {}):
            if r not in regions and rx is not None and rx.match(r):
                regions.append(r)
                notes.append(f"partition {pid}: region {r} only in partitions.json")
        regions.sort()
        dual = extra.get(pid, {}).get("outputs", {}).get("dualStackDnsSuffix", "")
        out.append({"id": pid, "dns_suffix": dns, "dual_stack_dns_suffix": dual, "region_regex": regex,
                    "regions": regions})
        info[pid] = {
            "raw": p,
            "dns": dns,
            "rx": rx,
            "default_hostname": p.get("defaults", {}).get("hostname", DEFAULT_HOSTNAME),
            "implicit_global_region": extra.get(pid, {}).get("outputs", {}).get("implicitGlobalRegion"),
        }
    for pid, p in sorted(extra.items()):
        if pid in seen:
            continue
        outputs = p.get("outputs", {})
        regex = p.get("regionRegex", "")
        rx = re.compile(regex) if regex else None
        regions = sorted(r for r in p.get("regions", {}) if rx is None or rx.match(r))
        notes.append(f"partition {pid}: only in partitions.json")
        out.append(
            {"id": pid, "dns_suffix": outputs.get("dnsSuffix", ""),
             "dual_stack_dns_suffix": outputs.get("dualStackDnsSuffix", ""), "region_regex": regex,
             "regions": regions}
        )
        info[pid] = {
            "raw": {"services": {}},
            "dns": outputs.get("dnsSuffix", ""),
            "rx": rx,
            "default_hostname": DEFAULT_HOSTNAME,
            "implicit_global_region": outputs.get("implicitGlobalRegion"),
        }
    return out, info


def expand(template: str, service: str, region: str, dns: str) -> str:
    return template.replace("{service}", service).replace("{region}", region).replace("{dnsSuffix}", dns)


def templatize(hostname: str, service: str, region: str, dns: str):
    """Turn a concrete hostname back into a template, or None if it doesn't fit."""
    h = hostname
    if region not in h:
        return None
    h = h.replace(region, "{region}")
    if dns and h.endswith("." + dns):
        h = h[: -len(dns)] + "{dnsSuffix}"
    if h.startswith(service + "."):
        h = "{service}" + h[len(service):]
    return h


def endpoint_info(prefix: str, pinfo: dict, notes: list, sname: str):
    """Compute the "global" and "hostname" entries for one service."""
    glob = {}
    hostname = {}
    for pid, pi in pinfo.items():
        sd = pi["raw"].get("services", {}).get(prefix)
        template = pi["default_hostname"]
        if sd is None:
            if template != DEFAULT_HOSTNAME:
                hostname[pid] = template
            continue
        defaults = sd.get("defaults", {})
        template = defaults.get("hostname", template)
        endpoints = sd.get("endpoints", {})

        # ---- global (partition) endpoint
        pe = sd.get("partitionEndpoint")
        regionalized = sd.get("isRegionalized", True)
        live = [n for n, e in endpoints.items() if not e.get("deprecated")]
        is_global = False
        if pe and pe in endpoints:
            if not regionalized:
                is_global = True
            elif live == [pe]:
                # e.g. "support": partitionEndpoint without isRegionalized=false
                # but no regional endpoints at all -> effectively global.
                is_global = True
                notes.append(
                    f"{sname}: {pid} has partitionEndpoint {pe} without isRegionalized=false "
                    f"and no regional endpoints; treated as global"
                )
            else:
                notes.append(
                    f"{sname}: {pid} has partitionEndpoint {pe} ({endpoints[pe].get('hostname')}) but is "
                    f"regionalized; not treated as global"
                )
        elif pe:
            notes.append(f"{sname}: {pid} partitionEndpoint {pe} not among its endpoints")
        elif not regionalized:
            notes.append(
                f"{sname}: {pid} isRegionalized=false but no partitionEndpoint "
                f"(endpoints: {sorted(endpoints)}); not treated as global"
            )
        if is_global:
            ep = endpoints[pe]
            host = ep.get("hostname") or expand(template, prefix, pe, pi["dns"])
            if "hostname" not in ep:
                notes.append(f"{sname}: {pid} partition endpoint {pe} has no hostname; expanded template -> {host}")
            region = (
                ep.get("credentialScope", {}).get("region")
                or defaults.get("credentialScope", {}).get("region")
                or pi["implicit_global_region"]
            )
            if not ep.get("credentialScope", {}).get("region"):
                notes.append(
                    f"{sname}: {pid} partition endpoint {pe} has no credentialScope region; using {region}"
                )
            glob[pid] = {"hostname": host, "region": region}

        # ---- hostname template
        # Service-level defaults override the partition default. endpoints.json
        # in recent botocore has no service-level hostname defaults, but many
        # services list an explicit hostname for every region instead (e.g.
        # "{service}.{region}.api.aws"); when all live regional endpoints agree
        # on one pattern we report that pattern as the service's template.
        if "hostname" not in defaults:
            shapes = set()
            for n, e in endpoints.items():
                if e.get("deprecated") or pi["rx"] is None or not pi["rx"].match(n):
                    continue
                h = e.get("hostname")
                if h is None:
                    shapes.add(template)
                else:
                    t = templatize(h, prefix, n, pi["dns"])
                    shapes.add(t if t is not None else "?" + h)
            if len(shapes) == 1:
                only = next(iter(shapes))
                if not only.startswith("?"):
                    template = only
            elif len(shapes) > 1:
                odd = sorted(s for s in shapes if s != template)
                notes.append(f"{sname}: {pid} regional hostnames not uniform; per-region overrides {odd}")
        if template != DEFAULT_HOSTNAME:
            hostname[pid] = template
    return glob, hostname


# --------------------------------------------------------------------------
# Operations


def wire_name(member_name: str, member: dict, protocol: str) -> str:
    if protocol == "ec2":
        # EC2 query serialisation: queryName, else capitalised locationName.
        if "queryName" in member:
            return member["queryName"]
        if "locationName" in member:
            ln = member["locationName"]
            return ln[:1].upper() + ln[1:]
        return member_name
    return member.get("locationName", member_name)


def is_resource_name(name: str) -> bool:
    return name in RESOURCE_EXACT or name in RESOURCE_WHOLE_WORDS or name.endswith(RESOURCE_SUFFIXES)


def build_operation(sname: str, opname: str, op: dict, shapes: dict, protocol: str, notes: list, stats):
    http = op.get("http", {})
    method = http.get("method")
    uri = http.get("requestUri")
    if method is None:
        notes.append(f"{sname}.{opname}: no http.method; using POST")
        method = "POST"
    if uri is None:
        notes.append(f"{sname}.{opname}: no http.requestUri; using /")
        uri = "/"
    path, _, query = uri.partition("?")

    template_labels = [l.rstrip("+") for l in LABEL_RE.findall(path)]
    if LABEL_RE.search(query):
        notes.append(f"{sname}.{opname}: label in query part of requestUri {uri}")
    query_literals = [q for q in query.split("&") if q]

    inp = shapes.get(op["input"]["shape"], {}) if "input" in op else {}
    members = inp.get("members", {})
    required = set(inp.get("required", []))

    uri_members = {}
    for mn, m in members.items():
        if m.get("location") == "uri":
            uri_members[m.get("locationName", mn)] = mn
    labels = []
    for l in template_labels:
        if l not in uri_members:
            notes.append(f"{sname}.{opname}: URI label {{{l}}} has no input member")
        labels.append(l)
    for l in uri_members:
        if l not in template_labels:
            notes.append(f"{sname}.{opname}: uri member {l} not in requestUri {uri}")

    required_query = []
    for mn, m in members.items():
        if m.get("location") == "querystring" and mn in required:
            if "locationName" in m:
                required_query.append(m["locationName"])
            else:
                notes.append(f"{sname}.{opname}: required querystring member {mn} has no locationName (map)")

    resources = []
    label_set = set(template_labels)
    for mn, m in members.items():
        bound = m.get("location") == "uri" and m.get("locationName", mn) in label_set
        if bound:
            name = m.get("locationName", mn)
        elif mn in required and is_resource_name(mn):
            name = wire_name(mn, m, protocol)
        else:
            continue
        if name not in resources:
            resources.append(name)
    if not resources:
        stats["ops_without_resources"] += 1

    body = inp.get("payload")
    if body is not None and body not in members:
        notes.append(f"{sname}.{opname}: payload {body} not a member")

    # Optional naming members (e.g. ec2 DeleteSecurityGroup's GroupId), used only when the
    # operation has no resource member of its own.
    optional_resources = []
    if not resources:
        for mn, m in members.items():
            if m.get("location") in (None, "querystring", "header") and is_resource_name(mn):
                name = wire_name(mn, m, protocol)
                if name not in optional_resources:
                    optional_resources.append(name)

    # Where each input member travels (REST protocols): identification matches required
    # query keys and headers, and reads parameters from each location by wire name.
    rest = protocol in ("rest-json", "rest-xml")
    required_headers = []
    query_members = {}
    list_query = []
    header_members = {}
    body_members = {}
    for mn, m in members.items():
        loc = m.get("location")
        shape_type = shapes.get(m.get("shape"), {}).get("type")
        if loc == "header":
            ln = m.get("locationName", mn)
            header_members[ln.lower()] = mn
            if mn in required:
                required_headers.append(ln.lower())
        elif loc == "querystring":
            ln = m.get("locationName", "*" if shape_type == "map" else mn)
            query_members[ln] = mn
            if shape_type == "list":
                list_query.append(ln)
        elif loc is None and rest and mn != body:
            body_members[m.get("locationName", mn)] = mn
    payload_type = shapes.get(members[body].get("shape"), {}).get("type") if body in members else None
    static_context = sorted(
        k for k, v in op.get("staticContextParams", {}).items() if v.get("value") is True
    )

    entry = {
        "method": method,
        "uri": uri,
        "labels": labels,
        "query_literals": query_literals,
        "required_query": required_query,
        "resources": resources,
        "body_member": body,
    }
    # The keys below are left out when empty, false or null (airlock reads them with
    # `#[serde(default)]`), which keeps the embedded file small.
    extra = {
        "optional_resources": optional_resources,
        "required_headers": required_headers,
        "deprecated": bool(op.get("deprecated", False)),
        "host_prefix": op.get("endpoint", {}).get("hostPrefix"),
        "query_members": query_members,
        "list_query": list_query,
        "header_members": header_members,
        "body_members": body_members,
        "payload_type": payload_type,
        "static_context": static_context,
    }
    entry.update({k: v for k, v in extra.items() if v})
    return entry


def build_service(sname: str, version: str, model: dict, pinfo: dict, notes: list, stats):
    md = model.get("metadata", {})
    prefix = md.get("endpointPrefix")
    protocols = md.get("protocols") or [md.get("protocol")]
    if "protocols" in md and md.get("protocol") and md["protocol"] != md["protocols"][0]:
        notes.append(f"{sname}: metadata.protocol {md['protocol']} != protocols[0] {md['protocols'][0]}")
    if len(protocols) > 1:
        stats["multi_protocol"].append(f"{sname} {protocols}")
    if md.get("apiVersion") != version:
        notes.append(f"{sname}: apiVersion {md.get('apiVersion')} != directory {version}")
    glob, hostname = endpoint_info(prefix, pinfo, notes, sname)
    shapes = model.get("shapes", {})
    ops = {}
    for opname in sorted(model.get("operations", {})):
        op = model["operations"][opname]
        ops[opname] = build_operation(sname, opname, op, shapes, protocols[0], notes, stats)
        if "endpoint" in op and "hostPrefix" in op["endpoint"]:
            stats["host_prefix"][sname].add(op["endpoint"]["hostPrefix"])
            stats["host_prefix_ops"] += 1
    return {
        "signing_name": md.get("signingName") or prefix,
        "endpoint_prefix": prefix,
        "protocols": protocols,
        "target_prefix": md.get("targetPrefix"),
        "json_version": md.get("jsonVersion"),
        "api_version": md.get("apiVersion"),
        "service_id": md.get("serviceId"),
        "global": glob,
        "hostname": hostname,
        "operations": ops,
    }


# --------------------------------------------------------------------------
# Output


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def render(doc: dict) -> str:
    """Compact JSON with one service per line (keys sorted throughout)."""
    services = doc["services"]
    lines = ['{"partitions":' + dumps(doc["partitions"]) + ',"services":{']
    names = sorted(services)
    for i, name in enumerate(names):
        sep = "," if i + 1 < len(names) else ""
        lines.append(dumps(name) + ":" + dumps(services[name]) + sep)
    lines.append('},"source":' + dumps(doc["source"]) + "}")
    return "\n".join(lines) + "\n"


def split_operations(services: dict) -> tuple[str, dict]:
    """Each service's operations as one line of aws-operations.json, and where it is.

    airlock parses a service's operations on its first call; kept apart from the rest of the
    model (and found by byte offset), the operations of services never called are never
    even read, so they cost no memory."""
    lines, spans, pos = [], {}, 0
    for name in sorted(services):
        line = dumps(services[name]["operations"])
        size = len(line.encode("utf-8"))
        spans[name] = [pos, pos + size]
        lines.append(line + "\n")
        pos += size + 1
    return "".join(lines), spans


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description="Generate data/aws-model.json from botocore's models")
    ap.add_argument("-o", "--output", default=os.path.join(here, "..", "data", "aws-model.json"))
    ap.add_argument("-v", "--verbose", action="store_true", help="print every model irregularity noted")
    args = ap.parse_args()

    root = data_dir()
    notes: list[str] = []
    stats = {
        "multi_protocol": [],
        "host_prefix": collections.defaultdict(set),
        "ops_without_resources": 0,
        "host_prefix_ops": 0,
    }
    endpoints = load_json(os.path.join(root, "endpoints.json"))
    try:
        partitions_json = load_json(os.path.join(root, "partitions.json"))
    except FileNotFoundError:
        partitions_json = {"partitions": []}
    partitions, pinfo = build_partitions(endpoints, partitions_json, notes)

    services = {}
    older = []
    for sname, version, path, versions in newest_service_models(root):
        if len(versions) > 1:
            older.append(f"{sname} (using {version}; also {', '.join(versions[:-1])})")
        model = load_json(path)
        services[sname] = build_service(sname, version, model, pinfo, notes, stats)

    ops_text, spans = split_operations(services)
    summary = {name: {**s, "operations": spans[name]} for name, s in services.items()}
    doc = {"source": f"botocore {botocore.__version__}", "partitions": partitions, "services": summary}
    text = render(doc)
    # The hand-rolled layout must be exactly the same document, and each span must hold
    # exactly its service's operations.
    if json.loads(text) != json.loads(dumps(doc)):
        print("internal error: rendered JSON differs from model", file=sys.stderr)
        return 1
    raw = ops_text.encode("utf-8")
    for name, (start, end) in spans.items():
        if json.loads(raw[start:end]) != services[name]["operations"]:
            print(f"internal error: the operations span of {name} is wrong", file=sys.stderr)
            return 1
    out = os.path.normpath(args.output)
    ops_out = os.path.join(os.path.dirname(out), "aws-operations.json")
    write(out, text)
    write(ops_out, ops_text)

    # ---------------- summary
    n_ops = sum(len(s["operations"]) for s in services.values())
    by_proto = collections.Counter(s["protocols"][0] for s in services.values())
    print(f"wrote {out} ({os.path.getsize(out):,} bytes) and {ops_out} ({os.path.getsize(ops_out):,} bytes) "
          f"from {doc['source']}")
    print(f"partitions: {len(partitions)} ({', '.join(p['id'] for p in partitions)})")
    print(f"services: {len(services)}  operations: {n_ops}")
    print("services per (first) protocol: " + ", ".join(f"{p}={n}" for p, n in by_proto.most_common()))
    print(f"operations with no resource members: {stats['ops_without_resources']}")
    glob = sorted((n, sorted(s["global"])) for n, s in services.items() if s["global"])
    print(f"global services ({len(glob)}): " + "; ".join(f"{n} [{','.join(p)}]" for n, p in glob))
    hosts = sorted((n, s["hostname"]) for n, s in services.items() if s["hostname"])
    print(f"services with non-default hostname templates ({len(hosts)}):")
    for n, h in hosts:
        print(f"  {n}: " + ", ".join(f"{p}={t}" for p, t in sorted(h.items())))
    print(f"services with several protocols ({len(stats['multi_protocol'])}): " + "; ".join(stats["multi_protocol"]))
    by_sign = collections.defaultdict(list)
    for n, s in services.items():
        by_sign[s["signing_name"]].append(n)
    shared = {k: v for k, v in sorted(by_sign.items()) if len(v) > 1}
    print(f"signing names shared by several services ({len(shared)}):")
    for k, v in shared.items():
        print(f"  {k}: {', '.join(sorted(v))}")
    by_prefix = collections.defaultdict(list)
    for n, s in services.items():
        by_prefix[s["endpoint_prefix"]].append(n)
    shared_p = {k: v for k, v in sorted(by_prefix.items()) if len(v) > 1}
    print(f"endpoint prefixes shared by several services ({len(shared_p)}): "
          + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in shared_p.items()))
    for key in ("rds", "s3", "execute-api", "bedrock"):
        if key not in by_sign:
            print(f"WARNING: signing name {key} not found", file=sys.stderr)
    hp = stats["host_prefix"]
    print(f"services with operation hostPrefix ({len(hp)}, {stats['host_prefix_ops']} ops): "
          + "; ".join(f"{n} {sorted(v)}" for n, v in sorted(hp.items())))
    print(f"services with several model versions (newest used): {len(older)}")
    print(f"irregularities noted: {len(notes)}" + ("" if args.verbose else " (use -v to list)"))
    if args.verbose:
        for n in older:
            print("  version: " + n)
        for n in notes:
            print("  " + n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
