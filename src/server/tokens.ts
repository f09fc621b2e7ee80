/** Operator tokens: given, or read from / generated into `<dataDir>/<name>` with mode 0600. */
import { chmod, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { newToken, type TokenKind } from "../base/ids.ts";

export async function loadOrCreateToken(dataDir: string, file: string, kind: TokenKind): Promise<{ token: string; path: string; created: boolean }> {
  const path = join(dataDir, file);
  try {
    const token = (await readFile(path, "utf8")).trim();
    if (token.length > 0) {
      await chmod(path, 0o600);
      return { token, path, created: false };
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const token = newToken(kind);
  await writeFile(path, token + "\n", { mode: 0o600, flag: "w" });
  await chmod(path, 0o600);
  return { token, path, created: true };
}

/** A token file's content, or null when it is missing or empty. */
export async function readToken(path: string): Promise<string | null> {
  try {
    const token = (await readFile(path, "utf8")).trim();
    return token.length > 0 ? token : null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}
