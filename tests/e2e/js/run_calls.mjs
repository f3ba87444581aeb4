#!/usr/bin/env node
// Runs AWS calls with the AWS SDK for JavaScript v3, as an agent would, and prints what
// became of each as one JSON array (tests/e2e/test_js_sdk.py reads it).
//
//   node run_calls.mjs CALLS.json
//
// CALLS.json: [{"service": "s3" | "dynamodb" | "rds" | "sts", "command": "PutObject", "input": {...}}]
// or {"service": "s3", "command": "Upload", "input": {...}, "partSize": N} for
// @aws-sdk/lib-storage's multipart Upload. In an input, {"$file": PATH} is a read stream of
// that file (the SDK sends it aws-chunked, with its default CRC32 trailer), and
// {"$fileBytes": PATH} its bytes in memory (sent whole, the CRC32 in a header).
//
// Everything else comes from the environment, as for any agent: AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL (or HTTPS_PROXY), AWS_REGION and NODE_EXTRA_CA_CERTS.
// S3 is path-style with an endpoint; every client makes one attempt, so "went through once" is never a retry.
//
// Each outcome: {ok, status, code, message, output, sent}. `sent` has the framing headers
// of the request as signed (x-amz-content-sha256, content-encoding, x-amz-trailer, expect);
// an object body in `output` is replaced by its {length, sha256}.

import { createHash } from "node:crypto";
import { createReadStream, readFileSync, statSync } from "node:fs";
import { HttpsProxyAgent } from "https-proxy-agent";

const PACKAGES = {
  s3: "@aws-sdk/client-s3",
  dynamodb: "@aws-sdk/client-dynamodb",
  rds: "@aws-sdk/client-rds",
  sts: "@aws-sdk/client-sts",
};
// HTTPS_PROXY mode (no AWS_ENDPOINT_URL): the SDK's Node handler does not read HTTPS_PROXY
// itself, so it is given an agent that tunnels through it, as the SDK's documentation shows;
// AWS's own names, S3 virtual-hosted (the SDK's default).
const viaProxy = Boolean(process.env.HTTPS_PROXY) && !process.env.AWS_ENDPOINT_URL;
const FRAMING = ["x-amz-content-sha256", "content-encoding", "x-amz-trailer", "expect", "x-amz-checksum-crc32"];

async function load(service) {
  const mod = await import(PACKAGES[service]);
  const [, Client] = Object.entries(mod).find(
    ([name, value]) => name.endsWith("Client") && typeof value?.prototype?.send === "function",
  );
  const client = new Client(viaProxy
    ? { maxAttempts: 1, requestHandler: { httpsAgent: new HttpsProxyAgent(process.env.HTTPS_PROXY) } }
    : { forcePathStyle: true, maxAttempts: 1 });
  return { mod, client };
}

function withFiles(value) {
  if (Array.isArray(value)) return value.map(withFiles);
  if (value && typeof value === "object") {
    if (typeof value.$file === "string") return createReadStream(value.$file);
    if (typeof value.$fileBytes === "string") return readFileSync(value.$fileBytes);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withFiles(v)]));
  }
  return value;
}

async function digest(body) {
  const hash = createHash("sha256");
  let length = 0;
  for await (const chunk of body) {
    hash.update(chunk);
    length += chunk.length;
  }
  return { length, sha256: hash.digest("hex") };
}

async function plain(output) {
  const out = {};
  for (const [k, v] of Object.entries(output ?? {})) {
    if (k === "$metadata") continue;
    out[k] = k === "Body" && v && typeof v[Symbol.asyncIterator] === "function" ? await digest(v) : v;
  }
  return out;
}

async function run(call, clients) {
  clients[call.service] ??= await load(call.service);
  const { mod, client } = clients[call.service];
  const sent = [];
  const recorder = (next) => async (args) => {
    // Header names as the SDK cased them (it writes `Expect`), compared lower-cased.
    const headers = Object.entries(args.request?.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]);
    sent.push(Object.fromEntries(headers.filter(([k]) => FRAMING.includes(k))));
    return next(args);
  };
  // The deserialize step runs after signing: the request as it leaves the SDK.
  client.middlewareStack.add(recorder, { step: "deserialize", name: "airlockE2eRecorder", override: true });
  try {
    const input = withFiles(call.input ?? {});
    let output;
    if (call.command === "Upload") {
      const { Upload } = await import("@aws-sdk/lib-storage");
      output = await new Upload({ client, params: input, partSize: call.partSize, queueSize: 1 }).done();
    } else {
      const Command = mod[`${call.command}Command`];
      if (!Command) throw new Error(`no command ${call.command} in ${PACKAGES[call.service]}`);
      output = await client.send(new Command(input));
    }
    return { ok: true, status: output?.$metadata?.httpStatusCode ?? 0, output: await plain(output), sent };
  } catch (e) {
    return {
      ok: false,
      status: e?.$metadata?.httpStatusCode ?? 0,
      code: e?.Code ?? e?.name ?? "",
      message: String(e?.message ?? e),
      sent,
    };
  } finally {
    client.middlewareStack.remove("airlockE2eRecorder");
  }
}

async function main() {
  const [file] = process.argv.slice(2);
  if (!file || !statSync(file).isFile()) throw new Error("usage: run_calls.mjs CALLS.json");
  const calls = JSON.parse(readFileSync(file, "utf8"));
  const clients = {};
  const outcomes = [];
  for (const call of calls) outcomes.push(await run(call, clients));
  for (const { client } of Object.values(clients)) client.destroy();
  process.stdout.write(JSON.stringify(outcomes, (k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString("base64") : v)));
}

main().catch((e) => {
  process.stderr.write(`run_calls.mjs: ${e.stack ?? e}\n`);
  process.exit(1);
});
