/** POST /v1/sandboxes/:id/port-links: a signed, short-lived browser link to one port of a sandbox (../port-links.ts, docs/ports.md). */
import type { FastifyInstance } from 'fastify';
import { ownerOf } from '../edge.js';
import { LINK_QUERY, LINK_TTL_SEC, linkPath, portLinks } from '../port-links.js';
import type { KilnService } from '../service.js';
import { errorSchema, idParams, portLinkBody, portLinkSchema } from './schemas.js';

export async function portLinkRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  const links = portLinks(svc);
  app.post<{ Params: { id: string }; Body: { port: number; ttlSec?: number } }>(
    '/v1/sandboxes/:id/port-links',
    {
      schema: {
        summary:
          'A link a browser can open: the port proxy of this port of this sandbox, with a signed token that the first visit turns into a cookie scoped to /v1/sandboxes/<id>/ports/<port>/. It opens nothing else (no other port, sandbox or API route) and ends at expiresAt or when the service restarts',
        params: idParams,
        body: portLinkBody,
        response: { 200: portLinkSchema, 400: errorSchema, 404: errorSchema },
      },
    },
    async (req) => {
      const { id } = req.params;
      svc.manager.get(id, ownerOf(req.principal)); // SANDBOX_NOT_FOUND for none or another key's
      const { token, expiresAt } = links.issue(id, req.body.port, req.body.ttlSec ?? LINK_TTL_SEC.default);
      const path = `${linkPath(id, req.body.port)}?${LINK_QUERY}=${token}`;
      return { url: `${req.protocol}://${authority(req.headers.host, links.appsPort ?? svc.config.appsPort)}${path}`, path, expiresAt: expiresAt.toISOString() };
    },
  );
}

/** The Host the request came with, or its host name with the apps listener's port when there is one. */
function authority(host: string | undefined, appsPort: number | undefined): string {
  const h = host ?? 'localhost';
  if (appsPort === undefined) return h;
  try {
    return `${new URL(`http://${h}`).hostname}:${appsPort}`;
  } catch {
    return `localhost:${appsPort}`;
  }
}
