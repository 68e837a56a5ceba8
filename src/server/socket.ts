/**
 * The trusted Unix socket, never reachable by other users, not even for a moment: it is bound
 * inside a fresh 0700 directory (no one else can resolve a path through it), given its mode there,
 * then renamed into place. chmod after listen() would leave a window in which the socket has the
 * umask's mode, and a process-wide umask would race with everything else the service creates.
 */

import { chmod, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';

export async function listenPrivately(app: FastifyInstance, socketPath: string, mode = 0o660): Promise<void> {
  const parent = dirname(socketPath);
  await mkdir(parent, { recursive: true });
  // Same folder as the final path, so rename() is atomic and replaces a stale socket. Short names:
  // a Unix socket path holds at most 107 bytes.
  const privateDir = await mkdtemp(join(parent, '.kiln-'));
  try {
    const bound = join(privateDir, 's');
    await app.listen({ path: bound });
    await chmod(bound, mode);
    await rename(bound, socketPath);
  } finally {
    await rm(privateDir, { recursive: true, force: true });
  }
}
