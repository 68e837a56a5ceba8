/**
 * A fake Firecracker: an HTTP server on the API Unix socket that validates every request against
 * firecracker-api.yaml and enforces Firecracker's documented ordering, answering like Firecracker
 * (204, 200 + JSON, or 400 {"fault_message"}). It also plays the hybrid vsock device (CONNECT/OK
 * once the "guest" runs) with a fake agent behind it, and writes/reads snapshot files.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { dirname, isAbsolute, join } from 'node:path';
import type { Launcher, VmmProcess } from '../../src/backends/firecracker/process.js';
import { ConsoleRing } from '../../src/core/console-ring.js';
import { type FakeAgentLog, serveFakeAgent } from './fake-agent.js';
import { FirecrackerSpec } from './swagger.js';

let sharedSpec: FirecrackerSpec | undefined;
export function spec(): FirecrackerSpec {
  sharedSpec ??= new FirecrackerSpec();
  return sharedSpec;
}

export interface RecordedRequest {
  method: string;
  path: string;
  body: unknown;
  status: number;
  fault?: string;
}

export interface FakeOptions {
  /** Answer this request (e.g. "PUT /drives/rootfs") with a 400 and this message. */
  failOn?: { request: string; message: string };
  /** The fake guest agent starts listening only after this many CONNECT attempts were refused. */
  refuseConnects?: number;
  /** Guest reaction to SendCtrlAltDel: power off (default) or ignore it (forces the SIGKILL rung). */
  ignoreCtrlAltDel?: boolean;
  /**
   * Open each NIC's host_dev_name as Firecracker does (PUT /network-interfaces, a snapshot load's
   * network_overrides): it must be a TAP in the network namespace the VMM runs in (the jailer's
   * `--netns`, else the host's) that the VMM's uid (the jailer's `--uid`) may open; else a 400.
   */
  checkTaps?: boolean;
}

/** Where the fake runs as far as its argv says (the jailer's chroot, `--netns` and `--uid`). */
export interface FakePlace {
  /** Jailed: its cwd is the chroot, where absolute paths resolve. */
  chroot?: boolean;
  netnsPath?: string;
  uid?: number;
}

/** Absolute: the fake may run confined with an empty environment (fake-firecracker-process.ts). */
const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip'].find((p) => existsSync(p)) ?? 'ip';

const PRE_BOOT = /^PUT (\/machine-config|\/boot-source|\/drives\/|\/vsock|\/entropy|\/network-interfaces\/|\/logger|\/cpu-config|\/balloon$|\/mmds\/config|\/serial)/;
const BOOT_RESOURCES = /^PUT (\/machine-config|\/boot-source|\/drives\/|\/vsock|\/entropy|\/network-interfaces\/|\/cpu-config|\/balloon$|\/mmds)/;

export class FakeFirecracker implements VmmProcess {
  readonly console = new ConsoleRing();
  readonly requests: RecordedRequest[] = [];
  readonly agentLog: FakeAgentLog = { ops: [], syncs: [] };
  readonly exited: Promise<string>;
  state: 'Not started' | 'Running' | 'Paused' = 'Not started';
  connectAttempts = 0;
  private resolveExit!: (why: string) => void;
  private done = false;
  private readonly http: Server;
  private vsock: NetServer | undefined;
  private vsockPath: string | undefined;
  private readonly configured = new Set<string>();
  private readonly config: Record<string, unknown> = {};
  private readonly sockets = new Set<Socket>();
  private loaded = false;

  constructor(
    readonly apiSocketPath: string,
    readonly cwd: string,
    private readonly o: FakeOptions = {},
    readonly place: FakePlace = {},
  ) {
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
    this.http = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const { status, body } = this.handle(req.method ?? 'GET', req.url ?? '/', raw);
        let parsed: unknown = raw;
        try {
          parsed = raw ? JSON.parse(raw) : undefined;
        } catch {
          /* recorded raw */
        }
        const fault = status >= 400 ? (body as { fault_message: string }).fault_message : undefined;
        this.requests.push({ method: req.method ?? '', path: req.url ?? '', body: parsed, status, ...(fault ? { fault } : {}) });
        const out = body === undefined ? '' : JSON.stringify(body);
        res.writeHead(status, out ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) } : {});
        res.end(out);
      });
    });
    this.http.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => this.http.once('error', reject).listen(this.apiSocketPath, resolve));
    this.console.push('Running Firecracker v1.17.0-dev (fake)\n');
  }

  get pid(): number | undefined {
    return undefined;
  }

  alive(): boolean {
    return !this.done;
  }

  kill(signal: NodeJS.Signals): void {
    this.exit(`killed by ${signal}`);
  }

  /** Simulates the VMM process dying (crash, OOM kill). */
  exit(why: string): void {
    if (this.done) return;
    this.done = true;
    this.http.close();
    for (const s of this.sockets) s.destroy();
    this.vsock?.close();
    for (const p of [this.apiSocketPath, this.vsockPath]) if (p) rmSync(p, { force: true });
    this.resolveExit(why);
  }

  /** Drops every live vsock connection (the agent connection breaks, the VM keeps running). */
  dropVsockConnections(): void {
    for (const s of this.vsockConns) s.destroy();
  }

  private readonly vsockConns = new Set<Socket>();

  private resolvePath(p: string): string {
    return isAbsolute(p) && !this.place.chroot ? p : join(this.cwd, p);
  }

  private handle(method: string, url: string, raw: string): { status: number; body?: unknown } {
    const fault = (m: string): { status: number; body: unknown } => ({ status: 400, body: { fault_message: m } });
    const check = spec().check(method, url, raw);
    if (!check.ok) return fault(`invalid request: ${check.problem}`);
    const key = `${method} ${url}`;
    if (this.o.failOn && key === this.o.failOn.request) return fault(this.o.failOn.message);
    // biome-ignore lint/suspicious/noExplicitAny: a request body checked field by field against the API description
    const body = (raw ? JSON.parse(raw) : {}) as Record<string, any>;
    const started = this.state !== 'Not started';

    if (method === 'GET' && url === '/') return { status: 200, body: { app_name: 'Firecracker', id: 'anonymous-instance', state: this.state, vmm_version: '1.17.0-dev' } };
    if (method === 'GET' && url === '/machine-config') return { status: 200, body: this.config['machine-config'] ?? { vcpu_count: 1, mem_size_mib: 128, smt: false } };
    if (PRE_BOOT.test(key) && (started || this.loaded)) return fault('The requested operation is not supported after starting the microVM.');
    if (BOOT_RESOURCES.test(key)) this.configured.add(url);

    if (method === 'PUT' && url === '/boot-source' && !existsSync(this.resolvePath(body.kernel_image_path))) return fault(`Invalid kernel path: ${body.kernel_image_path}`);
    if (method === 'PUT' && url === '/boot-source' && body.initrd_path && !existsSync(this.resolvePath(body.initrd_path))) return fault(`Invalid initrd path: ${body.initrd_path}`);
    if (method === 'PUT' && url.startsWith('/drives/')) {
      if (body.drive_id !== decodeURIComponent(url.slice('/drives/'.length))) return fault('The id from the path does not match the id from the body!');
      if (!existsSync(this.resolvePath(body.path_on_host))) return fault(`Unable to create the block device: No such file or directory: ${body.path_on_host}`);
    }
    if (this.o.checkTaps && method === 'PUT' && url.startsWith('/network-interfaces/')) {
      const err = this.tapProblem(body.host_dev_name);
      if (err) return fault(err);
    }
    if (this.o.checkTaps && method === 'PUT' && url === '/snapshot/load') {
      for (const n of body.network_overrides ?? []) {
        const err = this.tapProblem(n.host_dev_name);
        if (err) return fault(`Cannot restore net device ${n.iface_id}: ${err}`);
      }
    }
    if (method === 'PUT' && url === '/logger' && body.log_path && !existsSync(this.resolvePath(body.log_path))) return fault(`Failed to open the logger file: ${body.log_path}`);
    if (method === 'PUT' && url === '/vsock') {
      const err = this.bindVsock(body.uds_path);
      if (err) return fault(err);
    }
    if (method === 'PUT' && url !== '/actions' && !url.startsWith('/snapshot')) this.config[url.slice(1)] = body;

    if (method === 'PUT' && url === '/actions') {
      if (body.action_type === 'InstanceStart') {
        if (started || this.loaded) return fault('The microVM is already running.');
        if (!this.config['boot-source']) return fault('Cannot start microvm without kernel configuration.');
        this.state = 'Running';
        this.console.push('[    0.000000] Linux version 6.1.0 (fake guest)\n[    0.100000] virtio_blk virtio0: [vda] 1024 512-byte logical blocks\n');
      } else if (body.action_type === 'SendCtrlAltDel') {
        if (this.state !== 'Running') return fault('The microVM must be running to send Ctrl+Alt+Del.');
        if (!this.o.ignoreCtrlAltDel) setTimeout(() => this.exit('exited with code 0'), 5);
      }
      return { status: 204 };
    }
    if (method === 'PATCH' && url.startsWith('/network-interfaces/')) {
      if (!started) return fault('The requested operation is not supported before starting the microVM.');
      if (!this.config[url.slice(1)]) return fault('Invalid interface ID - not found.');
      return { status: 204 };
    }
    if (method === 'PATCH' && url === '/vm') {
      if (!started) return fault('Cannot pause or resume a microVM that is not running.');
      this.state = body.state === 'Paused' ? 'Paused' : 'Running';
      return { status: 204 };
    }
    if (method === 'PUT' && url === '/snapshot/create') {
      if (this.state !== 'Paused') return fault('Cannot create a snapshot: the microVM is not paused.');
      const vmstate = this.resolvePath(body.snapshot_path);
      if (!existsSync(dirname(vmstate))) return fault(`Cannot create snapshot file: No such file or directory: ${body.snapshot_path}`);
      writeFileSync(vmstate, JSON.stringify({ fakeVmstate: 1, config: this.config }));
      writeFileSync(this.resolvePath(body.mem_file_path), Buffer.alloc(4096, 7));
      return { status: 204 };
    }
    if (method === 'PUT' && url === '/snapshot/load') {
      if (started || this.loaded || this.configured.size > 0) return fault('Loading a microVM snapshot not allowed after configuring boot-specific resources.');
      if (body.mem_file_path !== undefined && body.mem_backend !== undefined) return fault('Only one of mem_file_path or mem_backend may be given.');
      const memPath = body.mem_backend?.backend_path ?? body.mem_file_path;
      if (!memPath) return fault('Missing mem_backend.');
      const vmstatePath = this.resolvePath(body.snapshot_path);
      if (!existsSync(vmstatePath)) return fault(`Cannot open snapshot file: No such file or directory: ${body.snapshot_path}`);
      if (!existsSync(this.resolvePath(memPath))) return fault(`Cannot open memory file: No such file or directory: ${memPath}`);
      // biome-ignore lint/suspicious/noExplicitAny: the saved config is replayed as it was sent
      const saved = JSON.parse(readFileSync(vmstatePath, 'utf8')) as { config: Record<string, any> };
      const drives = Object.entries(saved.config).filter(([k]) => k.startsWith('drives/'));
      for (const [, d] of drives) if (!existsSync(this.resolvePath(d.path_on_host))) return fault(`Cannot restore block device: No such file or directory: ${d.path_on_host}`);
      const uds = body.vsock_override?.uds_path ?? saved.config.vsock?.uds_path;
      if (uds) {
        const err = this.bindVsock(uds);
        if (err) return fault(`Cannot restore vsock device: ${err}`);
      }
      this.loaded = true;
      // A restored VM has its snapshot's devices: a snapshot of it saves them again.
      Object.assign(this.config, saved.config);
      this.state = body.resume_vm ? 'Running' : 'Paused';
      return { status: 204 };
    }
    if (method === 'GET') return fault(`fake: ${url} not implemented`);
    return { status: 204 };
  }

  /** Why Firecracker could not open `name` as its TAP (TUNSETIFF in its own namespace, as its uid), or undefined. */
  private tapProblem(name: string): string | undefined {
    const args = ['-d', '-o', 'link', 'show', 'dev', name];
    const where = this.place.netnsPath;
    const r = where ? spawnSync('nsenter', [`--net=${where}`, '--', IP, ...args], { encoding: 'utf8' }) : spawnSync(IP, args, { encoding: 'utf8' });
    const open = `Could not create the network device: Open tap device failed: Error while creating ifreq structure: Invalid TUN/TAP Backend provided by ${name}.`;
    if (r.status !== 0) return `${open} (no such device in ${where ?? "the host's namespace"})`;
    if (!/ tun type tap /.test(r.stdout)) return `${open} (not a TAP)`;
    if (this.place.uid !== undefined && !new RegExp(` user ${this.place.uid} `).test(r.stdout)) return `${open} (uid ${this.place.uid} may not open it)`;
    return undefined;
  }

  private bindVsock(udsPath: string): string | undefined {
    const path = this.resolvePath(udsPath);
    if (!existsSync(dirname(path))) return `Error binding the vsock Unix socket ${udsPath}: No such file or directory (os error 2)`;
    if (existsSync(path)) return `Error binding the vsock Unix socket ${udsPath}: Address in use (os error 98)`;
    this.vsockPath = path;
    this.vsock = createNetServer((s) => this.onVsock(s));
    this.vsock.listen(path);
    return undefined;
  }

  private onVsock(s: Socket): void {
    this.vsockConns.add(s);
    s.on('close', () => this.vsockConns.delete(s));
    s.on('error', () => undefined);
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      s.removeListener('data', onData);
      this.connectAttempts++;
      const m = /^CONNECT (\d+)$/.exec(buf.slice(0, nl));
      const listening = this.state === 'Running' && this.connectAttempts > (this.o.refuseConnects ?? 0);
      if (!m || Number(m[1]) !== 1024 || !listening) return void s.destroy();
      s.write(`OK ${1_073_741_824 + this.connectAttempts}\n`);
      serveFakeAgent(s, this.agentLog);
    };
    s.on('data', onData);
  }
}

/** A Launcher that starts fakes instead of the firecracker binary; `instances` keeps them for asserts. */
export function fakeLauncher(o: FakeOptions | ((n: number) => FakeOptions) = {}): Launcher & { instances: FakeFirecracker[] } {
  const instances: FakeFirecracker[] = [];
  const launch: Launcher = async (s) => {
    mkdirSync(s.cwd, { recursive: true });
    // Under the jailer, the namespace it joins and the uid it drops to (docs/jailer.md).
    const jailed = s.argv.includes('--exec-file');
    const flag = (f: string) => (jailed && s.argv.indexOf(f) >= 0 ? s.argv[s.argv.indexOf(f) + 1] : undefined);
    const uid = flag('--uid');
    const place: FakePlace = { chroot: jailed, netnsPath: flag('--netns'), uid: uid === undefined ? undefined : Number(uid) };
    const fake = new FakeFirecracker(s.apiSocketPath, s.cwd, typeof o === 'function' ? o(instances.length) : o, place);
    instances.push(fake);
    await fake.listen();
    return fake;
  };
  return Object.assign(launch, { instances });
}
