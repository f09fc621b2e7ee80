import type { ChildProcess } from "node:child_process";

/** Resolves with the URL a `deltaci server`-style child prints ("… ready at http://…"); rejects if it exits first or stays silent for 60 s. */
export function waitForReadyUrl(proc: ChildProcess): Promise<string> {
  let out = "";
  let err = "";
  proc.stderr?.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line: ${out} ${err}`)), 60_000);
    proc.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
      const m = /ready at (http:\/\/\S+)/.exec(out);
      if (m?.[1]) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited ${code} before it was ready: ${err}`));
    });
  });
}
