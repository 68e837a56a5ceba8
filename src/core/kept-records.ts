/**
 * The service's side of a sandbox that outlives a restart: one small file per sandbox in the run
 * directory (<runDir>/sandboxes/<id>.json) with what the API shows of it (owner, TTL, labels, env,
 * size). Files, not the store: KILN_DATABASE_URL=off must keep sandboxes too, and the run directory
 * is what the backends' own state lives in. Written when a sandbox is created, removed when it ends.
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackendName } from './backend.js';
import type { Sandbox, SandboxInfo } from './sandbox.js';

export interface KeptRecord {
  id: string;
  backend: BackendName;
  pack: string;
  packEnv: Record<string, string>;
  env: Record<string, string>;
  size: { cpus: number; memoryMib: number; diskMib: number };
  ownerKeyId?: string;
  labels: Record<string, string>;
  createdAt: string;
  expiresAt: string;
  readyMs: number;
  fromPool: boolean;
  idleTimeoutSec?: number;
  workspace?: SandboxInfo['workspace'];
}

export class KeptRecords {
  private made = false;

  constructor(readonly dir: string) {}

  async save(sb: Sandbox): Promise<void> {
    const r: KeptRecord = {
      id: sb.id,
      backend: sb.backendName,
      pack: sb.packName,
      packEnv: sb.packEnv,
      env: sb.env,
      size: sb.size,
      ...(sb.owner ? { ownerKeyId: sb.owner.keyId } : {}),
      labels: sb.labels,
      createdAt: sb.createdAt.toISOString(),
      expiresAt: sb.expiresAt.toISOString(),
      readyMs: sb.readyMs,
      fromPool: sb.fromPool,
      ...(sb.idleTimeoutSec ? { idleTimeoutSec: sb.idleTimeoutSec } : {}),
      ...(sb.workspace ? { workspace: sb.workspace } : {}),
    };
    // Synchronous: the create waits for this write, and a few hundred bytes in the run directory
    // (a tmpfs by default) cost less written at once than as three trips through the thread pool.
    if (!this.made) {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      this.made = true;
    }
    const file = join(this.dir, `${sb.id}.json`);
    // env may hold secrets: root only.
    writeFileSync(`${file}.tmp`, JSON.stringify(r), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  async remove(id: string): Promise<void> {
    rmSync(join(this.dir, `${id}.json`), { force: true });
  }

  /** Every record; an unreadable one is removed and named in `unreadable`. */
  async list(): Promise<{ records: KeptRecord[]; unreadable: string[] }> {
    const records: KeptRecord[] = [];
    const unreadable: string[] = [];
    for (const n of await readdir(this.dir).catch(() => [] as string[])) {
      if (!n.endsWith('.json')) {
        await rm(join(this.dir, n), { force: true }); // a .tmp of a write a crash cut short
        continue;
      }
      try {
        records.push(JSON.parse(await readFile(join(this.dir, n), 'utf8')) as KeptRecord);
      } catch {
        unreadable.push(n.slice(0, -5));
        await rm(join(this.dir, n), { force: true });
      }
    }
    return { records, unreadable };
  }
}
