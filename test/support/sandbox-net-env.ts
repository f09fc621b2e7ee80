/** Re-exports for the network test (one import site). */
export { baseSpec, capturingLogger, randomSlot, tempRoot } from "./sandbox-harness.ts";
export { createNetHost as createNetHostSafe } from "./sandbox-nethost.ts";
