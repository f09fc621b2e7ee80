import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newToken } from "../base/ids.ts";
import { SecretMasker } from "./secret-masker.ts";

/** Feeds `text` to a masker in pieces of the given sizes (cycled) and returns the output. */
function streamed(masker: SecretMasker, text: string | Buffer, sizes: number[]): string {
  const buf = Buffer.isBuffer(text) ? text : Buffer.from(text);
  const out: Buffer[] = [];
  let pos = 0;
  for (let i = 0; pos < buf.length; i++) {
    const n = sizes[i % sizes.length] ?? 1;
    out.push(Buffer.from(masker.write(buf.subarray(pos, pos + n))));
    pos += n;
  }
  out.push(masker.end());
  return Buffer.concat(out).toString();
}

void describe("SecretMasker", () => {
  const secret = "s3cr3t-Value!";

  void it("masks a secret in one write and across every split point", () => {
    const text = `before ${secret} middle ${secret}${secret} after\n`;
    const expected = "before *** middle ****** after\n";
    assert.equal(streamed(new SecretMasker([secret]), text, [text.length]), expected);
    for (let split = 1; split < text.length; split++) {
      assert.equal(streamed(new SecretMasker([secret]), text, [split, text.length]), expected, `split at ${split}`);
    }
    assert.equal(streamed(new SecretMasker([secret]), text, [1]), expected);
    assert.equal(streamed(new SecretMasker([secret]), text, [2, 3, 5]), expected);
  });

  void it("masks a secret whose rarest byte is everywhere in the output, across every split point", () => {
    const value = "Qq-QQ-Zz"; // its rarest byte, Q, also fills the text around it
    const text = `QQQ ${value}QQq-QQ-Z ${"Q".repeat(40)}${value}${value} QQ-QQ-Zz\n`;
    const expected = text.replaceAll(value, "***");
    for (let split = 1; split < text.length; split++) {
      assert.equal(streamed(new SecretMasker([value]), text, [split, 7]), expected, `split at ${split}`);
    }
  });

  void it("holds back only a possible prefix of a pattern", () => {
    const m = new SecretMasker([secret]);
    assert.equal(m.write(Buffer.from("hello world\n")).toString(), "hello world\n");
    assert.equal(m.write(Buffer.from("x s3cr")).toString(), "x ");
    assert.equal(m.heldBytes, 4);
    assert.equal(m.write(Buffer.from("ape\n")).toString(), "s3crape\n");
  });

  void it("masks base64 in all three alignments, base64url and URL encodings", () => {
    const value = "p@ss word/+?&=é";
    const m = new SecretMasker([value]);
    for (const prefix of ["", "a", "ab", "abc"]) {
      const b64 = Buffer.from(prefix + value + "tail").toString("base64");
      const out = streamed(new SecretMasker([value]), `x ${b64} y`, [3]);
      assert.ok(out.includes("***"), `base64 with prefix ${JSON.stringify(prefix)}: ${out}`);
      const full = Buffer.from(prefix + value).toString("base64");
      const inner = full.slice(Math.ceil((8 * prefix.length) / 6), Math.floor((8 * Buffer.byteLength(prefix + value)) / 6));
      assert.ok(!out.includes(inner), "no determined base64 fragment survives");
    }
    const url = Buffer.from(value).toString("base64url");
    assert.ok(!m.maskAll(`u=${url}`).includes(url));
    assert.equal(m.maskAll(`q=${encodeURIComponent(value)}&r=1`), "q=***&r=1");
    assert.equal(m.maskAll(`q=${encodeURIComponent(value).replace(/%20/g, "+")}`), "q=***");
  });

  void it("masks a multi-line secret whole and line by line", () => {
    const key = "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\nEEEEFFFFGGGG\n-----END KEY-----";
    const m = new SecretMasker([key]);
    assert.equal(streamed(m, `k=${key}\n`, [7]), "k=***\n");
    const printed = key.split("\n").map((l) => `  | ${l}`).join("\n");
    const out = streamed(new SecretMasker([key]), printed, [5]);
    for (const line of key.split("\n")) assert.ok(!out.includes(line), `line ${line} masked: ${out}`);
  });

  void it("masks Delta CI tokens without being told, split anywhere", () => {
    const token = newToken("lease");
    const text = `auth: Bearer ${token}\nnext line\n`;
    for (let split = 1; split < text.length; split += 3) {
      assert.equal(streamed(new SecretMasker([]), text, [split, 1000]), "auth: Bearer ***\nnext line\n");
    }
    assert.equal(new SecretMasker([]).maskAll("dci_lse_short and dci_xyz_"), "dci_lse_short and dci_xyz_");
    // Every kind; a body with a char outside base64url, or an unknown kind, is not a token.
    for (const kind of ["registration", "session", "controller", "api"] as const) assert.equal(new SecretMasker([]).maskAll(`<${newToken(kind)}>`), "<***>");
    const body = token.slice(8);
    assert.equal(new SecretMasker([]).maskAll(`dci_lse_${body.slice(0, 20)}.${body.slice(21)}`), `dci_lse_${body.slice(0, 20)}.${body.slice(21)}`);
    assert.equal(new SecretMasker([]).maskAll(`dci_xyz_${body}`), `dci_xyz_${body}`);
  });

  void it("finds tokens among few or many underscores, at the buffer's edges too", () => {
    const token = newToken("session");
    const m = new SecretMasker([]);
    assert.equal(m.maskAll(`${token}`), "***");
    assert.equal(m.maskAll(`_dci_${token}_`), "_dci_***_");
    // Dense underscores (past the point where the plain search takes over), tokens before and after it.
    const snake = "a_b_c_d_dc_ci_i_".repeat(8);
    assert.equal(m.maskAll(`${token} ${snake}${token}__${snake}dci${token}`), `*** ${snake}***__${snake}dci***`);
  });

  void it("masks overlapping secrets without leaving a fragment", () => {
    const m = new SecretMasker(["abcdef", "defghi"]);
    assert.equal(m.maskAll("xxabcdefghiyy"), "xx***yy");
  });

  void it("ignores values too short to mask and passes bytes through unchanged", () => {
    const m = new SecretMasker(["ab", ""]);
    const bin = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x0a]);
    assert.deepEqual(Buffer.concat([m.write(bin), m.end()]), bin);
    assert.equal(m.maskAll("ab ab"), "ab ab");
  });
});
