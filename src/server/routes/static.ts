/** Serves the built dashboard (web/dist) at / when it exists; the API works without it. */

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { REPO_ROOT } from '../../core/config.js';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
  '.ico': 'image/x-icon',
  '.map': 'application/json',
};

export async function staticRoutes(app: FastifyInstance): Promise<void> {
  const root = resolve(process.env.KILN_WEB_DIR ?? join(REPO_ROOT, 'web/dist'));
  const serve = async (rel: string): Promise<{ body: Buffer; type: string } | undefined> => {
    const file = normalize(join(root, rel));
    if (!file.startsWith(`${root}/`) || !existsSync(file)) return undefined;
    return { body: await readFile(file), type: TYPES[extname(file)] ?? 'application/octet-stream' };
  };
  app.get('/', { schema: { hide: true } }, async (_req, reply) => {
    const f = await serve('index.html');
    if (!f) return reply.type('text/plain').send('kiln is running. The dashboard is not built: run `npm run build:web`. API: /openapi.json\n');
    return reply.type(f.type).send(f.body);
  });
  app.get<{ Params: { '*': string } }>('/assets/*', { schema: { hide: true } }, async (req, reply) => {
    const f = await serve(join('assets', req.params['*']));
    if (!f) return reply.status(404).send({ code: 'NOT_FOUND', message: 'no such asset' });
    return reply.header('cache-control', 'public, max-age=31536000, immutable').type(f.type).send(f.body);
  });
}
