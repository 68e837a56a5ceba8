/** The SDK client the CLI commands use, pointed at serviceUrl() with KILN_TOKEN. */
import { BACKEND_NAMES, type BackendName, KilnClient } from '../../sdk/src/index.js';
import { UsageError } from './command.js';

/** What `kiln --help` and every client command's usage say about finding the service. */
export const SERVICE_ENV_HELP = `The service is found at $KILN_URL (e.g. http://10.0.0.5:8400); without it, at
http://$KILN_HOST:$KILN_PORT (the variables \`kiln serve\` listens on; default 127.0.0.1:8400).
$KILN_TOKEN is sent as the bearer token when the service requires one.`;

/**
 * The service's URL: KILN_URL, else the host and port `kiln serve` would listen on with the same
 * environment, so one shell's KILN_PORT serves both. A wildcard listen address is reached locally.
 */
export function serviceUrl(env: NodeJS.ProcessEnv = process.env): string {
  if (env.KILN_URL) return env.KILN_URL.replace(/\/+$/, '');
  let host = env.KILN_HOST || '127.0.0.1';
  if (host === '0.0.0.0') host = '127.0.0.1';
  else if (host === '::') host = '::1';
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`;
  return `http://${host}:${env.KILN_PORT || 8400}`;
}

export function cliClient(): KilnClient {
  return new KilnClient({ baseUrl: serviceUrl(), token: process.env.KILN_TOKEN });
}

/** --backend's help: the names the SDK knows, generated from the server's registry of backends. */
export const BACKEND_HELP = `${BACKEND_NAMES.join(', ')} (default: the service's KILN_BACKEND)`;

/** A --backend value checked here, so a typo is named before any request is sent. */
export function backendFlag(value: string | boolean | undefined): BackendName | undefined {
  if (value === undefined) return undefined;
  const name = String(value);
  if (!(BACKEND_NAMES as readonly string[]).includes(name)) throw new UsageError(`--backend ${name}: no such backend; use one of ${BACKEND_NAMES.join(', ')}`);
  return name as BackendName;
}
