/**
 * What the service leaves on the host: request logs never carry the token, and the trusted Unix
 * socket is never reachable by other users, not even at the moment it starts listening.
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { chmod, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { request } from 'node:http';
import { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/core/config.js';
import { buildApp } from '../../src/server/app.js';
import { composeService } from '../../src/server/compose.js';
import { startServer } from '../../src/server/main.js';
import type { KilnService } from '../../src/server/service.js';

const TOKEN = 'log-test-secret-token';

describe('request logs', () => {
  let svc: KilnService;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-edge-logs-'));
    svc = await composeService(loadConfig({ KILN_RUN_DIR: join(dir, 'run'), KILN_DATA_DIR: join(dir, 'data'), KILN_POOL: '' }), { skipScan: true });
  });
  after(async () => {
    await svc?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('never carry ?access_token=, however the parameter is spelled', async () => {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const app = await buildApp({ ...svc, config: { ...svc.config, token: TOKEN } }, { logger: { level: 'info', stream } });
    try {
      const ws = { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' };
      for (const url of [
        `/v1/sandboxes/sb-x/exec/ws?access_token=${TOKEN}`,
        `/v1/packs?access_token=${TOKEN}`,
        `/v1/packs?a=1&%61ccess_token=${TOKEN}&b=2`,
        `/v1/packs?ACCESS_TOKEN=${TOKEN}`,
        `/v1/packs;access_token=${TOKEN}`,
        `/nowhere?access+token=x&access_token=${TOKEN}`,
      ]) {
        await app.inject({ method: 'GET', url, headers: url.includes('/ws') ? ws : {} });
      }
      await app.inject({ method: 'GET', url: '/v1/packs', headers: { authorization: `Bearer ${TOKEN}` } });
      const log = lines.join('');
      assert.match(log, /incoming request/, 'the requests were logged');
      assert.match(log, /access_token=\[redacted\]/);
      assert.ok(
        !log.includes(TOKEN),
        `the token is in the log:\n${log
          .split('\n')
          .filter((l) => l.includes(TOKEN))
          .join('\n')}`,
      );
    } finally {
      await app.close();
    }
  });
});

/** Whether a user who is neither the owner nor in the group could connect: o+w on the socket, o+x on every folder above it. */
function reachableByOthers(path: string): boolean {
  if ((statSync(path).mode & 0o002) === 0) return false;
  for (let d = dirname(path); ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return false;
    if (d === '/') return true;
  }
}

describe('the trusted Unix socket', { skip: process.getuid?.() === 0 ? undefined : 'needs root (the namespace backend)', timeout: 60_000 }, () => {
  it('is never reachable by other users, even with umask 0 at the moment it listens', async () => {
    const base = await mkdtemp(join(tmpdir(), 'kiln-edge-sock-'));
    await chmod(base, 0o755);
    const sock = join(base, 'sockets', 'kiln.sock');
    // Observe every Unix socket the service binds, synchronously on 'listening': no window is missed.
    const seen: Array<{ path: string; reachable: boolean }> = [];
    const listen = Server.prototype.listen;
    Server.prototype.listen = function (this: Server, ...args: unknown[]) {
      this.once('listening', () => {
        const a = this.address();
        if (typeof a === 'string') seen.push({ path: a, reachable: reachableByOthers(a) });
      });
      return (listen as (...a: unknown[]) => Server).apply(this, args);
    } as typeof listen;
    const umask = process.umask(0);
    let server: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      server = await startServer(loadConfig({ ...process.env, KILN_PORT: '0', KILN_RUN_DIR: join(base, 'run'), KILN_TOKEN: 'tok', KILN_POOL: '', KILN_SOCKET: sock, KILN_DATABASE_URL: 'off' }), {
        logger: false,
        skipScan: true,
      });
      process.umask(umask);
      Server.prototype.listen = listen;
      assert.equal(seen.length, 1, 'one Unix socket');
      assert.equal(seen[0]!.reachable, false, `${seen[0]!.path} was reachable by other users when it started listening`);
      assert.equal((await stat(sock)).mode & 0o777, 0o660);
      assert.deepEqual(await readdir(dirname(sock)), ['kiln.sock'], 'no private folder left behind');
      const status = await new Promise<number>((resolve, reject) => {
        request({ socketPath: sock, path: '/v1/packs' }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
          .on('error', reject)
          .end();
      });
      assert.equal(status, 200, 'the socket serves the API without a token');
    } finally {
      process.umask(umask);
      Server.prototype.listen = listen;
      await server?.close();
      await rm(base, { recursive: true, force: true });
    }
    await assert.rejects(stat(sock), /ENOENT/, 'close removes the socket');
  });
});
