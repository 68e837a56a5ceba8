/** IPv4 addresses and CIDR blocks as numbers: parsing, membership, and the sandbox address pool. */

export interface Cidr {
  /** Network address (host bits cleared). */
  net: number;
  prefix: number;
}

/** The address as an unsigned 32-bit number, or undefined when `s` is not dotted-quad IPv4. */
export function parseIp(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p, i) => p > 255 || (m[i + 1]!.length > 1 && m[i + 1]!.startsWith('0')))) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function formatIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** "a.b.c.d/n" or a bare address (/32); undefined when malformed. Host bits are cleared. */
export function parseCidr(s: string): Cidr | undefined {
  const [ip, p, extra] = s.split('/');
  if (extra !== undefined) return undefined;
  const a = parseIp(ip ?? '');
  if (a === undefined) return undefined;
  const prefix = p === undefined ? 32 : /^\d{1,2}$/.test(p) ? Number(p) : Number.NaN;
  if (!(prefix >= 0 && prefix <= 32)) return undefined;
  return { net: (a & mask(prefix)) >>> 0, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${formatIp(c.net)}/${c.prefix}`;
}

export function contains(c: Cidr, ip: number): boolean {
  return (ip & mask(c.prefix)) >>> 0 === c.net;
}

/**
 * The sandbox addresses of one subnet: the first host address is the gateway (the bridge's), the
 * rest are handed out lowest-free-first and given back at release.
 */
export class AddressPool {
  readonly gateway: number;
  private readonly used = new Set<number>();
  private readonly first: number;
  private readonly last: number;
  private next: number;

  constructor(readonly subnet: Cidr) {
    if (subnet.prefix > 29) throw new Error(`the sandbox subnet ${formatCidr(subnet)} is too small (at most /29)`);
    this.gateway = subnet.net + 1;
    this.first = subnet.net + 2;
    this.last = subnet.net + 2 ** (32 - subnet.prefix) - 2; // the broadcast address stays free
    this.next = this.first;
  }

  get size(): number {
    return this.last - this.first + 1;
  }

  get inUse(): number {
    return this.used.size;
  }

  /** A free address, rotating through the pool so a released one is not handed out again at once. */
  take(): number | undefined {
    for (let i = 0; i < this.size; i++) {
      const a = this.next;
      this.next = a >= this.last ? this.first : a + 1;
      if (!this.used.has(a)) {
        this.used.add(a);
        return a;
      }
    }
    return undefined;
  }

  /** Marks an address taken (a sandbox a restarted service took over); false when outside the pool or taken. */
  claim(a: number): boolean {
    if (a < this.first || a > this.last || this.used.has(a)) return false;
    this.used.add(a);
    return true;
  }

  release(a: number): void {
    this.used.delete(a);
  }
}

/** A locally administered unicast MAC derived from the address (02:6b:<ip>), unique per sandbox on the bridge. */
export function macFor(ip: number): string {
  return ['02', '6b', ...[ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** The gateway (the bridge's address: the subnet's first host address) of a KILN_NET_SUBNET value. */
export function gatewayOf(subnet: string): string | undefined {
  const c = parseCidr(subnet);
  return c ? formatIp(c.net + 1) : undefined;
}
