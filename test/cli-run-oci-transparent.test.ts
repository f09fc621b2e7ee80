/**
 * `deltaci run` end to end (job file → server → runner host → crun) with `network.transparent`,
 * against a test host in a network namespace of our own: a job whose raw TCP client (bash's
 * /dev/tcp, no proxy) reaches the allowed address and is refused another port; a job with the same
 * allowlist but without `transparent` cannot get out; afterwards no slot path is left (netns,
 * veth, nft table).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createNetHost } from "./support/sandbox-nethost.ts";
import { parseJson, runCli, tempDir } from "./cli-helpers.ts";

/** Slot paths of transparent egress on this host (src/sandbox/oci/transparent-egress.ts names). */
function slotPaths(): string[] {
  const netns = execFileSync("ip", ["netns", "list"], { encoding: "utf8" }).split("\n").map((l) => l.split(" ")[0] ?? "").filter((n) => n.startsWith("deltaci-te-"));
  const links = execFileSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).split("\n").map((l) => /^\d+: (dcte\d+h)@/.exec(l)?.[1]).filter((n): n is string => n !== undefined);
  const tables = execFileSync("nft", ["list", "tables"], { encoding: "utf8" }).split("\n").filter((l) => l.includes("deltaci_te_"));
  return [...netns, ...links, ...tables];
}

void test("oci: a transparent job's raw TCP client gets out through its allowlist; without transparent it cannot; nothing is left", { timeout: 600_000 }, async (t) => {
  const host = await createNetHost();
  t.after(() => host.remove());
  const before = slotPaths();
  const dir = tempDir(t);
  const raw = (port: number) => `r=$( (exec 3<>/dev/tcp/${host.address}/${port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 10 cat <&3 | tail -n 1) 2>/dev/null ) || true; echo "raw ${port}: \${r:-refused}"`;
  writeFileSync(join(dir, "deltaci.yml"), [
    "jobs:",
    "  transparent:",
    `    network: {allow: ["${host.address}:8080"], transparent: true}`,
    "    steps:",
    `      - run: '${raw(8080).replaceAll("'", "''")}'`,
    `      - run: '${raw(8081).replaceAll("'", "''")}'`,
    "  proxy-only:",
    `    network: {allow: ["${host.address}:8080"]}`,
    "    steps:",
    `      - run: '${raw(8080).replaceAll("'", "''")}'`,
    "",
  ].join("\n"));
  const r = await runCli(["run", "--json"], { cwd: dir });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const out = parseJson<{ jobs: Array<{ name: string; state: string }> }>(r.stdout);
  assert.deepEqual(out.jobs.map((j) => `${j.name} ${j.state}`).sort(), ["proxy-only succeeded", "transparent succeeded"]);
  const lines = (r.stderr + r.stdout).split("\n");
  const said = (job: string, text: string) => lines.some((l) => l.includes(job) && l.includes(text));
  assert.ok(said("transparent", "raw 8080: hello from test host port 8080"), r.stderr);
  assert.ok(said("transparent", "raw 8081: refused"), r.stderr);
  assert.ok(said("proxy-only", "raw 8080: refused"), r.stderr);
  assert.ok(!lines.some((l) => l.includes("proxy-only") && l.includes("hello from test host")), r.stderr);
  assert.deepEqual(slotPaths().filter((p) => !before.includes(p)), []);
});
