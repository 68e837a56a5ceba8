/** The boot step runner every backend starts its sandboxes with (src/core/steps.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CleanupStack } from '../../src/core/cleanup.js';
import { runSteps, type Step, StepTimings } from '../../src/core/steps.js';

interface Ctx {
  log: string[];
}

function step(name: string, o: { fail?: Error; undoFails?: Error; run?: (signal: AbortSignal) => Promise<void> | void; noUndo?: boolean } = {}): Step<Ctx> {
  return {
    name,
    run: async (ctx, signal) => {
      ctx.log.push(`run ${name}`);
      await o.run?.(signal);
      if (o.fail) throw o.fail;
    },
    ...(o.noUndo
      ? {}
      : {
          undo: (ctx: Ctx) => {
            ctx.log.push(`undo ${name}`);
            if (o.undoFails) throw o.undoFails;
          },
        }),
  };
}

describe('step runner', () => {
  it('runs steps in order and leaves their undos on the stack, in reverse, for the teardown', async () => {
    const ctx: Ctx = { log: [] };
    const cleanup = new CleanupStack();
    const trace: string[] = [];
    await runSteps([step('a'), step('b', { noUndo: true }), step('c')], ctx, cleanup, { trace: (e) => trace.push(e) });
    assert.deepEqual(ctx.log, ['run a', 'run b', 'run c']);
    assert.equal(cleanup.size, 3, 'a step without an undo is registered too (visible in traces)');
    await cleanup.run();
    assert.deepEqual(ctx.log.slice(3), ['undo c', 'undo a']);
    assert.deepEqual(trace, ['run:a', 'done:a', 'run:b', 'done:b', 'run:c', 'done:c', 'undo:c', 'undo:b', 'undo:a']);
  });

  it('a failing step unwinds the steps done before it, in reverse, and throws its own error', async () => {
    const ctx: Ctx = { log: [] };
    const boom = new Error('c broke');
    const err = await runSteps([step('a'), step('b'), step('c', { fail: boom }), step('d')], ctx, new CleanupStack()).catch((e: unknown) => e);
    assert.equal(err, boom);
    assert.deepEqual(ctx.log, ['run a', 'run b', 'run c', 'undo b', 'undo a'], 'the failed step is not undone, the later one never runs');
  });

  it('explain sees the failure and the step name before anything is undone', async () => {
    const ctx: Ctx = { log: [] };
    const err = await runSteps([step('a'), step('b', { fail: new Error('no') })], ctx, new CleanupStack(), {
      explain: (e, name) => {
        ctx.log.push(`explain ${name}`);
        return new Error(`step ${name}: ${(e as Error).message}`);
      },
    }).catch((e: Error) => e);
    assert.equal((err as Error).message, 'step b: no');
    assert.deepEqual(ctx.log, ['run a', 'run b', 'explain b', 'undo a']);
  });

  it('a failing undo neither hides the step error nor stops the other undos', async () => {
    const ctx: Ctx = { log: [] };
    const undoErrors: unknown[] = [];
    const err = await runSteps([step('a'), step('b', { undoFails: new Error('undo b broke') }), step('c', { fail: new Error('c broke') })], ctx, new CleanupStack(), {
      onUndoError: (e) => undoErrors.push(e),
    }).catch((e: Error) => e);
    assert.equal((err as Error).message, 'c broke');
    assert.deepEqual(ctx.log, ['run a', 'run b', 'run c', 'undo b', 'undo a']);
    assert.equal(undoErrors.length, 1);
    assert.match((undoErrors[0] as Error).message, /cleanup step "b" failed: undo b broke/);
  });

  it('a throwing explain does not replace the failure', async () => {
    const boom = new Error('b broke');
    const err = await runSteps([step('b', { fail: boom })], { log: [] }, new CleanupStack(), {
      explain: () => {
        throw new Error('explain broke');
      },
    }).catch((e: unknown) => e);
    assert.equal(err, boom);
  });

  it('an abort during a step lets the step finish, then unwinds everything done, that step included', async () => {
    const ctx: Ctx = { log: [] };
    const ac = new AbortController();
    const trace: string[] = [];
    const err = await runSteps(
      [
        step('a'),
        step('b', {
          run: () => {
            ac.abort(new Error('client went away'));
          },
        }),
        step('c'),
      ],
      ctx,
      new CleanupStack(),
      { signal: ac.signal, trace: (e) => trace.push(e) },
    ).catch((e: Error) => e);
    assert.equal((err as Error).message, 'client went away');
    assert.deepEqual(ctx.log, ['run a', 'run b', 'undo b', 'undo a'], 'c never runs');
    assert.ok(trace.includes('fail:c'));
  });

  it('a step that honours the signal fails with the abort and is not undone', async () => {
    const ctx: Ctx = { log: [] };
    const ac = new AbortController();
    const waiting = step('wait', {
      run: (signal) =>
        new Promise((_, reject) => {
          signal.addEventListener('abort', () => reject(signal.reason), { once: true });
          setImmediate(() => ac.abort(new Error('deadline')));
        }),
    });
    const err = await runSteps([step('a'), waiting, step('c')], ctx, new CleanupStack(), { signal: ac.signal }).catch((e: Error) => e);
    assert.equal((err as Error).message, 'deadline');
    assert.deepEqual(ctx.log, ['run a', 'run wait', 'undo a']);
  });

  it('an already aborted signal runs nothing', async () => {
    const ctx: Ctx = { log: [] };
    const err = await runSteps([step('a')], ctx, new CleanupStack(), { signal: AbortSignal.abort(new Error('gone')) }).catch((e: Error) => e);
    assert.equal((err as Error).message, 'gone');
    assert.deepEqual(ctx.log, []);
  });

  it('records when each step ended, marks set inside a step included, in order', async () => {
    const timings = new StepTimings();
    const ctx: Ctx = { log: [] };
    await runSteps(
      [
        step('first', { run: () => new Promise((r) => setTimeout(r, 5)) }),
        {
          name: 'second',
          run: async () => {
            timings.mark('inside');
            await new Promise((r) => setTimeout(r, 5));
          },
        },
      ],
      ctx,
      new CleanupStack(),
      { timings },
    );
    assert.deepEqual(Object.keys(timings.marks), ['first', 'inside', 'second']);
    const { first, inside, second } = timings.marks as Record<string, number>;
    assert.ok(first! > 0 && first! <= inside! && inside! < second!, JSON.stringify(timings.marks));
    assert.equal(Math.round(second! * 10) / 10, second, 'rounded to 0.1 ms');
  });

  it('a failed run leaves no timing for the failed step', async () => {
    const timings = new StepTimings();
    await runSteps([step('a'), step('b', { fail: new Error('x') })], { log: [] }, new CleanupStack(), { timings }).catch(() => undefined);
    assert.deepEqual(Object.keys(timings.marks), ['a']);
  });
});
