#!/usr/bin/env python3
# Generate with:  python3 tests/coverage/gen_requests.py --out /tmp/requests.jsonl
#
# For every operation of every service in the installed botocore's models, builds the
# request botocore itself would send to an endpoint of https://localhost:8443 (path-style
# S3) and signs it with SigV4, then writes one JSON line per request:
#
#   {service, operation, protocol, method, target, host, headers, body_b64,
#    signing_name, region}
#
# after a first line {"botocore": VERSION}.
#
# `target` is the request-target (path and query as sent). The requests are built with
# botocore's own serializer for the protocol (botocore.serialize.create_serializer), with
# placeholder values for the required members of the input shape. Services that speak
# several protocols (cloudwatch: smithy-rpc-v2-cbor, json, query) get one request per
# protocol. tests/identify_coverage.rs runs this and feeds every line to
# airlock::identify::identify. Requirements: Python 3.11+ and botocore.
#
# With --inputs-out instead, it writes only the placeholder inputs, one JSON line
# {service, operation, input} per operation, for another SDK's serializer to build the
# requests from (tests/coverage/gen_requests_js.mjs): blobs are {"$blob": base64} and
# timestamps {"$date": ISO 8601}, the two values JSON has no type for.

from __future__ import annotations

import argparse
import base64
import datetime
import json
import sys

import botocore.session
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import create_request_object, prepare_request_dict
from botocore.credentials import Credentials
from botocore.serialize import create_serializer

ENDPOINT = "https://localhost:8443"
REGION = "us-east-1"
CREDENTIALS = Credentials("AKIDAIRLOCKCOVERAGE1", "coverage-secret-key")
S3_FAMILY = {"s3", "s3control"}
MAX_DEPTH = 12


def placeholder(shape, name: str, depth: int, in_label: bool = False):
    """A value for a member, satisfying type, enum, min/max and required members."""
    t = shape.type_name
    if depth > MAX_DEPTH:
        return None
    if t == "structure":
        if shape.serialization.get("eventstream") or getattr(shape, "is_document_type", False):
            return {}
        out = {}
        members = shape.members
        required = list(shape.required_members)
        if shape.metadata.get("union") and not required and members:
            required = [next(iter(members))]
        for m in required:
            if m not in members:
                continue
            ms = members[m]
            if ms.serialization.get("eventstream"):
                continue
            # A URI label or a host label (S3's RequestRoute) must be a valid label.
            in_label = ms.serialization.get("location") == "uri" or ms.serialization.get("hostLabel")
            v = placeholder(ms, m, depth + 1, bool(in_label))
            if v is not None:
                out[m] = v
        return out
    if t == "list":
        n = max(1, shape.metadata.get("min", 1) or 1)
        item = placeholder(shape.member, name, depth + 1)
        return [] if item is None else [item] * n
    if t == "map":
        key = placeholder(shape.key, "key", depth + 1)
        value = placeholder(shape.value, "value", depth + 1)
        return {} if value is None else {key: value}
    if t == "string":
        enum = shape.enum
        if enum:
            return enum[0]
        if name == "Bucket":
            value = "amzn-s3-demo-bucket"
        elif name == "Key":
            value = "dir/key name+1.txt"
        elif name in ("AccountId", "ExpectedBucketOwner"):
            value = "111111111111"
        elif in_label:
            value = f"{name.lower()}-1"
        else:
            value = f"ph-{name}"
        lo = shape.metadata.get("min", 0) or 0
        hi = shape.metadata.get("max")
        if len(value) < lo:
            value = value + "x" * (lo - len(value))
        if hi is not None and len(value) > hi:
            value = value[: max(hi, lo, 1)]
        return value
    if t in ("integer", "long"):
        lo = shape.metadata.get("min")
        hi = shape.metadata.get("max")
        v = 1
        if lo is not None and v < lo:
            v = int(lo)
        if hi is not None and v > hi:
            v = int(hi)
        return v
    if t in ("float", "double"):
        return float(shape.metadata.get("min", 1.0) or 1.0)
    if t == "boolean":
        return True
    if t == "timestamp":
        return datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    if t == "blob":
        return b"data"
    return "ph"


def placeholder_input(op_model) -> dict:
    """The input of an operation: placeholders for the required members of its shape."""
    if op_model.input_shape is None:
        return {}
    return placeholder(op_model.input_shape, op_model.input_shape.name, 0) or {}


def signing_name_for(service_model, op_model) -> str:
    """The signing name botocore's endpoint rules give (S3 Express and Object Lambda sign
    S3 operations under their own names)."""
    name = service_model.signing_name
    if service_model.service_name == "s3":
        static = {p.name: p.value for p in op_model.static_context_parameters}
        members = op_model.input_shape.members if op_model.input_shape else {}
        if static.get("UseS3ExpressControlEndpoint") and "Bucket" not in members:
            return "s3express"
        if static.get("UseObjectLambdaEndpoint"):
            return "s3-object-lambda"
    return name


def build(service_model, op_name: str, protocol: str, serializer, given: dict | None = None):
    """The signed request; `given` members replace the placeholders (tests/policy_corpus)."""
    op = service_model.operation_model(op_name)
    params = placeholder_input(op)
    params.update(given or {})
    request_dict = serializer.serialize_to_request(params, op)
    prepare_request_dict(request_dict, endpoint_url=ENDPOINT)
    request = create_request_object(request_dict)
    signing_name = signing_name_for(service_model, op)
    if service_model.service_name in S3_FAMILY:
        S3SigV4Auth(CREDENTIALS, signing_name, REGION).add_auth(request)
    else:
        SigV4Auth(CREDENTIALS, signing_name, REGION).add_auth(request)
    prepared = request.prepare()
    url = prepared.url
    rest = url.split("://", 1)[1]
    host, _, target = rest.partition("/")
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, (bytes, bytearray)):
        body = body.read() if hasattr(body, "read") else bytes(body)
    headers = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in prepared.headers.items()}
    return {
        "service": service_model.service_name,
        "operation": op_name,
        "protocol": protocol,
        "method": prepared.method,
        "target": "/" + target,
        "host": host,
        "headers": headers,
        "body_b64": base64.b64encode(bytes(body)).decode(),
        "signing_name": signing_name,
        "region": REGION,
    }


def tagged(value):
    """A placeholder input as JSON, with blobs and timestamps tagged (see the header)."""
    if isinstance(value, dict):
        return {k: tagged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tagged(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"$blob": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime.datetime):
        return {"$date": value.isoformat()}
    return value


def write_inputs(session, names, out) -> int:
    """One line per operation of each service: the placeholder input `build` would use."""
    count = 0
    out.write(json.dumps({"botocore": botocore.__version__}) + "\n")
    for name in names:
        model = session.get_service_model(name)
        for op_name in model.operation_names:
            op = model.operation_model(op_name)
            line = {"service": name, "operation": op_name, "input": tagged(placeholder_input(op))}
            out.write(json.dumps(line, sort_keys=True) + "\n")
            count += 1
    return count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    target = ap.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", help="JSONL file of signed requests to write")
    target.add_argument("--inputs-out", help="JSONL file of placeholder inputs to write ('-': stdout)")
    ap.add_argument("--service", action="append", help="only these services")
    args = ap.parse_args()
    session = botocore.session.get_session()
    loader = session.get_component("data_loader")
    names = loader.list_available_services("service-2")
    if args.inputs_out:
        wanted = [n for n in names if not args.service or n in args.service]
        if args.inputs_out == "-":
            count = write_inputs(session, wanted, sys.stdout)
        else:
            with open(args.inputs_out, "w", encoding="utf-8") as out:
                count = write_inputs(session, wanted, out)
        print(f"wrote {count} inputs from botocore {botocore.__version__}", file=sys.stderr)
        return 0
    count = failures = 0
    with open(args.out, "w", encoding="utf-8") as out:
        # First line: which botocore built the requests (the test compares it with the
        # version data/aws-model.json was generated from).
        out.write(json.dumps({"botocore": botocore.__version__}) + "\n")
        for name in names:
            if args.service and name not in args.service:
                continue
            model = session.get_service_model(name)
            protocols = model.metadata.get("protocols") or [model.metadata["protocol"]]
            for protocol in protocols:
                serializer = create_serializer(protocol, include_validation=False)
                for op_name in model.operation_names:
                    try:
                        line = build(model, op_name, protocol, serializer)
                    except Exception as e:  # recorded, so the test lists it as a miss
                        failures += 1
                        line = {
                            "service": name,
                            "operation": op_name,
                            "protocol": protocol,
                            "error": f"botocore could not build the request: {type(e).__name__}: {e}",
                        }
                    out.write(json.dumps(line, sort_keys=True) + "\n")
                    count += 1
    print(f"wrote {count} requests ({failures} not buildable) from botocore {botocore.__version__}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
