/**
 * One JSON value per line over a stream socket (the runner-host channel). A line longer than
 * `maxLineBytes` or that is not JSON ends the connection: the peer is broken or hostile.
 */
import type { Socket } from "node:net";

export function readJsonLines(socket: Socket, onValue: (value: unknown) => void, maxLineBytes = 1 << 20): void {
  let buffered: Buffer[] = [];
  let size = 0;
  socket.on("data", (chunk: Buffer) => {
    let start = 0;
    for (let nl = chunk.indexOf(10); nl !== -1; nl = chunk.indexOf(10, start)) {
      buffered.push(chunk.subarray(start, nl));
      const line = Buffer.concat(buffered).toString("utf8");
      buffered = [];
      size = 0;
      start = nl + 1;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        socket.destroy(new Error("not a JSON line"));
        return;
      }
      onValue(value);
    }
    if (start < chunk.length) {
      size += chunk.length - start;
      if (size > maxLineBytes) {
        socket.destroy(new Error(`line longer than ${maxLineBytes} bytes`));
        return;
      }
      buffered.push(chunk.subarray(start));
    }
  });
}

export function writeJsonLine(socket: Socket, value: unknown): void {
  if (!socket.destroyed && socket.writable) socket.write(`${JSON.stringify(value)}\n`);
}
