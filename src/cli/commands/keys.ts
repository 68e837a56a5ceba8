/**
 * `kiln keys create|ls|revoke`: API keys through the admin API (/v1/keys), so they work against a
 * running service on this host or another (serviceUrl(): KILN_URL, else KILN_HOST:KILN_PORT) as
 * the admin (KILN_TOKEN). The secret is printed once, on stdout, alone on its line.
 */
import { cliClient, SERVICE_ENV_HELP } from '../client.js';
import { type Command, parseFlags, UsageError } from '../command.js';

const USAGE = `usage:
  kiln keys create <name> [--max-sandboxes N] [--max-memory-mib N] [--max-ttl-sec N] [--max-exec-timeout-ms N]
  kiln keys ls
  kiln keys revoke <key-id…>
  keys are managed by the admin: KILN_TOKEN (or the service's trusted Unix socket).

${SERVICE_ENV_HELP}`;

const LIMIT_FLAGS = {
  'max-sandboxes': 'maxSandboxes',
  'max-memory-mib': 'maxMemoryMib',
  'max-ttl-sec': 'maxTtlSec',
  'max-exec-timeout-ms': 'maxExecTimeoutMs',
  'max-snapshot-mib': 'maxSnapshotMib',
} as const;

interface KeyView {
  id: string;
  name: string;
  prefix: string;
  createdAt: string;
  revokedAt?: string;
  limits: Record<string, number>;
  usage?: { sandboxes: number; memoryMib: number };
}

/** The admin API through the SDK's client (serviceUrl(), KILN_TOKEN, errors as KilnError). */
function api(method: string, path: string, body?: unknown): Promise<unknown> {
  return cliClient().json(method, path, body);
}

const command: Command = {
  name: 'keys',
  summary: 'create | ls | revoke API keys (admin: KILN_TOKEN)',
  usage: USAGE,
  async run(argv) {
    const [sub, ...rest] = argv;
    switch (sub) {
      case 'create': {
        const { flags, positional } = parseFlags(rest, { string: Object.keys(LIMIT_FLAGS) });
        if (positional.length !== 1) throw new UsageError(USAGE);
        const limits: Record<string, number> = {};
        for (const [flag, field] of Object.entries(LIMIT_FLAGS)) {
          if (flags[flag] === undefined) continue;
          const n = Number(flags[flag]);
          if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${flag} must be a whole number (got ${String(flags[flag])})`);
          limits[field] = n;
        }
        const r = (await api('POST', '/v1/keys', { name: positional[0], limits })) as { key: KeyView; secret: string };
        console.error(`created ${r.key.id} (${r.key.name}); the key below is shown once: store it now`);
        console.log(r.secret);
        return 0;
      }
      case 'ls': {
        if (rest.length) throw new UsageError(USAGE);
        const { keys } = (await api('GET', '/v1/keys')) as { keys: KeyView[] };
        console.log(['ID'.padEnd(17), 'NAME'.padEnd(16), 'PREFIX'.padEnd(12), 'STATE'.padEnd(8), 'SANDBOXES'.padEnd(10), 'LIMITS'].join(' '));
        for (const k of keys) {
          const limits =
            Object.entries(k.limits)
              .map(([n, v]) => `${n}=${v}`)
              .join(',') || '-';
          console.log(
            [k.id.padEnd(17), k.name.slice(0, 16).padEnd(16), `${k.prefix}…`.padEnd(12), (k.revokedAt ? 'revoked' : 'live').padEnd(8), String(k.usage?.sandboxes ?? 0).padEnd(10), limits].join(' '),
          );
        }
        return 0;
      }
      case 'revoke': {
        if (rest.length === 0) throw new UsageError(USAGE);
        for (const id of rest) {
          await api('DELETE', `/v1/keys/${encodeURIComponent(id)}`);
          console.error(`revoked ${id}`);
        }
        return 0;
      }
      default:
        throw new UsageError(USAGE);
    }
  },
};
export default command;
