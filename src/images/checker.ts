/**
 * Field-by-field checks for pack definitions. Every failure names the file and the field, so a typo
 * fails before any minute-long build starts.
 */
import { KilnError } from '../core/errors.js';
import type { ImageVariant } from './types.js';

export const NAME_RE = /^[a-z][a-z0-9-]{0,31}$/;
// Debian package names, optionally with an =version pin or :arch qualifier.
export const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$/;
export const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
export const VARIANTS: readonly ImageVariant[] = ['essential', 'minbase'];

/**
 * A definition that does not validate. A repo file's mistake is the operator's (500, INTERNAL); a
 * definition sent to POST /v1/packs is the caller's (400, INVALID_REQUEST, `file` is "request body").
 */
export class PackDefinitionError extends KilnError {
  constructor(file: string, field: string, problem: string, code: 'INTERNAL' | 'INVALID_REQUEST' = 'INTERNAL') {
    super(code, `invalid pack definition ${file}: ${field} ${problem}`, { details: { file, field } });
    this.name = 'PackDefinitionError';
  }
}

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class Checker {
  constructor(
    readonly file: string,
    readonly code: 'INTERNAL' | 'INVALID_REQUEST' = 'INTERNAL',
  ) {}

  fail(field: string, problem: string): never {
    throw new PackDefinitionError(this.file, field, problem, this.code);
  }

  obj(v: unknown, field: string, allowed: string[]): Obj {
    if (!isObj(v)) this.fail(field, 'must be an object');
    for (const key of Object.keys(v)) {
      if (!allowed.includes(key)) this.fail(`${field}.${key}`, `is not a known field (known: ${allowed.join(', ')})`);
    }
    return v;
  }

  str(v: unknown, field: string, re?: RegExp): string {
    if (typeof v !== 'string' || v.length === 0) this.fail(field, 'must be a non-empty string');
    if (re && !re.test(v)) this.fail(field, `"${v}" does not match ${re}`);
    return v;
  }

  strList(v: unknown, field: string, opts: { min: number; max?: number; re?: RegExp }): string[] {
    if (!Array.isArray(v)) this.fail(field, 'must be an array of strings');
    if (v.length < opts.min) this.fail(field, `must have at least ${opts.min} item(s)`);
    if (opts.max !== undefined && v.length > opts.max) this.fail(field, `has ${v.length} items; the limit is ${opts.max}`);
    return v.map((item, i) => this.str(item, `${field}[${i}]`, opts.re));
  }

  env(v: unknown): Record<string, string> {
    const raw: unknown = v === undefined ? {} : v;
    if (!isObj(raw)) this.fail('env', 'must be an object of strings');
    const env: Record<string, string> = {};
    for (const [k, val] of Object.entries(raw)) {
      if (!ENV_KEY_RE.test(k)) this.fail(`env.${k}`, 'is not a valid variable name');
      if (typeof val !== 'string') this.fail(`env.${k}`, 'must be a string');
      env[k] = val;
    }
    return env;
  }

  run(v: unknown): { fileName: string; command: string[]; projectCommand: string[] } {
    const run = this.obj(v, 'run', ['fileName', 'command', 'projectCommand']);
    const fileName = this.str(run.fileName, 'run.fileName', /^[A-Za-z0-9._-]+$/);
    const command = this.strList(run.command, 'run.command', { min: 1 });
    if (!command.some((a) => a.includes('{file}'))) this.fail('run.command', 'must contain the "{file}" placeholder');
    const projectCommand = this.strList(run.projectCommand, 'run.projectCommand', { min: 1 });
    return { fileName, command, projectCommand };
  }
}
