import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { LogFiles } from "./log-files.ts";

const dir = mkdtempSync(join(tmpdir(), "deltaci-log-files-"));
after(() => rmSync(dir, { recursive: true, force: true }));

void test("a body in more parts than one writev takes (IOV_MAX) is written whole, in order, at its offset", () => {
  for (const sync of [false, true]) {
    const files = new LogFiles(join(dir, sync ? "sync" : "nosync"), sync);
    // 3000 parts of 1..7 bytes, some empty, after a first write at offset 0.
    const parts = Array.from({ length: 3000 }, (_, i) => Buffer.alloc(i % 8, 65 + (i % 26)));
    const whole = Buffer.concat(parts);
    files.write("job_a", 1, 0, [Buffer.from("head:")]);
    files.write("job_a", 1, 5, parts);
    files.syncWritten();
    assert.deepEqual(files.read("job_a", 1, 0, 5 + whole.length + 10), Buffer.concat([Buffer.from("head:"), whole]));
    // A rewrite at an earlier offset (a resend) overwrites in place.
    files.write("job_a", 1, 2, [Buffer.from("AD"), Buffer.from(":")]);
    assert.deepEqual(files.read("job_a", 1, 0, 5), Buffer.from("heAD:"));
    files.close();
  }
});

void test("stage writes parts at an offset of an existing file off the event loop; a missing file is refused; a remove meanwhile is safe", async () => {
  const files = new LogFiles(join(dir, "stage"), true);
  assert.equal(await files.stage("job_s", 1, 0, [Buffer.from("x")]), false, "no file: the transaction writes it");
  files.write("job_s", 1, 0, [Buffer.from("head:")]);
  files.syncWritten();
  const parts = [Buffer.from("one,"), Buffer.alloc(0), Buffer.from("two")];
  assert.equal(await files.stage("job_s", 1, 5, parts), true);
  assert.deepEqual(files.read("job_s", 1, 0, 64), Buffer.from("head:one,two"));
  // Removed while a stage is in flight: the stage ends without error, the file is gone.
  const pending = files.stage("job_s", 1, 12, [Buffer.alloc(1 << 20, "z")]);
  files.remove("job_s", 1);
  assert.equal(await pending, true);
  assert.equal(files.exists("job_s", 1), false);
  files.close();
});
