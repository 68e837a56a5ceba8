/**
 * Host uids handed out one per VM (or sandbox) from a configured range. A uid is free again only
 * when its owner releases it, which owners do once nothing runs under it any more (its process
 * has exited and its cgroup is gone): a uid is never shared by two live VMs of one service.
 * Separate services on one host need separate ranges.
 */
import { KilnError } from './errors.js';

export class UidPool {
  private readonly inUse = new Set<number>();
  private next = 0;

  /** `what` names the pool in the exhaustion error ("jailer", "QEMU"). */
  constructor(
    readonly base: number,
    readonly count: number,
    private readonly what = 'sandbox',
  ) {
    if (!Number.isInteger(base) || !Number.isInteger(count) || base < 1000 || count < 1 || base + count > 2 ** 32 - 2) {
      throw new Error(`uid range ${base}+${count} is not usable: pick a base of at least 1000 and a positive count below 2^32`);
    }
  }

  take(): number {
    for (let i = 0; i < this.count; i++) {
      const uid = this.base + ((this.next + i) % this.count);
      if (!this.inUse.has(uid)) {
        this.inUse.add(uid);
        this.next = (uid - this.base + 1) % this.count;
        return uid;
      }
    }
    throw new KilnError('AT_CAPACITY', `all ${this.count} ${this.what} uids from ${this.base} are in use`);
  }

  /** Marks a uid an earlier run of the service handed out (a VM reattached at start) as in use. */
  adopt(uid: number): void {
    if (uid < this.base || uid >= this.base + this.count) throw new Error(`uid ${uid} is outside the ${this.what} range ${this.base}+${this.count}`);
    this.inUse.add(uid);
  }

  release(uid: number): void {
    this.inUse.delete(uid);
  }

  get used(): number {
    return this.inUse.size;
  }
}
