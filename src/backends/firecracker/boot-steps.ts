/**
 * Boot as data: a list of named steps ("fc.putMachineConfig", …), each with its undo, run in order.
 * Every step that succeeded registers its undo on the VM's cleanup stack (a no-op undo for API
 * calls whose effect dies with the process, so the unwinding stays visible in traces). When a step
 * fails, everything done so far is unwound in reverse and the error names the step.
 */
import type { CleanupStack } from '../../core/cleanup.js';
import { KilnError, toKilnError } from '../../core/errors.js';

export interface BootStep<C> {
  name: string;
  run(ctx: C, signal: AbortSignal): Promise<void>;
  /** Undo of a successful run; omitted when killing the process is the undo. */
  undo?(ctx: C): Promise<void> | void;
}

export interface RunStepsOptions {
  signal: AbortSignal;
  /** Observes "run:<step>", "done:<step>", "fail:<step>", "undo:<step>" events (tests, debug logs). */
  trace?: (event: string) => void;
  /** Appended to the error when a step fails (console tail, log tail). */
  diagnostics?: () => string;
}

export async function runBootSteps<C>(steps: ReadonlyArray<BootStep<C>>, ctx: C, cleanup: CleanupStack, o: RunStepsOptions): Promise<void> {
  const trace = o.trace ?? (() => undefined);
  for (const step of steps) {
    trace(`run:${step.name}`);
    try {
      o.signal.throwIfAborted();
      await step.run(ctx, o.signal);
    } catch (e) {
      trace(`fail:${step.name}`);
      await cleanup.run().catch(() => undefined);
      throw stepError(step.name, e, o);
    }
    trace(`done:${step.name}`);
    cleanup.push(step.name, async () => {
      trace(`undo:${step.name}`);
      await step.undo?.(ctx);
    });
  }
}

function stepError(name: string, e: unknown, o: RunStepsOptions): KilnError {
  const base = o.signal.aborted && !(e instanceof KilnError)
    ? new KilnError('TIMEOUT', `microVM boot step ${name} was cancelled or ran out of time; raise readyTimeoutMs if the host is slow`, { cause: e })
    : toKilnError(e, 'BOOT_FAILED', `microVM boot step ${name} failed`);
  const extra = o.diagnostics?.() ?? '';
  const message = base.message.startsWith('microVM boot step') ? base.message : `microVM boot step ${name} failed: ${base.message}`;
  return new KilnError(base.code, extra ? `${message}\n${extra}` : message, {
    cause: base,
    details: { ...(base.details ?? {}), step: name },
  });
}
