/**
 * The web view's built assets (dist/web, made by scripts/build-web.mjs): read once, served
 * under content-hashed names with a year-long immutable cache, and the one HTML shell every
 * page route answers with (no inline script or style: the CSP forbids both).
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";

export interface WebAsset {
  body: Buffer;
  contentType: string;
}

export interface WebAssets {
  /** By served name (`app.<hash>.js`). */
  files: Map<string, WebAsset>;
  /** The page shell, or null when the assets were not built. */
  shell: string | null;
  /** Why `shell` is null. */
  problem: string | null;
}

export const ASSET_PREFIX = "/web/assets/";
const SOURCES = [
  { file: "app.js", type: "text/javascript; charset=utf-8" },
  { file: "app.css", type: "text/css; charset=utf-8" },
] as const;

export const CSP = [
  "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
  "form-action 'self'", "frame-ancestors 'none'", "base-uri 'none'",
].join("; ");

/** Headers every web response carries (pages, assets, web API). */
export const SECURITY_HEADERS: Record<string, string> = {
  "content-security-policy": CSP,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cross-origin-opener-policy": "same-origin",
};

export async function loadWebAssets(dir: string): Promise<WebAssets> {
  const files = new Map<string, WebAsset>();
  const urls: string[] = [];
  for (const src of SOURCES) {
    let body: Buffer;
    try {
      body = await readFile(join(dir, src.file));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      return { files: new Map(), shell: null, problem: `the web view is not built (${join(dir, src.file)} is missing): run \`npm run build\`` };
    }
    const hash = createHash("sha256").update(body).digest("hex").slice(0, 16);
    const name = src.file.replace(/\.(\w+)$/, `.${hash}.$1`);
    files.set(name, { body, contentType: src.type });
    urls.push(ASSET_PREFIX + name);
  }
  const [js, css] = urls;
  const shell = [
    "<!doctype html>",
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    "<title>Delta CI</title>",
    '<link rel="icon" href="data:,">',
    `<link rel="stylesheet" href="${css}">`,
    `<script type="module" src="${js}"></script>`,
    '</head><body><div id="app"><noscript>The Delta CI web view needs JavaScript.</noscript></div></body></html>',
  ].join("\n");
  return { files, shell, problem: null };
}
