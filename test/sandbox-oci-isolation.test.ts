/** Hostile jobs against the oci backend: each attempt must be denied or contained (real crun). */
import assert from "node:assert/strict";
import { statSync } from "node:fs";
import { detectCgroupLayout, JobCgroup } from "../src/sandbox/oci/cgroups.ts";
import { containerName } from "../src/sandbox/job-names.ts";
import { after, afterEach, before, describe, it } from "node:test";
import { runStep } from "../src/sandbox/conformance.ts";
import type { Sandbox, SandboxSpec } from "../src/sandbox/types.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

const env = ociTestEnv();
let sb: Sandbox;
let spec: SandboxSpec;

const sh = async (script: string) => {
  const r = await runStep(sb, script);
  return { out: r.stdout.toString(), err: r.stderr.toString(), code: r.result.exitCode };
};

void describe("oci isolation", { timeout: 300_000 }, () => {
  before(async () => {
    spec = env.spec();
    sb = await env.factory.create(spec);
  });
  after(async () => {
    await sb.dispose();
    assert.deepEqual(await env.leftovers(spec), []);
    await env.cleanup();
  });
  afterEach(async () => {
    // every step's processes are gone after it: only the container's init is left in its cgroup
    const cgroup = new JobCgroup(detectCgroupLayout(), `/deltaci/slot-${spec.slot.index}/${containerName(spec.slot.index, spec.jobId)}`);
    assert.equal((await cgroup.pids()).length, 1);
  });

  void it("cannot see host processes", async () => {
    const r = await sh("cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -E '^[0-9]+$' | wc -l");
    assert.match(r.out, /^\/\.deltaci\/bin\/sandbox-helper init/);
    assert.ok(Number(r.out.split("\n")[1]) < 10);
    const kill = await sh(`kill -0 ${process.pid} 2>/dev/null && echo reached || echo denied`);
    assert.equal(kill.out.trim(), "denied");
  });

  void it("cannot ptrace a process outside the sandbox", async () => {
    const r = await sh(`python3 -c "import ctypes,os;l=ctypes.CDLL(None,use_errno=True);r=l.ptrace(16,${process.pid},0,0);print(r, os.strerror(ctypes.get_errno()))"`);
    assert.match(r.out, /^-1 (No such process|Operation not permitted)\n$/);
  });

  void it("cannot ptrace, stop or read the fds of the container's init, which holds the runner's control channel", async () => {
    const r = await sh(`python3 -c "import ctypes,os;l=ctypes.CDLL(None,use_errno=True);r=l.ptrace(16,1,0,0);print(r, os.strerror(ctypes.get_errno()))"; readlink /proc/1/fd/3 2>/dev/null || echo denied; kill -STOP 1; kill -KILL 1; echo $PPID`);
    assert.equal(r.out, "-1 Operation not permitted\ndenied\n1\n");
    const next = await sh("echo init still serves steps");
    assert.equal(next.out, "init still serves steps\n");
  });

  void it("cannot read the host's secrets, /root, /home, /work or /var", async () => {
    const r = await sh("for p in /etc/shadow /root /work /var/lib /home/runner /run/deltaci /proc/kcore; do test -r $p && test -s $p && echo \"readable $p\"; done; ls /home; true");
    assert.equal(r.out, "deltaci\n");
  });

  void it("has only root-in-userns capabilities, no_new_privs and a seccomp filter", async () => {
    const r = await sh("grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status");
    const eff = BigInt("0x" + (/CapEff:\s+([0-9a-f]+)/.exec(r.out)?.[1] ?? "f"));
    for (const bit of [12n, 13n, 16n, 17n, 19n, 21n, 25n, 27n]) assert.equal((eff >> bit) & 1n, 0n, `capability bit ${bit} is dropped`);
    assert.match(r.out, /NoNewPrivs:\s+1/);
    assert.match(r.out, /Seccomp:\s+2/);
  });

  void it("blocks unshare, mount, keyctl, module loading and raw sockets", async () => {
    const py = (call: string) => `python3 -c "import ctypes,os;l=ctypes.CDLL(None,use_errno=True);r=l.syscall(${call});print(r, os.strerror(ctypes.get_errno()))"`;
    const r = await sh(
      [
        "unshare -Ur true 2>/dev/null && echo unshare-ok",
        "mount -t tmpfs none /tmp 2>/dev/null && echo mount-ok",
        py("250,0,0,0,0,0"), // keyctl
        py("313,0,0,0"), // finit_module
        `python3 -c "import socket;socket.socket(socket.AF_INET,socket.SOCK_RAW,1)" 2>/dev/null && echo raw-ok`,
        "mknod /tmp/dev c 1 3 2>/dev/null && echo mknod-ok",
        "true",
      ].join("\n"),
    );
    assert.equal(r.out, "-1 Operation not permitted\n-1 Operation not permitted\n");
  });

  void it("cannot change the hostname or the clock", async () => {
    const r = await sh("hostname evil 2>/dev/null && echo host-ok; date -s 2001-01-01 >/dev/null 2>&1 && echo date-ok; hostname");
    assert.equal(r.out, "sandbox\n");
  });

  void it("has a read-only image root, a writable workspace and a fresh /tmp", async () => {
    const r = await sh("for p in /usr/x /etc/x /x /bin/x; do touch $p 2>/dev/null && echo wrote $p; done; touch /workspace/ok /tmp/ok ~/ok && echo writable; ls -A /tmp");
    assert.equal(r.out, "writable\nok\n");
  });

  void it("writes workspace files as the slot's unprivileged host uid", async () => {
    await sh("echo data > owned.txt");
    const st = statSync(`${sb.workspaceOnHost}/owned.txt`);
    assert.equal(st.uid, spec.slot.hostUidBase);
    assert.equal(st.gid, spec.slot.hostUidBase);
  });

  void it("does not gain privileges through a set-uid binary", async () => {
    const r = await sh("cp /usr/bin/id ./suid-id && chmod u+s ./suid-id && setpriv --reuid=1000 --regid=1000 --clear-groups ./suid-id -u");
    assert.equal(r.out.trim(), "1000");
  });

  void it("cannot reach another job's workspace", async () => {
    const otherSpec = env.spec();
    const other = await env.factory.create(otherSpec);
    try {
      await runStep(other, "echo secret > secret.txt");
      const r = await sh(`cat ${other.workspaceOnHost}/secret.txt 2>/dev/null || echo unreachable; find / -name secret.txt -not -path '/proc/*' 2>/dev/null`);
      assert.equal(r.out, "unreachable\n");
    } finally {
      await other.dispose();
      assert.deepEqual(await env.leftovers(otherSpec), []);
    }
  });

  void it("has no network but loopback", async () => {
    const r = await sh("ls /sys/class/net; cat /etc/resolv.conf | grep -c nameserver || true");
    assert.equal(r.out, "lo\n0\n");
  });
});
