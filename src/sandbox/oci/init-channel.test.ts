import assert from "node:assert/strict";
import { Duplex } from "node:stream";
import { test } from "node:test";
import { InitChannel, type FrameType } from "./init-channel.ts";

function frame(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.write(type, 0, "latin1");
  head.writeUInt32BE(data.length, 1);
  return Buffer.concat([head, data]);
}

/** Init's side of the channel: what we push arrives at the channel as reads. */
function fakeInit(): Duplex {
  return new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
}

const payload = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) % 256));

void test("frames split at every kind of boundary arrive whole: output byte-exact, status and end frames intact", async () => {
  const out = [payload(65_536, 1), payload(1, 2), payload(40_000, 3), payload(65_536, 4)];
  const err = payload(3_000, 5);
  const wire = Buffer.concat([
    frame("O", out[0] as Buffer), frame("E", err), frame("O", Buffer.alloc(0)), frame("O", out[1] as Buffer),
    frame("O", out[2] as Buffer), frame("O", out[3] as Buffer), frame("S", Buffer.from("exit 3")), frame("R", Buffer.alloc(0)),
  ]);
  // Reads of 1, 4, 5, 6 bytes and then pipe-sized: splits inside headers, at header ends and inside payloads;
  // reads of 7 bytes split the status frame too.
  for (const sizes of [[1, 4, 5, 6, 65_536], [65_536], [3, 65_541], [wire.length], [7]]) {
    const socket = fakeInit();
    // Reads land in one reused buffer, scribbled over after each: what the channel keeps, it copied.
    const reused = Buffer.alloc(wire.length);
    const channel = await InitChannel.open(async (read) => {
      socket.on("data", (d: Buffer) => {
        d.copy(reused);
        read(reused.subarray(0, d.length));
        reused.fill(0xee, 0, d.length);
      });
      return socket;
    });
    const got: Record<string, Buffer[]> = { O: [], E: [], S: [], R: [] };
    let ended!: () => void;
    const done = new Promise<void>((resolve) => (ended = resolve));
    channel.run({ cwd: "/", argv: ["true"], env: {} }, {
      frame: (type: FrameType, data: Buffer) => {
        got[type]?.push(Buffer.from(data));
        if (type === "R") ended();
      },
      closed: () => ended(),
    });
    let at = 0;
    for (let i = 0; at < wire.length; i++) {
      const n = sizes[Math.min(i, sizes.length - 1)] ?? 1;
      socket.push(wire.subarray(at, at + n));
      at += n;
    }
    await done;
    assert.ok(Buffer.concat(got.O ?? []).equals(Buffer.concat(out)), `stdout bytes, reads of ${sizes.join(",")}`);
    assert.ok(Buffer.concat(got.E ?? []).equals(err));
    assert.deepEqual(got.S?.map((b) => b.toString()), ["exit 3"]);
    assert.equal(got.R?.length, 1);
  }
});

void test("a frame longer than init ever sends closes the channel", async () => {
  const socket = fakeInit();
  const channel = await InitChannel.open(async (read) => socket.on("data", read));
  const closed = new Promise<void>((resolve) => channel.run({ cwd: "/", argv: ["true"], env: {} }, { frame: () => {}, closed: resolve }));
  const head = Buffer.alloc(5);
  head.write("O", 0, "latin1");
  head.writeUInt32BE(64 * 1024 + 1, 1);
  socket.push(head);
  await closed;
  assert.equal(channel.isOpen, false);
});
