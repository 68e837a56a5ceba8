/**
 * "This sandbox died on its own": fired once with a reason; listeners added later still hear it.
 * Backends use it to implement BackendSandbox.onExit.
 */
export class ExitSignal {
  private reasonText: string | undefined;
  private readonly listeners: Array<(reason: string) => void> = [];

  get fired(): boolean {
    return this.reasonText !== undefined;
  }

  get reason(): string | undefined {
    return this.reasonText;
  }

  /** Returns false when it had already fired (the first reason wins). */
  fire(reason: string): boolean {
    if (this.reasonText !== undefined) return false;
    this.reasonText = reason;
    for (const l of this.listeners.splice(0)) l(reason);
    return true;
  }

  on(listener: (reason: string) => void): void {
    if (this.reasonText !== undefined) queueMicrotask(() => listener(this.reasonText!));
    else this.listeners.push(listener);
  }
}
