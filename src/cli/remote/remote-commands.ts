/** The commands that talk to a running server: submit, jobs, status, logs, cancel, artifacts. */
import { mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { systemClock } from "../../base/clock.ts";
import { isDeltaError } from "../../base/errors.ts";
import { defaults } from "../../config/defaults.ts";
import { loadClientConfig } from "../../config/client-config.ts";
import { JobApiClient } from "../../client/job-api-client.ts";
import type { JobStatus } from "../../protocol/schemas.ts";
import { CliExit, ExitCode } from "../exit.ts";
import { loadJobs, resolveJobFile, selectJobs } from "../load-jobs.ts";
import { artifactFile } from "../artifact-file.ts";
import { LogPrinter } from "../log-printer.ts";
import { parseSecretFlags } from "../secrets.ts";
import { makeStyle } from "../style.ts";
import { submitJobs } from "../submit-jobs.ts";
import { formatJobTable, formatStatus } from "./format.ts";

interface ClientOpts {
  server?: string;
  tokenFile?: string;
  json?: boolean;
}

const collect = (v: string, prev: string[]) => [...prev, v];

function withClient(cmd: Command): Command {
  return cmd
    .option("--server <url>", "server URL (else DELTACI_SERVER, the config file, or http://127.0.0.1:8181)")
    .option("--token-file <file>", "file holding the API token (else DELTACI_API_TOKEN, the config file, or ./.deltaci/api-token)")
    .option("--json", "print JSON (machine-readable) instead of text");
}

async function withApi<T>(opts: ClientOpts, fn: (client: JobApiClient) => Promise<T>): Promise<T> {
  const cfg = loadClientConfig({ server: opts.server, tokenFile: opts.tokenFile });
  const client = new JobApiClient({ server: cfg.server, token: cfg.token, timeoutMs: defaults.requestTimeoutMs });
  try {
    return await fn(client);
  } catch (err) {
    if (isDeltaError(err, "E_NETWORK")) throw new CliExit(ExitCode.jobFailed, `deltaci: cannot reach the server at ${cfg.server} (${err.message}); start one with \`deltaci up\` or pass --server`);
    if (isDeltaError(err, "E_UNAUTHORIZED") || isDeltaError(err, "E_TOKEN_INVALID")) {
      throw new CliExit(ExitCode.usage, `deltaci: the server refused the API token (token from: ${cfg.sources.token}); pass --token-file or set DELTACI_API_TOKEN`);
    }
    if (isDeltaError(err, "E_NOT_FOUND")) throw new CliExit(ExitCode.usage, `deltaci: ${err.message}`);
    throw err;
  } finally {
    await client.close();
  }
}

const print = (text: string) => process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
const printJson = (v: unknown) => print(JSON.stringify(v, null, 2));

export function registerRemoteCommands(program: Command): void {
  withClient(program.command("submit").argument("[file]", "job file (default: .deltaci.yml or deltaci.yml here)"))
    .description("submit a job file's jobs to a server and print their ids")
    .option("--job <name>", "submit only this job (repeatable)", collect, [])
    .option("--secret <NAME[=VALUE]>", "give jobs a secret; without =VALUE it is read from the environment (repeatable)", collect, [])
    .option("--fork", "submit as untrusted (a fork): no secrets, read-only caches")
    .option("--source <dir>", "directory packed as the source (default: the job file's directory)")
    .option("--no-source", "send no source")
    .action(async (file: string | undefined, opts: ClientOpts & { job: string[]; secret: string[]; fork?: boolean; source?: string | false }) => {
      const cwd = process.cwd();
      const path = resolveJobFile(file, cwd);
      const jobs = selectJobs(loadJobs(path, cwd), opts.job);
      const secrets = parseSecretFlags(opts.secret);
      const sourceDir = opts.source === false ? null : resolve(cwd, opts.source ?? dirname(path));
      const submitted = await withApi(opts, (client) => submitJobs(client, { jobs, source: sourceDir, secrets, fork: opts.fork === true }));
      if (opts.json) printJson({ jobs: submitted.map((s) => ({ name: s.job.name, jobId: s.jobId, runId: s.runId })) });
      else for (const s of submitted) print(`${s.job.name}\t${s.jobId}`);
    });

  withClient(program.command("jobs"))
    .description("list jobs on the server")
    .action(async (opts: ClientOpts) => {
      const jobs = await withApi(opts, (c) => c.list());
      if (opts.json) printJson(jobs);
      else print(formatJobTable(jobs, Date.now()));
    });

  withClient(program.command("status").argument("<job>", "job id"))
    .description("show a job's state, attempts, steps, failure and artifacts")
    .action(async (jobId: string, opts: ClientOpts) => {
      const st = await withApi(opts, (c) => c.status(jobId));
      if (opts.json) printJson(st);
      else print(formatStatus(st, makeStyle(process.stdout.isTTY === true)));
    });

  withClient(program.command("logs").argument("<job>", "job id"))
    .description("print a job's log; -f follows it until the job ends")
    .option("-f, --follow", "follow the log until the job ends")
    .option("--raw", "print the bytes as stored (step markers included)")
    .option("--fold", "fold log groups (::group::, section_start, --- NAME) to a line count (default on a terminal)")
    .option("--no-fold", "print every line of log groups")
    .action(async (jobId: string, opts: ClientOpts & { follow?: boolean; raw?: boolean; fold?: boolean }) => {
      const tty = process.stdout.isTTY === true;
      const printer = new LogPrinter({ write: (t) => process.stdout.write(t), style: makeStyle(tty), prefix: "", fold: opts.fold ?? tty });
      let offset = 0;
      const onChunk = (chunk: Buffer) => {
        if (opts.json) print(JSON.stringify({ jobId, offset, text: chunk.toString("utf8") }));
        else if (opts.raw) process.stdout.write(chunk);
        else printer.push(chunk);
        offset += chunk.length;
      };
      const ac = new AbortController();
      const onSigint = () => ac.abort(new CliExit(ExitCode.interrupted));
      process.once("SIGINT", onSigint);
      try {
        await withApi(opts, async (c) => {
          if (opts.follow) await c.followLog(jobId, onChunk, { clock: systemClock, signal: ac.signal });
          else onChunk(await c.readLog(jobId, 0));
        });
      } catch (err) {
        if (ac.signal.aborted) throw new CliExit(ExitCode.interrupted);
        throw err;
      } finally {
        process.removeListener("SIGINT", onSigint);
        if (!opts.json && !opts.raw) printer.end();
      }
    });

  withClient(program.command("cancel").argument("<job>", "job id"))
    .description("cancel a job (its runner stops the steps, uploads what it has, and acknowledges)")
    .option("--hard", "stop at once instead of after the grace period")
    .action(async (jobId: string, opts: ClientOpts & { hard?: boolean }) => {
      const st = await withApi(opts, async (c) => {
        await c.cancel(jobId, opts.hard ? "hard" : "graceful");
        return c.status(jobId);
      });
      if (opts.json) printJson({ jobId, state: st.state });
      else print(`${jobId}: ${st.state}`);
    });

  withClient(program.command("artifacts").argument("<job>", "job id"))
    .description("list a job's artifacts, or download them with --download DIR")
    .option("--download <dir>", "download every artifact into DIR")
    .action(async (jobId: string, opts: ClientOpts & { download?: string }) => {
      const result = await withApi(opts, async (c) => {
        const st = await c.status(jobId);
        const out: Array<JobStatus["artifacts"][number] & { file?: string }> = [];
        for (const a of st.artifacts) {
          if (opts.download === undefined) {
            out.push(a);
            continue;
          }
          const file = artifactFile(resolve(opts.download), a);
          await mkdir(dirname(file), { recursive: true });
          await c.downloadArtifact(jobId, a.name, file);
          out.push({ ...a, file });
        }
        return out;
      });
      if (opts.json) printJson(result);
      else if (result.length === 0) print(`${jobId}: no artifacts`);
      else for (const a of result) print(`${a.name}\t${a.size} bytes\tsha256:${a.sha256.slice(0, 12)}${a.file ? `\t→ ${a.file}` : ""}`);
    });
}
