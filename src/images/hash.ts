/**
 * The cache key of an image. Only inputs that change the image's bytes belong here: the `image`
 * part of the definition, the builder's fixed additions (base packages, customisation) through
 * BUILDER_VERSION, and the base package list itself. env/run changes must not force a rebuild.
 */
import { createHash } from 'node:crypto';
import type { PackImageSpec } from './types.js';

/** Bump whenever the builder changes what ends up in an image (hooks, excludes, compression). */
export const BUILDER_VERSION = '3';

/** Every image gets these: ps is used by tests and tooling, tar/gzip by file transfer. */
export const BASE_PACKAGES: readonly string[] = ['coreutils', 'gzip', 'procps', 'tar'];

/** JSON with object keys sorted at every level, so key order in a file never changes a hash. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** First 16 hex digits of sha256 over the canonical image spec plus the builder's identity. */
export function imageHash(image: PackImageSpec): string {
  let hash = hashes.get(image);
  if (!hash) {
    const input = canonicalJson({ builderVersion: BUILDER_VERSION, basePackages: BASE_PACKAGES, image });
    hash = createHash('sha256').update(input).digest('hex').slice(0, 16);
    hashes.set(image, hash);
  }
  return hash;
}

/**
 * Each definition's hash, computed once: a create looks its pack up several times. Definitions
 * are read from their files into new objects and never changed afterwards, so one object's hash
 * cannot go stale.
 */
const hashes = new WeakMap<PackImageSpec, string>();
