/**
 * Reads Firecracker's official swagger 2.0 description and turns it into a request validator:
 * every path + method, and every body schema translated to JSON Schema (draft-07) for ajv.
 * Objects get `additionalProperties: false` unless the spec says otherwise, because Firecracker
 * deserialises with serde's deny_unknown_fields and rejects unknown fields with a 400.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import AjvModule, { type ValidateFunction } from 'ajv';
import { parse } from 'yaml';
import { REPO_ROOT } from '../../src/core/config.js';

const Ajv = AjvModule.default ?? AjvModule;

/**
 * Firecracker's official API description (swagger, v1.17-dev): the shared copy beside the repo when
 * there is one, else the copy vendored in test/firecracker/spec (same file, kept for clean clones).
 */
const SHARED_SPEC = join(REPO_ROOT, '../shared/spec/firecracker-api.yaml');
export const SPEC_PATH = process.env.KILN_FIRECRACKER_SPEC ?? (existsSync(SHARED_SPEC) ? SHARED_SPEC : join(REPO_ROOT, 'test/firecracker/spec/firecracker-api.yaml'));

type Json = Record<string, unknown>;

interface Operation {
  method: string;
  template: string;
  regex: RegExp;
  operationId: string;
  body?: { required: boolean; validate: ValidateFunction };
}

export interface RequestCheck {
  ok: boolean;
  operationId?: string;
  problem?: string;
}

/** Swagger 2.0 schema → JSON Schema. Drops doc-only keys and swagger formats (int32/int64, …). */
export function translateSchema(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(translateSchema);
  if (!s || typeof s !== 'object') return s;
  const src = s as Json;
  if (typeof src.$ref === 'string') return { $ref: src.$ref }; // siblings of $ref are ignored in draft-07 anyway
  const out: Json = {};
  for (const [k, v] of Object.entries(src)) {
    if (['description', 'example', 'readOnly', 'format', 'default', 'title'].includes(k)) continue;
    if (k === 'properties') out.properties = Object.fromEntries(Object.entries(v as Json).map(([p, ps]) => [p, translateSchema(ps)]));
    else if (k === 'items' || k === 'additionalProperties') out[k] = typeof v === 'object' ? translateSchema(v) : v;
    else out[k] = v;
  }
  if (out.type === 'object' && out.properties && out.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

export class FirecrackerSpec {
  readonly version: string;
  private readonly ops: Operation[] = [];

  constructor(path = SPEC_PATH) {
    const doc = parse(readFileSync(path, 'utf8')) as Json;
    if (doc.swagger !== '2.0') throw new Error(`${path} is not a swagger 2.0 document`);
    this.version = String((doc.info as Json).version);
    const definitions = Object.fromEntries(Object.entries(doc.definitions as Json).map(([k, v]) => [k, translateSchema(v)]));
    const ajv = new Ajv({ allErrors: true, strict: false });
    ajv.addSchema({ $id: 'fc', definitions }, 'fc');
    for (const [template, item] of Object.entries(doc.paths as Json)) {
      const regex = new RegExp(`^${template.replace(/\{[^}]+\}/g, '([^/]+)')}$`);
      for (const [method, opRaw] of Object.entries(item as Json)) {
        const op = opRaw as Json;
        const bodyParam = ((op.parameters as Json[] | undefined) ?? []).find((p) => p.in === 'body');
        const entry: Operation = { method: method.toUpperCase(), template, regex, operationId: String(op.operationId) };
        if (bodyParam) {
          const schema = JSON.parse(JSON.stringify(translateSchema(bodyParam.schema)).replaceAll('"#/definitions/', '"fc#/definitions/')) as Json;
          entry.body = { required: bodyParam.required === true, validate: ajv.compile(schema) };
        }
        this.ops.push(entry);
      }
    }
  }

  operations(): Array<{ method: string; path: string; operationId: string }> {
    return this.ops.map((o) => ({ method: o.method, path: o.template, operationId: o.operationId }));
  }

  /** Checks one request: the path and method exist, the body matches the definition. */
  check(method: string, url: string, rawBody: string): RequestCheck {
    const path = url.split('?')[0]!;
    const byPath = this.ops.filter((o) => o.regex.test(path));
    if (byPath.length === 0) return { ok: false, problem: `no path ${path} in the Firecracker API` };
    const op = byPath.find((o) => o.method === method);
    if (!op) return { ok: false, problem: `${method} is not defined for ${path} (defined: ${byPath.map((o) => o.method).join(', ')})` };
    if (!op.body) {
      return rawBody.length === 0 ? { ok: true, operationId: op.operationId } : { ok: false, operationId: op.operationId, problem: `${op.operationId} takes no body` };
    }
    if (rawBody.length === 0) {
      return op.body.required ? { ok: false, operationId: op.operationId, problem: `${op.operationId} requires a body` } : { ok: true, operationId: op.operationId };
    }
    let body: unknown;
    try {
      body = JSON.parse(rawBody);
    } catch {
      return { ok: false, operationId: op.operationId, problem: 'the body is not JSON' };
    }
    if (op.body.validate(body)) return { ok: true, operationId: op.operationId };
    const problem = (op.body.validate.errors ?? [])
      .map((e) => `${e.instancePath || '(body)'} ${e.message}${'additionalProperty' in e.params ? ` "${String(e.params.additionalProperty)}"` : ''}`)
      .join('; ');
    return { ok: false, operationId: op.operationId, problem };
  }
}
