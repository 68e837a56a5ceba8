/** Workspace review routes: what a workspace sandbox changed, as a list and a diff, and the decision. */
import type { FastifyInstance } from 'fastify';
import { KilnError } from '../../core/errors.js';
import { ownerOf } from '../edge.js';
import type { KilnService } from '../service.js';
import { approveBody, errorSchema, idParams, rejectBody, workspaceChanges, workspaceQuery } from './schemas.js';

interface Query {
  ignored?: string;
  path?: string;
  pathBase64?: string;
  side?: 'old' | 'new';
}

interface DecisionBody {
  paths?: string[];
  pathsBase64?: string[];
  force?: boolean;
  ignored?: boolean;
}

export async function workspaceRoutes(app: FastifyInstance, { svc }: { svc: KilnService }): Promise<void> {
  const errors = { 400: errorSchema, 404: errorSchema, 409: errorSchema };
  const review = () => {
    if (!svc.workspaces) throw new KilnError('WORKSPACE_NOT_FOUND', 'workspaces are off on this service (KILN_WORKSPACE_ROOTS is not set)');
    return svc.workspaces;
  };
  /** The caller's live sandbox (another key's is 404), marked active for its idle timeout. */
  const sandbox = (id: string, principal: Parameters<typeof ownerOf>[0]) => {
    const sb = svc.manager.get(id, ownerOf(principal));
    svc.manager.touch(sb);
    return sb;
  };

  app.get<{ Params: { id: string }; Querystring: Query }>(
    '/v1/sandboxes/:id/changes',
    {
      schema: {
        summary: "A workspace sandbox's changes to its project: added, modified and deleted paths with type, size and whether binary (?ignored=1: gitignored paths too)",
        params: idParams,
        querystring: workspaceQuery,
        response: { 200: workspaceChanges, ...errors },
      },
    },
    async (req) => review().changes(sandbox(req.params.id, req.principal), { ignored: flag(req.query.ignored) }),
  );

  app.get<{ Params: { id: string }; Querystring: Query }>(
    '/v1/sandboxes/:id/diff',
    {
      schema: {
        summary: 'The changes as a git-style unified diff that git apply accepts (?path= one path; ?ignored=1 gitignored paths too)',
        params: idParams,
        querystring: workspaceQuery,
        response: { 200: { type: 'string' }, ...errors },
      },
    },
    async (req, reply) => {
      const paths = onePath(req.query);
      const text = await review().diff(sandbox(req.params.id, req.principal), { paths, ignored: flag(req.query.ignored) });
      return reply.type('text/x-diff; charset=utf-8').send(text);
    },
  );

  app.get<{ Params: { id: string }; Querystring: Query }>(
    '/v1/sandboxes/:id/changes/content',
    {
      schema: {
        summary: "One changed path's content: ?side=old the host's version, ?side=new the sandbox's (a symlink: its target); 404 when that side has none",
        params: idParams,
        querystring: workspaceQuery,
        response: errors,
      },
    },
    async (req, reply) => {
      const path = onePath(req.query);
      if (!path) throw new KilnError('INVALID_REQUEST', 'name the path with ?path= (or ?pathBase64=)', { details: { field: 'path' } });
      const data = await review().content(sandbox(req.params.id, req.principal), path[0]!, req.query.side ?? 'new');
      return reply.type('application/octet-stream').send(data);
    },
  );

  app.post<{ Params: { id: string }; Body: DecisionBody }>(
    '/v1/sandboxes/:id/approve',
    {
      schema: {
        summary:
          'Applies the changes (all that are not ignored, or `paths`) to the host folder, file by file atomically; host files changed since the sandbox started are a 409 WORKSPACE_CONFLICT listing them, unless `force`',
        params: idParams,
        body: approveBody,
        response: { 200: { type: 'object', required: ['applied'], properties: { applied: { type: 'array', items: { type: 'string' } } } }, ...errors },
      },
    },
    async (req) => {
      const sb = sandbox(req.params.id, req.principal);
      const r = await review().approve(sb, { paths: decisionPaths(req.body), force: req.body?.force ?? false, ignored: req.body?.ignored ?? false });
      svc.manager.recordEvent(sb, 'workspace.approved', { count: r.applied.length, paths: r.applied.slice(0, 100), forced: req.body?.force ?? false });
      return r;
    },
  );

  app.post<{ Params: { id: string }; Body: DecisionBody }>(
    '/v1/sandboxes/:id/reject',
    {
      schema: {
        summary: 'Discards the changes (all, or `paths`): the sandbox sees the host versions again',
        params: idParams,
        body: rejectBody,
        response: { 200: { type: 'object', required: ['rejected'], properties: { rejected: { type: 'array', items: { type: 'string' } } } }, ...errors },
      },
    },
    async (req) => {
      const sb = sandbox(req.params.id, req.principal);
      const r = await review().reject(sb, { paths: decisionPaths(req.body), ignored: req.body?.ignored ?? false });
      svc.manager.recordEvent(sb, 'workspace.rejected', { count: r.rejected.length, paths: r.rejected.slice(0, 100) });
      return r;
    },
  );
}

function flag(v: string | undefined): boolean {
  return v === '1' || v === 'true';
}

/** ?path= or ?pathBase64= as raw bytes; undefined: every path. */
function onePath(q: Query): Buffer[] | undefined {
  if (q.path !== undefined && q.pathBase64 !== undefined) throw new KilnError('INVALID_REQUEST', 'give ?path= or ?pathBase64=, not both');
  if (q.pathBase64 !== undefined) return [Buffer.from(q.pathBase64, 'base64')];
  if (q.path !== undefined) return [Buffer.from(q.path)];
  return undefined;
}

function decisionPaths(b: DecisionBody | undefined): Buffer[] | undefined {
  if (!b?.paths && !b?.pathsBase64) return undefined;
  return [...(b.paths ?? []).map((p) => Buffer.from(p)), ...(b.pathsBase64 ?? []).map((p) => Buffer.from(p, 'base64'))];
}
