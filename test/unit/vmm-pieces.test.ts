/** Pieces both microVM backends share from src/core: the kill ladder, the leftover killer, the uid pool, the console ring. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { ConsoleRing } from '../../src/core/console-ring.js';
import { killLadder, killLeftovers } from '../../src/core/kill-ladder.js';
import { UidPool } from '../../src/core/uids.js';

/** A real child process as the ladder sees a VMM. */
function child(script: string) {
  const c = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
  const exited = once(c, 'exit');
  const ready = once(c.stdout!, 'data');
  return {
    c,
    ready,
    proc: {
      pid: c.pid,
      exited,
      alive: () => c.exitCode === null && c.signalCode === null,
      kill: (s: NodeJS.Signals) => {
        c.kill(s);
      },
    },
  };
}

describe('kill ladder', () => {
  it('a process that honours SIGTERM exits on the first rung', async () => {
    const { c, proc, ready } = child('console.log("up"); setInterval(() => {}, 1e6)');
    await ready;
    assert.equal(await killLadder(proc, { what: 'test vmm', graceMs: 5_000, killWaitMs: 5_000 }), 'asked');
    assert.equal(c.signalCode, 'SIGTERM');
  });

  it('a process that ignores SIGTERM is SIGKILLed after the grace period', async () => {
    const { c, proc, ready } = child('process.on("SIGTERM", () => {}); console.log("up"); setInterval(() => {}, 1e6)');
    await ready;
    assert.equal(await killLadder(proc, { what: 'test vmm', graceMs: 100, killWaitMs: 5_000 }), 'killed');
    assert.equal(c.signalCode, 'SIGKILL');
  });

  it("uses the backend's own polite rung, skips it without grace, and leaves a dead process alone", async () => {
    const a = child('console.log("up"); setInterval(() => {}, 1e6)');
    await a.ready;
    const asked: string[] = [];
    assert.equal(
      await killLadder(a.proc, {
        what: 'test vmm',
        graceMs: 5_000,
        killWaitMs: 5_000,
        ask: () => {
          asked.push('ctrl-alt-del');
          a.c.kill('SIGINT');
          return true;
        },
      }),
      'asked',
    );
    assert.deepEqual([asked, a.c.signalCode], [['ctrl-alt-del'], 'SIGINT']);
    assert.equal(await killLadder(a.proc, { what: 'test vmm', graceMs: 5_000, killWaitMs: 5_000 }), 'exited');
    const b = child('console.log("up"); setInterval(() => {}, 1e6)');
    await b.ready;
    assert.equal(await killLadder(b.proc, { what: 'test vmm', graceMs: 0, killWaitMs: 5_000, ask: () => assert.fail('no polite rung without grace') }), 'killed');
  });

  it('gives up loudly when SIGKILL does not end the process', async () => {
    const never = { pid: 4242, exited: new Promise(() => undefined), alive: () => true, kill: () => undefined };
    await assert.rejects(killLadder(never, { what: 'stuck vmm', graceMs: 10, killWaitMs: 20 }), { code: 'INTERNAL', message: /stuck vmm pid 4242 survived SIGKILL for 20 ms/ });
  });

  it('kills leftovers and waits until they are gone; a pid that is not there is not reported killed', async () => {
    const { c, ready } = child('console.log("up"); setInterval(() => {}, 1e6)');
    await ready;
    const gone = spawn('true');
    await once(gone, 'exit');
    const r = await killLeftovers([c.pid!, gone.pid!], 5_000);
    assert.deepEqual(r, { killed: [c.pid], stuck: [] });
    assert.equal(c.signalCode ?? (await once(c, 'exit'))[1], 'SIGKILL');
  });
});

describe('uid pool', () => {
  it('holds an adopted uid (a VM an earlier run left) like a taken one; refuses one outside its range', () => {
    const pool = new UidPool(400_000, 2, 'QEMU');
    pool.adopt(400_000);
    assert.equal(pool.take(), 400_001);
    assert.throws(() => pool.take(), /all 2 QEMU uids/);
    assert.throws(() => pool.adopt(399_999), /outside the QEMU range/);
    pool.release(400_000);
    assert.equal(pool.take(), 400_000);
  });
});

describe('console ring', () => {
  it('keeps the last lines, caps long ones and strips control characters an untrusted guest sends', () => {
    const ring = new ConsoleRing(2, 20);
    ring.push('first\nsecond\x07\n');
    assert.deepEqual(ring.tail(), ['first', 'second']);
    ring.push(`${'x'.repeat(25)}\nlast \x1b[31mred`);
    assert.deepEqual(ring.tail(), ['x'.repeat(20), 'last [31mred']);
    assert.equal(ring.text(1), 'last [31mred');
  });
});
