/** The DNS wire format kiln's resolver reads and writes (src/net/dns-wire.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildAnswer, buildQuery, emptyAnswer, parseQuery, parseResponse, QTYPE, RCODE } from '../../src/net/dns-wire.js';

/** Wire-format name: labels, then a zero byte. */
function name(n: string): Buffer {
  return Buffer.concat([...n.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0])]);
}

function header(id: number, flags: number, qd: number, an: number): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(flags, 2);
  h.writeUInt16BE(qd, 4);
  h.writeUInt16BE(an, 6);
  return h;
}

function record(owner: Buffer, type: number, ttl: number, data: Buffer): Buffer {
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(type, 0);
  fixed.writeUInt16BE(1, 2);
  fixed.writeUInt32BE(ttl, 4);
  fixed.writeUInt16BE(data.length, 8);
  return Buffer.concat([owner, fixed, data]);
}

const ptr = (off: number) => Buffer.from([0xc0 | (off >> 8), off & 255]);

describe('net/dns-wire', () => {
  it('parseQuery reads back what buildQuery wrote, lower-casing the name', () => {
    const q = buildQuery(0xbeef, 'Files.PythonHosted.org', QTYPE.AAAA);
    const p = parseQuery(q);
    assert.deepEqual(p, { id: 0xbeef, name: 'files.pythonhosted.org', type: QTYPE.AAAA, class: 1, rd: true, end: q.length });
    assert.equal(parseQuery(buildQuery(1, 'example.org.', QTYPE.A)).name, 'example.org');
  });

  it('parseQuery refuses a response, several questions, short and truncated packets', () => {
    const q = buildQuery(7, 'example.org', QTYPE.A);
    const response = Buffer.from(q);
    response.writeUInt16BE(0x8180, 2);
    assert.throws(() => parseQuery(response), /not a query/);
    const two = Buffer.from(q);
    two.writeUInt16BE(2, 4);
    assert.throws(() => parseQuery(two), /expected one question/);
    assert.throws(() => parseQuery(q.subarray(0, 11)), /short packet/);
    assert.throws(() => parseQuery(q.subarray(0, q.length - 2)), /truncated question/);
    assert.throws(() => parseQuery(q.subarray(0, 15)), /bad label|truncated name/);
  });

  it('emptyAnswer echoes the question with the rcode, RD as asked and RA', () => {
    const q = buildQuery(42, 'blocked.example', QTYPE.A);
    const a = emptyAnswer(q, parseQuery(q), RCODE.NXDOMAIN);
    assert.equal(a.readUInt16BE(0), 42);
    assert.equal(a.readUInt16BE(2), 0x8183);
    assert.deepEqual(parseResponse(a), { rcode: RCODE.NXDOMAIN, addresses: [] });
  });

  it('buildAnswer and parseResponse round trip A records through a compression pointer', () => {
    const q = buildQuery(9, 'example.org', QTYPE.A);
    const a = buildAnswer(q, parseQuery(q), ['93.184.215.14', '198.51.100.255'], 300);
    assert.deepEqual(parseResponse(a), {
      rcode: RCODE.NOERROR,
      addresses: [
        { ip: '93.184.215.14', ttl: 300 },
        { ip: '198.51.100.255', ttl: 300 },
      ],
    });
  });

  it('parseResponse follows a CNAME chain with pointers into the middle of names to the A records', () => {
    // Question www.example.org at 12; CNAME www.example.org -> cdn.example.net; A cdn.example.net.
    const head = header(1, 0x8180, 1, 3);
    const question = Buffer.concat([name('www.example.org'), Buffer.from([0, 1, 0, 1])]);
    // cdn.example.net written in full inside the CNAME's data, then pointed at by the A record.
    const cnameData = name('cdn.example.net');
    const cname = record(ptr(12), QTYPE.CNAME, 60, cnameData);
    const cnameDataOffset = 12 + question.length + 2 + 10;
    const a1 = record(ptr(cnameDataOffset), QTYPE.A, 30, Buffer.from([192, 0, 2, 1]));
    // An AAAA whose owner is "edge" + pointer to "example.net" inside the CNAME's data: skipped, not an address.
    const aaaa = record(Buffer.concat([Buffer.from([4]), Buffer.from('edge'), ptr(cnameDataOffset + 4)]), QTYPE.AAAA, 30, Buffer.alloc(16, 1));
    const packet = Buffer.concat([head, question, cname, a1, aaaa]);
    assert.deepEqual(parseResponse(packet), { rcode: 0, addresses: [{ ip: '192.0.2.1', ttl: 30 }] });
  });

  it('a name pointer loop throws instead of spinning', () => {
    const head = header(1, 0x8180, 1, 0);
    // The question's name is a pointer to itself.
    assert.throws(() => parseResponse(Buffer.concat([head, ptr(12), Buffer.from([0, 1, 0, 1])])), /pointer loop/);
    // Two pointers pointing at each other.
    assert.throws(() => parseResponse(Buffer.concat([head, ptr(14), ptr(12), Buffer.from([0, 1, 0, 1])])), /pointer loop/);
    // The same in a query.
    assert.throws(() => parseQuery(Buffer.concat([header(1, 0x0100, 1, 0), ptr(12), Buffer.from([0, 1, 0, 1])])), /pointer loop/);
  });

  it('truncated responses throw: in a pointer, a record header, record data, a label', () => {
    const q = buildQuery(9, 'example.org', QTYPE.A);
    const a = buildAnswer(q, parseQuery(q), ['192.0.2.7'], 60);
    assert.throws(() => parseResponse(a.subarray(0, a.length - 2)), /truncated record data/);
    assert.throws(() => parseResponse(a.subarray(0, a.length - 8)), /truncated record/);
    assert.throws(() => parseResponse(a.subarray(0, q.length + 1)), /truncated pointer/);
    assert.throws(() => parseResponse(a.subarray(0, 14)), /bad label|truncated name/);
    assert.throws(() => parseResponse(a.subarray(0, 5)), /short packet/);
    // A pointer past the end of the packet.
    assert.throws(() => parseResponse(Buffer.concat([header(1, 0x8180, 1, 0), ptr(500), Buffer.from([0, 1, 0, 1])])), /truncated name/);
  });
});
