/**
 * Starting a sandbox as data: a list of named steps, each with its undo, run in order by one
 * runner for every backend (Firecracker's API calls, QEMU's process/QMP/handshake, the namespace
 * backend's uid/cgroup/bwrap). Every step that succeeded registers its undo on the caller's cleanup
 * stack, which afterwards is the sandbox's teardown; a failure or an abort unwinds what was done,
 * in reverse, and the step's own error is what the caller sees (a failing undo does not replace it).
 * Step names are constants in each backend, so traces, errors and timings name the same thing.
 */
import type { CleanupStack } from './cleanup.js';

export interface Step<C> {
  readonly name: string;
  /**
   * Does the step's work. A step that holds something while it waits honours `signal` itself:
   * the runner never abandons a running step, or what it made would escape the undo.
   */
  run(ctx: C, signal: AbortSignal): Promise<void> | void;
  /** Undo of a successful run; omitted when an earlier step's undo covers it (killing the process). */
  undo?(ctx: C): Promise<void> | void;
}

/**
 * Milliseconds since a start at which each step (or a mark a step sets inside itself) ended,
 * rounded to 0.1 ms: the per-step boot timings sandboxes report in `details.steps`.
 */
export class StepTimings {
  readonly marks: Record<string, number> = {};

  constructor(private readonly t0 = performance.now()) {}

  mark(name: string): void {
    this.marks[name] = roundMs(performance.now() - this.t0);
  }

  /** Unrounded time since the start. */
  elapsedMs(): number {
    return performance.now() - this.t0;
  }
}

export interface RunStepsOptions {
  /** Checked before every step and passed to each; an abort unwinds like a failure. */
  signal?: AbortSignal;
  /** Each finished step marks its name here. */
  timings?: StepTimings;
  /** Observes "run:<step>", "done:<step>", "fail:<step>", "undo:<step>" (tests, debug logs). */
  trace?: (event: string) => void;
  /**
   * Turns a failure into the error thrown (adds the step, a console tail, a code). Runs before
   * anything is undone, so it can still look at what the boot left running.
   */
  explain?: (error: unknown, step: string) => unknown;
  /** Told when an undo fails while unwinding a failed run; the run still throws the step's error. */
  onUndoError?: (error: unknown) => void;
}

const NEVER = new AbortController().signal;

export async function runSteps<C>(steps: ReadonlyArray<Step<C>>, ctx: C, cleanup: CleanupStack, o: RunStepsOptions = {}): Promise<void> {
  const trace = o.trace ?? (() => undefined);
  const signal = o.signal ?? NEVER;
  for (const step of steps) {
    trace(`run:${step.name}`);
    try {
      signal.throwIfAborted();
      await step.run(ctx, signal);
    } catch (e) {
      trace(`fail:${step.name}`);
      throw await unwind(e, step.name, cleanup, o);
    }
    trace(`done:${step.name}`);
    o.timings?.mark(step.name);
    // Registered even without an undo, so the unwinding stays visible in traces.
    cleanup.push(step.name, async () => {
      trace(`undo:${step.name}`);
      await step.undo?.(ctx);
    });
  }
}

async function unwind(e: unknown, step: string, cleanup: CleanupStack, o: RunStepsOptions): Promise<unknown> {
  let error = e;
  // A broken explanation must not cost the caller the failure itself.
  if (o.explain)
    error = await Promise.resolve()
      .then(() => o.explain!(e, step))
      .catch(() => e);
  await cleanup.run().catch((ue: unknown) => o.onUndoError?.(ue));
  return error;
}

export function roundMs(ms: number): number {
  return Math.round(ms * 10) / 10;
}
