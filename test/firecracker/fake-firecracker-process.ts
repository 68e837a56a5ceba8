/**
 * The fake Firecracker (fake-firecracker.ts) as a process of its own, in place of the binary:
 * `--version`, or `--api-sock PATH [--id ID]` serving the API (and the vsock agent) from its cwd
 * until Ctrl+Alt+Del or SIGTERM. Lets a test see the real launcher's confinement of the process.
 */
import { resolve } from 'node:path';
import { FakeFirecracker } from './fake-firecracker.js';

const argv = process.argv.slice(2);
if (argv.includes('--version')) {
  process.stdout.write('Firecracker v1.17.0-dev (fake)\n');
  process.exit(0);
}
const sock = argv[argv.indexOf('--api-sock') + 1];
if (argv.indexOf('--api-sock') < 0 || !sock) {
  process.stderr.write('usage: fake-firecracker-process --api-sock PATH\n');
  process.exit(2);
}
// It opens its NICs' TAPs as Firecracker would: in the namespace it runs in, as the uid it runs as.
const fake = new FakeFirecracker(resolve(sock), process.cwd(), { checkTaps: true }, { uid: process.getuid?.() });
await fake.listen();
process.on('SIGTERM', () => fake.exit('killed by SIGTERM'));
void fake.exited.then(() => process.exit(0));
