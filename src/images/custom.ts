/**
 * Custom packs: a pack made from another one, the way E2B users make templates. The definition names
 * a base pack and adds Debian packages, files and setup commands (all part of the image, so all
 * hashed), and may change the environment, how code is run and the description:
 *
 *   { "name": "py-requests", "base": "python", "packages": ["python3-requests"],
 *     "files": [{ "path": "/etc/motd", "content": "hi\n" }], "setup": ["python3 -m compileall -q /usr/lib/python3"] }
 *
 * It resolves to an ordinary PackDefinition whose image is the base's plus these additions, built by
 * the same builder in one mmdebstrap run (no layers: a custom image is as small as a built-in one).
 */
import { posix } from 'node:path';
import { Checker, NAME_RE, PACKAGE_RE } from './checker.js';
import type { PackDefinition, PackFile } from './types.js';

export const CUSTOM_LIMITS = {
  packages: 200,
  files: 100,
  fileBytes: 1024 * 1024,
  totalFileBytes: 8 * 1024 * 1024,
  setupCommands: 50,
  setupCommandBytes: 16 * 1024,
  descriptionChars: 200,
} as const;

export const CUSTOM_FIELDS = ['name', 'description', 'base', 'packages', 'files', 'setup', 'env', 'run', 'versionCommand', 'version'];

/** A validated custom definition, before its base is known. */
export interface CustomPackSpec {
  name: string;
  base: string;
  description?: string;
  packages: string[];
  files: PackFile[];
  setup: string[];
  env: Record<string, string>;
  run?: PackDefinition['run'];
  versionCommand?: string[];
  /** Set by the service when it stores the definition; a hand-written file may leave it out (1). */
  version: number;
}

// Mounted during the build (a write would land on the host's), or emptied before the image is squashed.
const FORBIDDEN_ROOTS = ['/proc', '/sys', '/dev', '/tmp', '/var/tmp', '/var/log', '/var/cache/apt', '/var/lib/apt/lists'];

export function validateCustomPack(raw: unknown, file: string, expectedName?: string, code: 'INTERNAL' | 'INVALID_REQUEST' = 'INTERNAL'): CustomPackSpec {
  const c = new Checker(file, code);
  const top = c.obj(raw, '(root)', CUSTOM_FIELDS);
  const name = c.str(top.name, 'name', NAME_RE);
  if (expectedName !== undefined && name !== expectedName) c.fail('name', `is "${name}" but the file is named ${expectedName}.json`);
  const base = c.str(top.base, 'base', NAME_RE);
  if (base === name) c.fail('base', `is the pack itself ("${name}"); name a built-in pack such as python`);
  const description = top.description === undefined ? undefined : c.str(top.description, 'description');
  if (description !== undefined && description.length > CUSTOM_LIMITS.descriptionChars) c.fail('description', `is ${description.length} characters; the limit is ${CUSTOM_LIMITS.descriptionChars}`);
  const packages = top.packages === undefined ? [] : c.strList(top.packages, 'packages', { min: 0, max: CUSTOM_LIMITS.packages, re: PACKAGE_RE });
  const setup = top.setup === undefined ? [] : c.strList(top.setup, 'setup', { min: 0, max: CUSTOM_LIMITS.setupCommands });
  setup.forEach((cmd, i) => {
    if (Buffer.byteLength(cmd) > CUSTOM_LIMITS.setupCommandBytes) c.fail(`setup[${i}]`, `is ${Buffer.byteLength(cmd)} bytes; the limit is ${CUSTOM_LIMITS.setupCommandBytes}`);
  });
  let version = 1;
  if (top.version !== undefined) {
    if (!Number.isInteger(top.version) || (top.version as number) < 1) c.fail('version', 'must be a whole number from 1');
    version = top.version as number;
  }
  return {
    name,
    base,
    description,
    setup,
    version,
    packages: [...new Set(packages)].sort(),
    files: validateFiles(c, top.files),
    env: c.env(top.env),
    run: top.run === undefined ? undefined : c.run(top.run),
    versionCommand: top.versionCommand === undefined ? undefined : c.strList(top.versionCommand, 'versionCommand', { min: 1 }),
  };
}

function validateFiles(c: Checker, v: unknown): PackFile[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) c.fail('files', 'must be an array of {path, content, encoding?, mode?}');
  if (v.length > CUSTOM_LIMITS.files) c.fail('files', `has ${v.length} items; the limit is ${CUSTOM_LIMITS.files}`);
  let total = 0;
  const seen = new Set<string>();
  return v.map((item, i): PackFile => {
    const f = c.obj(item, `files[${i}]`, ['path', 'content', 'encoding', 'mode']);
    const path = c.str(f.path, `files[${i}].path`);
    const normal = posix.normalize(path);
    if (!path.startsWith('/') || normal !== path || normal === '/' || normal.endsWith('/')) {
      c.fail(`files[${i}].path`, `"${path}" must be an absolute, normalised file path such as /etc/pip.conf`);
    }
    const root = FORBIDDEN_ROOTS.find((r) => normal === r || normal.startsWith(`${r}/`));
    if (root) c.fail(`files[${i}].path`, `"${path}" is under ${root}, which is mounted or emptied while the image is built; use /opt, /etc, /usr/local or /workspace`);
    if (seen.has(normal)) c.fail(`files[${i}].path`, `"${path}" appears twice`);
    seen.add(normal);
    if (typeof f.content !== 'string') c.fail(`files[${i}].content`, 'must be a string');
    const encoding = f.encoding === undefined ? 'utf8' : c.str(f.encoding, `files[${i}].encoding`);
    if (encoding !== 'utf8' && encoding !== 'base64') c.fail(`files[${i}].encoding`, 'must be utf8 or base64');
    if (encoding === 'base64' && !/^[A-Za-z0-9+/]*={0,2}$/.test(f.content)) c.fail(`files[${i}].content`, 'is not valid base64');
    const bytes = Buffer.from(f.content, encoding).length;
    if (bytes > CUSTOM_LIMITS.fileBytes) c.fail(`files[${i}].content`, `is ${bytes} bytes; the limit is ${CUSTOM_LIMITS.fileBytes} per file`);
    total += bytes;
    if (total > CUSTOM_LIMITS.totalFileBytes) c.fail('files', `hold more than ${CUSTOM_LIMITS.totalFileBytes} bytes together; install big things with packages or setup`);
    const mode = f.mode === undefined ? '0644' : c.str(f.mode, `files[${i}].mode`, /^0?[0-7]{3}$/);
    return { path: normal, content: f.content, encoding, mode: parseInt(mode, 8) };
  });
}

/**
 * The custom pack as a full definition over its (already resolved) base: packages added, files and
 * setup appended after the base's, env merged over the base's, run and versionCommand replaced if given.
 */
export function resolveCustomPack(spec: CustomPackSpec, base: PackDefinition): PackDefinition {
  const files = [...(base.image.files ?? []).filter((f) => !spec.files.some((g) => g.path === f.path)), ...spec.files];
  const setup = [...(base.image.setup ?? []), ...spec.setup];
  return {
    name: spec.name,
    description: spec.description ?? `${base.description} + ${spec.packages.length ? spec.packages.join(', ') : 'custom setup'}`,
    image: {
      ...base.image,
      packages: [...new Set([...base.image.packages, ...spec.packages])].sort(),
      // Absent rather than empty when there are none, so a custom pack that only renames its base
      // shares the base's image hash.
      ...(files.length ? { files } : {}),
      ...(setup.length ? { setup } : {}),
    },
    env: { ...base.env, ...spec.env },
    run: spec.run ?? base.run,
    versionCommand: spec.versionCommand ?? base.versionCommand,
    base: spec.base,
    version: spec.version,
  };
}
