/**
 * The registry of backends (src/server/backends.ts) is the one place a backend is named: config,
 * request schemas and /openapi.json, and kiln doctor all derive from it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { checkBackendNames, loadConfig } from '../../src/core/config.js';
import { BACKEND_NAMES, BACKENDS, createBackends } from '../../src/server/backends.js';
import { createSandboxBody } from '../../src/server/routes/schemas.js';

describe('backend registry', () => {
  it('names each backend once, and the request schema enum is exactly the registry', () => {
    assert.deepEqual(
      [...BACKEND_NAMES],
      BACKENDS.map((b) => b.name),
    );
    assert.equal(new Set(BACKEND_NAMES).size, BACKEND_NAMES.length);
    assert.deepEqual((createSandboxBody.properties.backend as { enum: string[] }).enum, [...BACKEND_NAMES]);
  });

  it('refuses unregistered names in KILN_BACKEND and KILN_POOL, listing the registered ones', () => {
    const list = BACKEND_NAMES.join(', ');
    assert.throws(
      () => checkBackendNames(loadConfig({ KILN_BACKEND: 'vmware' }), BACKEND_NAMES),
      (e: Error) => e.message === `KILN_BACKEND=vmware: no such backend; use one of ${list}`,
    );
    assert.throws(
      () => checkBackendNames(loadConfig({ KILN_POOL: 'python=1,vmware/python=1' }), BACKEND_NAMES),
      /KILN_POOL entry "vmware\/python=1": no backend "vmware"; use one of namespace, qemu, firecracker/,
    );
    assert.doesNotThrow(() => checkBackendNames(loadConfig({ KILN_BACKEND: 'qemu', KILN_POOL: 'firecracker/python=1' }), BACKEND_NAMES));
    assert.throws(() => loadConfig({ KILN_BACKEND: 'Bad Name!' }), /KILN_BACKEND="Bad Name!": a backend name is lower-case/);
  });

  it('builds one backend per entry, each answering to its registered name and probing with checks', async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'kiln-registry-'));
    try {
      const config = loadConfig({ KILN_RUN_DIR: runDir, KILN_DATA_DIR: runDir });
      const backends = await createBackends(config);
      assert.deepEqual([...backends.keys()], [...BACKEND_NAMES]);
      for (const [name, b] of backends) {
        assert.equal(b.name, name);
        const p = await b.probe();
        assert.equal(p.name, name);
        assert.ok(p.checks.length > 0, `${name} reports its host checks`);
        // available is exactly "every check passed"; the reason names each failed check.
        assert.equal(
          p.available,
          p.checks.every((c) => c.ok),
        );
        for (const c of p.checks.filter((x) => !x.ok)) assert.ok(p.reason?.includes(`${c.name}: ${c.detail}`), `${name}: reason names ${c.name}`);
      }
      assert.deepEqual([...(await createBackends(config, undefined, ['qemu'])).keys()], ['qemu']);
      await Promise.all([...backends.values()].map((b) => b.close()));
    } finally {
      await rm(runDir, { recursive: true, force: true });
    }
  });
});
