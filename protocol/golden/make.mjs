// Regenerates the golden frame fixtures. Run: node protocol/golden/make.mjs
// The fixtures are committed; both the Go and TS decoders are tested against them.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const T = { REQUEST: 1, RESULT: 2, ERROR: 3, EVENT: 4, STDIN: 5, STDOUT: 6, STDERR: 7, DATA: 8, EOF: 9, CONTROL: 10, CANCEL: 11, WINDOW: 12 };
const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n, 0); return b; };

function frame(type, stream, payload) {
  const body = payload === undefined ? Buffer.alloc(0) : Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
  const h = Buffer.alloc(9);
  h.writeUInt32BE(body.length, 0); h.writeUInt8(type, 4); h.writeUInt32BE(stream, 5);
  return Buffer.concat([h, body]);
}
const cases = {
  'hello.bin': [[T.REQUEST, 1, { op: 'hello', versions: [2] }], [T.RESULT, 1, { version: 2, agent: 'kiln-agent/0.1.0', pid: 1, transport: 'stdio', uid: 0, bootMs: 3 }]],
  'exec-stream.bin': [
    [T.REQUEST, 3, { op: 'exec', argv: ['/bin/sh', '-c', 'cat; echo err >&2'], stdin: true, timeoutMs: 1000, maxOutputBytes: 65536 }],
    [T.EVENT, 3, { event: 'started', pid: 7 }],
    [T.STDIN, 3, Buffer.from('hi\n')], [T.EOF, 3],
    [T.STDOUT, 3, Buffer.from('hi\n')], [T.STDERR, 3, Buffer.from('err\n')],
    [T.RESULT, 3, { exitCode: 0, signal: null, timedOut: false, durationMs: 4.5, cpuUserMs: 1, cpuSystemMs: 0.5, peakMemoryBytes: 1048576, outputTruncated: false, stdoutDroppedBytes: 0, stderrDroppedBytes: 0 }],
  ],
  // A stream over its cap: its head, the truncated event, its tail (docs/protocol.md, exec).
  'exec-truncated.bin': [
    [T.REQUEST, 13, { op: 'exec', argv: ['/bin/sh', '-c', 'seq 1 100; echo END'], maxOutputBytes: 8 }],
    [T.EVENT, 13, { event: 'started', pid: 8 }],
    [T.STDOUT, 13, Buffer.from('1\n2\n')],
    [T.EVENT, 13, { event: 'truncated', stream: 'stdout', droppedBytes: 288 }],
    [T.STDOUT, 13, Buffer.from('END\n')],
    [T.RESULT, 13, { exitCode: 0, signal: null, timedOut: false, durationMs: 1.5, cpuUserMs: 0.5, cpuSystemMs: 0.5, peakMemoryBytes: 1048576, outputTruncated: true, stdoutDroppedBytes: 288, stderrDroppedBytes: 0 }],
  ],
  'control.bin': [[T.CONTROL, 5, { signal: 'SIGINT' }], [T.CONTROL, 5, { resize: { cols: 120, rows: 40 } }], [T.CANCEL, 5]],
  'error.bin': [[T.REQUEST, 7, { op: 'file.read', path: '/../etc/passwd', maxBytes: 10 }], [T.ERROR, 7, { code: 'PATH_ESCAPE', message: 'path /../etc/passwd leaves the sandbox' }]],
  // Flow control: credit handed back for stream 11 in both directions (docs/protocol.md).
  'window.bin': [[T.STDOUT, 11, Buffer.alloc(3, 0x79)], [T.WINDOW, 11, u32(262144)], [T.WINDOW, 11, u32(1)], [T.WINDOW, 11, u32(0x7fffffff)]],
  'binary-data.bin': [[T.DATA, 9, Buffer.from([0, 1, 2, 255, 254, 10, 13, 0])], [T.DATA, 9, Buffer.alloc(0)], [T.EOF, 9]],
};
const index = {};
for (const [file, frames] of Object.entries(cases)) {
  writeFileSync(join(here, file), Buffer.concat(frames.map(([t, s, p]) => frame(t, s, p))));
  index[file] = frames.map(([type, stream, p]) => Buffer.isBuffer(p) ? { type, stream, base64: p.toString('base64') } : p === undefined ? { type, stream, base64: '' } : { type, stream, json: p });
}
writeFileSync(join(here, 'frames.json'), JSON.stringify(index, null, 2) + '\n');
