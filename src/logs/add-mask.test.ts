import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { MAX_MASK_BYTES } from "./add-mask.ts";
import { JobLog } from "./job-log.ts";
import { LogSpool } from "./log-spool.ts";

const dir = mkdtempSync(join(tmpdir(), "deltaci-add-mask-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

/** Writes `writes` (in pieces as given) to one stream (or two), returns the spool's text. */
function run(writes: Array<string | Buffer | ["err", string]>): string {
  const spool = new LogSpool(join(dir, `log-${n++}`), 1 << 30);
  const log = new JobLog(spool, ["job-secret-xyz"], "nonce");
  const out = log.stream();
  const err = log.stream();
  for (const w of writes) {
    if (Array.isArray(w)) err.write(Buffer.from(w[1]));
    else out.write(Buffer.from(w));
  }
  out.end();
  err.end();
  spool.close();
  return readFileSync(spool.path, "utf8");
}

const TOKEN = "ghs_runtime_token_8f3a9c";

void describe("::add-mask::", () => {
  void it("masks the value from that point on, in split and encoded forms, on both streams; the command line is never stored", () => {
    const b64 = Buffer.from(TOKEN).toString("base64");
    const text = run([
      `before ${TOKEN}\n`,
      `::add-mask::${TOKEN}\n`,
      `plain ${TOKEN} end\n`,
      `split ${TOKEN.slice(0, 7)}`, `${TOKEN.slice(7)} end\n`,
      `b64 ${b64}\n`,
      ["err", `stderr ${TOKEN}\n`],
      `url ${encodeURIComponent(TOKEN + "/x")}\n`,
    ]);
    assert.ok(text.startsWith(`before ${TOKEN}\n`), "output before the command is not rewritten");
    const rest = text.slice(`before ${TOKEN}\n`.length);
    assert.ok(!rest.includes(TOKEN), rest);
    assert.ok(!rest.includes(b64.slice(1, -2)), rest);
    assert.match(rest, /^::add-mask::\*\*\*\nplain \*\*\* end\nsplit \*\*\* end\nb64 \*\*\*/);
    assert.match(rest, /stderr \*\*\*/);
  });

  void it("a command split across writes (and CRLF) is held until its newline; ordinary lines are not held", () => {
    const text = run(["::add", "-mask::", "s3cr3t-split", "-value\r", "\n", "then s3cr3t-split-value\n", "::add is not a command\n"]);
    assert.equal(text, "::add-mask::***\nthen ***\n::add is not a command\n");
  });

  void it("a command without a newline at the end of the stream still masks and is not stored", () => {
    const text = run(["x\n::add-mask::last-value-123"]);
    assert.equal(text, "x\n::add-mask::***\n");
  });

  void it("only at the start of a line; an over-long command line is dropped whole", () => {
    const mid = run([`echo ::add-mask::not-a-command-1\n`]);
    assert.equal(mid, "echo ::add-mask::not-a-command-1\n");
    const long = "v".repeat(MAX_MASK_BYTES * 3);
    const text = run([`::add-mask::${long.slice(0, 1000)}`, `${long.slice(1000)}\n`, "after\n"]);
    assert.equal(text, `::add-mask::*** (ignored: the value is over ${MAX_MASK_BYTES} bytes, so it is not masked)\nafter\n`);
  });

  void it("a marker written while a command line is held does not release it half", () => {
    const spool = new LogSpool(join(dir, `log-${n++}`), 1 << 30);
    const log = new JobLog(spool, [], "nonce");
    const out = log.stream();
    out.write(Buffer.from("::add-mask::held-val"));
    log.notice("in between");
    out.write(Buffer.from("ue-42\nsee held-value-42\n"));
    out.end();
    spool.close();
    const text = readFileSync(spool.path, "utf8");
    assert.ok(!text.includes("held-val"), text);
    assert.match(text, /::add-mask::\*\*\*\nsee \*\*\*\n$/);
  });

  void it("later markers and later streams mask the value too", () => {
    const spool = new LogSpool(join(dir, `log-${n++}`), 1 << 30);
    const log = new JobLog(spool, [], "nonce");
    const a = log.stream();
    a.write(Buffer.from("::add-mask::marker-value-7\n"));
    a.end();
    log.notice("failed with marker-value-7");
    const b = log.stream();
    b.write(Buffer.from("next step prints marker-value-7\n"));
    b.end();
    spool.close();
    const text = readFileSync(spool.path, "utf8");
    assert.ok(!text.includes("marker-value-7"), text);
  });
});

void describe("::add-mask:: over many lines per chunk", () => {
  void it("gives the same log however the output is cut into chunks", () => {
    const body = ["a line\n", "x\n", `::add-mask::${TOKEN}\n`, `now ${TOKEN}\n`, ":: not a command\n", "::add-mask:", "\n", "tail without newline"].join("");
    const whole = run([body]);
    assert.ok(!whole.includes(TOKEN));
    for (const size of [1, 2, 3, 5, 7, 13, 29]) {
      const pieces: string[] = [];
      for (let i = 0; i < body.length; i += size) pieces.push(body.slice(i, i + size));
      assert.equal(run(pieces), whole, `chunks of ${size}`);
    }
  });
});
