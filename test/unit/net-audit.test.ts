/** The audit trail's pure parts (src/net/audit.ts): kernel log lines and the bounded event ring. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EventRing, kernelLogEvent, NETWORK_EVENTS_KEPT, parseKernelLog } from '../../src/net/audit.js';

const LINE =
  'kt1234:x IN=kt12340 OUT=ktw1h MAC=02:6b:0a:01:02:03:02:6b:0a:01:00:01:08:00 SRC=10.1.2.3 DST=198.18.1.12 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=4242 DF PROTO=TCP SPT=41864 DPT=80 WINDOW=64240 RES=0x00 SYN URGP=0 ';

describe('net/audit parseKernelLog', () => {
  it('reads a refused TCP connection of the table', () => {
    const l = parseKernelLog('kt1234', LINE);
    assert.deepEqual(l, { why: 'x', src: '10.1.2.3', dst: '198.18.1.12', proto: 'tcp', dport: 80 });
    assert.deepEqual(kernelLogEvent(l!), { kind: 'connection', verdict: 'refused', address: '198.18.1.12', port: 80, protocol: 'tcp', reason: 'not in the allowlist' });
  });

  it('maps every prefix to its verdict', () => {
    const verdict = (why: string) => kernelLogEvent(parseKernelLog('kt1234', LINE.replace('kt1234:x ', `kt1234:${why} `))!).verdict;
    assert.equal(verdict('deny'), 'refused');
    assert.equal(verdict('host'), 'refused');
    assert.equal(verdict('ok'), 'allowed');
    assert.equal(verdict('learn'), 'learned');
  });

  it('an ICMP line has no port; a line after dmesg decorations still parses', () => {
    const icmp = '[12345.678] kt1234:ok IN=kt12340 OUT=eth0 SRC=10.1.2.3 DST=192.0.2.9 LEN=84 TTL=63 PROTO=ICMP TYPE=8 CODE=0 ID=3 SEQ=1 ';
    assert.deepEqual(parseKernelLog('kt1234', icmp), { why: 'ok', src: '10.1.2.3', dst: '192.0.2.9', proto: 'icmp', dport: undefined });
  });

  it('ignores other tables, unknown prefixes and lines without addresses', () => {
    assert.equal(parseKernelLog('kt9999', LINE), undefined);
    assert.equal(parseKernelLog('kt1234', LINE.replace('kt1234:x ', 'kt1234:other ')), undefined);
    assert.equal(parseKernelLog('kt1234', 'kt1234:x IN=kt12340 OUT=ktw1h PROTO=TCP'), undefined);
    assert.equal(parseKernelLog('kt1234', 'usb 1-1: new high-speed USB device'), undefined);
    // "MSRC=" must not be read as SRC=.
    assert.equal(parseKernelLog('kt1234', 'kt1234:x MSRC=1.1.1.1 DST=2.2.2.2'), undefined);
  });
});

describe('net/audit EventRing', () => {
  it('numbers events from 1, stamps them, counts the refused ones', () => {
    const ring = new EventRing();
    const a = ring.push({ kind: 'dns', verdict: 'allowed', name: 'pypi.org' });
    const b = ring.push({ kind: 'connection', verdict: 'refused', address: '192.0.2.1', port: 22 });
    ring.push({ kind: 'dns', verdict: 'refused', name: 'evil.example' });
    assert.equal(a.seq, 1);
    assert.equal(b.seq, 2);
    assert.ok(!Number.isNaN(Date.parse(a.at)));
    assert.equal(ring.refused, 2);
    assert.deepEqual(
      ring.list().map((e) => e.seq),
      [1, 2, 3],
    );
  });

  it('after and limit: the events after a seq, oldest first, at most limit', () => {
    const ring = new EventRing();
    for (let i = 0; i < 10; i++) ring.push({ kind: 'dns', verdict: 'allowed', name: `h${i}.example` });
    assert.deepEqual(
      ring.list(7).map((e) => e.seq),
      [8, 9, 10],
    );
    assert.deepEqual(
      ring.list(2, 3).map((e) => e.seq),
      [3, 4, 5],
    );
    assert.deepEqual(ring.list(10), []);
    assert.deepEqual(ring.list(99), []);
  });

  it('keeps only the newest NETWORK_EVENTS_KEPT; seq and the refused count go on', () => {
    const ring = new EventRing();
    const total = NETWORK_EVENTS_KEPT + 25;
    for (let i = 0; i < total; i++) ring.push({ kind: 'connection', verdict: i % 2 ? 'refused' : 'allowed' });
    const kept = ring.list();
    assert.equal(kept.length, NETWORK_EVENTS_KEPT);
    assert.equal(kept[0]!.seq, 26);
    assert.equal(kept.at(-1)!.seq, total);
    assert.equal(ring.refused, Math.floor(total / 2));
    // A poller that fell behind gets what is still kept.
    assert.equal(ring.list(3)[0]!.seq, 26);
  });
});
