import { test } from "node:test";
import assert from "node:assert/strict";
import { dnsAnswer, fakeAddress, FAKE_ADDRESSES, nameAllowed, parseDnsQuery } from "./egress-dns.ts";

/** A query as a stub resolver sends it: id, RD, one question. */
function query(name: string, type: number, id = 0x1234): Buffer {
  const labels = name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, "latin1")]));
  const head = Buffer.from([id >> 8, id & 255, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([head, ...labels, Buffer.from([0, 0, type, 0, 1])]);
}

void test("a query for a listed name gets its stand-in address; others NXDOMAIN; AAAA an empty answer", () => {
  const q = parseDnsQuery(query("Git.Example.org", 1));
  assert.deepEqual(q && { id: q.id, name: q.name, type: q.type }, { id: 0x1234, name: "git.example.org", type: 1 });
  const a = dnsAnswer(q!, "198.18.0.1");
  assert.equal(a.readUInt16BE(0), 0x1234);
  assert.equal(a.readUInt16BE(2) & 0x800f, 0x8000); // a response, NOERROR
  assert.equal(a.readUInt16BE(6), 1);
  assert.deepEqual([...a.subarray(a.length - 4)], [198, 18, 0, 1]);
  const nx = dnsAnswer(q!, null);
  assert.equal(nx.readUInt16BE(2) & 0xf, 3);
  assert.equal(nx.readUInt16BE(6), 0);
  const aaaa = dnsAnswer(parseDnsQuery(query("git.example.org", 28))!, "198.18.0.1");
  assert.equal(aaaa.readUInt16BE(2) & 0xf, 0);
  assert.equal(aaaa.readUInt16BE(6), 0);
});

void test("malformed queries and responses are not answered", () => {
  assert.equal(parseDnsQuery(Buffer.alloc(5)), null);
  const response = query("a.org", 1);
  response[2] = 0x81;
  assert.equal(parseDnsQuery(response), null);
  const pointer = query("a.org", 1);
  pointer[12] = 0xc0;
  assert.equal(parseDnsQuery(pointer), null);
  assert.equal(parseDnsQuery(query("a.org", 1).subarray(0, 16)), null);
});

void test("stand-in addresses and which names get one", () => {
  assert.equal(fakeAddress(0), "198.18.0.1");
  assert.equal(fakeAddress(FAKE_ADDRESSES - 1), "198.19.255.254");
  assert.throws(() => fakeAddress(FAKE_ADDRESSES));
  assert.equal(nameAllowed(["git.example.org:22"], "git.example.org"), true);
  assert.equal(nameAllowed(["*.example.org:443"], "a.b.example.org"), true);
  assert.equal(nameAllowed(["*.example.org:443", "10.0.0.5:22"], "example.org"), false);
});
