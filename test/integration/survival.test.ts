/**
 * No request may end the service. The service runs as a child process (with
 * --unhandled-rejections=strict, so even a last-resort handler cannot hide a promise that rejects
 * unobserved); every request known to fail mid-flight is fired at it, then the process must still
 * be alive, answer, and every sandbox must still run commands.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { rawRequest, readThenDisconnect, slowBody } from '../parity/http-raw.js';
import { type ServiceProcess, startServiceProcess } from '../parity/service-process.js';
import { tarOf } from '../parity/tar.js';

const MAX_FILE_BYTES = 1 << 20;

describe('the service survives failing requests', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 240_000 }, () => {
  let svc: ServiceProcess;
  const ids: string[] = [];
  before(async () => {
    svc = await startServiceProcess({ KILN_MAX_FILE_BYTES: String(MAX_FILE_BYTES) });
    for (let i = 0; i < 3; i++) ids.push((await svc.client.sandboxes.create({ pack: 'shell', diskMib: 32 })).id);
  });
  after(async () => {
    for (const id of ids) await svc.client.sandboxes.delete(id).catch(() => undefined);
    await svc.close();
  });

  const url = (path: string): string => `${svc.baseUrl}${path}`;
  const files = (id: string, path: string): string => url(`/v1/sandboxes/${id}/files?path=${encodeURIComponent(path)}`);
  const octets = { 'content-type': 'application/octet-stream' };

  async function intact(): Promise<void> {
    assert.ok(svc.alive(), `the service died:\n${svc.log().slice(-4000)}`);
    await svc.client.health();
    const listed = (await svc.client.sandboxes.list()).map((s) => s.id);
    for (const id of ids) {
      assert.ok(listed.includes(id), `sandbox ${id} is still listed`);
      const r = await svc.client.sandboxes.exec(id, { cmd: 'echo ok' });
      assert.equal(r.stdout, 'ok\n');
    }
    assert.doesNotMatch(svc.log(), /unhandled|Unhandled/);
  }

  it('an upload over the file limit answers 413 while its body is still being sent', async () => {
    const r = await rawRequest(files(ids[0]!, '/workspace/big.bin'), 'PUT', octets, slowBody(8 * MAX_FILE_BYTES));
    assert.ok(r.status === 0 || r.status === 413, `status ${r.status} ${r.body}`);
    await intact();
  });

  it('an upload into a folder sandbox code made read-only', async () => {
    await svc.client.sandboxes.exec(ids[1]!, { cmd: 'mkdir -p /workspace/ro && chmod 555 /workspace/ro' });
    const r = await rawRequest(files(ids[1]!, '/workspace/ro/x.bin'), 'PUT', octets, slowBody(MAX_FILE_BYTES / 2));
    assert.ok(r.status === 0 || r.status >= 400, `status ${r.status} ${r.body}`);
    await intact();
  });

  it('an upload into a sandbox whose disk sandbox code filled', async () => {
    await svc.client.sandboxes.exec(ids[2]!, { cmd: 'dd if=/dev/zero of=/workspace/fill bs=1M count=64 2>/dev/null; true' });
    const r = await rawRequest(files(ids[2]!, '/workspace/more.bin'), 'PUT', octets, slowBody(MAX_FILE_BYTES - 4096));
    assert.ok(r.status === 0 || r.status >= 400, `status ${r.status} ${r.body}`);
    await svc.client.sandboxes.exec(ids[2]!, { cmd: 'rm -f /workspace/fill' });
    await intact();
  });

  it('an archive refused at its first entry while the rest is still being sent', async () => {
    const evil = tarOf([{ name: '../escape.txt', body: 'x' }]).subarray(0, 1024);
    const r = await rawRequest(url(`/v1/sandboxes/${ids[0]}/archive?path=/workspace`), 'POST', { 'content-type': 'application/x-tar' }, slowBody(MAX_FILE_BYTES / 2, 64 * 1024, 300, evil));
    assert.ok(r.status === 0 || r.status >= 400, `status ${r.status} ${r.body}`);
    await intact();
  });

  it('clients that disconnect mid-stream: upload, download, archive, NDJSON exec, WebSocket exec', async () => {
    await svc.client.sandboxes.exec(ids[0]!, { cmd: 'head -c 900000 /dev/urandom > /workspace/r.bin; mkdir -p /workspace/d; for i in 1 2 3; do head -c 300000 /dev/urandom > /workspace/d/$i; done' });
    // Upload: the client goes away after the first chunk.
    await rawRequest(files(ids[0]!, '/workspace/cut.bin'), 'PUT', octets, async (req) => {
      req.write(Buffer.alloc(64 * 1024));
      await sleep(200);
      req.destroy();
      throw new Error('client gone');
    });
    await readThenDisconnect(files(ids[0]!, '/workspace/r.bin'), 'GET', undefined, 1);
    await readThenDisconnect(url(`/v1/sandboxes/${ids[0]}/archive?path=/workspace/d&format=tar`), 'GET', undefined, 1);
    await readThenDisconnect(url(`/v1/sandboxes/${ids[0]}/exec`), 'POST', JSON.stringify({ cmd: 'yes', stream: true, timeoutMs: 20_000 }), 100_000);
    const ws = new WebSocket(svc.client.execSocketUrl(ids[0]!));
    await new Promise<void>((resolve, reject) => {
      ws.on('open', () => ws.send(JSON.stringify({ type: 'start', cmd: 'yes' })));
      ws.on('message', () => {
        ws.terminate();
        resolve();
      });
      ws.on('error', reject);
    });
    // A WebSocket that closes before its command has even started.
    const early = new WebSocket(svc.client.execSocketUrl(ids[0]!));
    await new Promise<void>((resolve) =>
      early.on('open', () => {
        early.send(JSON.stringify({ type: 'start', cmd: 'sleep 1000' }));
        early.terminate();
        resolve();
      }),
    );
    await sleep(500);
    await intact();
  });

  it('downloads: an error before the first byte is clean JSON, one after it aborts the response', async () => {
    const missing = await fetch(files(ids[0]!, '/workspace/nope'));
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { code: string }).code, 'FILE_NOT_FOUND');
    // An archive over the file limit: the host stops it at the limit, after bytes were sent.
    await svc.client.sandboxes.exec(ids[0]!, { cmd: `mkdir -p /workspace/big && head -c ${2 * MAX_FILE_BYTES} /dev/urandom > /workspace/big/r` });
    const res = await fetch(url(`/v1/sandboxes/${ids[0]}/archive?path=/workspace/big&format=tar`));
    assert.equal(res.status, 200);
    const body = await res.arrayBuffer().then(
      (b) => b.byteLength,
      (e: Error) => e,
    );
    assert.ok(body instanceof Error, `the response must be cut short, not end as if whole (got ${String(body)} bytes)`);
    await intact();
  });

  it('exec requests too big for one agent frame answer 4xx and leave nothing behind', async () => {
    const big = 'v'.repeat(64 * 1024);
    const env = Object.fromEntries([1, 2, 3, 4, 5].map((i) => [`K${i}`, big]));
    for (const body of [{ cmd: 'true', env }, { cmd: ['echo', 'a'.repeat(128 * 1024), 'b'.repeat(128 * 1024), 'c'.repeat(128 * 1024)] }]) {
      const r = await fetch(url(`/v1/sandboxes/${ids[1]}/exec`), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      assert.equal(r.status, 413, await r.text());
    }
    const run = await fetch(url('/v1/run'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ pack: 'shell', code: 'true', env }) });
    assert.equal(run.status, 413);
    assert.match(((await run.json()) as { message: string }).message, /262144 bytes/);
    const ws = new WebSocket(svc.client.execSocketUrl(ids[1]!));
    const answer = await new Promise<string>((resolve, reject) => {
      ws.on('open', () => ws.send(JSON.stringify({ type: 'start', cmd: 'true', env })));
      ws.on('message', (raw) => resolve(String(raw)));
      ws.on('error', reject);
    });
    ws.close();
    assert.match(answer, /"code":"PAYLOAD_TOO_LARGE"/);
    await intact();
    const info = await svc.client.sandboxes.get(ids[1]!);
    assert.equal(info.execsRunning, 0, 'no exec is left registered');
  });
});
