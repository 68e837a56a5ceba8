/**
 * Changes to a workspace while its sandbox runs. The upper layer is then part of the sandbox's
 * mounted overlay, which must not be edited underneath (overlayfs leaves that undefined: the
 * sandbox could keep seeing what was removed). So a reject goes through the merged view inside
 * the sandbox instead, with the agent's own operations: removals by one `rm` exec fed the paths
 * on stdin (NUL-separated raw bytes, so any name works), and the host's versions put back as a tar
 * archive extracted at /workspace. A path put back equal to the host's is no change any more.
 */

import { KilnError } from '../core/errors.js';
import type { AgentClient } from '../protocol/agent-client.js';

export const WORKSPACE_MOUNT = '/workspace';

/** One entry of the archive put back: raw name bytes relative to /workspace. */
export type TarEntry = { name: Buffer; type: 'file'; mode: number; data: Buffer } | { name: Buffer; type: 'directory'; mode: number } | { name: Buffer; type: 'symlink'; target: Buffer };

/** Removes paths (raw bytes, relative to /workspace) in the sandbox, recursively. */
export async function removeInSandbox(agent: AgentClient, paths: Buffer[]): Promise<void> {
  if (!paths.length) return;
  let stderr = '';
  const h = agent.exec({ argv: ['xargs', '-0', 'rm', '-rf', '--'], stdin: true, timeoutMs: 60_000, cwd: '/' }, { onStderr: (c) => void (stderr += c.toString()) });
  const prefix = Buffer.from(`${WORKSPACE_MOUNT}/`);
  for (const p of paths) await h.writeStdin(Buffer.concat([prefix, p, Buffer.from([0])]));
  h.closeStdin();
  const r = await h.result;
  if (r.exitCode !== 0) throw new KilnError('AGENT_ERROR', `could not remove the rejected paths in the sandbox: ${stderr.trim().slice(0, 500) || `exit ${r.exitCode ?? r.signal}`}`);
}

/** Writes the entries into /workspace through the agent (parents first: order them so). */
export async function putInSandbox(agent: AgentClient, entries: TarEntry[], maxBytes: number): Promise<void> {
  if (!entries.length) return;
  await agent.putArchive(WORKSPACE_MOUNT, tar(entries), { maxBytes });
}

/**
 * A POSIX ustar archive of the entries; names or link targets over 100 bytes use GNU long-name
 * records ('L', 'K'), which keep raw bytes (Go's archive/tar in the agent reads both).
 */
export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const link = e.type === 'symlink' ? e.target : Buffer.alloc(0);
    if (e.name.length > 100) parts.push(...longRecord('L', e.name));
    if (link.length > 100) parts.push(...longRecord('K', link));
    const data = e.type === 'file' ? e.data : Buffer.alloc(0);
    const flag = e.type === 'file' ? '0' : e.type === 'directory' ? '5' : '2';
    const mode = e.type === 'symlink' ? 0o777 : e.mode & 0o7777;
    parts.push(header(e.name.subarray(0, 100), flag, mode, data.length, link.subarray(0, 100)), ...padded(data));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

function longRecord(flag: 'L' | 'K', bytes: Buffer): Buffer[] {
  const data = Buffer.concat([bytes, Buffer.from([0])]);
  return [header(Buffer.from('././@LongLink'), flag, 0o644, data.length, Buffer.alloc(0)), ...padded(data)];
}

function padded(data: Buffer): Buffer[] {
  if (!data.length) return [];
  const pad = (512 - (data.length % 512)) % 512;
  return pad ? [data, Buffer.alloc(pad)] : [data];
}

function header(name: Buffer, flag: string, mode: number, size: number, link: Buffer): Buffer {
  const h = Buffer.alloc(512);
  name.copy(h, 0);
  octal(h, 100, 8, mode);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, Math.floor(Date.now() / 1000));
  h.write('        ', 148, 'latin1');
  h.write(flag, 156, 'latin1');
  link.copy(h, 157);
  h.write('ustar\u000000', 257, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 'latin1');
  return h;
}

function octal(h: Buffer, at: number, width: number, n: number): void {
  h.write(`${n.toString(8).padStart(width - 1, '0')}\u0000`, at, 'latin1');
}
