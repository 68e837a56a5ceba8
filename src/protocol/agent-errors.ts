/** Agent errors and request frames, translated to KilnErrors exactly once, here. */
import { type ErrorCode, KilnError } from '../core/errors.js';
import { decodeJson, encodeFrame, type Frame, FrameType, MAX_JSON_BYTES } from './frames.js';
import { validateAgentError } from './messages.js';

const AGENT_CODE_MAP: Record<string, ErrorCode> = {
  BAD_REQUEST: 'INVALID_REQUEST',
  PATH_ESCAPE: 'PATH_ESCAPE',
  NOT_FOUND: 'FILE_NOT_FOUND',
  TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  EXEC_FAILED: 'EXEC_FAILED',
  CANCELLED: 'AGENT_ERROR',
  // The caller's mistakes in file and exec requests: 4xx, so a client retrying 5xx does not retry them.
  IS_A_DIRECTORY: 'IS_A_DIRECTORY',
  NOT_A_DIRECTORY: 'NOT_A_DIRECTORY',
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  CWD_NOT_FOUND: 'CWD_NOT_FOUND',
  // tcp.connect: nothing listens on the port (or the dial failed) inside the sandbox.
  CONNECTION_REFUSED: 'PORT_UNREACHABLE',
  CONNECT_FAILED: 'PORT_UNREACHABLE',
  // A fork run refused before its program started (core/manager.ts forkRun runs it elsewhere):
  // not the caller's mistake, and it never reaches a client unless that fallback fails.
  FORK_REFUSED: 'AGENT_ERROR',
  // A run a runner cannot fork (a tty, a program of the request's own …): nothing happened there.
  NOT_FORKABLE: 'AGENT_ERROR',
};

export function agentError(f: Frame): KilnError {
  const raw = decodeJson(f);
  if (!validateAgentError(raw)) return new KilnError('AGENT_PROTOCOL', 'agent error payload is malformed');
  return new KilnError(AGENT_CODE_MAP[raw.code] ?? 'AGENT_ERROR', raw.message, { details: { agentCode: raw.code } });
}

export /** A REQUEST frame, or PAYLOAD_TOO_LARGE naming the protocol's JSON limit. */
function requestFrame(stream: number, body: { op?: unknown }): Buffer {
  const json = Buffer.from(JSON.stringify(body));
  if (json.length > MAX_JSON_BYTES) {
    throw new KilnError(
      'PAYLOAD_TOO_LARGE',
      `the ${String(body.op ?? 'agent')} request is ${json.length} bytes as JSON (argv, env, cwd and inline files together); the limit is ${MAX_JSON_BYTES} bytes (256 KiB): pass large data as stdin or upload it as a file`,
      { details: { limitBytes: MAX_JSON_BYTES, requestBytes: json.length } },
    );
  }
  return encodeFrame(FrameType.REQUEST, stream, json);
}

export function abortedError(what: string, signal: AbortSignal | undefined): KilnError {
  return new KilnError('TIMEOUT', `${what} was aborted before the agent answered`, { cause: signal?.reason });
}
