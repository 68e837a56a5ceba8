/**
 * A small typed client for the kiln HTTP API, usable from Node 20 and browsers (fetch only).
 *   const kiln = new KilnClient({ baseUrl: 'http://127.0.0.1:8400' });
 *   const sb = await kiln.sandboxes.create({ pack: 'python' });
 *   const r = await kiln.sandboxes.exec(sb.id, { cmd: 'python3 -c "print(42)"' });
 */
import { KilnError, type HttpErrorCode } from './errors.js';
import type {
  ApiErrorBody, BackendInfo, CodeContext, CodeEvent, CreateContextRequest, CreateSandboxOptions, CustomPackDefinition, ExecEvent, ExecOptions, ExecResult, FsEntry, HealthInfo, PackBuildEvent,
  NetworkEvents, PackBuildStatus, PackInfo, PauseResult, PoolStats, PortLink, RunnerStats, RunCodeRequest, RunOptions, RunResult, SandboxInfo, SnapshotInfo,
} from './types.js';
import type { ApproveOptions, ApproveResult, ChangeSide, ChangesOptions, ChangesResult, DiffOptions, RejectOptions, RejectResult } from './workspace.js';

export interface KilnClientOptions {
  /** e.g. http://127.0.0.1:8400 ('' in a browser served by kiln itself). */
  baseUrl?: string;
  token?: string;
  /** Per request, at most 2^31-1 (~24.8 days); long execs should pass their own signal instead. */
  requestTimeoutMs?: number;
  fetch?: typeof fetch;
}

export class KilnClient {
  readonly baseUrl: string;
  readonly sandboxes: Sandboxes;
  private readonly token?: string;
  private readonly timeoutMs: number;
  private readonly fetchFn: typeof fetch;

  constructor(o: KilnClientOptions = {}) {
    this.baseUrl = (o.baseUrl ?? 'http://127.0.0.1:8400').replace(/\/$/, '');
    this.token = o.token;
    this.timeoutMs = o.requestTimeoutMs ?? 10 * 60_000;
    // Timers hold at most 2^31-1 ms; beyond it every request would time out after 1 ms.
    if (!(this.timeoutMs > 0 && this.timeoutMs <= 2 ** 31 - 1)) throw new RangeError(`requestTimeoutMs must be from 1 to 2147483647 (~24.8 days), got ${this.timeoutMs}; pass a signal to cancel a longer call yourself`);
    this.fetchFn = o.fetch ?? fetch.bind(globalThis);
    this.sandboxes = new Sandboxes(this);
  }

  /** Low-level request; throws KilnError for any non-2xx answer. */
  async request(method: string, path: string, init: { json?: unknown; body?: BodyInit; contentType?: string; accept?: string; signal?: AbortSignal } = {}): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (init.json !== undefined) headers['content-type'] = 'application/json';
    else if (init.contentType) headers['content-type'] = init.contentType;
    if (init.accept) headers.accept = init.accept;
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    const res = await this.fetchFn(this.baseUrl + path, {
      method, headers, signal,
      body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
      ...(init.body && typeof (init.body as ReadableStream).getReader === 'function' ? { duplex: 'half' } : {}),
    } as RequestInit);
    if (!res.ok) throw await apiError(res);
    return res;
  }

  async json<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.request(method, path, { json: body, signal });
    return (res.status === 204 ? undefined : await res.json()) as T;
  }

  /** One-shot: fresh sandbox, run, delete. */
  run(o: RunOptions, signal?: AbortSignal): Promise<RunResult> {
    return this.json('POST', '/v1/run', o, signal);
  }

  /** One-shot with output streamed as it is produced. */
  runStream(o: RunOptions, signal?: AbortSignal): AsyncGenerator<ExecEvent> {
    return this.ndjson('/v1/run', { ...o, stream: true }, signal);
  }

  packs(): Promise<PackInfo[]> {
    return this.json<{ packs: PackInfo[] }>('GET', '/v1/packs').then((r) => r.packs);
  }

  pack(name: string): Promise<PackInfo> {
    return this.json('GET', `/v1/packs/${enc(name)}`);
  }

  /** Builds a custom pack and stores it once its image is complete (needs the admin token over TCP). */
  createPack(def: CustomPackDefinition, signal?: AbortSignal): Promise<{ pack: PackInfo; build: PackBuildStatus }> {
    return this.json('POST', '/v1/packs', def, signal);
  }

  /** The same, with the build's progress as it happens; the last event is a result or an error. */
  async *createPackStream(def: CustomPackDefinition, signal?: AbortSignal): AsyncGenerator<PackBuildEvent> {
    yield* this.lines<PackBuildEvent>(await this.request('POST', '/v1/packs?stream=true', { json: def, accept: 'application/x-ndjson', signal }));
  }

  /** Follows the latest build of a pack from its start (e.g. after a disconnect). */
  async *followPackBuild(name: string, signal?: AbortSignal): AsyncGenerator<PackBuildEvent> {
    yield* this.lines<PackBuildEvent>(await this.request('GET', `/v1/packs/${enc(name)}/build`, { accept: 'application/x-ndjson', signal }));
  }

  deletePack(name: string): Promise<{ pack: string; removed: string[]; freedBytes: number }> {
    return this.json('DELETE', `/v1/packs/${enc(name)}`);
  }

  backends(): Promise<{ default: string; backends: BackendInfo[] }> {
    return this.json('GET', '/v1/backends');
  }

  pools(): Promise<{ pools: PoolStats[]; runners?: RunnerStats[] }> {
    return this.json('GET', '/v1/pools');
  }

  health(): Promise<HealthInfo> {
    return this.json('GET', '/healthz');
  }

  async metricsText(): Promise<string> {
    return (await this.request('GET', '/metrics')).text();
  }

  async *ndjson(path: string, body: unknown, signal?: AbortSignal): AsyncGenerator<ExecEvent> {
    yield* this.lines<ExecEvent>(await this.request('POST', path, { json: body, accept: 'application/x-ndjson', signal }));
  }

  /** POSTs `body` and yields the NDJSON events of the answer. */
  async *ndjsonOf<T>(path: string, body: unknown, signal?: AbortSignal): AsyncGenerator<T> {
    yield* this.lines<T>(await this.request('POST', path, { json: body, accept: 'application/x-ndjson', signal }));
  }

  private async *lines<T>(res: Response): AsyncGenerator<T> {
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) yield JSON.parse(line) as T;
      }
    }
  }

  /** WebSocket URL for interactive exec (browsers pass the token as access_token). */
  execSocketUrl(id: string): string {
    const base = this.baseUrl || (typeof location !== 'undefined' ? location.origin : '');
    const url = new URL(`${base}/v1/sandboxes/${encodeURIComponent(id)}/exec/ws`);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.token) url.searchParams.set('access_token', this.token);
    return url.toString();
  }

  /**
   * The URL of a server listening on `port` in the sandbox, through kiln's proxy (docs/ports.md);
   * `path` (with its query) is the server's own. Send the token as a bearer (fetchPort does).
   */
  portUrl(id: string, port: number, path = '/'): string {
    const base = this.baseUrl || (typeof location !== 'undefined' ? location.origin : '');
    return `${base}/v1/sandboxes/${encodeURIComponent(id)}/ports/${port}${path.startsWith('/') ? path : `/${path}`}`;
  }

  /** A WebSocket URL to a server in the sandbox through the proxy (the token as access_token: browsers cannot set headers). */
  portSocketUrl(id: string, port: number, path = '/'): string {
    return this.socketUrl(this.portUrl(id, port, path));
  }

  /** The raw TCP tunnel's WebSocket URL (binary messages are the connection's bytes; docs/ports.md). */
  tunnelUrl(id: string, port: number): string {
    const base = this.baseUrl || (typeof location !== 'undefined' ? location.origin : '');
    return this.socketUrl(`${base}/v1/sandboxes/${encodeURIComponent(id)}/tunnel/${port}`);
  }

  private socketUrl(http: string): string {
    const url = new URL(http);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.token) url.searchParams.set('access_token', this.token);
    return url.toString();
  }

  /**
   * A link a browser can open without the token (docs/ports.md): `port` of sandbox `id` only, for
   * `ttlSec` (default 3600, 1 to 86400). `url` names the host this client reached the service by
   * (at the service's apps port when it has one).
   */
  portLink(id: string, port: number, o: { ttlSec?: number } = {}): Promise<PortLink> {
    return this.json<PortLink>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/port-links`, { port, ...o });
  }

  /**
   * fetch() to a server in the sandbox through the proxy, with kiln's token. The answer is the
   * server's, whatever its status; kiln's own errors (no such sandbox, a wrong token, nothing
   * listens: 502 PORT_UNREACHABLE) throw KilnError.
   */
  async fetchPort(id: string, port: number, path = '/', init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.token) headers.set('authorization', `Bearer ${this.token}`);
    const res = await this.fetchFn(this.portUrl(id, port, path), { ...init, headers });
    // kiln marks its own answers (the proxy's, not the server's): X-Kiln-Error names the code.
    if (res.headers.has('x-kiln-error')) throw await apiError(res);
    return res;
  }
}

export class Sandboxes {
  constructor(private readonly c: KilnClient) {}

  create(o: CreateSandboxOptions, signal?: AbortSignal): Promise<SandboxInfo> {
    return this.c.json('POST', '/v1/sandboxes', o, signal);
  }

  list(): Promise<SandboxInfo[]> {
    return this.c.json<{ sandboxes: SandboxInfo[] }>('GET', '/v1/sandboxes').then((r) => r.sandboxes);
  }

  get(id: string): Promise<SandboxInfo> {
    return this.c.json('GET', `/v1/sandboxes/${enc(id)}`);
  }

  async delete(id: string): Promise<void> {
    await this.c.request('DELETE', `/v1/sandboxes/${enc(id)}`);
  }

  exec(id: string, o: ExecOptions, signal?: AbortSignal): Promise<ExecResult> {
    return this.c.json('POST', `/v1/sandboxes/${enc(id)}/exec`, o, signal);
  }

  execStream(id: string, o: ExecOptions, signal?: AbortSignal): AsyncGenerator<ExecEvent> {
    return this.c.ndjson(`/v1/sandboxes/${enc(id)}/exec`, { ...o, stream: true }, signal);
  }

  async writeFile(id: string, path: string, content: string | Uint8Array, mode?: number): Promise<{ bytes: number }> {
    const q = new URLSearchParams({ path, ...(mode !== undefined ? { mode: mode.toString(8) } : {}) });
    const res = await this.c.request('PUT', `/v1/sandboxes/${enc(id)}/files?${q}`, { body: content as BodyInit, contentType: 'application/octet-stream' });
    return res.json() as Promise<{ bytes: number }>;
  }

  async readFile(id: string, path: string): Promise<Uint8Array> {
    const res = await this.c.request('GET', `/v1/sandboxes/${enc(id)}/files?${new URLSearchParams({ path })}`);
    return new Uint8Array(await res.arrayBuffer());
  }

  async listDir(id: string, path: string): Promise<FsEntry[]> {
    return this.c.json<{ entries: FsEntry[] }>('GET', `/v1/sandboxes/${enc(id)}/ls?${new URLSearchParams({ path })}`).then((r) => r.entries);
  }

  /** Uploads a tar (gzip: false) or tar.gz and unpacks it at `path`. */
  async uploadArchive(id: string, data: Uint8Array | Blob, opts: { path?: string; gzip?: boolean } = {}): Promise<{ files: number; bytes: number }> {
    const q = new URLSearchParams({ path: opts.path ?? '/workspace' });
    const res = await this.c.request('POST', `/v1/sandboxes/${enc(id)}/archive?${q}`, { body: data as BodyInit, contentType: opts.gzip === false ? 'application/x-tar' : 'application/gzip' });
    return res.json() as Promise<{ files: number; bytes: number }>;
  }

  async downloadArchive(id: string, opts: { path?: string; gzip?: boolean } = {}): Promise<Uint8Array> {
    const q = new URLSearchParams({ path: opts.path ?? '/workspace', format: opts.gzip === false ? 'tar' : 'tar.gz' });
    const res = await this.c.request('GET', `/v1/sandboxes/${enc(id)}/archive?${q}`);
    return new Uint8Array(await res.arrayBuffer());
  }

  /**
   * Starts a stateful code context: a Python (IPython) or JavaScript (Node.js) interpreter that
   * keeps its variables between runs. The code-interpreter pack has both (and numpy, pandas, matplotlib).
   */
  createContext(id: string, o: CreateContextRequest = {}, signal?: AbortSignal): Promise<CodeContext> {
    return this.c.json('POST', `/v1/sandboxes/${enc(id)}/contexts`, o, signal);
  }

  listContexts(id: string): Promise<CodeContext[]> {
    return this.c.json<{ contexts: CodeContext[] }>('GET', `/v1/sandboxes/${enc(id)}/contexts`).then((r) => r.contexts);
  }

  getContext(id: string, ctx: string): Promise<CodeContext> {
    return this.c.json('GET', `/v1/sandboxes/${enc(id)}/contexts/${enc(ctx)}`);
  }

  async deleteContext(id: string, ctx: string): Promise<void> {
    await this.c.request('DELETE', `/v1/sandboxes/${enc(id)}/contexts/${enc(ctx)}`);
  }

  /** A fresh interpreter under the same id: every variable is gone. */
  restartContext(id: string, ctx: string): Promise<CodeContext> {
    return this.c.json('POST', `/v1/sandboxes/${enc(id)}/contexts/${enc(ctx)}/restart`);
  }

  /** Runs code in a context and yields its events as they come (CodeEvent); the last is end or error. */
  runCode(id: string, ctx: string, o: RunCodeRequest | string, signal?: AbortSignal): AsyncGenerator<CodeEvent> {
    return this.c.ndjsonOf<CodeEvent>(`/v1/sandboxes/${enc(id)}/contexts/${enc(ctx)}/run`, typeof o === 'string' ? { code: o } : o, signal);
  }

  /**
   * A sandbox's network audit trail (DNS queries and connection attempts, allowed or refused), its
   * byte counters, and the allowlist that would let through what it reached (learn mode).
   */
  networkEvents(id: string, o: { after?: number; limit?: number } = {}, signal?: AbortSignal): Promise<NetworkEvents> {
    return this.c.json('GET', `/v1/sandboxes/${enc(id)}/network/events${query({ after: o.after?.toString(), limit: o.limit?.toString() })}`, undefined, signal);
  }

  /** A workspace sandbox's pending changes, and how full its upper layer is. */
  changes(id: string, o: ChangesOptions = {}, signal?: AbortSignal): Promise<ChangesResult> {
    return this.c.json('GET', `/v1/sandboxes/${enc(id)}/changes${query({ ignored: o.ignored ? '1' : undefined })}`, undefined, signal);
  }

  /** The changes as a git-style patch (`git apply` takes it); one path with `path`. */
  async diff(id: string, o: DiffOptions = {}, signal?: AbortSignal): Promise<string> {
    const q = query({ path: o.path, ignored: o.ignored ? '1' : undefined });
    return (await this.c.request('GET', `/v1/sandboxes/${enc(id)}/diff${q}`, { accept: 'text/x-diff', signal })).text();
  }

  /** The bytes of a changed path before (`old`, the host directory) or after (`new`, the sandbox). */
  async changeContent(id: string, path: string, side: ChangeSide, signal?: AbortSignal): Promise<Uint8Array> {
    const res = await this.c.request('GET', `/v1/sandboxes/${enc(id)}/changes/content${query({ path, side })}`, { signal });
    return new Uint8Array(await res.arrayBuffer());
  }

  /**
   * Applies changes to the host directory (all, or `paths`). A host file changed since the sandbox
   * started makes it a 409 WORKSPACE_CONFLICT KilnError; workspaceConflicts(e) lists the paths, and
   * `force: true` overwrites them.
   */
  approve(id: string, o: ApproveOptions = {}, signal?: AbortSignal): Promise<ApproveResult> {
    return this.c.json('POST', `/v1/sandboxes/${enc(id)}/approve`, o, signal);
  }

  /** Discards changes (all, or `paths`): those paths read as the host directory's again. */
  reject(id: string, o: RejectOptions = {}, signal?: AbortSignal): Promise<RejectResult> {
    return this.c.json('POST', `/v1/sandboxes/${enc(id)}/reject`, o, signal);
  }

  /** Saves the state on disk and frees the compute; `processesKept` says whether running processes continue after resume. */
  pause(id: string, signal?: AbortSignal): Promise<PauseResult> {
    return this.c.json('POST', `/v1/sandboxes/${enc(id)}/pause`, undefined, signal);
  }

  /** Brings a paused sandbox back under the same id. */
  resume(id: string, signal?: AbortSignal): Promise<SandboxInfo & { resumeMs?: number }> {
    return this.c.json('POST', `/v1/sandboxes/${enc(id)}/resume`, undefined, signal);
  }

  /** Saves the sandbox's state as a named snapshot; start new sandboxes from it with `fromSnapshot`. */
  snapshot(id: string, name: string, signal?: AbortSignal): Promise<SnapshotInfo> {
    return this.c.json('POST', `/v1/sandboxes/${enc(id)}/snapshots`, { name }, signal);
  }

  listSnapshots(): Promise<SnapshotInfo[]> {
    return this.c.json<{ snapshots: SnapshotInfo[] }>('GET', '/v1/snapshots').then((r) => r.snapshots);
  }

  getSnapshot(name: string): Promise<SnapshotInfo> {
    return this.c.json('GET', `/v1/snapshots/${enc(name)}`);
  }

  async deleteSnapshot(name: string): Promise<void> {
    await this.c.request('DELETE', `/v1/snapshots/${enc(name)}`);
  }
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

/** "?a=1&b=x" of the defined values, or "" when none is. */
function query(params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

async function apiError(res: Response): Promise<KilnError> {
  const retry = res.headers.get('retry-after');
  let code: KilnError['code'] = `HTTP_${res.status}` satisfies HttpErrorCode;
  let message = `${res.status} ${res.statusText}`;
  let details: Record<string, unknown> | undefined;
  const body: unknown = await res.json().catch(() => undefined);
  // Not a JSON object: not from kiln.
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
    const { code: c, message: m, details: d, ...rest } = body as Partial<ApiErrorBody> & Record<string, unknown>;
    // A newer server's code passes through as it is: isErrorCode() tells whether this SDK knows it.
    if (c) code = c as KilnError['code'];
    if (m) message = m;
    // Fields beside code and message (a 409's `conflicts`) are kept with the details.
    details = Object.keys(rest).length ? { ...rest, ...d } : d;
  }
  return new KilnError(res.status, code, message, retry ? Number(retry) : undefined, details);
}
