/**
 * Warm-ups: pooled sandboxes (warmUp) and VM templates (warmTemplate, below).
 *
 * A pooled sandbox runs the pack's own command once on an empty file, then removes it. A fresh
 * overlay's first program start pays for cold lookups through the overlay (the interpreter's own
 * files, its standard library); paying that while the sandbox waits in the pool takes it off the
 * request path. Only kiln's own empty program runs: users still get a sandbox no one has used.
 * Packs whose command can wait for its program (prestartable) are instead left with the command
 * started and waiting: the run does not start the interpreter a second time.
 */
import type { AgentClient } from '../protocol/agent-client.js';
import type { BackendSandbox, PackImage } from './backend.js';
import { fillCommand, type PackInfo } from './packs.js';

const WARMUP_TIMEOUT_MS = 60_000;

/**
 * A sandbox whose warm-up failed is destroyed, never pooled: it may hold the half-written file, a
 * program still running, or an agent that no longer answers. The pool counts the failure and backs off.
 */
export async function warmUp(sb: BackendSandbox, pack: PackInfo): Promise<void> {
  const file = `/workspace/${pack.run.fileName}`;
  try {
    if (prestartable(pack.run.command)) {
      // The argv, env and cwd of a one-shot snippet run (core/oneshot.ts): that run adopts it. An
      // agent that cannot (one baked into a VM image before the op existed answers BAD_REQUEST)
      // gets the run of an empty file below instead.
      const started = await sb.agent.prestart({ argv: fillCommand(pack.run.command, { file: pack.run.fileName }), env: pack.env, cwd: '/workspace', file }).then(
        () => true,
        (e: unknown) => {
          if (sb.agent.closed) throw e;
          return false;
        },
      );
      if (started) return;
    }
    await sb.agent.writeFile(file, Buffer.alloc(0), { maxBytes: 1 });
    const run = await sb.agent.exec({ argv: fillCommand(pack.run.command, { file }), cwd: '/workspace', env: pack.env, timeoutMs: WARMUP_TIMEOUT_MS, maxOutputBytes: 4096 }).result;
    // A non-zero exit is fine (an empty Go file does not compile); a program that hung is not.
    if (run.timedOut) throw new Error(`the pack's command ran past ${WARMUP_TIMEOUT_MS} ms`);
    const rm = await sb.agent.exec({ argv: ['rm', '-f', file], cwd: '/workspace', timeoutMs: WARMUP_TIMEOUT_MS }).result;
    if (rm.exitCode !== 0) throw new Error(`could not remove ${file}`);
  } catch (e) {
    await sb.destroy().catch(() => undefined);
    throw new Error(`pool warm-up failed, sandbox deleted: ${(e as Error).message}`, { cause: e });
  }
}

/**
 * Whether the pack's snippet command can be started before its program exists: CPython run as
 * `python3 {file}` opens its script once, after its whole start-up, and reads it through without
 * seeking (the agent declines a file whose encoding declaration would make it seek). For such a
 * pack the warm-up leaves the interpreter started and waiting on a pipe at the file's path, and
 * the one-shot run becomes that warm-up's continuation instead of a second start.
 */
export function prestartable(command: string[]): boolean {
  return command.length === 2 && command[1] === '{file}' && /^(?:.*\/)?python3?(?:\.\d+)?$/.test(command[0]!);
}

/** What a VM template runs before its snapshot: the pack's command on an empty file. */
export interface TemplateWarmup {
  /** argv with "{file}" for the file's path. */
  command: string[];
  fileName: string;
  env: Record<string, string>;
}

/** The warm-up a template of this pack runs; none for a pack that says no way to run a file. */
export function templateWarmup(pack: PackImage): TemplateWarmup | undefined {
  return pack.run && { command: pack.run.command, fileName: pack.run.fileName, env: pack.env };
}

const TEMPLATE_WARMUP_DIR = '/tmp/.kiln-warmup';
/** Directories a template's warm-up must leave as it found them. */
const LEFT_AS_FOUND = ['/tmp', '/workspace'];

/**
 * Warm-up for VM templates (QEMU, Firecracker): runs the pack's command once on an empty file, so
 * the pack's program and the files it loads at start-up are in the template's page cache, which
 * every clone of the snapshot shares. Under TCG a clone's first `python3` otherwise reads them from
 * the squashfs and decompresses them: measured 1.2-1.5 s for a clone's first `python3 -c pass`,
 * 0.6-0.8 s from a warmed template. /tmp and /workspace are left as they were found (what the
 * command creates is removed), so clones start unused. A command that fails is logged and the
 * template kept; if what it left cannot be removed, this throws: the template must not be used.
 */
export async function warmTemplate(agent: AgentClient, w: TemplateWarmup, warn?: (message: string, fields?: Record<string, unknown>) => void): Promise<void> {
  const listNames = (dir: string) =>
    agent.list(dir).then(
      (es) => es.map((e) => e.name),
      () => [] as string[],
    );
  const before = await Promise.all(LEFT_AS_FOUND.map(listNames));
  const file = `${TEMPLATE_WARMUP_DIR}/${w.fileName}`;
  try {
    await agent.writeFile(file, Buffer.alloc(0), { maxBytes: 1 });
    await agent.exec({ argv: fillCommand(w.command, { file }), cwd: TEMPLATE_WARMUP_DIR, env: w.env, timeoutMs: WARMUP_TIMEOUT_MS, maxOutputBytes: 4096 }).result;
  } catch (e) {
    warn?.('the template warm-up failed; clones start with a cold page cache', { error: (e as Error).message });
  }
  // Whatever happened above (the catch swallows it), what the warm-up left must go.
  const after = await Promise.all(LEFT_AS_FOUND.map(listNames));
  const added = LEFT_AS_FOUND.flatMap((dir, i) => after[i]!.filter((n) => !before[i]!.includes(n)).map((n) => `${dir}/${n}`));
  if (added.length) {
    const r = await agent.exec({ argv: ['rm', '-rf', '--', ...added], uid: 0, timeoutMs: WARMUP_TIMEOUT_MS }).result;
    if (r.exitCode !== 0) throw new Error(`could not remove what the template warm-up left: ${added.join(' ')}`);
  }
}
