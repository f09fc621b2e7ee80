/**
 * A test host of our own: a network namespace joined to the host by a veth pair, running a small
 * HTTP server on two ports. Only addresses created here are ever contacted. `remove()` deletes the
 * server, the namespace and the veth even after failures.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomInt } from "node:crypto";

export interface NetHost {
  ns: string;
  address: string;
  server: ChildProcess;
  remove(): void;
}

const SERVER = `
const http = require("node:http");
for (const port of [8080, 8081]) http.createServer((req, res) => res.end("hello from test host port " + port + "\\n")).listen(port, process.argv[1]);
setTimeout(() => console.log("ready"), 50);
`;

export async function createNetHost(): Promise<NetHost> {
  const id = randomInt(1e6).toString(36);
  const ns = `dcit-${id}`;
  const hostIf = `dcih${id}`;
  const nsIf = `dcin${id}`;
  const a = randomInt(0, 256);
  const b = randomInt(0, 64) * 4;
  const address = `10.213.${a}.${b + 2}`;
  let server: ChildProcess | null = null;
  const remove = () => {
    if (server?.pid && server.exitCode === null) server.kill("SIGKILL");
    try {
      execFileSync("ip", ["netns", "del", ns], { stdio: "ignore" });
    } catch {}
    try {
      execFileSync("ip", ["link", "del", hostIf], { stdio: "ignore" });
    } catch {}
  };
  try {
    const ip = (...args: string[]) => execFileSync("ip", args, { stdio: "pipe" });
    ip("netns", "add", ns);
    ip("link", "add", hostIf, "type", "veth", "peer", "name", nsIf);
    ip("link", "set", nsIf, "netns", ns);
    ip("addr", "add", `10.213.${a}.${b + 1}/30`, "dev", hostIf);
    ip("link", "set", hostIf, "up");
    ip("netns", "exec", ns, "ip", "addr", "add", `${address}/30`, "dev", nsIf);
    ip("netns", "exec", ns, "ip", "link", "set", nsIf, "up");
    ip("netns", "exec", ns, "ip", "link", "set", "lo", "up");
    const srv = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", SERVER, address], { stdio: ["ignore", "pipe", "inherit"] });
    server = srv;
    await new Promise<void>((resolve, reject) => {
      srv.stdout?.once("data", () => resolve());
      srv.once("exit", (code) => reject(new Error(`test host server exited ${code}`)));
    });
    return { ns, address, server: srv, remove };
  } catch (e) {
    remove();
    throw e;
  }
}
