/**
 * The service's memory does not follow what a sandbox produces or a client sends. The service runs
 * as a child process; a sandbox floods each path for several seconds against a client that does
 * not read (or a program that does not read), and the service's RSS (/proc/<pid>/status VmRSS)
 * must stay within RSS_BOUND_BYTES of where it started. The caps are raised to 1 GiB so that only
 * backpressure, not a cap, can hold memory down. Before flow control this grew by ~1 GB.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { openWithoutReading } from '../parity/http-raw.js';
import { type ServiceProcess, startServiceProcess } from '../parity/service-process.js';

/** The bound stated in docs/security/flow.md. */
const RSS_BOUND_BYTES = 150 * 1024 * 1024;
const FLOOD_MS = 6000;
const MiB = 1024 * 1024;

describe('host memory stays bounded while a sandbox floods a client that does not read', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 300_000 }, () => {
  let svc: ServiceProcess;
  let id: string;
  let startRss = 0;
  const peaks: Record<string, number> = {};
  before(async () => {
    svc = await startServiceProcess({ KILN_MAX_OUTPUT_BYTES: String(1 << 30), KILN_MAX_FILE_BYTES: String(1 << 30) });
    id = (await svc.client.sandboxes.create({ pack: 'shell', diskMib: 2048 })).id;
    // Sparse files: the sandbox's tmpfs holds no data for them, but reading them yields every byte.
    await svc.client.sandboxes.exec(id, { cmd: 'truncate -s 600M /workspace/big && mkdir /workspace/d && for i in 1 2 3 4 5 6; do truncate -s 100M /workspace/d/$i; done' });
    for (let i = 0; i < 5; i++) await svc.client.sandboxes.exec(id, { cmd: 'echo warm' });
    startRss = await svc.rssBytes();
  });
  after(async () => {
    if (Object.keys(peaks).length)
      console.log(
        `# service RSS at start ${(startRss / MiB).toFixed(1)} MiB; peak growth per path (MiB): ${JSON.stringify(Object.fromEntries(Object.entries(peaks).map(([k, v]) => [k, Math.round(v / MiB)])))}`,
      );
    await svc.client.sandboxes.delete(id).catch(() => undefined);
    await svc.close();
  });

  /** Samples RSS while `flood` runs for FLOOD_MS, then checks the peak and that the service works. */
  async function measure(name: string, flood: () => Promise<() => void>): Promise<void> {
    const stop = await flood();
    let peak = 0;
    try {
      const until = Date.now() + FLOOD_MS;
      while (Date.now() < until) {
        assert.ok(svc.alive(), `the service died during ${name}`);
        peak = Math.max(peak, (await svc.rssBytes()) - startRss);
        await sleep(100);
      }
    } finally {
      stop();
    }
    peaks[name] = peak;
    assert.ok(peak <= RSS_BOUND_BYTES, `${name}: the service grew by ${Math.round(peak / MiB)} MiB (bound ${RSS_BOUND_BYTES / MiB} MiB)`);
    await sleep(300);
    assert.equal((await svc.client.sandboxes.exec(id, { cmd: 'echo ok' })).stdout, 'ok\n');
  }

  it('WebSocket exec stdout (`yes`), client stops reading', async () => {
    await measure('ws-stdout', async () => {
      const ws = new WebSocket(svc.client.execSocketUrl(id));
      await new Promise<void>((resolve, reject) => {
        ws.on('open', () => ws.send(JSON.stringify({ type: 'start', cmd: 'yes' })));
        ws.once('message', () => {
          ws.pause();
          resolve();
        });
        ws.on('error', reject);
      });
      return () => ws.terminate();
    });
  });

  it('NDJSON exec stdout (`yes`), client stops reading', async () => {
    await measure('ndjson-stdout', async () => {
      const { drop } = await openWithoutReading(`${svc.baseUrl}/v1/sandboxes/${id}/exec`, 'POST', JSON.stringify({ cmd: 'yes', stream: true, maxOutputBytes: 1 << 30, timeoutMs: 120_000 }));
      return drop;
    });
  });

  it('GET of a 600 MB file, client stops reading', async () => {
    await measure('file-get', async () => {
      const { status, drop } = await openWithoutReading(`${svc.baseUrl}/v1/sandboxes/${id}/files?path=/workspace/big`, 'GET', undefined);
      assert.equal(status, 200);
      return drop;
    });
  });

  it('GET of a 600 MB folder as tar, client stops reading', async () => {
    await measure('archive-get', async () => {
      const { status, drop } = await openWithoutReading(`${svc.baseUrl}/v1/sandboxes/${id}/archive?path=/workspace/d&format=tar`, 'GET', undefined);
      assert.equal(status, 200);
      return drop;
    });
  });

  it('stdin flooded over WebSocket to a program that never reads', async () => {
    await measure('ws-stdin', async () => {
      const ws = new WebSocket(svc.client.execSocketUrl(id));
      await new Promise<void>((resolve, reject) => {
        ws.on('open', () => ws.send(JSON.stringify({ type: 'start', cmd: 'sleep 1000' })));
        ws.once('message', () => resolve());
        ws.on('error', reject);
      });
      const chunk = Buffer.alloc(512 * 1024, 0x61);
      let stopped = false;
      let sent = 0;
      void (async () => {
        // As fast as the service takes it; the test process keeps at most 8 MiB of its own backlog.
        while (!stopped && ws.readyState === ws.OPEN) {
          if (ws.bufferedAmount < 8 * MiB) {
            ws.send(chunk);
            sent += chunk.length;
          } else await sleep(5);
          if (sent % (16 * MiB) === 0) await sleep(0);
        }
      })();
      return () => {
        stopped = true;
        console.log(`# stdin flood: the client got ${Math.round(sent / MiB)} MiB out in ${FLOOD_MS} ms`);
        ws.terminate();
      };
    });
  });
});
