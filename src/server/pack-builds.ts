/**
 * Custom pack management: validate a definition, build its image (one build at a time: a build is
 * minutes of apt and zstd on the same cores the sandboxes use), and only when the image is complete
 * store the definition in the operator's folder. A failed build leaves nothing behind. A build is a
 * job of the service, not of the request: a client that disconnects can follow it again.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError, toKilnError } from '../core/errors.js';
import type { PackCatalog } from '../core/packs.js';
import {
  type BuildProgressEvent,
  type BuildResult,
  buildDefinition,
  type CustomPackSpec,
  canonicalJson,
  loadPack,
  type PackSources,
  type PruneResult,
  packNames,
  removePackImages,
  resolveCustomPack,
  validateCustomPack,
} from '../images/index.js';

export type BuildState = 'queued' | 'building' | 'done' | 'failed';

export interface BuildStatus {
  id: string;
  pack: string;
  version: number;
  state: BuildState;
  /** The last progress event. */
  progress?: BuildProgressEvent;
  result?: { hash: string; sizeBytes: number; built: boolean; durationMs: number };
  error?: { code: string; message: string; details?: Record<string, unknown> };
  startedAt: string;
  finishedAt?: string;
}

export type BuildEvent = { type: 'progress' } & BuildProgressEvent;

// Enough to replay a build to a client that joins late; older lines are dropped.
const MAX_EVENTS = 2000;

export class BuildJob {
  readonly status: BuildStatus;
  /** Why it failed, as thrown (status.error is its JSON). */
  error?: KilnError;
  readonly events: BuildEvent[] = [];
  readonly done: Promise<BuildStatus>;
  readonly controller = new AbortController();
  private readonly listeners = new Set<(e: BuildEvent | undefined) => void>();
  private finish!: (s: BuildStatus) => void;

  constructor(pack: string, version: number) {
    this.status = { id: `build-${randomBytes(4).toString('hex')}`, pack, version, state: 'queued', startedAt: new Date().toISOString() };
    this.done = new Promise((resolve) => {
      this.finish = resolve;
    });
  }

  get finished(): boolean {
    return this.status.state === 'done' || this.status.state === 'failed';
  }

  progress(e: BuildProgressEvent): void {
    const event: BuildEvent = { type: 'progress', ...e };
    this.status.progress = e;
    this.events.push(event);
    if (this.events.length > MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS);
    for (const l of this.listeners) l(event);
  }

  end(result: BuildResult | undefined, error?: KilnError): void {
    this.error = error;
    Object.assign(this.status, {
      state: error ? 'failed' : 'done',
      finishedAt: new Date().toISOString(),
      ...(result ? { result: { hash: result.hash, sizeBytes: result.sizeBytes, built: result.built, durationMs: result.durationMs } } : {}),
      ...(error ? { error: error.toJSON() } : {}),
    });
    for (const l of this.listeners) l(undefined);
    this.listeners.clear();
    this.finish(this.status);
  }

  /** Calls `fn` with every event so far and each one to come, then with undefined once finished. */
  follow(fn: (e: BuildEvent | undefined) => void): () => void {
    for (const e of this.events) fn(e);
    if (this.finished) {
      fn(undefined);
      return () => undefined;
    }
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

export interface PackBuildsOptions {
  dataDir: string;
  sources: PackSources & { customDir: string };
  catalog: PackCatalog;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  /** Per build; default 30 minutes (the builder's). */
  timeoutMs?: number;
}

export class PackBuilds {
  private readonly jobs = new Map<string, BuildJob>();
  // Builds run one after another: this is the tail of the queue.
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly o: PackBuildsOptions) {}

  /** The latest build of `pack` since the service started, if any. */
  job(pack: string): BuildJob | undefined {
    return this.jobs.get(pack);
  }

  /**
   * Validates `raw` (400 naming the field), refuses a built-in name or a pack already building (409)
   * and an unknown base (400), then queues the build and returns its job at once.
   */
  async submit(raw: unknown): Promise<BuildJob> {
    if (this.closed) throw new KilnError('SHUTTING_DOWN', 'the service is stopping; submit the pack again once it is back');
    const spec = validateCustomPack(raw, 'request body', undefined, 'INVALID_REQUEST');
    const { builtin } = await packNames(this.o.sources);
    if (builtin.includes(spec.name)) {
      throw new KilnError('PACK_CONFLICT', `"${spec.name}" is a built-in pack; give the custom pack another name (for example my-${spec.name})`, { details: { pack: spec.name } });
    }
    const base = await loadPack(spec.base, this.o.sources).catch((e: unknown) => {
      if (e instanceof KilnError && e.code === 'UNKNOWN_PACK') {
        throw new KilnError('UNKNOWN_PACK', `base pack "${spec.base}" does not exist; GET /v1/packs lists the packs to build on`, { details: { field: 'base', base: spec.base } });
      }
      throw e;
    });
    const stored = { ...spec, version: await this.nextVersion(spec) };
    const definition = resolveCustomPack(stored, base);
    // Checked after the last await, right before the job is registered: two requests for one name
    // at once cannot both pass.
    const running = this.jobs.get(spec.name);
    if (running && !running.finished) {
      throw new KilnError('PACK_CONFLICT', `pack ${spec.name} is already being built (${running.status.id}); follow it with GET /v1/packs/${spec.name}/build`, {
        details: { pack: spec.name, build: running.status.id },
      });
    }
    const job = new BuildJob(spec.name, stored.version);
    this.jobs.set(spec.name, job);
    this.queue = this.queue.then(() => this.run(job, stored, definition));
    return job;
  }

  private async run(job: BuildJob, spec: CustomPackSpec, definition: ReturnType<typeof resolveCustomPack>): Promise<void> {
    if (this.closed) {
      job.end(undefined, new KilnError('SHUTTING_DOWN', 'the service stopped before the build started'));
      return;
    }
    job.status.state = 'building';
    this.o.log?.('custom pack build started', { pack: spec.name, version: spec.version, build: job.status.id });
    try {
      const result = await buildDefinition(definition, {
        dataDir: this.o.dataDir,
        signal: job.controller.signal,
        timeoutMs: this.o.timeoutMs,
        onProgress: (e) => job.progress(e),
      });
      await this.store(spec);
      await this.o.catalog.refresh();
      this.o.log?.('custom pack built', { pack: spec.name, version: spec.version, hash: result.hash, sizeBytes: result.sizeBytes, durationMs: result.durationMs });
      job.end(result);
    } catch (e) {
      const err = job.controller.signal.aborted && !(e instanceof KilnError) ? new KilnError('SHUTTING_DOWN', 'the build was stopped: the service is stopping') : toKilnError(e);
      this.o.log?.('custom pack build failed', { pack: spec.name, code: err.code, error: err.message });
      job.end(undefined, err);
    }
  }

  /** The stored version when nothing but `version` differs, else one more; 1 for a new pack. */
  private async nextVersion(spec: CustomPackSpec): Promise<number> {
    const previous = await this.storedSpec(spec.name);
    if (!previous) return 1;
    const same = canonicalJson({ ...previous, version: 0 }) === canonicalJson({ ...spec, version: 0 });
    return same ? previous.version : previous.version + 1;
  }

  private async storedSpec(name: string): Promise<CustomPackSpec | undefined> {
    const file = join(this.o.sources.customDir, `${name}.json`);
    try {
      return validateCustomPack(JSON.parse(await readFile(file, 'utf8')), file, name);
    } catch {
      return undefined;
    }
  }

  /** Writes the definition as the user sent it (plus its version), by rename so readers never see half a file. */
  private async store(spec: CustomPackSpec): Promise<void> {
    await mkdir(this.o.sources.customDir, { recursive: true });
    const file = join(this.o.sources.customDir, `${spec.name}.json`);
    const tmp = `${file}.tmp-${process.pid}`;
    const { description, run, versionCommand, files, ...rest } = spec;
    const out = {
      ...rest,
      // Back in the form validateCustomPack reads: modes as octal strings.
      files: files.map((f) => ({ ...f, mode: `0${f.mode.toString(8)}` })),
      ...(description ? { description } : {}),
      ...(run ? { run } : {}),
      ...(versionCommand ? { versionCommand } : {}),
    };
    await writeFile(tmp, `${JSON.stringify(out, null, 2)}\n`);
    await rename(tmp, file);
  }

  /**
   * Removes a custom pack: its definition and every image of it. Running sandboxes keep theirs (a
   * mounted file lives until unmounted). Built-in packs cannot be removed, nor one that is building.
   */
  async remove(name: string): Promise<PruneResult> {
    const { builtin, custom } = await packNames(this.o.sources);
    if (builtin.includes(name)) throw new KilnError('PACK_CONFLICT', `"${name}" is a built-in pack; only custom packs can be removed`, { details: { pack: name } });
    const job = this.jobs.get(name);
    if (job && !job.finished)
      throw new KilnError('PACK_CONFLICT', `pack ${name} is being built (${job.status.id}); remove it once the build has finished`, { details: { pack: name, build: job.status.id } });
    if (!custom.includes(name)) throw new KilnError('UNKNOWN_PACK', `unknown custom pack "${name}"; custom packs: ${custom.join(', ') || 'none'}`, { details: { pack: name } });
    const dependants = (await Promise.all(custom.map(async (n) => ((await this.storedSpec(n))?.base === name ? [n] : [])))).flat();
    if (dependants.length > 0) {
      throw new KilnError('PACK_CONFLICT', `pack ${name} is the base of ${dependants.join(', ')}; remove ${dependants.length > 1 ? 'those' : 'that'} first`, { details: { pack: name, dependants } });
    }
    const file = join(this.o.sources.customDir, `${name}.json`);
    await rm(file, { force: true });
    const removed = await removePackImages(this.o.dataDir, name);
    await this.o.catalog.refresh();
    this.jobs.delete(name);
    this.o.log?.('custom pack removed', { pack: name, freedBytes: removed.freedBytes });
    return { removed: [file, ...removed.removed], freedBytes: removed.freedBytes };
  }

  /** Stops the running build (its temp dir is removed before this resolves) and fails the queued ones. */
  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.jobs.values()) if (!job.finished) job.controller.abort(new Error('the service is stopping'));
    await this.queue.catch(() => undefined);
  }
}
