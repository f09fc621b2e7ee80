/**
 * Server settings that come from the environment (the only place the server's env is read):
 * DELTACI_API_TOKEN and DELTACI_CONTROLLER_TOKEN override the generated token files;
 * AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN) and AWS_REGION feed an S3 blob
 * store (absent keys: the AWS SDK's default chain, which also reads ~/.aws and AWS_PROFILE).
 * DELTACI_DATABASE_URL puts the state in PostgreSQL (as `--database` does).
 */
export interface ServerEnv {
  apiToken: string | undefined;
  controllerToken: string | undefined;
  awsCredentials: AwsCredentials | undefined;
  awsRegion: string | undefined;
  databaseUrl: string | undefined;
}

export interface AwsCredentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

const clean = (v: string | undefined) => (v && v.trim().length > 0 ? v.trim() : undefined);

export function serverEnv(env: NodeJS.ProcessEnv = process.env): ServerEnv {
  const accessKeyId = clean(env.AWS_ACCESS_KEY_ID);
  const secretAccessKey = clean(env.AWS_SECRET_ACCESS_KEY);
  const sessionToken = clean(env.AWS_SESSION_TOKEN);
  return {
    apiToken: clean(env.DELTACI_API_TOKEN), controllerToken: clean(env.DELTACI_CONTROLLER_TOKEN),
    awsCredentials: accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) } : undefined,
    awsRegion: clean(env.AWS_REGION) ?? clean(env.AWS_DEFAULT_REGION),
    databaseUrl: clean(env.DELTACI_DATABASE_URL),
  };
}

/** The S3 service the tests and benches use (scripts/test-services.sh start prints these). */
export interface TestS3Env {
  endpoint: string;
  bucket: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
}

/** Throws, naming what is missing, when the S3 test service env is not set: S3 tests fail, never skip. */
export function testS3Env(env: NodeJS.ProcessEnv = process.env): TestS3Env {
  const names = ["DELTACI_TEST_S3_ENDPOINT", "DELTACI_TEST_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] as const;
  const missing = names.filter((n) => !clean(env[n]));
  if (missing.length > 0) {
    throw new Error(`S3 test service env missing: ${missing.join(", ")}; start it with: eval "$(bash scripts/test-services.sh start | sed 's/^/export /')"`);
  }
  return {
    endpoint: String(env.DELTACI_TEST_S3_ENDPOINT), bucket: String(env.DELTACI_TEST_S3_BUCKET), region: clean(env.AWS_REGION) ?? "us-east-1",
    credentials: { accessKeyId: String(env.AWS_ACCESS_KEY_ID), secretAccessKey: String(env.AWS_SECRET_ACCESS_KEY) },
  };
}
