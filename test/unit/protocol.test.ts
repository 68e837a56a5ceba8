import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { REPO_ROOT } from '../../src/core/config.js';
import type { KilnError } from '../../src/core/errors.js';
import { AgentClient } from '../../src/protocol/agent-client.js';
import { decodeJson, encodeFrame, encodeJsonFrame, type Frame, FrameDecoder, FrameType, MAX_PAYLOAD_BYTES, ProtocolError } from '../../src/protocol/frames.js';
import { PROTOCOL_VERSION } from '../../src/protocol/messages.js';

const GOLDEN = join(REPO_ROOT, 'protocol/golden');
type Expected = { type: number; stream: number; json?: unknown; base64?: string };

describe('frame codec', () => {
  const index = JSON.parse(readFileSync(join(GOLDEN, 'frames.json'), 'utf8')) as Record<string, Expected[]>;
  for (const [file, expected] of Object.entries(index)) {
    it(`decodes golden ${file}, also byte by byte`, () => {
      const bytes = readFileSync(join(GOLDEN, file));
      const whole = new FrameDecoder().push(bytes);
      const dec = new FrameDecoder();
      const bytewise: Frame[] = [];
      for (const b of bytes) bytewise.push(...dec.push(Buffer.from([b])));
      for (const frames of [whole, bytewise]) {
        assert.equal(frames.length, expected.length);
        frames.forEach((f, i) => {
          const e = expected[i]!;
          assert.equal(f.type, e.type);
          assert.equal(f.stream, e.stream);
          if (e.json !== undefined) assert.deepEqual(decodeJson(f), e.json);
          else assert.equal(f.payload.toString('base64'), e.base64);
        });
      }
    });
    it(`re-encodes golden ${file} to the same bytes`, () => {
      const bytes = readFileSync(join(GOLDEN, file));
      const out = Buffer.concat(
        expected.map((e) => (e.json !== undefined ? encodeJsonFrame(e.type as 1, e.stream, e.json) : encodeFrame(e.type as 1, e.stream, Buffer.from(e.base64 ?? '', 'base64')))),
      );
      assert.deepEqual(out, bytes);
    });
  }

  it('rejects an oversized length before buffering it', () => {
    const h = Buffer.alloc(9);
    h.writeUInt32BE(MAX_PAYLOAD_BYTES + 1, 0);
    h.writeUInt8(FrameType.STDOUT, 4);
    assert.throws(() => new FrameDecoder().push(h), ProtocolError);
  });

  it('rejects an unknown frame type', () => {
    const h = Buffer.alloc(9);
    h.writeUInt8(0x7f, 4);
    assert.throws(() => new FrameDecoder().push(h), /unknown frame type/);
  });

  it('refuses to encode an oversized payload', () => {
    assert.throws(() => encodeFrame(FrameType.DATA, 1, Buffer.alloc(MAX_PAYLOAD_BYTES + 1)), ProtocolError);
  });
});

/** A scripted agent on the other end of in-memory pipes: honest about framing, fake about execution. */
function fakeAgent(script: (frame: Frame, reply: (b: Buffer) => void) => void): { client: Promise<AgentClient>; toHost: PassThrough } {
  const toAgent = new PassThrough();
  const toHost = new PassThrough();
  const dec = new FrameDecoder();
  toAgent.on('data', (c: Buffer) => {
    for (const f of dec.push(c)) {
      const req = f.type === FrameType.REQUEST ? (decodeJson(f) as { op: string }) : undefined;
      if (req?.op === 'hello') toHost.write(encodeJsonFrame(FrameType.RESULT, f.stream, { version: PROTOCOL_VERSION, agent: 'fake', pid: 1, transport: 'memory', uid: 0 }));
      else script(f, (b) => toHost.write(b));
    }
  });
  return { client: AgentClient.connect({ readable: toHost, writable: toAgent }), toHost };
}

describe('AgentClient', () => {
  it('streams exec output and validates the result', async () => {
    const { client } = fakeAgent((f, reply) => {
      if (f.type !== FrameType.REQUEST) return;
      reply(encodeJsonFrame(FrameType.EVENT, f.stream, { event: 'started', pid: 9 }));
      reply(encodeFrame(FrameType.STDOUT, f.stream, Buffer.from('out')));
      reply(encodeFrame(FrameType.STDERR, f.stream, Buffer.from('err')));
      reply(encodeJsonFrame(FrameType.RESULT, f.stream, { exitCode: 3, signal: null, timedOut: false, durationMs: 1, cpuUserMs: 0, cpuSystemMs: 0, peakMemoryBytes: 1, outputTruncated: false }));
    });
    const agent = await client;
    let out = '',
      err = '',
      pid = 0;
    const r = await agent.exec({ argv: ['x'] }, { onStdout: (c) => (out += c), onStderr: (c) => (err += c), onStarted: (p) => (pid = p) }).result;
    assert.deepEqual([out, err, pid, r.exitCode], ['out', 'err', 9, 3]);
  });

  it('keeps a budget per stream, passes the truncated event on and counts what it cut itself', async () => {
    const { client } = fakeAgent((f, reply) => {
      if (f.type !== FrameType.REQUEST) return;
      reply(encodeFrame(FrameType.STDOUT, f.stream, Buffer.from('head')));
      reply(encodeJsonFrame(FrameType.EVENT, f.stream, { event: 'truncated', stream: 'stdout', droppedBytes: 90 }));
      reply(encodeFrame(FrameType.STDOUT, f.stream, Buffer.from('tail')));
      // stderr has a budget of its own: a full stdout does not cut it. An agent that sends more
      // than the cap is cut by the host, and the cut is counted.
      reply(encodeFrame(FrameType.STDERR, f.stream, Buffer.from('error-message')));
      reply(
        encodeJsonFrame(FrameType.RESULT, f.stream, {
          exitCode: 1,
          signal: null,
          timedOut: false,
          durationMs: 1,
          cpuUserMs: 0,
          cpuSystemMs: 0,
          peakMemoryBytes: 1,
          outputTruncated: true,
          stdoutDroppedBytes: 90,
          stderrDroppedBytes: 0,
        }),
      );
    });
    const agent = await client;
    const got: string[] = [];
    const r = await agent.exec(
      { argv: ['x'], maxOutputBytes: 8 },
      {
        onStdout: (c) => got.push(`out:${c}`),
        onStderr: (c) => got.push(`err:${c}`),
        onTruncated: (s, n) => got.push(`truncated:${s}:${n}`),
      },
    ).result;
    assert.deepEqual(got, ['out:head', 'truncated:stdout:90', 'out:tail', 'err:error-me']);
    assert.deepEqual([r.outputTruncated, r.stdoutDroppedBytes, r.stderrDroppedBytes], [true, 90, 5]);
  });

  it('reads a result without per-stream counts (an older agent) as nothing dropped', async () => {
    const { client } = fakeAgent((f, reply) => {
      if (f.type === FrameType.REQUEST)
        reply(encodeJsonFrame(FrameType.RESULT, f.stream, { exitCode: 0, signal: null, timedOut: false, durationMs: 1, cpuUserMs: 0, cpuSystemMs: 0, peakMemoryBytes: 1, outputTruncated: false }));
    });
    const r = await (await client).exec({ argv: ['x'] }).result;
    assert.deepEqual([r.outputTruncated, r.stdoutDroppedBytes, r.stderrDroppedBytes], [false, 0, 0]);
  });

  it('turns a malformed result into AGENT_PROTOCOL, not a crash', async () => {
    const { client } = fakeAgent((f, reply) => {
      if (f.type === FrameType.REQUEST) reply(encodeJsonFrame(FrameType.RESULT, f.stream, { exitCode: 'zero' }));
    });
    const agent = await client;
    await assert.rejects(agent.exec({ argv: ['x'] }).result, (e: KilnError) => e.code === 'AGENT_PROTOCOL');
  });

  it('maps agent error codes once, to the catalogue', async () => {
    const { client } = fakeAgent((f, reply) => {
      if (f.type === FrameType.REQUEST) reply(encodeJsonFrame(FrameType.ERROR, f.stream, { code: 'PATH_ESCAPE', message: 'no' }));
    });
    const agent = await client;
    await assert.rejects(
      agent.readFile('/x', () => undefined, { maxBytes: 1 }),
      (e: KilnError) => e.code === 'PATH_ESCAPE' && e.status === 400,
    );
  });

  it('drops the connection on garbage and fails every open stream', async () => {
    const { client, toHost } = fakeAgent(() => undefined);
    const agent = await client;
    const pending = agent.exec({ argv: ['sleep'] }).result;
    toHost.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0, 1]));
    await assert.rejects(pending, (e: KilnError) => e.code === 'AGENT_PROTOCOL');
    assert.equal(agent.closed, true);
  });

  it('fails pending streams with SANDBOX_GONE when the agent disappears', async () => {
    const { client, toHost } = fakeAgent(() => undefined);
    const agent = await client;
    const pending = agent.ping();
    toHost.end();
    await assert.rejects(pending, (e: KilnError) => e.code === 'SANDBOX_GONE');
  });

  it('an exec request too big for one frame is refused (413) before anything is registered', async () => {
    const { client } = fakeAgent((f, reply) => {
      if (f.type === FrameType.REQUEST) reply(encodeJsonFrame(FrameType.RESULT, f.stream, { nowMs: 1 }));
    });
    const agent = await client;
    const ac = new AbortController();
    const env = Object.fromEntries([1, 2, 3, 4, 5].map((i) => [`K${i}`, 'v'.repeat(64 * 1024)]));
    assert.throws(
      () => agent.exec({ argv: ['true'], env }, {}, { signal: ac.signal }),
      (e: KilnError) => e.code === 'PAYLOAD_TOO_LARGE' && /262144/.test(e.message),
    );
    assert.throws(
      () => agent.exec({ argv: ['echo', 'a'.repeat(131072), 'b'.repeat(131072)] }),
      (e: KilnError) => e.code === 'PAYLOAD_TOO_LARGE',
    );
    assert.equal((agent as unknown as { streams: Map<number, unknown> }).streams.size, 0, 'no stream left registered');
    assert.equal(getEventListeners(ac.signal, 'abort').length, 0, 'no abort listener left behind');
    assert.ok((await agent.ping()).rttMs >= 0, 'the connection still works');
  });

  it('an upload the agent refuses while its body is still arriving rejects once, never unobserved', async () => {
    const { client } = fakeAgent((f, reply) => {
      if (f.type === FrameType.DATA) reply(encodeJsonFrame(FrameType.ERROR, f.stream, { code: 'TOO_LARGE', message: 'over maxBytes' }));
    });
    const agent = await client;
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => {
      unhandled.push(e);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      let stopped = false;
      async function* body(): AsyncGenerator<Buffer> {
        try {
          yield Buffer.alloc(1024);
          await new Promise((r) => setTimeout(r, 300)); // the client is slow: the answer comes first
          yield Buffer.alloc(1024);
        } finally {
          stopped = true;
        }
      }
      const t0 = performance.now();
      await assert.rejects(agent.writeFile('/x', body(), { maxBytes: 10 }), (e: KilnError) => e.code === 'PAYLOAD_TOO_LARGE');
      assert.ok(performance.now() - t0 < 250, 'answered without waiting for the rest of the body');
      await new Promise((r) => setTimeout(r, 400));
      assert.ok(stopped, 'the body is no longer read');
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('flow control: output credit goes back only once the consumer has taken the chunk', async () => {
    const windows: number[] = [];
    const { client } = fakeAgent((f, reply) => {
      if (f.type === FrameType.WINDOW) windows.push(f.payload.readUInt32BE(0));
      if (f.type !== FrameType.REQUEST) return;
      for (let i = 0; i < 12; i++) reply(encodeFrame(FrameType.STDOUT, f.stream, Buffer.alloc(64 * 1024)));
    });
    const agent = await client;
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let got = 0;
    agent
      .exec(
        { argv: ['x'], maxOutputBytes: 1 << 30 },
        {
          onStdout: (c) => {
            got += c.length;
            return held;
          },
        },
      )
      .result.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(got, 12 * 64 * 1024);
    assert.deepEqual(windows, [], 'no credit while the consumer holds the output');
    release();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(
      windows.reduce((a, b) => a + b, 0),
      12 * (64 * 1024 + 32),
      'all of it handed back once taken',
    );
  });

  it('flow control: an agent that sends past its window is dropped', async () => {
    const { client } = fakeAgent((f, reply) => {
      if (f.type !== FrameType.REQUEST) return;
      for (let i = 0; i < 17; i++) reply(encodeFrame(FrameType.STDOUT, f.stream, Buffer.alloc(64 * 1024)));
    });
    const agent = await client;
    await assert.rejects(
      agent.exec({ argv: ['x'], maxOutputBytes: 1 << 30 }, { onStdout: () => new Promise(() => undefined) }).result,
      (e: KilnError) => e.code === 'AGENT_PROTOCOL' && /window/.test(e.message),
    );
    assert.equal(agent.closed, true);
  });

  it('flow control: stdin goes out only as far as the agent grants', async () => {
    let stdinBytes = 0;
    let stream = 0;
    const { client, toHost } = fakeAgent((f) => {
      if (f.type === FrameType.REQUEST) stream = f.stream;
      if (f.type === FrameType.STDIN) stdinBytes += f.payload.length;
    });
    const agent = await client;
    const h = agent.exec({ argv: ['cat'], stdin: true });
    h.result.catch(() => undefined);
    let written = false;
    void h.writeStdin(Buffer.alloc(3 * 1024 * 1024)).then(() => {
      written = true;
    });
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(stdinBytes <= 1024 * 1024 && stdinBytes > 1000 * 1024, `${stdinBytes} bytes sent on a 1 MiB window`);
    assert.equal(written, false);
    const credit = Buffer.alloc(4);
    credit.writeUInt32BE(4 * 1024 * 1024);
    toHost.write(encodeFrame(FrameType.WINDOW, stream, credit));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(stdinBytes, 3 * 1024 * 1024);
    assert.equal(written, true);
  });

  it('settles at once on a signal aborted before the call: nothing is sent, an exec is cancelled', async () => {
    const seen: string[] = [];
    const { client } = fakeAgent((f, reply) => {
      seen.push(f.type === FrameType.REQUEST ? (decodeJson(f) as { op: string }).op : `0x${f.type.toString(16)}`);
      if (f.type === FrameType.CANCEL) reply(encodeJsonFrame(FrameType.ERROR, f.stream, { code: 'CANCELLED', message: 'cancelled' }));
    });
    const agent = await client;
    const aborted = AbortSignal.abort();
    await assert.rejects(agent.ping(aborted), (e: KilnError) => e.code === 'TIMEOUT');
    await assert.rejects(agent.writeFile('/x', Buffer.from('data'), { maxBytes: 10, signal: aborted }), (e: KilnError) => e.code === 'TIMEOUT');
    await assert.rejects(
      agent.readFile('/x', () => undefined, { maxBytes: 10, signal: aborted }),
      (e: KilnError) => e.code === 'TIMEOUT',
    );
    await assert.rejects(AgentClient.connect({ readable: new PassThrough(), writable: new PassThrough() }, { signal: aborted, timeoutMs: 10_000 }), (e: KilnError) => e.code === 'TIMEOUT');
    await assert.rejects(agent.exec({ argv: ['x'] }, {}, { signal: aborted }).result);
    assert.deepEqual(seen, ['exec', '0xb'], 'only the exec went out, cancelled at once');
  });

  it('times out a handshake that never comes', async () => {
    const silent = new PassThrough();
    await assert.rejects(AgentClient.connect({ readable: silent, writable: new PassThrough() }, { timeoutMs: 50 }), (e: KilnError) => e.code === 'BOOT_FAILED');
  });
});
