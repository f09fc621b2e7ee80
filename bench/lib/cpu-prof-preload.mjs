// Preloaded with NODE_OPTIONS="--import …/cpu-prof-preload.mjs" (node 20 refuses --cpu-prof in
// NODE_OPTIONS): profiles the whole process and writes a .cpuprofile to DELTACI_BENCH_CPU_PROF_DIR at exit.
import { Session } from "node:inspector";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const dir = process.env.DELTACI_BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 1000 });
  session.post("Profiler.start");
  process.on("exit", () => {
    session.post("Profiler.stop", (err, res) => {
      if (!err) writeFileSync(join(dir, `${process.argv[2] ?? "node"}-${process.pid}.cpuprofile`), JSON.stringify(res.profile));
    });
  });
}
