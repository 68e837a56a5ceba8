/**
 * SandboxManager and the warm pools against the in-memory backend (test/unit/memory-backend.ts):
 * TTL, liveness, delete while busy, admission, pool hits and refills, failed warm-ups, close.
 * No root, no processes: what is under test is the core's bookkeeping on every path.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend, BackendName } from '../../src/core/backend.js';
import { type KilnConfig, loadConfig } from '../../src/core/config.js';
import { isKilnError } from '../../src/core/errors.js';
import { SandboxManager } from '../../src/core/manager.js';
import { type PoolKey, WarmPools } from '../../src/core/pools.js';
import { MemoryBackend, type MemoryBackendOptions, memoryPacks } from './memory-backend.js';

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not reached within ${ms} ms: ${what}`);
    await sleep(10);
  }
}

const rejectsWith =
  (code: string) =>
  (e: unknown): boolean =>
    isKilnError(e) && e.code === code;

interface Harness {
  backend: MemoryBackend;
  manager: SandboxManager;
  pools?: WarmPools;
  config: KilnConfig;
  close(): Promise<void>;
}

const opened: Harness[] = [];
afterEach(async () => {
  await Promise.allSettled(opened.splice(0).map((h) => h.close()));
});

/** The manager (and pools, when `pool` is set) wired the way src/server/compose.ts wires them. */
function harness(o: { env?: Record<string, string>; backend?: MemoryBackendOptions; pool?: number } = {}): Harness {
  const config = loadConfig({ KILN_POOL: '', ...o.env });
  const backend = new MemoryBackend(o.backend);
  const packs = memoryPacks();
  let pools: WarmPools | undefined;
  const manager = new SandboxManager({
    config,
    backends: new Map<BackendName, Backend>([[backend.name, backend]]),
    packs,
    get pools() {
      return pools;
    },
  });
  if (o.pool) {
    pools = new WarmPools({
      targets: [{ key: poolKey(config), target: o.pool }],
      start: (k) => manager.startPoolMember(k),
      maxAgeMs: 10 * 60_000,
      refillConcurrency: 1,
      refillAfterHitMs: 60_000, // only a delete (released()) or a miss starts a refill here
    });
    pools.start();
  }
  const h: Harness = {
    backend,
    manager,
    pools,
    config,
    async close() {
      await pools?.close();
      await manager.close();
      await backend.close();
    },
  };
  opened.push(h);
  return h;
}

function poolKey(config: KilnConfig): PoolKey {
  const l = config.limits;
  return { backend: 'namespace', pack: 'python', cpus: l.defaultCpus, memoryMib: l.defaultMemoryMib, diskMib: l.defaultDiskMib };
}

describe('SandboxManager (in-memory backend)', () => {
  it('creates, runs an exec through the agent, and deletes: the backend sandbox is destroyed and the slot freed', async () => {
    const { backend, manager } = harness({ backend: { script: (req) => ({ stdout: `ran ${req.argv.join(' ')}\n`, exitCode: 3 }) } });
    const sb = await manager.create({ pack: 'python' });
    assert.equal(manager.admission.stats.inUse, 1);
    const out = await manager.runExec(sb.id, { cmd: ['echo', 'hi'] });
    assert.equal(out.exitCode, 3);
    assert.equal(out.stdout.toString(), 'ran echo hi\n');
    assert.deepEqual(backend.live.get(sb.id)?.execs[0]?.env, { PACK: 'python' }, 'the pack env reaches the exec');
    await manager.delete(sb.id);
    assert.equal(backend.live.size, 0);
    assert.equal(manager.admission.stats.inUse, 0);
    assert.equal(manager.count, 0);
    await assert.rejects(async () => manager.runExec(sb.id, { cmd: 'true' }), rejectsWith('SANDBOX_NOT_FOUND'));
  });

  it('deletes a sandbox when its TTL runs out', async () => {
    const { backend, manager } = harness();
    const short = await manager.create({ pack: 'python', ttlSec: 1 });
    const long = await manager.create({ pack: 'python', ttlSec: 600 });
    assert.ok(Math.abs(short.expiresAt.getTime() - Date.now() - 1000) < 500);
    await until('the short-lived sandbox is gone', () => manager.count === 1);
    assert.throws(() => manager.get(short.id), rejectsWith('SANDBOX_NOT_FOUND'));
    assert.equal(manager.get(long.id).state, 'ready');
    assert.deepEqual([...backend.live.keys()], [long.id]);
    assert.equal(manager.admission.stats.inUse, 1, 'the expired sandbox gave its slot back');
  });

  it('a sandbox that dies on its own is deleted and its slot freed', async () => {
    const { backend, manager } = harness();
    const sb = await manager.create({ pack: 'shell' });
    backend.live.get(sb.id)!.crash('VM exited (code 137)');
    assert.equal(sb.state, 'failed');
    assert.equal(sb.exitReason, 'VM exited (code 137)');
    await until('the dead sandbox is deleted', () => manager.count === 0 && backend.live.size === 0);
    assert.equal(manager.admission.stats.inUse, 0);
  });

  it('liveness: an agent that misses three pings in a row is declared failed and deleted; one that answers stays', async () => {
    const { backend, manager } = harness();
    const hung = await manager.create({ pack: 'python' });
    const fine = await manager.create({ pack: 'python' });
    backend.live.get(hung.id)!.memoryAgent.hung = true;
    manager.startHealthChecks(20, 30);
    await until('the hung sandbox is deleted', () => !backend.live.has(hung.id));
    assert.equal(hung.state, 'failed');
    assert.match(hung.exitReason ?? '', /agent stopped answering/);
    assert.equal(manager.get(fine.id).state, 'ready');
    assert.equal(manager.admission.stats.inUse, 1);
  });

  it('liveness: two missed pings then an answer is not dead (a busy agent)', async () => {
    const { backend, manager } = harness();
    const sb = await manager.create({ pack: 'python' });
    const agent = backend.live.get(sb.id)!.memoryAgent;
    agent.hung = true;
    manager.startHealthChecks(40, 20);
    await until('two pings missed', () => sb.missedPings >= 1, 5000);
    agent.hung = false;
    await until('a ping answered again', () => sb.missedPings === 0, 5000);
    assert.equal(manager.get(sb.id).state, 'ready');
  });

  it('delete while an exec is running ends the exec, destroys the sandbox and frees the slot', async () => {
    const { backend, manager } = harness({ backend: { script: () => ({ hang: true }) } });
    const sb = await manager.create({ pack: 'python' });
    const exec = manager.runExec(sb.id, { cmd: 'sleep 1000' }).then(
      (r) => ({ ok: r }),
      (e: unknown) => ({ err: e }),
    );
    await until('the exec is running', () => sb.execsRunning === 1);
    await manager.delete(sb.id);
    const settled = await Promise.race([exec, sleep(10_000).then(() => 'still running')]);
    assert.notEqual(settled, 'still running', 'the exec must end when its sandbox is deleted');
    assert.equal(sb.execsRunning, 0);
    assert.equal(sb.state, 'stopped');
    assert.equal(backend.live.size, 0);
    assert.equal(manager.admission.stats.inUse, 0);
    await assert.rejects(async () => manager.runExec(sb.id, { cmd: 'true' }), rejectsWith('SANDBOX_NOT_FOUND'));
  });

  it('admission: creates past capacity queue, past the queue answer AT_CAPACITY, and a delete lets the next one in', async () => {
    const { backend, manager } = harness({ env: { KILN_MAX_SANDBOXES: '2', KILN_CREATE_QUEUE: '1', KILN_CREATE_QUEUE_TIMEOUT_MS: '30000' } });
    const a = await manager.create({ pack: 'python' });
    await manager.create({ pack: 'python' });
    const queued = manager.create({ pack: 'python' });
    await until('the third create waits', () => manager.admission.stats.queued === 1);
    await assert.rejects(manager.create({ pack: 'python' }), rejectsWith('AT_CAPACITY'));
    assert.equal(backend.all.length, 2, 'nothing was started for the waiting or refused creates');
    await manager.delete(a.id);
    const c = await queued;
    assert.equal(c.state, 'ready');
    assert.deepEqual([manager.count, manager.admission.stats.inUse, backend.live.size], [2, 2, 2]);
  });

  it('admission: a queued create gives up with QUEUE_TIMEOUT and a failed backend create returns its slot', async () => {
    const { backend, manager } = harness({ env: { KILN_MAX_SANDBOXES: '1', KILN_CREATE_QUEUE: '4', KILN_CREATE_QUEUE_TIMEOUT_MS: '100' } });
    backend.failCreates = 1;
    await assert.rejects(manager.create({ pack: 'python' }), rejectsWith('BOOT_FAILED'));
    assert.equal(manager.admission.stats.inUse, 0, 'a failed start does not hold capacity');
    const a = await manager.create({ pack: 'python' });
    await assert.rejects(manager.create({ pack: 'python' }), rejectsWith('QUEUE_TIMEOUT'));
    assert.equal(manager.admission.stats.queued, 0);
    await manager.delete(a.id);
    await manager.create({ pack: 'python' });
  });

  it('a create abandoned by its caller while the backend starts it leaves nothing behind', async () => {
    const { backend, manager } = harness({ backend: { createDelayMs: 5000 } });
    const ac = new AbortController();
    const p = manager.create({ pack: 'python' }, ac.signal);
    await sleep(50);
    ac.abort();
    await assert.rejects(p);
    assert.deepEqual([manager.count, manager.admission.stats.inUse, backend.live.size], [0, 0, 0]);
  });

  it('refuses sizes past the host limits and unknown packs before taking a slot', async () => {
    const { backend, manager } = harness();
    await assert.rejects(manager.create({ pack: 'python', cpus: 999 }), rejectsWith('INVALID_REQUEST'));
    // Each refusal names the field, the value sent and the range this host takes.
    await assert.rejects(manager.create({ pack: 'python', memoryMib: 8 }), { message: /^memoryMib must be from 16 to \d+ MiB on this host \(got 8\)$/ });
    await assert.rejects(manager.create({ pack: 'python', cpus: 0 }), { message: /^cpus must be from more than 0 to \d+ cpus on this host \(got 0\)$/ });
    await assert.rejects(manager.create({ pack: 'cobol' }), rejectsWith('UNKNOWN_PACK'));
    await assert.rejects(manager.create({ pack: 'python', backend: 'qemu' }), { code: 'UNKNOWN_BACKEND', message: /backend "qemu" is not configured on this host; configured: namespace / });
    assert.deepEqual([manager.admission.stats.inUse, backend.all.length], [0, 0]);
  });

  it('close() deletes every sandbox (busy ones too), refuses new creates and waiting ones', async () => {
    const h = harness({ env: { KILN_MAX_SANDBOXES: '2', KILN_CREATE_QUEUE: '4', KILN_CREATE_QUEUE_TIMEOUT_MS: '30000' }, backend: { script: () => ({ hang: true }) } });
    const { backend, manager } = h;
    const a = await manager.create({ pack: 'python' });
    await manager.create({ pack: 'shell' });
    const exec = manager.runExec(a.id, { cmd: 'sleep 1000' }).catch(() => undefined);
    const waiting = manager.create({ pack: 'python' });
    await until('a create waits', () => manager.admission.stats.queued === 1);
    await manager.close();
    await assert.rejects(waiting, rejectsWith('SHUTTING_DOWN'));
    await exec;
    assert.deepEqual([manager.count, backend.live.size, manager.admission.stats.inUse], [0, 0, 0]);
    assert.ok(backend.all.every((s) => s.destroyed));
    await assert.rejects(manager.create({ pack: 'python' }), rejectsWith('SHUTTING_DOWN'));
  });
});

describe('per-key limits and ownership in the manager (in-memory backend)', () => {
  const owner = (limits: Record<string, number>) => ({ keyId: 'key-a', limits });

  it('concurrent creates cannot pass maxSandboxes together: creates under way count; a failed or deleted one frees its share', async () => {
    const { backend, manager } = harness({ backend: { createDelayMs: 50 } });
    const a = owner({ maxSandboxes: 2, maxMemoryMib: 1024 });
    const results = await Promise.allSettled([1, 2, 3].map(() => manager.create({ pack: 'python', memoryMib: 256 }, undefined, a)));
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'fulfilled', 'rejected']);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    assert.ok(rejectsWith('QUOTA_EXCEEDED')(refused.reason));
    assert.deepEqual(refused.reason.details, { limit: 'maxSandboxes', value: 2, requested: 3 });
    assert.equal(backend.all.length, 2, 'the refused create never reached the backend');
    assert.deepEqual(manager.ownerUsage.of('key-a'), { sandboxes: 2, memoryMib: 512 });
    const first = (results[0] as PromiseFulfilledResult<{ id: string }>).value ?? (results[1] as PromiseFulfilledResult<{ id: string }>).value;
    await manager.delete(first.id);
    assert.deepEqual(manager.ownerUsage.of('key-a'), { sandboxes: 1, memoryMib: 256 });
    await assert.rejects(
      manager.create({ pack: 'python', memoryMib: 1024 }, undefined, a),
      (e) => rejectsWith('QUOTA_EXCEEDED')(e) && (e as { details: { limit: string } }).details.limit === 'maxMemoryMib',
    );
    await assert.rejects(manager.create({ pack: 'nope' }, undefined, a), rejectsWith('UNKNOWN_PACK'));
    backend.createDelayMs = 0;
    assert.deepEqual(manager.ownerUsage.of('key-a'), { sandboxes: 1, memoryMib: 256 }, 'refusals hold nothing');
  });

  it('a key sees only its own sandboxes: get, delete and list; the admin sees all', async () => {
    const { manager } = harness();
    const mine = await manager.create({ pack: 'python', labels: { team: 'a' } }, undefined, owner({}));
    const admins = await manager.create({ pack: 'python', labels: { team: 'a' } });
    assert.throws(() => manager.get(admins.id, 'key-a'), rejectsWith('SANDBOX_NOT_FOUND'));
    await assert.rejects(manager.delete(admins.id, 'deleted by request', 'key-a'), rejectsWith('SANDBOX_NOT_FOUND'));
    assert.equal(manager.count, 2, 'the refused delete deleted nothing');
    assert.deepEqual(
      manager.list({ ownerKeyId: 'key-a', labels: { team: 'a' } }).sandboxes.map((s) => s.id),
      [mine.id],
    );
    assert.deepEqual(
      manager.list({ ownerKeyId: null }).sandboxes.map((s) => s.id),
      [admins.id],
    );
    assert.equal(manager.list().sandboxes.length, 2);
    assert.equal(manager.get(mine.id, 'key-a').info().ownerKeyId, 'key-a');
  });

  it("exec time: over the key's limit is refused before the agent runs anything; none asked gets the limit", async () => {
    const { backend, manager } = harness();
    const sb = await manager.create({ pack: 'python' }, undefined, owner({ maxExecTimeoutMs: 1000 }));
    await assert.rejects(manager.runExec(sb.id, { cmd: 'true', timeoutMs: 1001 }), rejectsWith('QUOTA_EXCEEDED'));
    assert.equal(backend.live.get(sb.id)?.execs.length, 0);
    await manager.runExec(sb.id, { cmd: 'true' });
    assert.equal(backend.live.get(sb.id)?.execs[0]?.timeoutMs, 1000);
  });
});

describe('warm pools through the manager (in-memory backend)', () => {
  it('a create takes a warmed sandbox from the pool (a hit); the next, with the pool empty, starts one (a miss)', async () => {
    const { backend, manager, pools, config } = harness({ pool: 1, backend: { createDelayMs: 20 } });
    await until('the pool is full', () => pools!.stats()[0]!.ready === 1);
    const warmed = backend.all[0]!;
    assert.deepEqual(
      warmed.execs.map((e) => e.argv[0]),
      ['python3', 'rm'],
      'warm-up ran the pack command on an empty file, then removed it',
    );
    const hit = await manager.create({ pack: 'python' });
    assert.equal(hit.id, warmed.id);
    assert.equal(hit.fromPool, true);
    const miss = await manager.create({ pack: 'python' });
    assert.equal(miss.fromPool, false);
    const other = await manager.create({ pack: 'python', memoryMib: config.limits.defaultMemoryMib * 2 });
    assert.equal(other.fromPool, false, 'another size is another pool key');
    const s = pools!.stats()[0]!;
    assert.deepEqual([s.hits, s.misses], [1, 1]);
    await until('the pool refills', () => pools!.stats()[0]!.ready === 1);
  });

  it('deleting a pooled sandbox refills the pool with a new one', async () => {
    const { backend, manager, pools } = harness({ pool: 1 });
    await until('the pool is full', () => pools!.stats()[0]!.ready === 1);
    await sleep(100); // the pool re-checks its target once after each start: let that pass
    const hit = await manager.create({ pack: 'python' });
    assert.equal(hit.fromPool, true);
    await sleep(200);
    assert.equal(backend.all.length, 1, 'while the hit is in use (refillAfterHitMs is long here) nothing starts');
    await manager.delete(hit.id);
    await until('a replacement is warm', () => pools!.stats()[0]!.ready === 1);
    assert.equal(backend.all.length, 2);
    assert.ok(backend.all[0]!.destroyed);
    assert.ok(!backend.all[1]!.destroyed);
    const next = await manager.create({ pack: 'python' });
    assert.equal(next.id, backend.all[1]!.id);
  });

  it('a sandbox whose warm-up fails is destroyed, never pooled, and counted as a failure', async () => {
    // The warm-up's own command may exit non-zero (an empty Go file does not compile); removing
    // its file must succeed, or the sandbox is not clean.
    let failWarmup = true;
    const { backend, manager, pools } = harness({ pool: 1, backend: { script: (req) => ({ exitCode: failWarmup && req.argv[0] === 'rm' ? 1 : 0 }) } });
    await until('a warm-up failed', () => pools!.stats()[0]!.failures >= 1);
    const first = backend.all[0]!;
    assert.ok(first.destroyed, 'the sandbox whose warm-up failed is destroyed');
    assert.equal(pools!.stats()[0]!.ready, 0);
    const sb = await manager.create({ pack: 'python' });
    assert.equal(sb.fromPool, false, 'nothing half-warmed is handed out');
    assert.notEqual(sb.id, first.id);
    failWarmup = false;
    // The pool backs off (2 s after one failure) and then fills.
    await until('the pool fills once warm-ups succeed', () => pools!.stats()[0]!.ready === 1, 20_000);
    assert.equal(pools!.stats()[0]!.failures, 0);
  });

  it('a pooled member that dies while idle is dropped, never handed out', async () => {
    const { backend, manager, pools } = harness({ pool: 1 });
    await until('the pool is full', () => pools!.stats()[0]!.ready === 1);
    const member = backend.all[0]!;
    member.crash('killed');
    assert.ok(member.destroyed, 'the pool destroys a member that died');
    const sb = await manager.create({ pack: 'python' });
    assert.notEqual(sb.id, member.id);
  });

  it('close() releases everything: pooled members, members still starting, sandboxes in use', async () => {
    const h = harness({ pool: 2, backend: { createDelayMs: 200 } });
    const { backend, manager, pools } = h;
    await until('one member is warm', () => pools!.stats()[0]!.ready >= 1);
    const inUse = await manager.create({ pack: 'python' });
    assert.equal(inUse.fromPool, true);
    await until('a refill is under way', () => pools!.stats()[0]!.starting >= 1);
    await h.close();
    assert.equal(backend.live.size, 0, `left alive: ${[...backend.live.keys()].join(', ')}`);
    assert.ok(backend.all.length >= 2 && backend.all.every((s) => s.destroyed));
    assert.deepEqual([manager.count, manager.admission.stats.inUse], [0, 0]);
  });
});
