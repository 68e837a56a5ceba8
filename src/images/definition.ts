/**
 * Reads and validates pack definitions. Definitions are repo files, not user input, but a typo in
 * one must fail with the file and the field named, before any minute-long build starts.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../core/config.js';
import { KilnError } from '../core/errors.js';
import type { ImageVariant, PackDefinition } from './types.js';

export const DEFAULT_PACKS_DIR = join(REPO_ROOT, 'images/packs/');

const NAME_RE = /^[a-z][a-z0-9-]{0,31}$/;
// Debian package names, optionally with an =version pin or :arch qualifier.
const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$/;
const ENV_KEY_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const VARIANTS: readonly ImageVariant[] = ['essential', 'minbase'];

export class PackDefinitionError extends KilnError {
  constructor(file: string, field: string, problem: string) {
    super('INTERNAL', `invalid pack definition ${file}: ${field} ${problem}`, { details: { file, field } });
    this.name = 'PackDefinitionError';
  }
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class Checker {
  constructor(readonly file: string) {}

  fail(field: string, problem: string): never {
    throw new PackDefinitionError(this.file, field, problem);
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

  strList(v: unknown, field: string, opts: { min: number; re?: RegExp }): string[] {
    if (!Array.isArray(v)) this.fail(field, 'must be an array of strings');
    if (v.length < opts.min) this.fail(field, `must have at least ${opts.min} item(s)`);
    return v.map((item, i) => this.str(item, `${field}[${i}]`, opts.re));
  }
}

/** Validates one parsed definition; `file` is only used in error messages. */
export function validatePack(raw: unknown, file: string, expectedName?: string): PackDefinition {
  const c: Checker = new Checker(file);
  const top = c.obj(raw, '(root)', ['name', 'description', 'image', 'env', 'run', 'versionCommand']);
  const name = c.str(top.name, 'name', NAME_RE);
  if (expectedName !== undefined && name !== expectedName) c.fail('name', `is "${name}" but the file is named ${expectedName}.json`);

  const image = c.obj(top.image, 'image', ['suite', 'variant', 'packages', 'mirrors']);
  const variant = image.variant === undefined ? 'essential' : c.str(image.variant, 'image.variant');
  if (!VARIANTS.includes(variant as ImageVariant)) c.fail('image.variant', `must be one of ${VARIANTS.join(', ')}`);
  const packages = c.strList(image.packages, 'image.packages', { min: 1, re: PACKAGE_RE });
  const mirrors = image.mirrors === undefined ? [] : c.strList(image.mirrors, 'image.mirrors', { min: 0 });

  const envRaw: unknown = top.env === undefined ? {} : top.env;
  if (!isObj(envRaw)) c.fail('env', 'must be an object of strings');
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(envRaw as Obj)) {
    if (!ENV_KEY_RE.test(k)) c.fail(`env.${k}`, 'is not a valid variable name');
    if (typeof v !== 'string') c.fail(`env.${k}`, 'must be a string');
    env[k] = v;
  }

  const run = c.obj(top.run, 'run', ['fileName', 'command', 'projectCommand']);
  const fileName = c.str(run.fileName, 'run.fileName', /^[A-Za-z0-9._-]+$/);
  const command = c.strList(run.command, 'run.command', { min: 1 });
  if (!command.some((a) => a.includes('{file}'))) c.fail('run.command', 'must contain the "{file}" placeholder');
  const projectCommand = c.strList(run.projectCommand, 'run.projectCommand', { min: 1 });

  return {
    name,
    description: c.str(top.description, 'description'),
    image: {
      suite: c.str(image.suite, 'image.suite', /^[a-z][a-z0-9-]*$/),
      variant: variant as ImageVariant,
      // Order does not change what apt installs, so it must not change the hash either.
      packages: [...new Set(packages)].sort(),
      mirrors,
    },
    env,
    run: { fileName, command, projectCommand },
    versionCommand: c.strList(top.versionCommand, 'versionCommand', { min: 1 }),
  };
}

export async function loadPackFile(path: string, expectedName?: string): Promise<PackDefinition> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new KilnError('UNKNOWN_PACK', `unknown pack "${expectedName ?? path}": ${path} does not exist`);
    }
    throw e;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new PackDefinitionError(path, '(root)', `is not valid JSON: ${(e as Error).message}`);
  }
  return validatePack(raw, path, expectedName);
}

/** All definitions in `packsDir`, sorted by name. */
export async function loadPacks(packsDir: string = DEFAULT_PACKS_DIR): Promise<PackDefinition[]> {
  const files = (await readdir(packsDir)).filter((f) => f.endsWith('.json')).sort();
  return Promise.all(files.map((f) => loadPackFile(join(packsDir, f), f.slice(0, -'.json'.length))));
}

export async function loadPack(name: string, packsDir: string = DEFAULT_PACKS_DIR): Promise<PackDefinition> {
  if (!NAME_RE.test(name)) throw new KilnError('UNKNOWN_PACK', `unknown pack "${name}": pack names are lowercase letters, digits and dashes`);
  return loadPackFile(join(packsDir, `${name}.json`), name);
}
