// Lint: type-aware rules that keep promises honest, and layering enforced by import bans.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

/** Layers (STYLE.md): a module may not import from the layers listed against it. */
const banned = (from, patterns) => ({
  files: [`src/${from}/**/*.ts`],
  rules: {
    "no-restricted-imports": ["error", { patterns: patterns.map((p) => ({ group: [`**/${p}/**`, `../${p}/*`], message: `src/${from} may not import src/${p} (layering, STYLE.md)` })) }],
  },
});

export default tseslint.config(
  { ignores: ["node_modules/**", "dist/**", ".deltaci/**", "bin/**", "eslint.config.js", "bench/lib/*.mjs"] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      "@typescript-eslint/no-floating-promises": "error",
      "@typescript-eslint/no-misused-promises": "error",
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/require-await": "off",
      "@typescript-eslint/no-unsafe-assignment": "off",
      "@typescript-eslint/no-unsafe-member-access": "off",
      "@typescript-eslint/no-unsafe-argument": "off",
      "@typescript-eslint/no-unsafe-call": "off",
      "@typescript-eslint/no-unsafe-return": "off",
      "@typescript-eslint/restrict-template-expressions": "off",
      "@typescript-eslint/only-throw-error": "off",
      "@typescript-eslint/prefer-promise-reject-errors": "off",
      "no-empty": ["error", { allowEmptyCatch: true }],
    },
  },
  banned("base", ["protocol", "config", "client", "sandbox", "logs", "artifacts", "runner", "controller", "server", "cli"]),
  banned("protocol", ["client", "sandbox", "logs", "artifacts", "runner", "controller", "server", "cli"]),
  banned("sandbox", ["client", "runner", "controller", "server", "cli"]),
  banned("client", ["sandbox", "runner", "controller", "server", "cli"]),
  banned("logs", ["sandbox", "runner", "controller", "server", "cli"]),
  banned("runner", ["server", "controller", "cli"]),
  banned("controller", ["server", "runner", "cli", "sandbox"]),
  banned("server", ["client", "sandbox", "runner", "controller", "cli", "logs"]),
  banned("jobfile", ["client", "sandbox", "logs", "artifacts", "runner", "controller", "server", "cli"]),
);
