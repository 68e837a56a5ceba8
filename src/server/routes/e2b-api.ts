/**
 * E2B's control plane (api.e2b.dev) on kiln's listener: the unmodified `e2b` client works with
 * E2B_API_URL pointing here. X-API-KEY is kiln's KILN_TOKEN or an API key (each key sees only its
 * own sandboxes); templates are packs; timeouts are kiln's TTL; metadata is kept whole and as
 * labels where it fits kiln's label rules. Errors are E2B's {code: <status>, message}.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { KilnError } from '../../core/errors.js';
import { checkLabels } from '../../core/listing.js';
import type { NetworkRequest } from '../../core/network.js';
import type { Sandbox } from '../../core/sandbox.js';
import { ownerFor, ownerOf, type Principal, principalForSecret } from '../edge.js';
import type { KilnService } from '../service.js';
import { type E2bState, ENVD_VERSION } from './e2b-state.js';

interface CreateBody {
  templateID?: string;
  metadata?: Record<string, string>;
  envVars?: Record<string, string>;
  timeout?: number;
  autoPause?: boolean;
  allow_internet_access?: boolean;
  network?: { allowOut?: string[]; denyOut?: string[] };
}

interface ListQuery {
  metadata?: string;
  state?: string;
  limit?: string;
  nextToken?: string;
  template?: string;
  order?: string;
  startedAfter?: string;
  startedBefore?: string;
}

const stringMap = { type: 'object', additionalProperties: { type: 'string' } } as const;
const idParams = { type: 'object', properties: { sandboxID: { type: 'string', maxLength: 200 } } } as const;

export async function e2bApiRoutes(app: FastifyInstance, { svc, state }: { svc: KilnService; state: E2bState }): Promise<void> {
  const principals = new WeakMap<FastifyRequest, Principal>();
  app.addHook('onRequest', async (req) => {
    const v = req.headers['x-api-key'];
    const p = principalForSecret(Array.isArray(v) ? v[0] : v, { token: svc.config.token, adminToken: svc.config.adminToken, keys: svc.keys });
    if (!p) throw new KilnError('UNAUTHORIZED', 'missing or wrong X-API-KEY: send KILN_TOKEN or a kiln API key (E2B_API_KEY)');
    principals.set(req, p);
  });
  const who = (req: FastifyRequest): Principal => principals.get(req)!;
  /** The sandbox if this caller may see it (another key's answers 404, like one that does not exist). */
  const mine = (req: FastifyRequest, id: string): Sandbox => {
    try {
      return svc.manager.get(id, ownerOf(who(req)));
    } catch {
      throw new KilnError('SANDBOX_NOT_FOUND', `sandbox "${id}" not found`);
    }
  };

  app.post<{ Body: CreateBody }>(
    '/v2/sandboxes',
    {
      schema: {
        hide: true,
        body: {
          type: 'object',
          properties: {
            templateID: { type: 'string', maxLength: 200 },
            metadata: stringMap,
            envVars: stringMap,
            timeout: { type: 'integer' },
            autoPause: { type: 'boolean' },
            allow_internet_access: { type: 'boolean' },
            network: { type: 'object', properties: { allowOut: { type: 'array', items: { type: 'string' } }, denyOut: { type: 'array', items: { type: 'string' } } } },
          },
        },
      },
    },
    async (req, reply) => {
      const b = req.body ?? {};
      const templateID = b.templateID ?? 'base';
      const pack = await packFor(svc, templateID);
      if (b.autoPause) throw new KilnError('UNSUPPORTED_OPTION', 'kiln cannot pause sandboxes yet: create without autoPause (onTimeout: "pause")');
      const metadata = b.metadata ?? {};
      const ac = new AbortController();
      reply.raw.on('close', () => {
        if (!reply.raw.writableFinished) ac.abort();
      });
      const network = e2bNetwork(b);
      const sb = await svc.manager.create({ pack, env: b.envVars, ttlSec: b.timeout, labels: fittingLabels(metadata), ...(network ? { network } : {}) }, ac.signal, ownerFor(who(req)));
      if (ac.signal.aborted) {
        await svc.manager.delete(sb.id, 'client left during create').catch(() => undefined);
        return reply;
      }
      const rec = state.record(sb, { templateID, metadata });
      return reply.status(201).send({
        sandboxID: sb.id,
        templateID,
        clientID: clientId(sb),
        envdVersion: ENVD_VERSION,
        envdAccessToken: rec.accessToken,
        domain: null,
      });
    },
  );

  app.get<{ Querystring: ListQuery }>('/v2/sandboxes', { schema: { hide: true } }, async (req, reply) => {
    const q = req.query;
    const states = q.state?.split(',') ?? ['running', 'paused'];
    const limit = q.limit === undefined ? 100 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new KilnError('INVALID_REQUEST', `limit must be an integer from 1 to 1000 (got ${q.limit})`);
    const desc = q.order !== 'asc'; // E2B lists the newest first unless asked otherwise
    // The client URI-encodes each key and value before it builds the k=v&… string: decode both.
    const wanted = q.metadata ? Object.fromEntries([...new URLSearchParams(q.metadata)].map(([k, v]) => [uriDecode(k), uriDecode(v)])) : {};
    const after = q.startedAfter ? Date.parse(q.startedAfter) : undefined;
    const before = q.startedBefore ? Date.parse(q.startedBefore) : undefined;
    const from = q.nextToken === undefined ? undefined : parseToken(q.nextToken);
    const owner = ownerOf(who(req));
    const key = (sb: Sandbox): [number, string] => [sb.createdAt.getTime(), sb.id];
    const cmp = (x: [number, string], y: [number, string]): number => (x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0)) * (desc ? -1 : 1);
    const all = svc.manager
      .list({ ownerKeyId: owner, labels: fittingLabels(wanted), limit: 1000 })
      .sandboxes.map((i) => svc.manager.peek(i.id))
      .filter((sb): sb is Sandbox => sb !== undefined)
      .filter((sb) => {
        const t = sb.createdAt.getTime();
        return (after === undefined || t >= after) && (before === undefined || t <= before) && (!from || cmp(key(sb), from) > 0);
      })
      .map((sb) => ({ sb, d: detail(sb, state) }))
      .filter(({ d }) => states.includes(d.state))
      .filter(({ d }) => Object.entries(wanted).every(([k, v]) => d.metadata[k] === v) && (!q.template || d.templateID === q.template))
      .sort((x, y) => cmp(key(x.sb), key(y.sb)));
    const page = all.slice(0, limit);
    const last = page[page.length - 1];
    if (all.length > limit && last) void reply.header('x-next-token', Buffer.from(`${last.sb.createdAt.getTime()}.${last.sb.id}`).toString('base64url'));
    return page.map(({ d }) => d);
  });

  app.get<{ Params: { sandboxID: string } }>('/sandboxes/:sandboxID', { schema: { hide: true, params: idParams } }, async (req) => detail(mine(req, req.params.sandboxID), state));

  app.delete<{ Params: { sandboxID: string } }>('/sandboxes/:sandboxID', { schema: { hide: true, params: idParams } }, async (req, reply) => {
    const sb = mine(req, req.params.sandboxID);
    await svc.manager.delete(sb.id, 'deleted by request (E2B API)', ownerOf(who(req)), { discard: true });
    return reply.status(204).send();
  });

  app.post<{ Params: { sandboxID: string }; Body: { timeout: number } }>(
    '/sandboxes/:sandboxID/timeout',
    { schema: { hide: true, params: idParams, body: { type: 'object', required: ['timeout'], properties: { timeout: { type: 'integer' } } } } },
    async (req, reply) => {
      svc.manager.setTtl(mine(req, req.params.sandboxID).id, req.body.timeout, ownerOf(who(req)));
      return reply.status(204).send();
    },
  );

  app.post<{ Params: { sandboxID: string }; Body: { timeout?: number } | undefined }>(
    '/v2/sandboxes/:sandboxID/connect',
    { schema: { hide: true, params: idParams, body: { type: 'object', nullable: true, properties: { timeout: { type: 'integer' } } } } },
    async (req, reply) => {
      let sb = mine(req, req.params.sandboxID);
      // Connecting to a paused sandbox resumes it (201, as E2B answers a resume).
      const resumed = sb.state === 'paused';
      if (resumed) sb = await svc.manager.pauses.resume(sb.id, ownerOf(who(req)));
      // E2B's connect extends the timeout, never shortens it.
      const timeout = req.body?.timeout;
      if (timeout !== undefined && Date.now() + timeout * 1000 > sb.expiresAt.getTime()) svc.manager.setTtl(sb.id, timeout, ownerOf(who(req)));
      const rec = state.record(sb);
      return reply
        .status(resumed ? 201 : 200)
        .send({ sandboxID: sb.id, templateID: rec.templateID, clientID: clientId(sb), envdVersion: ENVD_VERSION, envdAccessToken: rec.accessToken, domain: null });
    },
  );

  // kiln's pause (docs/snapshots.md): microVMs keep their processes; a namespace sandbox keeps its
  // files only (its processes start again on resume). Connect resumes.
  app.post<{ Params: { sandboxID: string } }>('/sandboxes/:sandboxID/pause', { schema: { hide: true, params: idParams } }, async (req, reply) => {
    const sb = mine(req, req.params.sandboxID);
    if (sb.state === 'paused') return reply.status(409).send({ code: 409, message: `sandbox ${sb.id} is already paused` });
    await svc.manager.pauses.pause(sb.id, ownerOf(who(req)));
    return reply.status(204).send();
  });

  app.get<{ Params: { sandboxID: string } }>('/sandboxes/:sandboxID/metrics', { schema: { hide: true, params: idParams } }, async (req) => {
    mine(req, req.params.sandboxID);
    return [];
  });
}

/** E2B's own template names that stand for one of kiln's packs. */
const TEMPLATE_ALIASES: Record<string, string> = { 'code-interpreter-v1': 'code-interpreter' };

/**
 * The pack a template names: the template's own name (E2B's default "base" is kiln's base pack;
 * @e2b/code-interpreter's default "code-interpreter-v1" is the code-interpreter pack).
 */
async function packFor(svc: KilnService, templateID: string): Promise<string> {
  try {
    return (await svc.packs.get(TEMPLATE_ALIASES[templateID] ?? templateID)).name;
  } catch {
    const known = (await svc.packs.list().catch(() => [])).map((p) => p.name);
    throw new KilnError('NOT_FOUND', `template "${templateID}" not found: kiln's templates are its packs (${known.join(', ') || 'none'})`);
  }
}

/** The metadata entries that are valid kiln labels (the rest is kept in the E2B record only). */
function fittingLabels(metadata: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) {
    try {
      checkLabels({ [k]: v });
      if (Object.keys(out).length < 32) out[k] = v;
    } catch {
      /* kept in the E2B record only */
    }
  }
  try {
    return checkLabels(out);
  } catch {
    return {};
  }
}

function uriDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function parseToken(t: string): [number, string] {
  const m = /^(\d{1,15})\.(.{1,128})$/.exec(Buffer.from(t, 'base64url').toString('utf8'));
  if (!m) throw new KilnError('INVALID_REQUEST', 'nextToken is not one kiln handed out: pass the x-next-token of the previous page unchanged');
  return [Number(m[1]), m[2]!];
}

function clientId(sb: Sandbox): string {
  return sb.owner?.keyId ?? 'admin';
}

function detail(sb: Sandbox, state: E2bState) {
  const rec = state.peek(sb.id);
  return {
    sandboxID: sb.id,
    templateID: rec?.templateID ?? sb.packName,
    clientID: clientId(sb),
    startedAt: sb.createdAt.toISOString(),
    endAt: sb.expiresAt.toISOString(),
    envdVersion: ENVD_VERSION,
    cpuCount: Math.max(1, Math.round(sb.size.cpus)),
    memoryMB: sb.size.memoryMib,
    diskSizeMB: sb.size.diskMib,
    metadata: rec?.metadata ?? { ...sb.labels },
    state: sb.state === 'paused' ? 'paused' : 'running',
    domain: null,
  };
}

/**
 * E2B's egress settings as a kiln network policy: `network.allowOut` is an allowlist (denied:
 * everything else, so a `denyOut` beside it adds nothing); `allow_internet_access: false` or a
 * `denyOut` of 0.0.0.0/0 alone is none; `allow_internet_access: true` is open. Neither: the
 * operator's default (kiln's sandboxes have no network unless asked, unlike E2B's).
 */
export function e2bNetwork(b: CreateBody): NetworkRequest | undefined {
  const allow = b.network?.allowOut ?? [];
  const deny = b.network?.denyOut ?? [];
  if (allow.length) return { policy: 'allowlist', allow };
  if (b.allow_internet_access === false || deny.includes('0.0.0.0/0')) return { policy: 'none' };
  if (deny.length)
    throw new KilnError('UNSUPPORTED_OPTION', 'kiln cannot deny single destinations while allowing the rest: list what the sandbox may reach in network.allowOut', {
      details: { field: 'network.denyOut' },
    });
  if (b.allow_internet_access === true) return { policy: 'open' };
  return undefined;
}
