/**
 * Run by the descriptor-leak tests in a child process that holds, as descriptor 100, a file it
 * inherited without close-on-exec (the shape of the pipe a service manager can leave open).
 * It starts a kiln server on the backend named in argv, creates one sandbox, and prints as JSON
 * what the sandbox's code sees as its descriptors and which host processes hold the file.
 */
import { readdir, readlink } from 'node:fs/promises';
import { startTestServer } from '../parity/fixture.js';

const [backend, marker] = process.argv.slice(2) as [string, string];

async function holders(path: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    // tsx's esbuild transform service is this test process's own child (started by the loader
    // when its cache misses), not one kiln started: it inherits the file like its parent does.
    if ((await readlink(`/proc/${pid}/exe`).catch(() => '')).endsWith('/esbuild')) continue;
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === path) found.push(`${pid}:${fd}`);
    }
  }
  return found;
}

const t = await startTestServer({ KILN_BACKEND: backend });
try {
  const sb = await t.client.sandboxes.create({ pack: 'shell', backend: backend as 'namespace' | 'qemu' });
  try {
    const r = await t.client.sandboxes.exec(sb.id, { cmd: 'ls -l /proc/self/fd', timeoutMs: 60_000 });
    process.stdout.write(JSON.stringify({ sandboxFds: r.stdout, hostHolders: await holders(marker) }));
  } finally {
    await t.client.sandboxes.delete(sb.id).catch(() => undefined);
  }
} finally {
  await t.close();
}
