/** A wide table that scrolls sideways on a narrow screen; focusable, so the keyboard can scroll it too. */
import type { ComponentChildren } from "preact";

export function ScrollX({ label, children }: { label: string; children: ComponentChildren }) {
  return <div class="scroll-x" tabIndex={0} role="region" aria-label={label}>{children}</div>;
}
