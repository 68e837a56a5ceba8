import { useEffect, useRef } from 'react';

/** Calls `fn` now and every `intervalMs` while the page is visible; skips a tick while one is running. */
export function usePoll(fn: () => Promise<void>, intervalMs: number, deps: unknown[]): void {
  const fnRef = useRef(fn);
  fnRef.current = fn;
  useEffect(() => {
    let busy = false;
    let stopped = false;
    const tick = async () => {
      if (busy || stopped || document.hidden) return;
      busy = true;
      try {
        await fnRef.current();
      } finally {
        busy = false;
      }
    };
    void tick();
    const t = setInterval(() => void tick(), intervalMs);
    return () => {
      stopped = true;
      clearInterval(t);
    };
  }, [intervalMs, ...deps]);
}
