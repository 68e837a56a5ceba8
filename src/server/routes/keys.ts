/** API keys, for the admin only (KILN_TOKEN or the trusted socket): create, list, show, revoke. */
import type { FastifyInstance } from 'fastify';
import { KilnError } from '../../core/errors.js';
import type { KeyRing } from '../../core/keys.js';
import type { ApiKeyRecord, KeyLimits } from '../../core/store.js';
import type { KilnService } from '../service.js';
import { errorSchema } from './schemas.js';

const limit = { type: 'integer', minimum: 0, maximum: 2147483647 } as const;
const limitsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { maxSandboxes: limit, maxMemoryMib: limit, maxTtlSec: limit, maxExecTimeoutMs: limit, maxSnapshotMib: limit },
  description: 'Per-key limits; an absent one is not limited beyond the host limits. Refusals are 429 QUOTA_EXCEEDED',
} as const;
const keySchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    name: { type: 'string' },
    prefix: { type: 'string' },
    createdAt: { type: 'string' },
    revokedAt: { type: 'string' },
    limits: limitsSchema,
    usage: {
      type: 'object',
      properties: {
        sandboxes: { type: 'integer' },
        memoryMib: { type: 'integer' },
        sandboxesCreated: { type: 'integer' },
        execs: { type: 'integer' },
        execMs: { type: 'integer' },
      },
    },
  },
} as const;
const keyParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } } as const;

export async function keyRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  const ring = (): KeyRing => {
    if (!svc.keys) throw new KilnError('STORE_UNAVAILABLE', 'API keys need the store: this service runs with KILN_DATABASE_URL=off');
    return svc.keys;
  };
  const present = (k: ApiKeyRecord) => ({ ...k, createdAt: k.createdAt.toISOString(), ...(k.revokedAt ? { revokedAt: k.revokedAt.toISOString() } : {}) });
  const errors = { 400: errorSchema, 403: errorSchema, 404: errorSchema, 503: errorSchema };

  app.post<{ Body: { name: string; limits?: KeyLimits } }>(
    '/v1/keys',
    {
      schema: {
        summary: 'Create an API key (admin only); the secret is in this answer and nowhere else',
        body: { type: 'object', additionalProperties: false, required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 128 }, limits: limitsSchema } },
        response: { 201: { type: 'object', properties: { key: keySchema, secret: { type: 'string' } } }, ...errors },
      },
    },
    async (req, reply) => {
      const { key, secret } = await ring().create(req.body.name, req.body.limits ?? {});
      return reply.status(201).send({ key: present(key), secret });
    },
  );

  app.get(
    '/v1/keys',
    {
      schema: {
        summary: 'List API keys (admin only), revoked ones included; never their secrets',
        response: { 200: { type: 'object', properties: { keys: { type: 'array', items: keySchema } } }, ...errors },
      },
    },
    async () => ({ keys: (await ring().list()).map((k) => ({ ...present(k), usage: svc.manager.ownerUsage.of(k.id) })) }),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/keys/:id',
    {
      schema: { summary: 'One API key (admin only) with its usage: live sandboxes and memory, totals of sandboxes, execs and exec time', params: keyParams, response: { 200: keySchema, ...errors } },
    },
    async (req) => {
      const k = (await ring().list()).find((x) => x.id === req.params.id);
      if (!k) throw new KilnError('KEY_NOT_FOUND', `no API key with id "${req.params.id}"; list them with GET /v1/keys`);
      await svc.journal?.flush().catch(() => undefined);
      return { ...present(k), usage: { ...svc.manager.ownerUsage.of(k.id), ...(await svc.store!.usage(k.id)) } };
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/keys/:id',
    {
      schema: { summary: 'Revoke an API key (admin only): refused from then on; its sandboxes live on until deleted or expired', params: keyParams, response: errors },
    },
    async (req, reply) => {
      await ring().revoke(req.params.id);
      return reply.status(204).send();
    },
  );
}
