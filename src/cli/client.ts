/** The SDK client the CLI commands use: KILN_URL (default http://127.0.0.1:8400) and KILN_TOKEN. */
import { KilnClient } from '../../sdk/src/index.js';

export function cliClient(): KilnClient {
  return new KilnClient({ baseUrl: process.env.KILN_URL ?? `http://127.0.0.1:${process.env.KILN_PORT ?? 8400}`, token: process.env.KILN_TOKEN });
}
