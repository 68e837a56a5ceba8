/** The SDK client the CLI commands use, pointed at serviceUrl() with KILN_TOKEN. */
import { KilnClient } from '../sdk/index.js';

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
