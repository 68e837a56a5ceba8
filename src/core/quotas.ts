/**
 * Per-key limits, checked in memory before anything is started: concurrent sandboxes, their total
 * memory, a sandbox's lifetime and one exec's time. A refusal is 429 QUOTA_EXCEEDED naming the
 * limit, its value and what the request asked for. Creates under way count (they are reserved
 * before admission), so concurrent creates cannot overshoot a limit together.
 */
import { KilnError } from './errors.js';
import type { KeyLimits } from './store.js';

/** Who a sandbox belongs to: an API key and its limits. The admin's sandboxes have no owner. */
export interface Owner {
  keyId: string;
  limits: KeyLimits;
}

export class OwnerUsage {
  private readonly live = new Map<string, { sandboxes: number; memoryMib: number }>();

  /** Reserves one sandbox of `memoryMib` for the owner, or throws QUOTA_EXCEEDED; returns the undo. */
  reserve(owner: Owner, size: { memoryMib: number; ttlSec: number }): () => void {
    const l = owner.limits;
    const u = this.of(owner.keyId);
    if (l.maxTtlSec !== undefined && size.ttlSec > l.maxTtlSec) {
      throw exceeded('maxTtlSec', l.maxTtlSec, size.ttlSec, `ttlSec ${size.ttlSec} is over this key's limit of ${l.maxTtlSec} s; ask for a shorter ttlSec`);
    }
    if (l.maxSandboxes !== undefined && u.sandboxes + 1 > l.maxSandboxes) {
      throw exceeded('maxSandboxes', l.maxSandboxes, u.sandboxes + 1, `this key already has ${u.sandboxes} sandboxes, its limit is ${l.maxSandboxes}; delete one first`);
    }
    if (l.maxMemoryMib !== undefined && u.memoryMib + size.memoryMib > l.maxMemoryMib) {
      throw exceeded(
        'maxMemoryMib',
        l.maxMemoryMib,
        u.memoryMib + size.memoryMib,
        `this key's sandboxes hold ${u.memoryMib} MiB; ${size.memoryMib} MiB more would pass its limit of ${l.maxMemoryMib} MiB; delete a sandbox or ask for less memoryMib`,
      );
    }
    u.sandboxes++;
    u.memoryMib += size.memoryMib;
    let undone = false;
    return () => {
      if (undone) return;
      undone = true;
      u.sandboxes--;
      u.memoryMib -= size.memoryMib;
    };
  }

  of(keyId: string): { sandboxes: number; memoryMib: number } {
    let u = this.live.get(keyId);
    if (!u) this.live.set(keyId, (u = { sandboxes: 0, memoryMib: 0 }));
    return u;
  }
}

/** The lifetime a key's create gets when it names none: the host default, capped at the key's limit. */
export function defaultTtlFor(owner: Owner | undefined, hostDefaultSec: number): number {
  const max = owner?.limits.maxTtlSec;
  return max !== undefined && max > 0 ? Math.min(hostDefaultSec, max) : hostDefaultSec;
}

/** An exec's timeout under the owner's limit: a longer one asked for is refused, none asked gets the limit at most. */
export function execTimeoutFor(owner: Owner | undefined, requestedMs: number | undefined, defaultMs: number): number | undefined {
  const max = owner?.limits.maxExecTimeoutMs;
  if (max === undefined) return requestedMs;
  if (requestedMs === undefined) return Math.min(defaultMs, max);
  if (requestedMs > max) throw exceeded('maxExecTimeoutMs', max, requestedMs, `timeoutMs ${requestedMs} is over this key's limit of ${max} ms; ask for a shorter timeoutMs`);
  return requestedMs;
}

function exceeded(limit: keyof KeyLimits, value: number, requested: number, message: string): KilnError {
  return new KilnError('QUOTA_EXCEEDED', message, { details: { limit, value, requested } });
}
