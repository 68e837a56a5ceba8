/**
 * Reads and validates pack definitions: the repo's built-in packs, and the custom packs in the
 * operator's folder (resolved over their base, custom.ts). A typo must fail with the file and the
 * field named, before any minute-long build starts.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../core/config.js';
import { KilnError } from '../core/errors.js';
import { Checker, NAME_RE, PACKAGE_RE, PackDefinitionError, VARIANTS } from './checker.js';
import { resolveCustomPack, validateCustomPack } from './custom.js';
import type { ImageVariant, PackDefinition, PackSources } from './types.js';

export const DEFAULT_PACKS_DIR = join(REPO_ROOT, 'images/packs/');

// A chain of custom packs built on custom packs ends somewhere; this is where.
const MAX_BASE_DEPTH = 4;

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

  const env = c.env(top.env);
  const { fileName, command, projectCommand } = c.run(top.run);

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

/** A pack's sources, whether given as the repo folder alone or both folders. */
export function packSources(dirs: string | PackSources = DEFAULT_PACKS_DIR): PackSources {
  return typeof dirs === 'string' ? { builtinDir: dirs } : dirs;
}

async function readJson(path: string, expectedName: string | undefined): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new KilnError('UNKNOWN_PACK', `unknown pack "${expectedName ?? path}": ${path} does not exist`);
    }
    throw e;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new PackDefinitionError(path, '(root)', `is not valid JSON: ${(e as Error).message}`);
  }
}

export async function loadPackFile(path: string, expectedName?: string): Promise<PackDefinition> {
  return validatePack(await readJson(path, expectedName), path, expectedName);
}

async function jsonNames(dir: string | undefined): Promise<string[]> {
  if (!dir) return [];
  try {
    return (await readdir(dir))
      .filter((f) => f.endsWith('.json') && NAME_RE.test(f.slice(0, -5)))
      .map((f) => f.slice(0, -5))
      .sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Names of the built-in packs and of the custom ones, each sorted; a custom name that shadows a built-in is left out. */
export async function packNames(dirs: string | PackSources = DEFAULT_PACKS_DIR): Promise<{ builtin: string[]; custom: string[] }> {
  const s = packSources(dirs);
  const builtin = await jsonNames(s.builtinDir);
  const custom = (await jsonNames(s.customDir)).filter((n) => !builtin.includes(n));
  return { builtin, custom };
}

/**
 * All definitions, sorted by name, built-in packs first. A broken repo file throws; a broken custom
 * file is passed to onInvalid and skipped when one is given (one bad upload must not hide the rest).
 */
export async function loadPacks(dirs: string | PackSources = DEFAULT_PACKS_DIR, onInvalid?: (name: string, e: unknown) => void): Promise<PackDefinition[]> {
  const s = packSources(dirs);
  const { builtin, custom } = await packNames(s);
  const out = await Promise.all(builtin.map((n) => loadPackFile(join(s.builtinDir, `${n}.json`), n)));
  for (const n of custom) {
    try {
      out.push(await loadPack(n, s));
    } catch (e) {
      if (!onInvalid) throw e;
      onInvalid(n, e);
    }
  }
  return out;
}

/** One definition: a built-in pack, or a custom pack resolved over its base. */
export async function loadPack(name: string, dirs: string | PackSources = DEFAULT_PACKS_DIR, depth = 0): Promise<PackDefinition> {
  if (!NAME_RE.test(name)) throw new KilnError('UNKNOWN_PACK', `unknown pack "${name}": pack names are lowercase letters, digits and dashes`);
  const s = packSources(dirs);
  const { builtin, custom } = await packNames(s);
  if (builtin.includes(name) || !custom.includes(name)) return loadPackFile(join(s.builtinDir, `${name}.json`), name);
  const file = join(s.customDir!, `${name}.json`);
  const raw = await readJson(file, name);
  // The operator's folder may also hold a pack in the repo's form (its own suite, no base).
  if (!(typeof raw === 'object' && raw !== null && 'base' in raw)) return validatePack(raw, file, name);
  const spec = validateCustomPack(raw, file, name);
  if (depth >= MAX_BASE_DEPTH) throw new PackDefinitionError(file, 'base', `makes a chain of more than ${MAX_BASE_DEPTH} custom packs (or a loop)`);
  return resolveCustomPack(spec, await loadPack(spec.base, s, depth + 1));
}
