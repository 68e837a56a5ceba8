/**
 * The agent as PID 1 of a microVM against code inside it: one exec's full stdin does not stall
 * the agent, and `kill -<any signal> 1` (as root in the guest: uid 1000 may not signal PID 1 at
 * all) does not end it, which would panic the guest kernel. One cold boot: TCG is slow.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { BackendSandbox } from '../../src/core/backend.js';
import { assertSignalsDoNotEndPid1, assertStdinFloodDoesNotStall } from '../parity/pid1.js';
import { type QemuFixture, setup, sh, skipReason, spec } from './fixture.js';

const skip = await skipReason();

describe('qemu agent as PID 1', { skip, timeout: 300_000 }, () => {
  let f: QemuFixture;
  let sb: BackendSandbox;
  before(async () => {
    f = await setup();
    sb = await f.backend({ templates: false }).create(spec(f, 'pid1'), { readyTimeoutMs: 120_000 });
  });
  after(async () => {
    await sb?.destroy();
    await f?.cleanup();
  });

  it('one exec whose stdin is full does not stall pings, other execs or cancel', async () => {
    await assertStdinFloodDoesNotStall(sb.agent, 15_000);
  });

  it('kill -<every signal> 1 from guest root leaves the agent working', async () => {
    assert.equal((await sh(sb, 'kill -ABRT 1; echo $?')).stdout, '1\n', 'uid 1000 may not signal PID 1');
    await assertSignalsDoNotEndPid1(sb.agent, 0);
  });
});
