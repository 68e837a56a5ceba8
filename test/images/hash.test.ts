import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { PackImageSpec } from '../../src/images/index.js';
import { canonicalJson, imageHash, validatePack } from '../../src/images/index.js';

const spec = (over: Partial<PackImageSpec> = {}): PackImageSpec => ({ suite: 'bookworm', variant: 'essential', packages: ['python3'], mirrors: [], ...over });

test('canonical JSON sorts keys at every level and keeps array order', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [2, 1], c: null } }), '{"a":{"c":null,"d":[2,1]},"b":1}');
  assert.equal(canonicalJson({ a: 1, b: 2 }), canonicalJson({ b: 2, a: 1 }));
});

test('the hash is 16 hex digits and stable', () => {
  const h = imageHash(spec());
  assert.match(h, /^[0-9a-f]{16}$/);
  assert.equal(imageHash(spec()), h);
  assert.equal(h, imageHash({ mirrors: [], packages: ['python3'], variant: 'essential', suite: 'bookworm' }));
  // Pinned: if this changes, every built image is invalidated; do that only on purpose (BUILDER_VERSION).
  assert.equal(h, 'aeef7709ee941568');
});

test('the hash changes with anything that changes the image', () => {
  const base = imageHash(spec());
  assert.notEqual(imageHash(spec({ packages: ['python3', 'python3-pip'] })), base);
  assert.notEqual(imageHash(spec({ suite: 'trixie' })), base);
  assert.notEqual(imageHash(spec({ variant: 'minbase' })), base);
  assert.notEqual(imageHash(spec({ mirrors: ['http://example.org/debian'] })), base);
});

test('env, run and package order do not change the hash', () => {
  const def = (packages: string[], env: Record<string, string>) =>
    validatePack(
      {
        name: 'x',
        description: 'x',
        image: { suite: 'bookworm', packages },
        env,
        run: { fileName: 'a', command: ['a', '{file}'], projectCommand: ['a'] },
        versionCommand: ['a'],
      },
      'x.json',
    );
  assert.equal(imageHash(def(['bb', 'aa'], {}).image), imageHash(def(['aa', 'bb'], { X: '1' }).image));
});
