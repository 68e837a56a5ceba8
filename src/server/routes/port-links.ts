/** POST /v1/sandboxes/:id/port-links: a signed, short-lived browser link to one port of a sandbox (../port-links.ts, docs/ports.md). */
import type { FastifyInstance } from 'fastify';
import { KilnError } from '../../core/errors.js';
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
      if (links.appsPort === undefined)
        throw new KilnError(
          'UNSUPPORTED_OPTION',
          "browser links need kiln's apps listener (KILN_APPS_PORT, off on this service): a sandbox's web app must not share the API's origin, where it could read the dashboard's token",
        );
      const { token, expiresAt } = links.issue(id, req.body.port, req.body.ttlSec ?? LINK_TTL_SEC.default);
      const path = `${linkPath(id, req.body.port)}?${LINK_QUERY}=${token}`;
      return { url: `${req.protocol}://${authority(req.headers.host, links.appsPort)}${path}`, path, expiresAt: expiresAt.toISOString() };
    },
  );
}

/** The host name the request came with, and the apps listener's port. */
function authority(host: string | undefined, appsPort: number): string {
  const h = host ?? 'localhost';
  try {
    return `${new URL(`http://${h}`).hostname}:${appsPort}`;
  } catch {
    return `localhost:${appsPort}`;
  }
}
