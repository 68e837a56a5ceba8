/**
 * A typed REST driver for the Firecracker API on its Unix socket (node:http with `socketPath`; no
 * SDK). One method per endpoint kiln uses. Firecracker answers 204 on success and 4xx with
 * `{"fault_message": "..."}`; those become FirecrackerApiErrors naming the call, exactly once here.
 */
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ErrorCode, KilnError } from '../../core/errors.js';
import type {
  BootSource,
  Drive,
  EntropyDevice,
  FirecrackerVersion,
  InstanceAction,
  InstanceInfo,
  Logger,
  MachineConfiguration,
  NetworkInterface,
  PartialNetworkInterface,
  SnapshotCreateParams,
  SnapshotLoadParams,
  Vsock,
} from './api-types.js';

export interface FirecrackerApiOptions {
  socketPath: string;
  /** Deadline of one API call; snapshot create/load get `snapshotTimeoutMs`. */
  requestTimeoutMs?: number;
  snapshotTimeoutMs?: number;
}

export interface CallOptions {
  signal?: AbortSignal;
}

/** A Firecracker API call failed; `call` is the firecracker-go-sdk style name ("fc.putDrive"). */
export class FirecrackerApiError extends KilnError {
  constructor(
    readonly call: string,
    readonly statusCode: number | undefined,
    readonly faultMessage: string,
    code: ErrorCode = 'BOOT_FAILED',
    cause?: unknown,
  ) {
    super(code, `Firecracker API call ${call} failed${statusCode ? ` (HTTP ${statusCode})` : ''}: ${faultMessage}`, {
      cause,
      details: { call, ...(statusCode ? { httpStatus: statusCode } : {}) },
    });
    this.name = 'FirecrackerApiError';
  }
}

interface RawResponse {
  status: number;
  body: string;
}

export class FirecrackerApi {
  readonly socketPath: string;
  private readonly requestTimeoutMs: number;
  private readonly snapshotTimeoutMs: number;

  constructor(options: FirecrackerApiOptions) {
    this.socketPath = options.socketPath;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5_000;
    this.snapshotTimeoutMs = options.snapshotTimeoutMs ?? 60_000;
  }

  // --- pre-boot configuration -------------------------------------------------------------
  putLogger(body: Logger, o?: CallOptions): Promise<void> {
    return this.put('fc.putLogger', '/logger', body, o);
  }
  putMachineConfig(body: MachineConfiguration, o?: CallOptions): Promise<void> {
    return this.put('fc.putMachineConfig', '/machine-config', body, o);
  }
  putBootSource(body: BootSource, o?: CallOptions): Promise<void> {
    return this.put('fc.putBootSource', '/boot-source', body, o);
  }
  putDrive(body: Drive, o?: CallOptions): Promise<void> {
    return this.put('fc.putDrive', `/drives/${seg(body.drive_id)}`, body, o);
  }
  putVsock(body: Vsock, o?: CallOptions): Promise<void> {
    return this.put('fc.putVsock', '/vsock', body, o);
  }
  putEntropy(body: EntropyDevice, o?: CallOptions): Promise<void> {
    return this.put('fc.putEntropy', '/entropy', body, o);
  }
  putNetworkInterface(body: NetworkInterface, o?: CallOptions): Promise<void> {
    return this.put('fc.putNetworkInterface', `/network-interfaces/${seg(body.iface_id)}`, body, o);
  }
  /** After the start: a NIC's rate limiters. */
  patchNetworkInterface(body: PartialNetworkInterface, o?: CallOptions): Promise<void> {
    return this.send('fc.patchNetworkInterface', 'PATCH', `/network-interfaces/${seg(body.iface_id)}`, body, o).then(() => undefined);
  }

  // --- actions and state ------------------------------------------------------------------
  instanceStart(o?: CallOptions): Promise<void> {
    return this.action('fc.instanceStart', 'InstanceStart', o);
  }
  sendCtrlAltDel(o?: CallOptions): Promise<void> {
    return this.action('fc.sendCtrlAltDel', 'SendCtrlAltDel', o);
  }
  pauseVm(o?: CallOptions): Promise<void> {
    return this.send('fc.pauseVm', 'PATCH', '/vm', { state: 'Paused' }, o).then(() => undefined);
  }
  resumeVm(o?: CallOptions): Promise<void> {
    return this.send('fc.resumeVm', 'PATCH', '/vm', { state: 'Resumed' }, o).then(() => undefined);
  }

  createSnapshot(body: SnapshotCreateParams, o?: CallOptions): Promise<void> {
    return this.send('fc.createSnapshot', 'PUT', '/snapshot/create', body, o, this.snapshotTimeoutMs).then(() => undefined);
  }

  loadSnapshot(body: SnapshotLoadParams, o?: CallOptions): Promise<void> {
    return this.send('fc.loadSnapshot', 'PUT', '/snapshot/load', body, o, this.snapshotTimeoutMs).then(() => undefined);
  }

  // --- queries ----------------------------------------------------------------------------
  async describeInstance(o?: CallOptions): Promise<InstanceInfo> {
    return this.json<InstanceInfo>('fc.describeInstance', await this.send('fc.describeInstance', 'GET', '/', undefined, o));
  }

  async getMachineConfig(o?: CallOptions): Promise<MachineConfiguration> {
    return this.json<MachineConfiguration>('fc.getMachineConfig', await this.send('fc.getMachineConfig', 'GET', '/machine-config', undefined, o));
  }

  async getVersion(o?: CallOptions): Promise<FirecrackerVersion> {
    return this.json<FirecrackerVersion>('fc.getVersion', await this.send('fc.getVersion', 'GET', '/version', undefined, o));
  }

  /**
   * Polls GET / until the API socket answers: Firecracker creates the socket a moment after exec.
   * `isAlive` lets the caller stop early when the process already died.
   */
  async waitReady(timeoutMs: number, options: CallOptions & { isAlive?: () => boolean; intervalMs?: number } = {}): Promise<InstanceInfo> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      options.signal?.throwIfAborted();
      if (options.isAlive && !options.isAlive()) {
        throw new FirecrackerApiError('fc.waitApiSocket', undefined, `the Firecracker process exited before its API socket ${this.socketPath} answered`);
      }
      try {
        return await this.describeInstance({ signal: options.signal });
      } catch (e) {
        last = e;
      }
      if (Date.now() >= deadline) {
        const why = last instanceof Error ? last.message : String(last);
        throw new FirecrackerApiError('fc.waitApiSocket', undefined, `API socket ${this.socketPath} did not answer within ${timeoutMs} ms (${why})`, 'TIMEOUT');
      }
      await sleep(options.intervalMs ?? 10, undefined, { signal: options.signal });
    }
  }

  private put(call: string, path: string, body: unknown, o?: CallOptions): Promise<void> {
    return this.send(call, 'PUT', path, body, o).then(() => undefined);
  }

  private action(call: string, action_type: InstanceAction, o?: CallOptions): Promise<void> {
    return this.put(call, '/actions', { action_type }, o);
  }

  private json<T>(call: string, res: RawResponse): T {
    try {
      return JSON.parse(res.body) as T;
    } catch (e) {
      throw new FirecrackerApiError(call, res.status, `answered with invalid JSON: ${res.body.slice(0, 200)}`, 'BOOT_FAILED', e);
    }
  }

  private async send(call: string, method: string, path: string, body: unknown, o: CallOptions = {}, timeoutMs = this.requestTimeoutMs): Promise<RawResponse> {
    const timer = AbortSignal.timeout(timeoutMs);
    const signal = o.signal ? AbortSignal.any([o.signal, timer]) : timer;
    let res: RawResponse;
    try {
      res = await this.raw(method, path, body, signal);
    } catch (e) {
      if (o.signal?.aborted) throw e;
      if (timer.aborted) throw new FirecrackerApiError(call, undefined, `no answer within ${timeoutMs} ms`, 'TIMEOUT', e);
      throw new FirecrackerApiError(call, undefined, `cannot reach the API socket ${this.socketPath}: ${(e as Error).message}`, 'BOOT_FAILED', e);
    }
    if (res.status >= 200 && res.status < 300) return res;
    throw new FirecrackerApiError(call, res.status, faultMessage(res.body));
  }

  private raw(method: string, path: string, body: unknown, signal: AbortSignal): Promise<RawResponse> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<RawResponse>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          signal,
          headers: {
            Accept: 'application/json',
            ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': payload.length } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }
}

function seg(id: string): string {
  return encodeURIComponent(id);
}

/** Firecracker's error body is `{"fault_message": "..."}`; anything else is shown verbatim (capped). */
export function faultMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { fault_message?: unknown };
    if (typeof parsed.fault_message === 'string' && parsed.fault_message) return parsed.fault_message;
  } catch {
    /* not JSON */
  }
  return body.trim().slice(0, 500) || 'no error message in the response';
}
