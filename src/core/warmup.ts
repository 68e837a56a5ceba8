/**
 * Warm-up for pooled sandboxes: runs the pack's own command once on an empty file, then removes
 * it. A fresh overlay's first program start pays for cold lookups through the overlay (the
 * interpreter's own files, its standard library); paying that while the sandbox waits in the pool
 * takes it off the request path. Only kiln's own empty program runs: users still get a sandbox no
 * one has used.
 */
import type { BackendSandbox } from './backend.js';
import { fillCommand, type PackInfo } from './packs.js';

const WARMUP_TIMEOUT_MS = 60_000;

export async function warmUp(sb: BackendSandbox, pack: PackInfo): Promise<void> {
  const file = `/workspace/${pack.run.fileName}`;
  await sb.agent.writeFile(file, Buffer.alloc(0), { maxBytes: 1 });
  await sb.agent.exec({ argv: fillCommand(pack.run.command, { file }), cwd: '/workspace', env: pack.env, timeoutMs: WARMUP_TIMEOUT_MS, maxOutputBytes: 4096 }).result;
  await sb.agent.exec({ argv: ['rm', '-f', file], cwd: '/workspace', timeoutMs: WARMUP_TIMEOUT_MS }).result;
}
