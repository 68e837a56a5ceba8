import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp } from 'node:fs/promises';
import { KilnClient } from '../sdk/src/index.js';

const base = await mkdtemp('/tmp/kiln-cd-');
await chmod(base, 0o755);
const port = 19_500 + Math.floor(Math.random() * 400);
const child = spawn(process.execPath, ['--cpu-prof', '--cpu-prof-dir=/tmp/prof3', 'bin/kiln', 'serve'], {
  env: { ...process.env, KILN_RUN_DIR: base + '/run', KILN_PORT: String(port), KILN_TOKEN: '', KILN_POOL: '' },
  stdio: 'ignore',
});
const client = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
for (let i = 0; i < 300; i++) {
  if (
    await client.health().then(
      () => true,
      () => false,
    )
  )
    break;
  await new Promise((r) => setTimeout(r, 100));
}
const N = 300,
  C = 8;
await Promise.all(
  Array.from({ length: C }, async () => {
    for (let i = 0; i < N / C; i++) {
      const sb = await client.sandboxes.create({ pack: 'python' });
      await client.sandboxes.delete(sb.id);
    }
  }),
);
child.kill('SIGTERM');
await once(child, 'exit');
