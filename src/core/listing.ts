/**
 * Listing live sandboxes: by owner, by labels (every given label must match), oldest first, in
 * pages. The cursor is opaque to clients: the creation time and id of the last sandbox of the
 * previous page, so a page stays right while sandboxes come and go between requests.
 */
import { KilnError } from './errors.js';
import type { Sandbox, SandboxInfo } from './sandbox.js';

export const LIST_DEFAULT_LIMIT = 100;
export const LIST_MAX_LIMIT = 1000;
const MAX_LABELS = 32;
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;
const LABEL_VALUE_MAX = 256;

export interface ListOptions {
  /** undefined: every owner (the admin); null: the admin's own; a key id: that key's. */
  ownerKeyId?: string | null;
  labels?: Record<string, string>;
  limit?: number;
  cursor?: string;
}

export interface ListResult {
  sandboxes: SandboxInfo[];
  /** Present when there may be more: pass it as ?cursor= for the next page. */
  nextCursor?: string;
}

export function listSandboxes(all: Iterable<Sandbox>, o: ListOptions = {}): ListResult {
  const limit = o.limit ?? LIST_DEFAULT_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > LIST_MAX_LIMIT) throw new KilnError('INVALID_REQUEST', `limit must be an integer from 1 to ${LIST_MAX_LIMIT} (got ${o.limit})`);
  const after = o.cursor === undefined ? undefined : parseCursor(o.cursor);
  const labels = Object.entries(o.labels ?? {});
  const picked = [...all].filter(
    (s) =>
      (o.ownerKeyId === undefined || (s.owner?.keyId ?? null) === o.ownerKeyId) &&
      labels.every(([k, v]) => s.labels[k] === v) &&
      (!after || s.createdAt.getTime() > after.t || (s.createdAt.getTime() === after.t && s.id > after.id)),
  );
  picked.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const page = picked.slice(0, limit);
  const last = page[page.length - 1];
  return {
    sandboxes: page.map((s) => s.info()),
    ...(picked.length > limit && last ? { nextCursor: Buffer.from(`${last.createdAt.getTime()}.${last.id}`).toString('base64url') } : {}),
  };
}

function parseCursor(c: string): { t: number; id: string } {
  const m = /^(\d{1,15})\.(.{1,128})$/.exec(Buffer.from(c, 'base64url').toString('utf8'));
  if (!m) throw new KilnError('INVALID_REQUEST', 'cursor is not one kiln handed out: pass the nextCursor of the previous page unchanged');
  return { t: Number(m[1]), id: m[2]! };
}

/** `k=v` filters from ?label= (one or several). */
export function parseLabelFilters(raw: string | string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]) {
    const eq = f.indexOf('=');
    if (eq <= 0) throw new KilnError('INVALID_REQUEST', `label filter "${f.slice(0, 100)}" must be key=value, e.g. ?label=team=search`);
    out[f.slice(0, eq)] = f.slice(eq + 1);
  }
  return out;
}

/** Labels given on create: bounded in number and size, keys of a safe shape. */
export function checkLabels(labels: Record<string, string> | undefined): Record<string, string> {
  if (!labels) return {};
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw new KilnError('INVALID_REQUEST', `labels: at most ${MAX_LABELS} (got ${entries.length})`);
  for (const [k, v] of entries) {
    if (!LABEL_KEY.test(k)) throw new KilnError('INVALID_REQUEST', `label key "${k.slice(0, 100)}": letters, digits and . _ / -, starting with a letter or digit, up to 63 characters`);
    if (typeof v !== 'string' || v.length > LABEL_VALUE_MAX) throw new KilnError('INVALID_REQUEST', `label "${k}": the value must be a string of up to ${LABEL_VALUE_MAX} characters`);
  }
  return { ...labels };
}
