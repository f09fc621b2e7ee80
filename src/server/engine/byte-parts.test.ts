import assert from "node:assert/strict";
import { test } from "node:test";
import { partsLength, sliceParts } from "./byte-parts.ts";

void test("sliceParts returns exactly the bytes of a range across part boundaries", () => {
  const whole = Buffer.from("0123456789abcdefghij");
  const parts = [whole.subarray(0, 3), whole.subarray(3, 3), whole.subarray(3, 11), whole.subarray(11)];
  assert.equal(partsLength(parts), whole.length);
  for (let from = 0; from <= whole.length; from++) {
    for (let to = from; to <= whole.length; to++) {
      assert.equal(Buffer.concat(sliceParts(parts, from, to)).toString(), whole.subarray(from, to).toString(), `${from}-${to}`);
    }
  }
});
