/**
 * Schema errors as the user would say them: the field (files[0].encoding), the value that was sent
 * and what is allowed (the accepted fields, the enum, the range). AJV's own messages ("must NOT have
 * additional properties") name none of these. Needs AJV's `verbose` option (data, parentSchema).
 */
import { KilnError } from '../core/errors.js';

/** The part of an AJV ErrorObject read here (Fastify and the WebSocket route both pass these). */
export interface SchemaError {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
  message?: string;
  data?: unknown;
  parentSchema?: Record<string, unknown>;
}

/** Where the value came from: Fastify's validationContext, or a name such as "start message". */
const PLACES: Record<string, string> = { body: 'field', querystring: 'query parameter', params: 'path parameter', headers: 'header' };

export function schemaError(errors: readonly SchemaError[], context: string): KilnError {
  if (errors.length === 0) return new KilnError('INVALID_REQUEST', `the ${context === 'body' ? 'request body' : context} is malformed`);
  const e = pick(errors);
  const place = PLACES[context] ?? `${context} field`;
  const field = fieldName(e);
  const subject = field ? `${place} "${field}"` : context === 'body' ? 'the request body' : context;
  const { text, details } = describe(e, subject);
  return new KilnError('INVALID_REQUEST', text, { details: { in: context, ...(field ? { field } : {}), ...details } });
}

/**
 * One error to report. Without allErrors AJV stops at the first failure, except that oneOf/anyOf
 * first list every branch's failure: report the branch whose type the value has, if one does.
 */
function pick(errors: readonly SchemaError[]): SchemaError {
  const last = errors[errors.length - 1]!;
  if (last.keyword !== 'oneOf' && last.keyword !== 'anyOf') return last;
  const branches = errors.slice(0, -1).filter((b) => b.instancePath.startsWith(last.instancePath));
  const own = branches.find((b) => b.instancePath !== last.instancePath || (b.keyword !== 'type' && b.instancePath === last.instancePath));
  return own ?? { ...last, keyword: 'type', params: { type: branches.map((b) => b.params.type).filter(Boolean) } };
}

/** "/files/0/encoding" → "files[0].encoding"; a missing or unknown property is named too. */
function fieldName(e: SchemaError): string {
  let name = '';
  for (const part of e.instancePath.split('/').slice(1)) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    name += /^\d+$/.test(key) ? `[${key}]` : name ? `.${key}` : key;
  }
  const child = e.keyword === 'required' ? e.params.missingProperty : e.keyword === 'additionalProperties' ? e.params.additionalProperty : undefined;
  if (typeof child === 'string') name = name ? `${name}.${child}` : child;
  return name;
}

function describe(e: SchemaError, subject: string): { text: string; details: Record<string, unknown> } {
  const p = e.params;
  const s = e.parentSchema ?? {};
  const got = ` (got ${show(e.data)})`;
  switch (e.keyword) {
    case 'required':
      return { text: `${subject} is required`, details: {} };
    case 'additionalProperties': {
      const accepted = Object.keys((s.properties as object | undefined) ?? {});
      return { text: `unknown ${subject}; accepted: ${accepted.join(', ')}`, details: { accepted } };
    }
    case 'const':
      return { text: `${subject} must be ${show(p.allowedValue)}${got}`, details: { value: clip(e.data), allowed: [p.allowedValue] } };
    case 'enum':
      return { text: `${subject} must be one of ${(p.allowedValues as unknown[]).map(show).join(', ')}${got}`, details: { value: clip(e.data), allowed: p.allowedValues } };
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return { text: `${subject} must be ${range(s)}${got}`, details: { value: clip(e.data), ...bounds(s) } };
    case 'type': {
      const types = ([] as unknown[]).concat(p.type).map((t) => (t === 'integer' ? 'an integer' : t === 'array' || t === 'object' ? `an ${t}` : `a ${String(t)}`));
      return { text: `${subject} must be ${types.join(' or ')}${got}`, details: { value: clip(e.data) } };
    }
    case 'minLength':
    case 'maxLength': {
      const len = typeof e.data === 'string' ? e.data.length : undefined;
      return { text: `${subject} must be ${span(s.minLength, s.maxLength, 'character')} long (got ${len ?? '?'})`, details: { length: len, minLength: s.minLength, maxLength: s.maxLength } };
    }
    case 'minItems':
    case 'maxItems': {
      const n = Array.isArray(e.data) ? e.data.length : undefined;
      return { text: `${subject} must have ${span(s.minItems, s.maxItems, 'item')} (got ${n ?? '?'})`, details: { items: n, minItems: s.minItems, maxItems: s.maxItems } };
    }
    case 'minProperties':
    case 'maxProperties': {
      const n = e.data && typeof e.data === 'object' ? Object.keys(e.data).length : undefined;
      return { text: `${subject} must have ${span(s.minProperties, s.maxProperties, 'entry')} (got ${n ?? '?'})`, details: { entries: n, maxProperties: s.maxProperties } };
    }
    case 'pattern':
      return { text: `${subject} must match ${String(p.pattern)}${got}`, details: { value: clip(e.data), pattern: p.pattern } };
    case 'propertyNames':
      return { text: `${subject} has an invalid name ${show(p.propertyName)}: names are 1 to 1024 characters without "=" or NUL`, details: { name: clip(p.propertyName) } };
    default:
      return { text: `${subject} ${e.message ?? 'is invalid'}${got}`, details: {} };
  }
}

function range(s: Record<string, unknown>): string {
  const lo = s.exclusiveMinimum !== undefined ? `> ${String(s.exclusiveMinimum)}` : s.minimum !== undefined ? `>= ${String(s.minimum)}` : '';
  const hi = s.exclusiveMaximum !== undefined ? `< ${String(s.exclusiveMaximum)}` : s.maximum !== undefined ? `<= ${String(s.maximum)}` : '';
  const kind = s.type === 'integer' ? 'an integer ' : 'a number ';
  return kind + [lo, hi].filter(Boolean).join(' and ');
}

function bounds(s: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of ['minimum', 'exclusiveMinimum', 'maximum', 'exclusiveMaximum']) if (s[k] !== undefined) out[k] = s[k];
  return out;
}

function span(min: unknown, max: unknown, unit: string): string {
  const plural = (n: unknown) => `${String(n)} ${n === 1 ? unit : unit === 'entry' ? 'entries' : `${unit}s`}`;
  if (min !== undefined && max !== undefined) return `${String(min)} to ${plural(max)}`;
  if (max !== undefined) return `at most ${plural(max)}`;
  return `at least ${plural(min)}`;
}

/** The value for details: itself when small, else its shortened JSON text. */
function clip(v: unknown): unknown {
  const json = JSON.stringify(v);
  return json === undefined || json.length <= 80 ? v : show(v);
}

/** The value as JSON, cut short: an error message never echoes a megabyte back. */
function show(v: unknown): string {
  const json = v === undefined ? 'nothing' : (JSON.stringify(v) ?? String(v));
  return json.length > 80 ? `${json.slice(0, 77)}...` : json;
}
