/** Bundles the web view into `<root>dist/web/` (root defaults to the package root, with a trailing slash). */
export function buildWeb(root?: string): Promise<void>;
