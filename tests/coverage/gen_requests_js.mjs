#!/usr/bin/env node
// Generate with:  node tests/coverage/gen_requests_js.mjs --out /tmp/requests-js.jsonl
//
// The second serializer family of the identification coverage test: for every operation of
// S3 and of the services in SERVICES below, the AWS SDK for JavaScript v3 itself builds and
// signs the request (its own middleware stack: serializer, endpoint rules, flexible
// checksums, SigV4), and a request handler records the signed request instead of sending
// it. Nothing leaves the process. S3 is built twice, path-style and virtual-hosted (the
// bucket in the Host: `amzn-s3-demo-bucket.localhost:8443`), marked by `variant`.
//
// The inputs are botocore's placeholder inputs (gen_requests.py --inputs-out): the JS SDK's
// commands take the same member names. Output: the JSONL gen_requests.py writes, one line
// per request, after a header line naming the SDK packages and their versions. An
// operation that only one of the two SDKs defines is written as {service, operation,
// only_in} and counted apart by tests/identify_coverage.rs.
//
// Requirements: node (18+), `npm ci` in the repository (the pinned @aws-sdk packages) and
// python3 with botocore for the inputs.

import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { Readable } from "node:stream";

const ENDPOINT = "https://localhost:8443";
const REGION = "us-east-1";
const CREDENTIALS = { accessKeyId: "AKIDAIRLOCKCOVERAGE1", secretAccessKey: "coverage-secret-key" };
// The SDK logs its advice (stream lengths) and every failed command (the canned response
// fails most): neither says anything about the request.
const QUIET = { debug() {}, info() {}, warn() {}, error() {} };
// How long one command may take to reach the request handler.
const COMMAND_TIMEOUT_MS = 10_000;

// botocore's service name → the JS SDK v3 client package.
const SERVICES = {
  s3: "@aws-sdk/client-s3",
  dynamodb: "@aws-sdk/client-dynamodb",
  rds: "@aws-sdk/client-rds",
  ec2: "@aws-sdk/client-ec2",
  iam: "@aws-sdk/client-iam",
  sts: "@aws-sdk/client-sts",
  lambda: "@aws-sdk/client-lambda",
  ecs: "@aws-sdk/client-ecs",
  elbv2: "@aws-sdk/client-elastic-load-balancing-v2",
  kms: "@aws-sdk/client-kms",
  backup: "@aws-sdk/client-backup",
  route53: "@aws-sdk/client-route-53",
  cloudformation: "@aws-sdk/client-cloudformation",
  secretsmanager: "@aws-sdk/client-secrets-manager",
};

// The JS SDK's protocol implementations, by class name, as botocore names the protocols.
const PROTOCOLS = {
  AwsJson1_0Protocol: "json",
  AwsJson1_1Protocol: "json",
  AwsQueryProtocol: "query",
  AwsEc2QueryProtocol: "ec2",
  AwsRestJsonProtocol: "rest-json",
  AwsRestXmlProtocol: "rest-xml",
  AwsSmithyRpcV2CborProtocol: "smithy-rpc-v2-cbor",
};

function parseArgs(argv) {
  const args = { out: null, services: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--out") args.out = argv[++i];
    else if (argv[i] === "--service") args.services.push(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!args.out) throw new Error("usage: gen_requests_js.mjs --out FILE [--service NAME]...");
  return args;
}

// The SDK reads AWS_* variables and the shared config files (a profile could change the
// checksum behaviour or the endpoint): the requests are built from the defaults only.
function isolateFromHost() {
  for (const name of Object.keys(process.env)) {
    if (name.startsWith("AWS_")) delete process.env[name];
  }
  process.env.AWS_CONFIG_FILE = "/nonexistent/airlock-coverage/config";
  process.env.AWS_SHARED_CREDENTIALS_FILE = "/nonexistent/airlock-coverage/credentials";
}

function botocoreInputs(services) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const argv = [path.join(here, "gen_requests.py"), "--inputs-out", "-"];
  for (const s of services) argv.push("--service", s);
  const run = spawnSync("python3", argv, { encoding: "utf8", maxBuffer: 256 << 20 });
  if (run.status !== 0) {
    throw new Error(`gen_requests.py --inputs-out failed: ${run.error ?? run.stderr}`);
  }
  const lines = run.stdout.split("\n").filter((l) => l.trim());
  const header = JSON.parse(lines[0]);
  return { botocore: header.botocore, inputs: lines.slice(1).map((l) => JSON.parse(l)) };
}

// JSON placeholders → the JS types the SDK's serializers take.
function toJs(value) {
  if (Array.isArray(value)) return value.map(toJs);
  if (value && typeof value === "object") {
    if (typeof value.$blob === "string") return new Uint8Array(Buffer.from(value.$blob, "base64"));
    if (typeof value.$date === "string") return new Date(value.$date);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toJs(v)]));
  }
  return value;
}

function protocolOf(client) {
  for (let p = Object.getPrototypeOf(client.config.protocol); p; p = Object.getPrototypeOf(p)) {
    const name = p.constructor?.name;
    if (name in PROTOCOLS) return PROTOCOLS[name];
  }
  throw new Error(`unknown JS SDK protocol ${client.config.protocol?.constructor?.name}`);
}

async function bodyBytes(body) {
  if (body === undefined || body === null) return Buffer.alloc(0);
  if (typeof body === "string") return Buffer.from(body, "utf8");
  if (body instanceof Uint8Array) return Buffer.from(body);
  if (body instanceof ArrayBuffer) return Buffer.from(new Uint8Array(body));
  if (typeof body[Symbol.asyncIterator] === "function") {
    const chunks = [];
    for await (const chunk of body) chunks.push(typeof chunk === "string" ? Buffer.from(chunk) : Buffer.from(chunk));
    return Buffer.concat(chunks);
  }
  throw new Error(`a request body of an unknown kind: ${body?.constructor?.name}`);
}

/// `Credential=KEY/DATE/REGION/SERVICE/aws4_request` of the Authorization header.
function credentialScope(headers) {
  const auth = Object.entries(headers).find(([k]) => k.toLowerCase() === "authorization")?.[1] ?? "";
  const scope = /Credential=[^/]+\/\d{8}\/([^/]+)\/([^/]+)\/aws4_request/.exec(auth);
  return scope ? { region: scope[1], signing_name: scope[2] } : null;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  isolateFromHost();
  const services = args.services.length ? args.services : Object.keys(SERVICES);
  const { buildQueryString } = await import("@smithy/core/protocols");
  const { HttpResponse } = await import("@smithy/core/protocols");
  const require = createRequire(import.meta.url);
  const { botocore, inputs } = botocoreInputs(services);

  const versions = {};
  const out = [];
  let written = 0;
  let unbuilt = 0;
  for (const service of services) {
    const pkg = SERVICES[service];
    if (!pkg) throw new Error(`no JS SDK package known for ${service}`);
    versions[pkg] = require(`${pkg}/package.json`).version;
    const mod = await import(pkg);
    const [, Client] = Object.entries(mod).find(
      ([name, value]) => name.endsWith("Client") && typeof value?.prototype?.send === "function",
    );
    const commands = new Map(
      Object.entries(mod)
        .filter(([name, value]) => /^[A-Z]\w*Command$/.test(name) && typeof value === "function")
        .map(([name, value]) => [name.slice(0, -"Command".length), value]),
    );
    const ofService = inputs.filter((i) => i.service === service);
    const modelled = new Set(ofService.map((i) => i.operation));
    // S3 twice: path-style, and virtual-hosted (the bucket in the Host).
    const addressings = service === "s3" ? ["path-style", "virtual-hosted"] : [null];
    for (const addressing of addressings) {
      let captured = null;
      const client = new Client({
        region: REGION,
        endpoint: ENDPOINT,
        credentials: CREDENTIALS,
        forcePathStyle: addressing !== "virtual-hosted",
        maxAttempts: 1,
        logger: QUIET,
        requestHandler: {
          handle: async (request) => {
            captured ??= { request, body: await bodyBytes(request.body) };
            return { response: new HttpResponse({ statusCode: 200, headers: {}, body: Readable.from([]) }) };
          },
        },
      });
      const protocol = protocolOf(client);
      const line = (fields) => ({ service, ...(addressing ? { variant: addressing } : {}), protocol, ...fields });
      if (addressing !== "virtual-hosted") {
        for (const name of commands.keys()) {
          if (!modelled.has(name)) out.push(line({ operation: name, only_in: "js" }));
        }
      }
      for (const { operation, input } of ofService) {
        const Command = commands.get(operation);
        if (!Command) {
          if (addressing !== "virtual-hosted") out.push(line({ operation, only_in: "botocore" }));
          continue;
        }
        captured = null;
        let failure = null;
        let timer;
        try {
          await Promise.race([
            client.send(new Command(toJs(input))),
            new Promise((_, reject) => {
              timer = setTimeout(() => reject(new Error("timed out")), COMMAND_TIMEOUT_MS);
            }),
          ]);
        } catch (e) {
          failure = e; // the canned response rarely parses; only the request matters
        } finally {
          clearTimeout(timer);
        }
        if (!captured) {
          unbuilt++;
          out.push(line({ operation, error: `the JS SDK built no request: ${failure?.name}: ${failure?.message}` }));
          continue;
        }
        const { request, body } = captured;
        const headers = Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k, String(v)]));
        const query = request.query ? buildQueryString(request.query) : "";
        const scope = credentialScope(headers);
        const port = request.port ? `:${request.port}` : "";
        out.push(
          line({
            operation,
            method: request.method,
            target: request.path + (query ? `?${query}` : ""),
            host: headers.host ?? `${request.hostname}${port}`,
            headers,
            body_b64: body.toString("base64"),
            signing_name: scope?.signing_name ?? "",
            region: scope?.region ?? REGION,
          }),
        );
        written++;
      }
    }
  }
  const header = { sdk: "aws-sdk-js-v3", botocore_inputs: botocore, packages: versions };
  const text = [header, ...out].map((l) => JSON.stringify(l)).join("\n") + "\n";
  writeFileSync(args.out, text);
  const apart = out.filter((l) => l.only_in).length;
  process.stderr.write(
    `wrote ${written} requests (${unbuilt} not buildable, ${apart} operations in one SDK only) ` +
      `from the JS SDK v3 (${Object.keys(versions).length} clients)\n`,
  );
}

main().catch((e) => {
  process.stderr.write(`gen_requests_js.mjs: ${e.stack ?? e}\n`);
  process.exit(1);
});
