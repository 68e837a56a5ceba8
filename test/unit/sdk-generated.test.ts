/**
 * The SDK's types against the server's: sdk/src/generated.ts must be what scripts/gen-sdk-types.ts
 * writes from the server's schemas today, and the SDK's hand-written shapes must fit the server's
 * types (checked by the compiler: `npx tsc -p tsconfig.json --noEmit` fails on a drift below).
 * Also the SDK's error translation: any non-2xx answer becomes a KilnError with the typed code.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { GENERATED_PATH, renderSdkTypes } from '../../scripts/gen-sdk-types.js';
import {
  BACKEND_NAMES,
  type BackendInfo,
  type BackendName,
  type CodeContext,
  type CreateSandboxOptions,
  ERROR_CODES,
  type ErrorCode,
  type FsEntry,
  isErrorCode,
  KilnClient,
  KilnError,
  type PackInfo,
  type PoolStats,
  type RunnerStats,
  type RunOptions,
  type SandboxInfo,
} from '../../sdk/src/index.js';
import type { BackendAvailability, BackendName as CoreBackendName } from '../../src/core/backend.js';
import type { CodeContextInfo } from '../../src/core/code-contexts.js';
import { type ErrorCode as CoreErrorCode, ERROR_CATALOGUE } from '../../src/core/errors.js';
import type { RunOptions as CoreRunOptions } from '../../src/core/oneshot.js';
import type { PackInfo as CorePackInfo } from '../../src/core/packs.js';
import type { PoolStats as CorePoolStats } from '../../src/core/pools.js';
import type { RunnerStats as CoreRunnerStats } from '../../src/core/runners.js';
import type { CreateSandboxOptions as CoreCreateOptions, SandboxInfo as CoreSandboxInfo } from '../../src/core/sandbox.js';
import type { FsEntry as CoreFsEntry } from '../../src/protocol/messages.js';
import { BACKEND_NAMES as REGISTERED_BACKENDS } from '../../src/server/backends.js';
import { createSandboxBody } from '../../src/server/routes/schemas.js';

// Compile-time checks. Answers: what the server sends must be a valid SDK value (server extends SDK).
// Requests: what the SDK sends must be what the server takes (SDK extends server). Names: equal.
type Extends<A, B> = [A] extends [B] ? true : false;
type Same<A, B> = Extends<A, B> extends true ? Extends<B, A> : false;
// The core takes any backend name (the registry, src/server/backends.ts, knows which exist); the
// SDK's BackendName is the registry's list, checked at run time below against the schema's enum.
export const typeChecks: true[] = [
  true satisfies Same<ErrorCode, CoreErrorCode>,
  true satisfies Extends<BackendName, CoreBackendName>,
  true satisfies Same<Omit<SandboxInfo, 'backend'>, Omit<CoreSandboxInfo, 'backend'>>,
  true satisfies Extends<CorePackInfo, PackInfo>,
  true satisfies Extends<Omit<CorePoolStats, 'key'>, Omit<PoolStats, 'key'>>,
  true satisfies Extends<Omit<CorePoolStats['key'], 'backend'>, Omit<PoolStats['key'], 'backend'>>,
  true satisfies Same<CoreRunnerStats, RunnerStats>,
  true satisfies Extends<CoreFsEntry, FsEntry>,
  true satisfies Extends<Omit<BackendAvailability, 'capabilities' | 'name'>, Omit<BackendInfo, 'capabilities' | 'name'>>,
  true satisfies Extends<CreateSandboxOptions, CoreCreateOptions>,
  true satisfies Extends<RunOptions, CoreRunOptions>,
  true satisfies Same<CodeContext, CodeContextInfo>,
];

describe('SDK types from the server schemas (sdk/src/generated.ts)', () => {
  it('the committed file is what the generator writes from the current schemas', async () => {
    const committed = await readFile(GENERATED_PATH, 'utf8');
    assert.ok(committed === renderSdkTypes(), 'sdk/src/generated.ts is out of date with src/server/routes/schemas.ts or src/core/errors.ts: run npm run gen:sdk and commit the result');
  });

  it('exports every error code of the catalogue and every backend name the schemas take', () => {
    assert.deepEqual([...ERROR_CODES], Object.keys(ERROR_CATALOGUE));
    assert.deepEqual([...BACKEND_NAMES], [...createSandboxBody.properties.backend.enum]);
    assert.deepEqual([...BACKEND_NAMES], [...REGISTERED_BACKENDS], 'the SDK names exactly the registered backends');
    assert.ok(isErrorCode('AT_CAPACITY'));
    assert.ok(!isErrorCode('HTTP_502'));
  });
});

describe('SDK errors (KilnError)', () => {
  /** A client whose fetch answers with one real Response. */
  const answering = (res: Response): KilnClient => new KilnClient({ baseUrl: 'http://kiln.invalid', fetch: async () => res });

  it('a kiln error answer becomes a KilnError with its code, status, message, Retry-After and details', async () => {
    const body = { code: 'AT_CAPACITY', message: 'all 4 slots in use; retry after 2 s', details: { capacity: 4 } };
    const kiln = answering(new Response(JSON.stringify(body), { status: 429, headers: { 'content-type': 'application/json', 'retry-after': '2' } }));
    const e = await kiln.sandboxes.create({ pack: 'python' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(e instanceof KilnError);
    assert.ok(e instanceof Error);
    assert.deepEqual(
      { name: e.name, code: e.code, status: e.status, message: e.message, retryAfterSec: e.retryAfterSec, details: e.details },
      { name: 'KilnError', code: 'AT_CAPACITY', status: 429, message: body.message, retryAfterSec: 2, details: { capacity: 4 } },
    );
  });

  it('an answer that is not from kiln (no JSON) gets HTTP_<status>', async () => {
    const kiln = answering(new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway' }));
    const e = await kiln.health().then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(e instanceof KilnError);
    assert.equal(e.code, 'HTTP_502');
    assert.equal(e.status, 502);
    assert.equal(e.message, '502 Bad Gateway');
  });
});
