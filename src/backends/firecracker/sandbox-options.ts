/**
 * Per-sandbox `backendOptions` the Firecracker backend accepts, validated once at the edge and
 * mapped to Firecracker's bodies. Kiln's names carry units (`sizeBytes`, `refillTimeMs`).
 *
 *   { "driveRateLimit": { "bandwidth": { "sizeBytes": 10485760, "refillTimeMs": 1000 } },
 *     "network": { "tapDevice": "kilntap0", "guestMac": "06:00:ac:10:00:02",
 *                  "rxRateLimit": { "ops": { "size": 1000, "refillTimeMs": 1000 } } },
 *     "bootArgs": "loglevel=7" }
 */
import AjvModule from 'ajv';
import { KilnError } from '../../core/errors.js';
import type { NetworkInterface, RateLimiter, TokenBucket } from './api-types.js';

export interface BucketOption {
  /** Bucket capacity in tokens (bytes for bandwidth, operations for ops). */
  size: number;
  refillTimeMs: number;
  oneTimeBurst?: number;
}

export interface RateLimitOption {
  /** Tokens are bytes. */
  bandwidth?: BucketOption;
  /** Tokens are I/O operations. */
  ops?: BucketOption;
}

export interface FirecrackerSandboxOptions {
  driveRateLimit?: RateLimitOption;
  network?: {
    /** An existing TAP device on the host (in the jailer's netns when the jailer is used). */
    tapDevice: string;
    guestMac?: string;
    rxRateLimit?: RateLimitOption;
    txRateLimit?: RateLimitOption;
  };
  /** Appended to the guest kernel command line. */
  bootArgs?: string;
}

const bucket = {
  type: 'object',
  additionalProperties: false,
  required: ['size', 'refillTimeMs'],
  properties: {
    size: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER },
    refillTimeMs: { type: 'integer', minimum: 1, maximum: 3_600_000 },
    oneTimeBurst: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER },
  },
};
const limiter = { type: 'object', additionalProperties: false, minProperties: 1, properties: { bandwidth: bucket, ops: bucket } };

const schema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    driveRateLimit: limiter,
    network: {
      type: 'object',
      additionalProperties: false,
      required: ['tapDevice'],
      properties: {
        tapDevice: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,15}$' },
        guestMac: { type: 'string', pattern: '^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$' },
        rxRateLimit: limiter,
        txRateLimit: limiter,
      },
    },
    bootArgs: { type: 'string', maxLength: 1024, pattern: '^[\\x20-\\x7e]*$' },
  },
};

const Ajv = AjvModule.default ?? AjvModule;
const validate = new Ajv({ allErrors: true }).compile<FirecrackerSandboxOptions>(schema);

export function parseSandboxOptions(raw: Record<string, unknown> | undefined): FirecrackerSandboxOptions {
  if (raw === undefined) return {};
  if (validate(raw)) return raw;
  const problems = (validate.errors ?? []).map(
    (e) => `${e.instancePath || 'backendOptions'} ${e.message}${e.params && 'additionalProperty' in e.params ? ` (${String(e.params.additionalProperty)})` : ''}`,
  );
  throw new KilnError(
    'INVALID_REQUEST',
    `invalid firecracker backendOptions: ${problems.join('; ')}. Accepted keys: driveRateLimit, network {tapDevice, guestMac, rxRateLimit, txRateLimit}, bootArgs`,
    {
      details: { problems },
    },
  );
}

export function toRateLimiter(o: RateLimitOption | undefined): RateLimiter | undefined {
  if (!o) return undefined;
  const out: RateLimiter = {};
  if (o.bandwidth) out.bandwidth = toBucket(o.bandwidth);
  if (o.ops) out.ops = toBucket(o.ops);
  return out;
}

function toBucket(b: BucketOption): TokenBucket {
  return { size: b.size, refill_time: b.refillTimeMs, ...(b.oneTimeBurst !== undefined ? { one_time_burst: b.oneTimeBurst } : {}) };
}

/** How often the send limit's bucket refills: a burst of at most this much traffic. */
const SEND_REFILL_MS = 100;

/** A sandbox's send limit (the network plan's `sendMbit`) as Firecracker's limiter on what the guest transmits. */
export function sendRateLimiter(mbit: number): RateLimiter {
  return { bandwidth: { size: Math.max(1, Math.round((mbit * 1_000_000 * SEND_REFILL_MS) / 8 / 1000)), refill_time: SEND_REFILL_MS } };
}

export function toNetworkInterface(o: FirecrackerSandboxOptions['network']): NetworkInterface | undefined {
  if (!o) return undefined;
  const nic: NetworkInterface = { iface_id: 'eth0', host_dev_name: o.tapDevice };
  if (o.guestMac) nic.guest_mac = o.guestMac;
  const rx = toRateLimiter(o.rxRateLimit);
  const tx = toRateLimiter(o.txRateLimit);
  if (rx) nic.rx_rate_limiter = rx;
  if (tx) nic.tx_rate_limiter = tx;
  return nic;
}
