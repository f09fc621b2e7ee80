/**
 * A step's environment: system variables, then the job's env, the step's env and the secrets
 * (later wins). HOME and PATH come from the sandbox, which knows its own layout. Never logged.
 */
import type { Lease, Step } from "../protocol/schemas.ts";

export function stepEnv(lease: Lease, step: Step, index: number, workspaceInSandbox: string): Record<string, string> {
  return {
    CI: "true",
    DELTACI: "true",
    RUN_ID: lease.runId,
    JOB_ID: lease.jobId,
    DELTACI_JOB_NAME: lease.job.name,
    DELTACI_ATTEMPT: String(lease.attempt),
    DELTACI_WORKSPACE: workspaceInSandbox,
    DELTACI_STEP_INDEX: String(index),
    DELTACI_STEP_NAME: step.name,
    ...lease.job.env,
    ...step.env,
    ...lease.job.secrets,
  };
}
