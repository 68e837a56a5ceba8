/**
 * A command the image does not have ends with exit 127 and a shell's "not found", which says nothing
 * of where the tool is. This names the packs that have it (from their manifests' tool lists), or how
 * to make one that does.
 */
import type { PackInfo } from '../../core/packs.js';

// bash: "bash: line 1: git: command not found"; dash: "/bin/sh: 1: git: not found".
const NOT_FOUND = /(?:^|\n)[^\n]*?([A-Za-z0-9_.+-]+): (?:command )?not found\s*$/;

/** How much of the end of stderr the hint reads (a streamed exec keeps only this much for it). */
export const HINT_STDERR_BYTES = 2048;

/** The tool a shell could not find, from the end of its stderr. */
export function missingTool(exitCode: number | null, stderr: Buffer): string | undefined {
  if (exitCode !== 127) return undefined;
  return NOT_FOUND.exec(stderr.subarray(-HINT_STDERR_BYTES).toString('utf8'))?.[1];
}

export function missingToolHint(tool: string, pack: string, packs: PackInfo[]): string {
  const having = packs.filter((p) => p.name !== pack && p.tools?.includes(tool)).map((p) => p.name);
  const make = `a custom pack can add it (POST /v1/packs with "base": "${pack}" and its Debian package; see images/packs/README.md)`;
  return having.length > 0
    ? `${tool} is not in pack ${pack}; pack${having.length > 1 ? 's' : ''} ${having.join(', ')} ${having.length > 1 ? 'have' : 'has'} it, or ${make}`
    : `${tool} is not in pack ${pack}; ${make}`;
}

/**
 * The hint for an exec result, if it ended for want of a command. The pack and the manifests are
 * looked up only then; a sandbox already gone by now just gets no hint.
 */
export async function hintFor(r: { exitCode: number | null; stderr: Buffer }, pack: () => string, listPacks: () => Promise<PackInfo[]>): Promise<{ hint?: string }> {
  const tool = missingTool(r.exitCode, r.stderr);
  if (!tool) return {};
  let name: string;
  try {
    name = pack();
  } catch {
    return {};
  }
  return { hint: missingToolHint(tool, name, await listPacks().catch(() => [])) };
}
