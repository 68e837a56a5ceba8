/**
 * API keys: each caller that is not the admin holds one, sees only its own sandboxes and is held
 * to its limits. The secret is shown once at creation; the store keeps its sha256 only (the secret
 * has 256 random bits, so a plain hash is enough: there is nothing to brute-force). Keys are held
 * in memory, indexed by hash, so authenticating a request costs one hash and no database round
 * trip; the index is reloaded from the store every `refreshMs`, so a key created or revoked on
 * another node sharing the database is seen within that time (at once on this node).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { KilnError } from './errors.js';
import type { ApiKeyRecord, KeyLimits, Store, StoredApiKey } from './store.js';

export const KEY_PREFIX = 'kiln_';

export interface CreatedKey {
  key: ApiKeyRecord;
  /** The secret: returned once, never stored or logged. */
  secret: string;
}

export function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

export class KeyRing {
  private byHash = new Map<string, StoredApiKey>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly log?: (msg: string, fields?: Record<string, unknown>) => void,
  ) {}

  /** Loads the keys and keeps reloading them. */
  async start(refreshMs = 30_000): Promise<void> {
    await this.reload();
    this.timer = setInterval(() => {
      this.reload().catch((e: Error) => this.log?.('reloading API keys failed', { err: e.message }));
    }, refreshMs);
    this.timer.unref();
  }

  async reload(): Promise<void> {
    const next = new Map<string, StoredApiKey>();
    for (const k of await this.store.listKeys()) if (!k.revokedAt) next.set(k.hash.toString('hex'), k);
    this.byHash = next;
  }

  /**
   * The live key whose secret this is, or undefined. The map is indexed by the secret's hash, which
   * tells an attacker nothing; the stored hash is then compared in constant time all the same.
   */
  authenticate(secret: string): ApiKeyRecord | undefined {
    if (!secret.startsWith(KEY_PREFIX)) return undefined;
    const h = hashSecret(secret);
    const k = this.byHash.get(h.toString('hex'));
    if (!k || !timingSafeEqual(k.hash, h)) return undefined;
    return publicKey(k);
  }

  get(id: string): ApiKeyRecord | undefined {
    for (const k of this.byHash.values()) if (k.id === id) return publicKey(k);
    return undefined;
  }

  async create(name: string, limits: KeyLimits): Promise<CreatedKey> {
    const secret = `${KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
    const key: StoredApiKey = {
      id: `key-${randomBytes(6).toString('hex')}`,
      name,
      prefix: secret.slice(0, KEY_PREFIX.length + 6),
      createdAt: new Date(),
      limits: cleanLimits(limits),
      hash: hashSecret(secret),
    };
    await this.store.insertKey(key);
    this.byHash.set(key.hash.toString('hex'), key);
    return { key: publicKey(key), secret };
  }

  async list(): Promise<ApiKeyRecord[]> {
    return (await this.store.listKeys()).map(publicKey);
  }

  async revoke(id: string): Promise<void> {
    if (!(await this.store.revokeKey(id, new Date()))) throw new KilnError('KEY_NOT_FOUND', `no live API key with id "${id}"; list them with GET /v1/keys`);
    for (const [h, k] of this.byHash) if (k.id === id) this.byHash.delete(h);
  }

  close(): void {
    clearInterval(this.timer);
  }
}

function publicKey(k: StoredApiKey): ApiKeyRecord {
  return { id: k.id, name: k.name, prefix: k.prefix, createdAt: k.createdAt, ...(k.revokedAt ? { revokedAt: k.revokedAt } : {}), limits: k.limits };
}

function cleanLimits(l: KeyLimits): KeyLimits {
  const out: KeyLimits = {};
  for (const name of ['maxSandboxes', 'maxMemoryMib', 'maxTtlSec', 'maxExecTimeoutMs', 'maxSnapshotMib'] as const) {
    const v = l[name];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 0 || v > 2 ** 31 - 1) throw new KilnError('INVALID_REQUEST', `${name} must be an integer from 0 to ${2 ** 31 - 1} (got ${v})`);
    out[name] = v;
  }
  return out;
}
