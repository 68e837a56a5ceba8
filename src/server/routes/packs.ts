/**
 * Packs: what each contains (everyone), and custom packs built, followed and removed (admins only:
 * see requireAdmin in edge.ts). A build's progress is NDJSON: {"type":"accepted","build"}, then
 * {"type":"progress","pack","phase","message","percent"?} lines, then one {"type":"result","pack","build"}
 * or {"type":"error","code","message"}.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { KilnError } from '../../core/errors.js';
import type { PackInfo } from '../../core/packs.js';
import type { BuildJob, BuildStatus } from '../pack-builds.js';
import type { KilnService } from '../service.js';
import { writeOrWait } from './backpressure.js';
import { errorSchema } from './schemas.js';

const nameParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', minLength: 1, maxLength: 64 } },
} as const;

// Query strings are not coerced (app.ts): "true" is a string here.
const streamQuery = { type: 'object', properties: { stream: { type: 'string', enum: ['true', 'false', '1', '0'] } } } as const;

/** A pack with its latest build (since the service started), if there was one. */
function withBuild(svc: KilnService, p: PackInfo): PackInfo & { build?: BuildStatus } {
  const job = svc.packBuilds.job(p.name);
  return job ? { ...p, build: job.status } : p;
}

async function onePack(svc: KilnService, name: string): Promise<PackInfo> {
  const found = (await svc.packs.list()).find((p) => p.name === name);
  if (found) return found;
  await svc.packs.get(name); // throws UNKNOWN_PACK naming the packs there are
  throw new KilnError('UNKNOWN_PACK', `unknown pack "${name}"`);
}

function wantsStream(req: FastifyRequest<{ Querystring: { stream?: string } }>): boolean {
  return req.query.stream === 'true' || req.query.stream === '1' || req.headers.accept === 'application/x-ndjson';
}

/**
 * Streams a build job as NDJSON until it finishes. The client leaving stops only the stream: the
 * build goes on and can be followed again with GET /v1/packs/:name/build.
 */
async function streamJob(svc: KilnService, job: BuildJob, reply: FastifyReply): Promise<void> {
  reply.hijack();
  reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
  const write = (obj: object) => void writeOrWait(reply.raw, `${JSON.stringify(obj)}\n`);
  write({ type: 'accepted', build: job.status });
  await new Promise<void>((resolve) => {
    const stop = job.follow((e) => {
      if (e) write(e);
      else resolve();
    });
    reply.raw.on('close', () => {
      stop();
      resolve();
    });
  });
  if (job.status.error) write({ type: 'error', ...job.status.error, build: job.status });
  else if (job.finished) write({ type: 'result', pack: withBuild(svc, await onePack(svc, job.status.pack).catch(() => ({ name: job.status.pack }) as PackInfo)), build: job.status });
  reply.raw.end();
}

export async function packRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  app.get(
    '/v1/packs',
    {
      schema: { summary: 'Packs: what each contains (language version, tools, packages, image size) and whether its image is built' },
    },
    async () => ({ packs: (await svc.packs.list()).map((p) => withBuild(svc, p)) }),
  );

  app.get<{ Params: { name: string } }>(
    '/v1/packs/:name',
    {
      schema: { summary: 'One pack, with its latest custom build', params: nameParams, response: { 400: errorSchema } },
    },
    async (req) => withBuild(svc, await onePack(svc, req.params.name)),
  );

  app.get<{ Params: { name: string } }>(
    '/v1/packs/:name/build',
    {
      schema: { summary: 'Follow the latest build of a custom pack as NDJSON (replayed from its start)', params: nameParams, response: { 404: errorSchema } },
    },
    async (req, reply) => {
      const job = svc.packBuilds.job(req.params.name);
      if (!job) throw new KilnError('BUILD_NOT_FOUND', `no build of pack "${req.params.name}" since the service started; POST /v1/packs starts one`);
      return streamJob(svc, job, reply);
    },
  );
}

/** Registered where only an admin reaches them (app.ts). */
export async function packAdminRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  app.post<{ Body: unknown; Querystring: { stream?: string } }>(
    '/v1/packs',
    {
      schema: {
        summary: 'Create or update a custom pack (admin): build its image, then store its definition. ?stream=true (or Accept: application/x-ndjson) streams the progress',
        querystring: streamQuery,
        body: { type: 'object', description: 'A custom pack definition: name, base, packages, files, setup, env, run, description (see images/packs/README.md)' },
        response: { 400: errorSchema, 403: errorSchema, 409: errorSchema, 422: errorSchema },
      },
    },
    async (req, reply) => {
      const job = await svc.packBuilds.submit(req.body);
      if (wantsStream(req)) return streamJob(svc, job, reply);
      const status = await job.done;
      if (job.error) throw job.error;
      return reply.status(201).send({ pack: withBuild(svc, await onePack(svc, status.pack)), build: status });
    },
  );

  app.delete<{ Params: { name: string } }>(
    '/v1/packs/:name',
    {
      schema: {
        summary: 'Remove a custom pack (admin): its definition and its images; running sandboxes keep theirs',
        params: nameParams,
        response: { 400: errorSchema, 403: errorSchema, 409: errorSchema },
      },
    },
    async (req) => {
      const r = await svc.packBuilds.remove(req.params.name);
      // File names only: host paths stay on the host.
      return { pack: req.params.name, removed: r.removed.map((p) => p.slice(p.lastIndexOf('/') + 1)), freedBytes: r.freedBytes };
    },
  );
}
