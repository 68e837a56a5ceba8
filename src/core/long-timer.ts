/**
 * setTimeout for delays of any length. Node's timers hold at most 2^31-1 ms (~24.8 days); a longer
 * delay fires after 1 ms instead (with only a TimeoutOverflowWarning), so a sandbox asked to live
 * 30 days would be deleted at once. This re-arms until the deadline has really passed.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimer {
  clear(): void;
}

export function setLongTimeout(fn: () => void, delayMs: number): LongTimer {
  const deadline = Date.now() + Math.max(0, delayMs);
  let timer: NodeJS.Timeout;
  const arm = (): void => {
    const left = deadline - Date.now();
    if (left <= 0) {
      fn();
      return;
    }
    timer = setTimeout(arm, Math.min(left, MAX_TIMER_MS));
    timer.unref();
  };
  arm();
  return { clear: () => clearTimeout(timer) };
}
