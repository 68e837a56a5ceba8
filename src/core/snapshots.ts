/**
 * Saved sandbox state on disk, under KILN_SNAPSHOTS_DIR: the state of each paused sandbox
 * (`paused/<sandbox id>/`) and named snapshots (`named/<name>/`). Each folder holds a
 * `record.json` (what the sandbox was, so a restarted service can bring it back) beside its
 * payload: a backend's machine state (memory and disk, `machine/`) or, for a backend without one,
 * the files the sandbox wrote (`files/<n>.tar.gz`, one archive per writable path). A folder is
 * written under `tmp/` and renamed into place: a crash never leaves half a snapshot listed.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { finished } from 'node:stream/promises';
import type { AgentClient } from '../protocol/agent-client.js';
import type { BackendName } from './backend.js';
import { isKilnError, KilnError } from './errors.js';

/** The paths a sandbox user can write (agent/setup_linux.go sandboxDirs): what a files-only save keeps. */
export const WRITABLE_PATHS = ['/workspace', '/tmp'] as const;

export interface SnapshotRecord {
  /** The snapshot's name, or for a paused sandbox its id. */
  name: string;
  /** 'machine': memory and disk through the VMM (processes continue); 'files': the writable paths only. */
  kind: 'machine' | 'files';
  backend: BackendName;
  pack: string;
  cpus: number;
  memoryMib: number;
  diskMib: number;
  env: Record<string, string>;
  labels: Record<string, string>;
  ownerKeyId: string | null;
  createdAt: string;
  sizeBytes: number;
  /** files: the archived paths, `files/<index>.tar.gz` each (absent: the path did not exist). */
  paths?: string[];
  /** machine: what the backend needs to start it again (its own facts, opaque here). */
  machine?: Record<string, unknown>;
  /** A paused sandbox's own facts, for its resume under the same id. */
  sandbox?: { id: string; createdAt: string; expiresAt: string; idleTimeoutSec?: number; fromPool: boolean };
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function checkSnapshotName(name: string): string {
  if (!NAME_RE.test(name))
    throw new KilnError('INVALID_REQUEST', `snapshot name ${JSON.stringify(name)} must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit`, {
      details: { field: 'name' },
    });
  return name;
}

export type SnapshotPlace = 'paused' | 'named';

export class SnapshotFiles {
  constructor(readonly dir: string) {}

  path(place: SnapshotPlace, name: string): string {
    return join(this.dir, place, name);
  }

  /** A fresh folder under tmp/ to write a snapshot into before commit(). */
  async begin(): Promise<string> {
    const d = join(this.dir, 'tmp', randomBytes(8).toString('hex'));
    await mkdir(d, { recursive: true, mode: 0o700 });
    return d;
  }

  /** Writes the record and moves the folder into place (replacing nothing: the name must be free). */
  async commit(tmp: string, place: SnapshotPlace, rec: SnapshotRecord): Promise<SnapshotRecord> {
    rec.sizeBytes = await duBytes(tmp);
    await writeFile(join(tmp, 'record.json'), JSON.stringify(rec, null, 1), { mode: 0o600 });
    await mkdir(join(this.dir, place), { recursive: true, mode: 0o700 });
    await rename(tmp, this.path(place, rec.name));
    return rec;
  }

  async record(place: SnapshotPlace, name: string): Promise<SnapshotRecord | undefined> {
    const raw = await readFile(join(this.path(place, name), 'record.json'), 'utf8').catch(() => undefined);
    if (raw === undefined) return undefined;
    try {
      return JSON.parse(raw) as SnapshotRecord;
    } catch {
      return undefined;
    }
  }

  async list(place: SnapshotPlace): Promise<SnapshotRecord[]> {
    const names = await readdir(join(this.dir, place)).catch(() => [] as string[]);
    const recs = await Promise.all(names.map((n) => this.record(place, n)));
    return recs.filter((r): r is SnapshotRecord => r !== undefined);
  }

  remove(place: SnapshotPlace, name: string): Promise<void> {
    return rm(this.path(place, name), { recursive: true, force: true });
  }

  /** Drops a folder begin() made that is not to be committed. */
  removeTmp(tmp: string): Promise<void> {
    return rm(tmp, { recursive: true, force: true });
  }

  /** Start-up: folders a crash left half-written. */
  async clearTmp(): Promise<void> {
    await rm(join(this.dir, 'tmp'), { recursive: true, force: true });
  }
}

/** Archives each writable path into `<dir>/files/<i>.tar.gz`; answers the paths that existed. */
export async function saveFiles(agent: AgentClient, dir: string, maxBytes: number): Promise<string[]> {
  await mkdir(join(dir, 'files'), { recursive: true, mode: 0o700 });
  const saved: string[] = [];
  for (const [i, p] of WRITABLE_PATHS.entries()) {
    const file = join(dir, 'files', `${i}.tar.gz`);
    const out = createWriteStream(file, { mode: 0o600 });
    // One wait per full buffer, however many chunks arrive meanwhile.
    let drained: Promise<void> | undefined;
    const sink = (chunk: Buffer): Promise<void> | undefined => {
      if (out.write(chunk) || drained) return drained;
      drained = new Promise<void>((r) => out.once('drain', () => r())).finally(() => {
        drained = undefined;
      });
      return drained;
    };
    try {
      await agent.getArchive(p, sink, { gzip: true, maxBytes });
      out.end();
      await finished(out);
      saved.push(p);
    } catch (e) {
      out.destroy();
      await rm(file, { force: true });
      if (isKilnError(e) && (e.code === 'FILE_NOT_FOUND' || e.code === 'NOT_A_DIRECTORY')) continue;
      throw e;
    }
  }
  return saved;
}

/** Puts the archives saveFiles wrote back into a fresh sandbox. */
export async function loadFiles(agent: AgentClient, dir: string, paths: readonly string[], maxBytes: number): Promise<void> {
  for (const p of paths) {
    const i = WRITABLE_PATHS.indexOf(p as (typeof WRITABLE_PATHS)[number]);
    if (i < 0) continue;
    await agent.putArchive(p, createReadStream(join(dir, 'files', `${i}.tar.gz`)), { maxBytes });
  }
}

/** Bytes of the regular files under dir (what the snapshot costs on disk). */
export async function duBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isFile()) continue;
    const s = await stat(join(e.parentPath, e.name)).catch(() => undefined);
    total += s ? s.blocks * 512 : 0;
  }
  return total;
}
