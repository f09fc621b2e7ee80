/**
 * Slot recycling: the next job in a slot sees nothing of the previous one, through the file
 * system or the bytes of its disk. A job writes files, a deleted file, a file name, sparse data and
 * xattrs (in the inode and in an xattr block), all carrying a marker; the next job in the slot
 * (prewarmed after the dispose, as the runner host does, on the spare job dir made once the first
 * job was disposed of) finds none of them, and on the host neither its image file nor its loop
 * device holds the marker. Positive control: the first job's
 * image does hold it before its dispose.
 */
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { existsSync } from "node:fs";
import { open, readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { runStep } from "../src/sandbox/conformance.ts";
import { loopDevicesBelow } from "../src/sandbox/oci/job-disk.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

// as the runner host configures it: a slot's next job dir is made as soon as the slot is free
const env = ociTestEnv(undefined, { spareDisks: true });
after(async () => {
  await env.factory.close();
  await env.cleanup();
});

/** Whether `path` (a file or block device) holds `needle`, read in chunks that overlap by its length. */
async function holds(path: string, needle: Buffer): Promise<boolean> {
  const fh = await open(path, "r");
  try {
    const chunk = Buffer.alloc(4 * 1024 * 1024);
    let carry = Buffer.alloc(0);
    for (let at = 0; ; ) {
      const { bytesRead } = await fh.read(chunk, 0, chunk.length, at);
      if (bytesRead === 0) return false;
      const window = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
      if (window.includes(needle)) return true;
      carry = window.subarray(Math.max(0, window.length - needle.length));
      at += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/** Every regular file below `dir` (not following symlinks). */
async function filesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await filesBelow(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

void test("the next job in a slot sees nothing of the previous one, not even in its disk's bytes", { timeout: 300_000 }, async () => {
  const marker = `deltaci-recycle-marker-${randomInt(10_000_000, 99_999_999)}`;
  const needle = Buffer.from(marker);
  const first = env.spec({ limits: { timeoutMs: 600_000, cpus: 1, memoryMiB: 256, diskMiB: 64, pids: 256, logMiB: 64 } });
  await env.factory.reapSlot(first.slot);
  assert.equal(env.factory.isSlotClean(first.slot), true);

  const a = await env.factory.create(first);
  const write = await runStep(a, [
    `printf '%s\\n' ${marker} > plain.txt`,
    `printf '%s\\n' ${marker} > "$HOME/home.txt"`,
    `printf '%s\\n' ${marker} > deleted.txt && sync && rm deleted.txt`,
    `touch ${marker}.name && rm ${marker}.name`,
    // sparse: the marker 20 MiB into a file that is otherwise a hole, and after an fallocated range
    `truncate -s 40M sparse.bin && printf '%s' ${marker} | dd of=sparse.bin bs=1M seek=20 conv=notrunc status=none`,
    `fallocate -l 4M falloc.bin && printf '%s' ${marker} | dd of=falloc.bin bs=1 seek=1000000 conv=notrunc status=none`,
    // xattrs: a short value (kept in the inode) and a 640-byte one (an xattr block)
    `/usr/bin/python3 -c "import os; os.setxattr('plain.txt', 'user.short', b'${marker}'); os.setxattr('.', 'user.long', b'${marker}' * 20)"`,
    "sync",
  ].join(" && "));
  assert.equal(write.result.exitCode, 0, write.stderr.toString());
  const jobDirA = join(a.workspaceOnHost, "..", "..");
  const imageA = join(jobDirA, "disk.img");
  const loopA = (await readFile(`/proc/self/mountinfo`, "utf8")).split("\n").find((l) => l.split(" ")[4] === join(jobDirA, "disk"))?.split(" ").at(-2);
  assert.ok(loopA !== undefined && loopA.startsWith("/dev/loop"), `job A's disk is on a loop device (${loopA})`);
  assert.equal(await holds(imageA, needle), true, "positive control: job A's image holds the marker");
  assert.equal(await holds(loopA, needle), true, "positive control: job A's loop device holds the marker");

  await a.dispose();
  assert.equal(existsSync(a.workspaceOnHost), false, "job A's workspace is off its path when dispose resolves");
  assert.equal(env.factory.isSlotClean(first.slot), true);
  // the spare job dir made for the slot's next job as soon as A was disposed of
  await env.factory.settle(first.slot);
  let spare: string | undefined;
  for (let i = 0; i < 400 && spare === undefined; i++) {
    spare = (await readdir(first.slot.workDir)).map((n) => join(first.slot.workDir, n)).find((d) => existsSync(join(d, "disk", "workspace")));
    if (spare === undefined) await delay(25);
  }
  assert.ok(spare !== undefined, "a spare job dir is made once job A is disposed of");
  const spareIno = (await stat(join(spare, "disk.img"))).ino;
  // as the runner host does: the slot's next sandbox is prewarmed as soon as the slot is free
  const second = { ...env.spec({ slot: first.slot }), limits: first.limits };
  await env.factory.prewarm(second);
  const b = await env.factory.create(second);
  const imageB = join(b.workspaceOnHost, "..", "..", "disk.img");
  assert.equal((await stat(imageB)).ino, spareIno, "job B runs on the spare disk");
  const look = await runStep(b, [
    "ls -A /workspace \"$HOME\" /tmp",
    'grep -rl "$M" /workspace "$HOME" /tmp || true', // the marker comes in the env: B's script file on the host does not hold it
    `/usr/bin/python3 -c "import os; print(os.listxattr('/workspace'), os.listxattr(os.environ['HOME']))"`,
    "df -k /workspace | tail -1 | awk '{ print $3 }'",
  ].join("; "), { env: { M: marker } });
  assert.equal(look.result.exitCode, 0, look.stderr.toString());
  const lines = look.stdout.toString().split("\n");
  assert.equal(lines.filter((l) => l.includes(marker)).length, 0, look.stdout.toString());
  assert.ok(lines.includes("[] []"), `no xattrs on the workspace or home: ${look.stdout.toString()}`);
  const usedKiB = Number(lines.filter((l) => /^\d+$/.test(l)).pop());
  assert.ok(usedKiB < 1024, `job B's disk is as freshly formatted (${usedKiB} KiB used), not A's`);

  // on the host: B's image and loop device, and every file left in the slot, are free of the marker
  await env.factory.settle(first.slot);
  assert.equal(existsSync(imageA), false, "job A's image file is gone");
  const loops = await loopDevicesBelow(first.slot.workDir);
  assert.equal(loops.length, 1, `one loop device in the slot, job B's: ${loops.join(", ")}`);
  assert.equal(await holds(imageB, needle), false, "job B's image does not hold the marker");
  for (const dev of loops) assert.equal(await holds(dev, needle), false, `${dev} does not hold the marker`);
  for (const f of await filesBelow(first.slot.workDir)) {
    if (f === imageB) continue;
    assert.equal(await holds(f, needle), false, `${f} holds the marker`);
  }
  await b.dispose();
  let spareAfterB = false;
  for (let i = 0; i < 400 && !spareAfterB; i++) {
    spareAfterB = (await env.factory.inspectSlot(first.slot)).some((l) => l.startsWith("loop "));
    if (!spareAfterB) await delay(25);
  }
  assert.ok(spareAfterB, "B's dispose made a spare for the next job");
  await env.factory.close();
  assert.deepEqual(await env.factory.inspectSlot(first.slot), [], "close() removed the spare too");
});
