import assert from "node:assert/strict";
import { test } from "node:test";
import { indexOfByRareByte, rarestByteAt } from "./find-bytes.ts";

void test("finds what indexOf finds, from every offset, whether the rare byte is rare or everywhere", () => {
  const needles = [Buffer.from("dci_"), Buffer.from("\n::add-mask::")];
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (const needle of needles) {
    const rareAt = needle.indexOf(needle === needles[0] ? "_" : "k");
    // Sparse: a few needles in plain text; dense: the rare byte everywhere and near-misses of the needle.
    for (const alphabet of ["abc xyz\n", `_k${needle.toString().slice(0, -1)}`]) {
      for (let round = 0; round < 40; round++) {
        const parts: string[] = [];
        for (let i = 0; i < 200; i++) parts.push(rand(25) === 0 ? needle.toString() : (alphabet[rand(alphabet.length)] ?? ""));
        const data = Buffer.from(parts.join(""));
        for (let from = 0; from <= data.length; from += 1 + rand(7)) {
          assert.equal(indexOfByRareByte(data, needle, rareAt, from), data.indexOf(needle, from), `from ${from} in ${JSON.stringify(data.toString())}`);
        }
      }
    }
    // At the very start and the very end.
    assert.equal(indexOfByRareByte(needle, needle, rareAt, 0), 0);
    const tail = Buffer.concat([Buffer.from("x".repeat(50)), needle]);
    assert.equal(indexOfByRareByte(tail, needle, rareAt, 0), 50);
    assert.equal(indexOfByRareByte(tail.subarray(0, tail.length - 1), needle, rareAt, 0), -1);
  }
});

void test("any index of the needle may be the rare one, a byte it repeats too; rarestByteAt picks an uncommon byte", () => {
  let seed = 11;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  const needle = Buffer.from("aXbXXa");
  for (let rareAt = 0; rareAt < needle.length; rareAt++) {
    for (let round = 0; round < 40; round++) {
      const data = Buffer.from(Array.from({ length: 150 }, () => (rand(20) === 0 ? needle.toString() : ("abX "[rand(4)] ?? ""))).join(""));
      for (let from = 0; from <= data.length; from += 1 + rand(5)) assert.equal(indexOfByRareByte(data, needle, rareAt, from), data.indexOf(needle, from));
    }
  }
  assert.equal(rarestByteAt(Buffer.from("s3cret-value-in-env")), 7); // "v"
  assert.equal(rarestByteAt(Buffer.from("hunter2!")), 7); // not listed as common: rarest
  assert.equal(rarestByteAt(Buffer.from("ab")), 1);
});
