/** The port a proxy or tunnel request names (routes/ports.ts, routes/tunnel.ts): its checks and its errors. */
import { isKilnError, KilnError } from '../../core/errors.js';
import { idParams } from './schemas.js';

export const portParams = {
  type: 'object',
  required: ['id', 'port'],
  properties: { ...idParams.properties, port: { type: 'string', pattern: '^[0-9]{1,5}$' }, '*': { type: 'string' } },
} as const;

/** The port as a number, or the 400 naming the parameter. */
export function portOf(raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 65535)
    throw new KilnError('INVALID_REQUEST', `path parameter "port" must be an integer from 1 to 65535 (got "${raw.slice(0, 20)}")`, {
      details: { in: 'params', field: 'port', value: raw.slice(0, 20), minimum: 1, maximum: 65535 },
    });
  return n;
}

/** An error of the agent stream as the API answers it: which port of which sandbox, and what to do. */
export function portError(e: unknown, id: string, port: number): KilnError {
  if (isKilnError(e) && e.code === 'PORT_UNREACHABLE')
    return new KilnError('PORT_UNREACHABLE', `nothing listens on port ${port} in sandbox ${id}; start a server there on 127.0.0.1:${port} (or 0.0.0.0:${port})`, {
      details: { port, agent: e.message },
    });
  if (isKilnError(e)) return e;
  return new KilnError('PORT_UNREACHABLE', `the connection to port ${port} in sandbox ${id} ended before the server answered: ${(e as Error).message}`, {
    details: { port, reason: (e as Error).message },
  });
}
