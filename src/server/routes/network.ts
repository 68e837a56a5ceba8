/** A sandbox's network audit trail: DNS queries and connection attempts, allowed or refused, and the proposed allowlist. */
import type { FastifyInstance } from 'fastify';
import { ownerOf } from '../edge.js';
import type { KilnService } from '../service.js';
import { errorSchema, idParams, networkEventsQuery, networkEventsSchema } from './schemas.js';

export async function networkRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  app.get<{ Params: { id: string }; Querystring: { after?: number; limit?: number } }>(
    '/v1/sandboxes/:id/network/events',
    {
      schema: {
        summary:
          "A sandbox's network audit trail: every DNS query and connection attempt (allowed, refused, or learned), byte counters, and the allowlist that would let through what it reached (the newest 2,000 events are kept, with a store also across restarts and after the sandbox is deleted; poll with ?after=<last seq>)",
        params: idParams,
        querystring: networkEventsQuery,
        response: { 200: networkEventsSchema, 404: errorSchema },
      },
    },
    async (req) => svc.manager.networkEvents(req.params.id, ownerOf(req.principal), req.query.after, req.query.limit),
  );
}
