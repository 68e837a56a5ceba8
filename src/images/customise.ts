/**
 * Turns a fresh Debian chroot into a sandbox root: one unprivileged user, a workspace, no host
 * identity (hostname, resolv.conf) and no caches. Runs as root on the unpacked directory.
 */
import { chmod, chown, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from './process.js';

export const SANDBOX_UID = 1000;
export const SANDBOX_GID = 1000;

// Minimal account databases: the sandbox runs as `sandbox`; `nobody` is what unmapped ids show as
// inside a user namespace.
const FILES: Record<string, { text: string; mode: number }> = {
  'etc/passwd': {
    mode: 0o644,
    text: ['root:x:0:0:root:/root:/bin/bash', `sandbox:x:${SANDBOX_UID}:${SANDBOX_GID}:sandbox:/workspace:/bin/bash`, 'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin'].join('\n'),
  },
  'etc/group': { mode: 0o644, text: ['root:x:0:', `sandbox:x:${SANDBOX_GID}:`, 'nogroup:x:65534:'].join('\n') },
  'etc/shadow': { mode: 0o640, text: ['root:*:19000:0:99999:7:::', 'sandbox:*:19000:0:99999:7:::', 'nobody:*:19000:0:99999:7:::'].join('\n') },
  'etc/gshadow': { mode: 0o640, text: ['root:*::', 'sandbox:*::', 'nogroup:*::'].join('\n') },
  'etc/hostname': { mode: 0o644, text: 'sandbox' },
  'etc/hosts': { mode: 0o644, text: ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback', '127.0.1.1\tsandbox'].join('\n') },
  // The host's resolvers must not leak into images; a backend that gives network access mounts its own.
  'etc/resolv.conf': { mode: 0o644, text: '# provided by the sandbox backend when networking is enabled' },
};

// Build-time leftovers: apt indexes and caches, dpkg backups, logs.
const REMOVE_CONTENTS = ['var/lib/apt/lists', 'var/cache/apt', 'var/cache/debconf', 'var/log', 'tmp', 'var/tmp'];
const REMOVE_GLOBS_IN: Record<string, RegExp> = { 'var/lib/dpkg': /-old$/, etc: /-$/ };

async function emptyDir(dir: string): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return;
  }
  await Promise.all(entries.map((e) => rm(join(dir, e), { recursive: true, force: true })));
}

export async function customiseRootfs(rootDir: string): Promise<void> {
  for (const [rel, { text, mode }] of Object.entries(FILES)) {
    const path = join(rootDir, rel);
    // resolv.conf may be a dangling symlink on some hosts; replace whatever is there.
    await rm(path, { force: true });
    await writeFile(path, `${text}\n`, { mode });
    await chmod(path, mode);
    await chown(path, 0, 0);
  }
  await mkdir(join(rootDir, 'workspace'), { recursive: true, mode: 0o755 });
  await chown(join(rootDir, 'workspace'), SANDBOX_UID, SANDBOX_GID);
  for (const rel of REMOVE_CONTENTS) await emptyDir(join(rootDir, rel));
  await chmod(join(rootDir, 'tmp'), 0o1777);
  for (const [rel, re] of Object.entries(REMOVE_GLOBS_IN)) {
    const dir = join(rootDir, rel);
    for (const e of await readdir(dir)) if (re.test(e)) await rm(join(dir, e), { force: true });
  }
  await refuseEmptyPasswords(rootDir);
  // apt's dirs must exist for a minbase image's apt to work; keep them, owned by root.
  await mkdir(join(rootDir, 'var/cache/apt/archives/partial'), { recursive: true });
  await mkdir(join(rootDir, 'var/lib/apt/lists/partial'), { recursive: true });
}

/**
 * Every account's password is locked ('*' in etc/shadow above); PAM's `nullok` would still let
 * `su` accept an empty one should a shadow file ever be rewritten. Debian's common-auth has it.
 */
export async function refuseEmptyPasswords(rootDir: string): Promise<void> {
  const dir = join(rootDir, 'etc/pam.d');
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const path = join(dir, name);
    if (!(await stat(path)).isFile()) continue;
    const text = await readFile(path, 'utf8');
    const locked = text.replace(/[ \t]+nullok(_secure)?\b/g, '');
    if (locked !== text) await writeFile(path, locked);
  }
}

/** Package -> version from the image's dpkg database, read with the host's dpkg-query. */
export async function packageVersions(rootDir: string, signal?: AbortSignal): Promise<Record<string, string>> {
  const versions: Record<string, string> = {};
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own ${field} format, not a template
  const result = await runProcess('dpkg-query', [`--admindir=${join(rootDir, 'var/lib/dpkg')}`, '-W', '-f=${Package}\\t${Version}\\n'], {
    signal,
    timeoutMs: 60_000,
    tailLines: 100_000,
    onLine: (line) => {
      const [name, version] = line.split('\t');
      if (name && version) versions[name] = version;
    },
  });
  return result.exitCode === 0 ? versions : {};
}

/** Apparent size of the unpacked tree, for the manifest (how well squashfs compressed it). */
export async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const p = join(d, entry.name);
      if (entry.isDirectory()) await walk(p);
      else if (entry.isFile()) total += (await stat(p)).size;
    }
  };
  await walk(dir);
  return total;
}
