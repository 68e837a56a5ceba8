/**
 * The agent as PID 1 against sandbox code, for any backend: it cannot be stalled by one exec's
 * stdin, nor ended by a signal. Each check takes the sandbox's AgentClient.
 */
import assert from 'node:assert/strict';
import type { AgentClient } from '../../src/protocol/agent-client.js';

/** Every signal number; the kernel never delivers SIGKILL/SIGSTOP to a namespace's init from inside. */
export const ALL_SIGNALS = Array.from({ length: 64 }, (_, i) => i + 1);

async function sh(agent: AgentClient, script: string, uid?: number, seen?: (out: string) => void): Promise<{ stdout: string; exitCode: number | null }> {
  let stdout = '';
  const r = await agent.exec(
    { argv: ['/bin/sh', '-c', script], uid, timeoutMs: 60_000 },
    {
      onStdout: (c) => {
        stdout += c.toString();
        seen?.(stdout);
      },
    },
  ).result;
  return { stdout, exitCode: r.exitCode };
}

/**
 * A program that never reads its stdin, flooded with 8 MiB of it: a ping, another exec and the
 * stuck exec's cancel all answer within `deadlineMs` (before flow control the agent's one reader
 * blocked behind the full pipe and none of them answered).
 */
export async function assertStdinFloodDoesNotStall(agent: AgentClient, deadlineMs: number): Promise<void> {
  const stuck = agent.exec({ argv: ['sleep', '600'], stdin: true, timeoutMs: 600_000 }, {});
  stuck.result.catch(() => undefined);
  const flood = stuck.writeStdin(Buffer.alloc(8 * 1024 * 1024, 0x61));
  flood.catch(() => undefined);
  await new Promise((r) => setTimeout(r, 500)); // let the window fill
  const within = <T>(p: Promise<T>, what: string): Promise<T> =>
    Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not answer within ${deadlineMs} ms behind a full stdin`)), deadlineMs))]);
  for (let i = 0; i < 3; i++) {
    await within(agent.ping(), 'ping');
    assert.equal((await within(sh(agent, 'echo other'), 'another exec')).stdout, 'other\n');
  }
  stuck.cancel();
  await within(
    stuck.result.then(
      () => assert.fail('the cancelled exec ended normally'),
      () => undefined,
    ),
    'cancel',
  );
}

/**
 * `kill -<n> 1` for every signal, one at a time from sandbox code (as `uid`); the agent must
 * still answer after each. The exec echoes each number before sending it: if the agent dies, the
 * last number seen names the signal.
 */
export async function assertSignalsDoNotEndPid1(agent: AgentClient, uid?: number): Promise<void> {
  const script = `${ALL_SIGNALS.map((n) => `echo ${n}; kill -${n} 1 2>/dev/null; sleep 0.02`).join('\n')}\necho done`;
  let seen = '';
  const r = await sh(agent, script, uid, (out) => {
    seen = out;
  }).catch((e: Error) => {
    throw new Error(`PID 1 died while sandbox code sent it signals (last sent: ${seen.trim().split('\n').at(-1) ?? 'none'}): ${e.message}`);
  });
  assert.match(r.stdout, /\ndone\n$/);
  assert.ok((await agent.ping()).rttMs >= 0);
  assert.equal((await sh(agent, 'echo alive')).stdout, 'alive\n');
}
