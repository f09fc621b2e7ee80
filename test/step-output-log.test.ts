/**
 * A step's output, read into the sandbox's reused buffer, through a JobLog into the spool: every
 * byte arrives, and a secret split across reads (at the read buffer's size, and across writes with
 * a pause between them) is still masked. Both backends (real crun for `oci`).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { JobLog } from "../src/logs/job-log.ts";
import { LogSpool } from "../src/logs/log-spool.ts";
import { acceptTokenHolder } from "../src/sandbox/process/output-socket.ts";
import { STEP_READ_BUFFER_BYTES } from "../src/sandbox/types.ts";
import type { ConformanceHarness } from "../src/sandbox/conformance.ts";
import { ociTestEnv, processTestEnv } from "./support/sandbox-harness.ts";

const SECRET = "hunter2-Sup3r-Secret-Value";
const dir = mkdtempSync(join(tmpdir(), "deltaci-step-output-"));
const proc = processTestEnv();
const oci = ociTestEnv();
after(async () => {
  proc.cleanup();
  await oci.cleanup();
  rmSync(dir, { recursive: true, force: true });
});

async function check(name: string, env: ConformanceHarness): Promise<void> {
  const sb = await env.factory.create(env.spec());
  const spool = new LogSpool(join(dir, `${name}.log`), 64 * 1024 * 1024);
  try {
    const log = new JobLog(spool, [SECRET], "n");
    const out = log.stream();
    const err = log.stream();
    // The secret straddles the first read's end (a full pipe reads STEP_READ_BUFFER_BYTES at a
    // time), then comes in two writes with a pause, on stderr too; 3 MiB of text around it.
    const fill = STEP_READ_BUFFER_BYTES - 10;
    const run = [
      `head -c ${fill} /dev/zero | tr '\\0' a; printf '${SECRET}\\n'`,
      `printf '${SECRET.slice(0, 9)}'; sleep 0.2; printf '${SECRET.slice(9)}\\n'`,
      `printf '${SECRET.slice(0, 5)}' >&2; sleep 0.2; printf '${SECRET.slice(5)}\\n' >&2`,
      "yes 'an ordinary line of step output' | head -c 3145728",
    ].join("; ");
    const res = await sb.start({ run, shell: null, env: {}, workingDirectory: null, timeoutMs: 60_000 }, { stdout: (c) => out.write(c), stderr: (c) => err.write(c) }).done;
    out.end();
    err.end();
    spool.close();
    assert.equal(res.exitCode, 0);
    const text = readFileSync(spool.path, "latin1");
    assert.ok(!text.includes(SECRET) && !text.includes(SECRET.slice(0, 12)), "no part of the secret is stored");
    const expected = `${"a".repeat(fill)}***\n***\n`;
    assert.equal(text.slice(0, expected.length), expected, "stdout in order, masked");
    assert.ok(text.includes("***\n"), "stderr masked");
    const lines = "an ordinary line of step output\n".repeat(Math.ceil(3145728 / 32)).slice(0, 3145728);
    assert.ok(text.includes(lines), "the 3 MiB arrive byte-exact");
    assert.equal(text.length, expected.length + 4 + 3145728);
  } finally {
    await sb.dispose();
  }
}

void test("process: step output through the reused read buffer reaches the log whole, masked across reads", () => check("process", proc));
void test("oci: step output through the reused read buffer reaches the log whole, masked across reads", () => check("oci", oci));

void test("process: the output socket takes only the token holder and closes every other connection", { timeout: 20_000 }, async () => {
  const path = `\0deltaci-test-output-${process.pid}-${Date.now()}`;
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const token = randomBytes(16);
  const accepted = acceptTokenHolder(server, token);
  const sockets: Socket[] = [];
  const connect = async () => {
    const s = createConnection({ path });
    sockets.push(s);
    await once(s, "connect");
    return s;
  };
  const closed = (s: Socket) => new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once("close", () => resolve())));
  try {
    // A stranger that sends a few bytes and waits, one that sends a wrong token, then ours.
    const short = await connect();
    short.write("abc");
    const wrong = await connect();
    wrong.write(randomBytes(16));
    await closed(wrong);
    const ours = await connect();
    ours.write(token);
    const child = await accepted;
    sockets.push(child);
    await closed(short);
    child.write("to the step's end");
    const [data] = (await once(ours, "data")) as [Buffer];
    assert.equal(data.toString(), "to the step's end", "the accepted socket is the token holder's peer");
  } finally {
    for (const s of sockets) s.destroy();
    server.close();
  }
});
