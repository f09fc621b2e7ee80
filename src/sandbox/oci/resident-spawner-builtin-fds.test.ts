import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { buildDiskTool, buildSpawner } from "./native-tools.ts";
import { ResidentSpawner } from "./resident-spawner.ts";

const cacheDir = mkdtempSync(join(tmpdir(), "spawner-fds-test-"));
after(() => rmSync(cacheDir, { recursive: true, force: true }));
const logger = { info: () => {}, warn: () => {} };

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter((s) => s !== "").map(Number);
  } catch {
    return [];
  }
}

/** The spawner this process started (its child running `spawnerPath`). */
function spawnerPid(spawnerPath: string): number | undefined {
  return childrenOf(process.pid).find((p) => {
    try {
      return readlinkSync(`/proc/${p}/exe`) === spawnerPath;
    } catch {
      return false;
    }
  });
}

/** The fds of the disk tool's process once it blocks opening `fifo` for reading (waits for that state). */
async function fdsWhileBlocked(spawnerPath: string): Promise<string[]> {
  for (;;) {
    const sp = spawnerPid(spawnerPath);
    for (const pid of sp === undefined ? [] : childrenOf(sp)) {
      try {
        if (readFileSync(`/proc/${pid}/wchan`, "utf8") !== "wait_for_partner") continue;
        return readdirSync(`/proc/${pid}/fd`).sort((a, b) => Number(a) - Number(b));
      } catch {}
    }
    await delay(20); // polling for a state, not asserting a time
  }
}

// The exec'd disk tool had fds 0, 1, 2 only (and what the spawner itself inherited) (everything else in the spawner is close-on-exec).
// Run in the spawner's forked child without an exec, the tool holds every fd the long-lived
// spawner had open at the fork: its listening socket, signalfd, every idle or in-flight client
// connection and every registered channel, so a close of any of them by the spawner is not seen
// by its peer until the tool exits (forever, for a tool stuck in a mount).
void test("the built-in disk tool runs with the same open fds as the exec'd binary (0, 1, 2)", { timeout: 120_000 }, async () => {
  const [spawner, diskTool] = await Promise.all([buildSpawner(cacheDir), buildDiskTool(cacheDir)]);
  const fifo = join(cacheDir, "fifo");
  assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
  const seen: Record<string, string[]> = {};
  for (const [mode, builtins] of [["exec", new Map<string, string>()], ["built-in", new Map([[diskTool.path, "disk-tool"]])]] as const) {
    const s = new ResidentSpawner(spawner.path, logger, builtins);
    try {
      // an idle connection of the host's, open when the tool's process is made
      assert.equal((await s.run("true", [], 10_000)).code, 0);
      const running = s.run(diskTool.path, ["extents", fifo], 10_000);
      seen[mode] = await fdsWhileBlocked(spawner.path);
      closeSync(openSync(fifo, "w")); // lets the tool's open return; extents of a fifo prints nothing
      assert.deepEqual(await running, { code: 0, stdout: "", stderr: "" });
    } finally {
      await s.close();
    }
  }
  // (the exec'd one may also hold what the spawner inherited without close-on-exec from this process)
  assert.deepEqual(seen.exec?.slice(0, 3), ["0", "1", "2"]);
  assert.deepEqual(seen["built-in"]?.filter((fd) => !seen.exec?.includes(fd)), [], "fds the exec'd disk tool did not have");
});
