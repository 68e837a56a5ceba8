/**
 * What the E2B-compatible API keeps beside kiln's own sandbox record: the envd access token it
 * handed out, the template name the client asked for and the metadata (all of it; the entries that
 * fit kiln's label rules are labels too). Held in memory: a sandbox the service no longer has is
 * forgotten at the next sweep.
 *
 * Data-plane requests (envd, the code interpreter) carry no API key, only E2b-Sandbox-Id and the
 * X-Access-Token create or connect returned: sandboxOf() turns that pair into the kiln Sandbox.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { KilnError } from '../../core/errors.js';
import type { Sandbox } from '../../core/sandbox.js';
import type { KilnService } from '../service.js';

/** The envd version kiln speaks; the client switches features on it (docs/e2b.md). */
export const ENVD_VERSION = '0.5.7';
/** E2B's ports, as the client tags data-plane requests with E2b-Sandbox-Port. */
export const ENVD_PORT = '49983';
export const CODE_INTERPRETER_PORT = '49999';
/** Internal path prefixes the data plane is routed under (see e2bRewriteUrl). */
export const ENVD_PREFIX = '/_e2b/envd';
export const CODE_INTERPRETER_PREFIX = '/_e2b/code-interpreter';

export interface E2bRecord {
  accessToken: string;
  templateID: string;
  metadata: Record<string, string>;
}

export class E2bState {
  private readonly records = new Map<string, E2bRecord>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly svc: KilnService) {
    this.timer = setInterval(() => this.sweep(), 60_000);
    this.timer.unref();
  }

  /** The sandbox's record, made on first use (a sandbox created through kiln's own API gets one when an E2B client connects). */
  record(sb: Sandbox, init?: Partial<E2bRecord>): E2bRecord {
    let r = this.records.get(sb.id);
    if (!r) {
      r = { accessToken: randomBytes(24).toString('base64url'), templateID: init?.templateID ?? sb.packName, metadata: init?.metadata ?? { ...sb.labels } };
      this.records.set(sb.id, r);
    }
    return r;
  }

  peek(id: string): E2bRecord | undefined {
    return this.records.get(id);
  }

  sweep(): void {
    for (const id of this.records.keys()) if (!this.svc.manager.peek(id)) this.records.delete(id);
  }

  close(): void {
    clearInterval(this.timer);
    this.records.clear();
  }

  /**
   * The sandbox a data-plane request is for, if its X-Access-Token is the one create or connect
   * returned for that sandbox: UNAUTHORIZED otherwise, SANDBOX_NOT_FOUND for one that is gone.
   */
  sandboxOf = (req: FastifyRequest): Sandbox => {
    const id = header(req, 'e2b-sandbox-id');
    if (!id) throw new KilnError('INVALID_REQUEST', 'data-plane requests carry the sandbox in the E2b-Sandbox-Id header');
    const sb = this.svc.manager.peek(id);
    const rec = this.records.get(id);
    if (!sb) throw new KilnError('SANDBOX_NOT_FOUND', `sandbox "${id}" is not running (killed, timed out, or never created here)`);
    if (!rec) throw new KilnError('UNAUTHORIZED', `sandbox "${id}" has no envd access token yet: Sandbox.connect() to it first`);
    const token = header(req, 'x-access-token');
    if (!token || !sameSecret(token, rec.accessToken)) throw new KilnError('UNAUTHORIZED', 'missing or wrong X-Access-Token: use the envdAccessToken create or connect returned');
    return sb;
  };
}

function header(req: FastifyRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Fastify's rewriteUrl: a request tagged with E2b-Sandbox-Id is the data plane, routed under an
 * internal prefix by its E2b-Sandbox-Port (49999: the code interpreter; anything else: envd), so
 * envd's paths (/files, /health, /process.Process/…) never meet kiln's own.
 */
export function e2bRewriteUrl(req: { url?: string; headers: Record<string, string | string[] | undefined> }): string {
  const url = req.url ?? '/';
  if (!req.headers['e2b-sandbox-id']) return url;
  const port = req.headers['e2b-sandbox-port'];
  return `${(Array.isArray(port) ? port[0] : port) === CODE_INTERPRETER_PORT ? CODE_INTERPRETER_PREFIX : ENVD_PREFIX}${url.startsWith('/') ? url : `/${url}`}`;
}

/** E2B's error body: the HTTP status as `code`, and a message. */
export function e2bError(e: KilnError): { code: number; message: string } {
  return { code: e.status, message: e.code === 'INTERNAL' ? 'internal error' : e.message };
}
