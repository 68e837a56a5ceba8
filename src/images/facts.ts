/**
 * What a built image contains, in the words a user asks in: which common tools are on its PATH and
 * which toolchain version it runs. Recorded in the manifest at build time, because afterwards the
 * tree is inside a squashfs, and shown by GET /v1/packs.
 */
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from './process.js';
import type { PackDefinition } from './types.js';

/** The tools people reach for first; a pack lists the ones it has. */
export const TOOL_NAMES: readonly string[] = [
  'bash',
  'curl',
  'wget',
  'git',
  'jq',
  'make',
  'gcc',
  'g++',
  'cc',
  'zip',
  'unzip',
  'xz',
  'bzip2',
  'sqlite3',
  'patch',
  'file',
  'less',
  'vi',
  'nano',
  'diff',
  'tar',
  'gzip',
  'ps',
  'perl',
  'python3',
  'pip',
  'pip3',
  'node',
  'npm',
  'npx',
  'go',
  'gofmt',
];

// Images are merged-/usr, so /usr/bin holds what /bin would; /usr/local/bin is where setup commands install.
const PATH_DIRS = ['usr/local/bin', 'usr/bin', 'usr/sbin'];

/**
 * The TOOL_NAMES present in the tree. lstat, not stat: a link such as vi -> /etc/alternatives/vi is
 * absolute, and following it would look at the host's file system, not the image's.
 */
export async function toolsIn(rootDir: string): Promise<string[]> {
  const found: string[] = [];
  for (const tool of TOOL_NAMES) {
    for (const dir of PATH_DIRS) {
      if (
        await lstat(join(rootDir, dir, tool)).then(
          () => true,
          () => false,
        )
      ) {
        found.push(tool);
        break;
      }
    }
  }
  return found;
}

/**
 * First line of the pack's versionCommand, run as root in a chroot of the fresh tree (the build
 * already runs the image's maintainer scripts the same way). Undefined when it fails: a version
 * string is a nicety, never a reason to throw a finished build away.
 */
export async function versionIn(rootDir: string, definition: PackDefinition, signal?: AbortSignal): Promise<string | undefined> {
  const lines: string[] = [];
  const env = { ...definition.env, HOME: '/tmp', LC_ALL: 'C.UTF-8' };
  const result = await runProcess('chroot', [rootDir, ...definition.versionCommand], {
    env,
    signal,
    timeoutMs: 30_000,
    tailLines: 5,
    onLine: (l) => lines.push(l),
  }).catch(() => undefined);
  return result?.exitCode === 0 ? lines[0]?.trim() : undefined;
}
