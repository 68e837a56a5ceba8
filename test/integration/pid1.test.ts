/** The namespace agent as PID 1 against sandbox code: no stall through stdin, no death by signal. */
import { after, before, describe, it } from 'node:test';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { assertSignalsDoNotEndPid1, assertStdinFloodDoesNotStall } from '../parity/pid1.js';

describe('namespace agent as PID 1', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  let t: TestServer;
  let id: string;
  before(async () => {
    t = await startTestServer();
    id = (await t.client.sandboxes.create({ pack: 'shell' })).id;
  });
  after(async () => {
    await t.client.sandboxes.delete(id).catch(() => undefined);
    await t.close();
  });
  const agent = () => t.server.svc.manager.get(id).inner.agent;

  it('one exec whose stdin is full does not stall pings, other execs or cancel', async () => {
    await assertStdinFloodDoesNotStall(agent(), 4000);
  });

  it('kill -<every signal> 1 from sandbox code leaves the agent working', async () => {
    await assertSignalsDoNotEndPid1(agent());
  });
});
