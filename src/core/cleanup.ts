/**
 * A stack of undo steps. Resource owners push an undo for every step that succeeded; on failure or
 * close the stack runs once, in reverse, and every error is kept (AggregateError) instead of the
 * first one hiding the rest.
 */
export type Undo = () => void | Promise<void>;

export class CleanupStack {
  private readonly steps: Array<{ name: string; undo: Undo }> = [];
  private running: Promise<void> | undefined;

  push(name: string, undo: Undo): void {
    if (this.running) throw new Error(`cleanup already ran; cannot register "${name}"`);
    this.steps.push({ name, undo });
  }

  get size(): number {
    return this.steps.length;
  }

  /** Idempotent: the second and later calls wait for the first run and return its outcome. */
  run(): Promise<void> {
    this.running ??= this.unwind();
    return this.running;
  }

  private async unwind(): Promise<void> {
    const errors: unknown[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.undo();
      } catch (e) {
        errors.push(new Error(`cleanup step "${step.name}" failed: ${e instanceof Error ? e.message : String(e)}`, { cause: e }));
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `${errors.length} cleanup steps failed`);
  }
}
