/**
 * The three ways the Run page runs code, each as one stream of events:
 *  - one-shot: POST /v1/run with the files (kiln creates and deletes the sandbox);
 *  - in a live sandbox: write the files into /workspace, then exec the pack's project command;
 *  - a tar.gz project: upload it into a live sandbox (or a temporary one), then exec its entrypoint.
 */
import type { ExecEvent, KilnClient, PackInfo } from '../../../sdk/src/index.ts';
import { fillCommand } from './format.ts';

export const WORKDIR = '/workspace';

export type RunEvent = ExecEvent | { type: 'status'; text: string };

export interface ProjectFile {
  path: string;
  content: string;
}

export interface RunSettings {
  pack: PackInfo;
  entrypoint: string;
  stdin?: string;
  timeoutMs?: number;
}

export function runOneShot(client: KilnClient, files: ProjectFile[], s: RunSettings, signal: AbortSignal): AsyncGenerator<RunEvent> {
  return client.runStream(
    {
      pack: s.pack.name,
      files: files.map((f) => ({ path: f.path, content: f.content })),
      entrypoint: s.entrypoint,
      stdin: s.stdin || undefined,
      timeoutMs: s.timeoutMs,
    },
    signal,
  );
}

export async function* runInSandbox(client: KilnClient, sandboxId: string, files: ProjectFile[], s: RunSettings, signal: AbortSignal): AsyncGenerator<RunEvent> {
  yield { type: 'status', text: `writing ${files.length} file${files.length === 1 ? '' : 's'} to ${sandboxId}:${WORKDIR}` };
  for (const f of files) await client.sandboxes.writeFile(sandboxId, `${WORKDIR}/${f.path}`, f.content);
  yield* execEntrypoint(client, sandboxId, s, signal);
}

/** Uploads an archive (tar.gz, tar or zip: the agent tells them apart) into `sandboxId`, or into a sandbox made (and deleted) for this run when undefined. */
export async function* runArchive(client: KilnClient, sandboxId: string | undefined, archive: Blob, s: RunSettings, signal: AbortSignal): AsyncGenerator<RunEvent> {
  let id = sandboxId;
  if (!id) {
    yield { type: 'status', text: `creating a ${s.pack.name} sandbox for this run` };
    id = (await client.sandboxes.create({ pack: s.pack.name }, signal)).id;
  }
  try {
    yield { type: 'status', text: `uploading ${archive.size} bytes into ${id}:${WORKDIR}` };
    const up = await client.sandboxes.uploadArchive(id, archive, { path: WORKDIR });
    yield { type: 'status', text: `unpacked ${up.files} files (${up.bytes} bytes)` };
    yield* execEntrypoint(client, id, s, signal);
  } finally {
    if (!sandboxId) await client.sandboxes.delete(id).catch(() => undefined);
  }
}

function execEntrypoint(client: KilnClient, id: string, s: RunSettings, signal: AbortSignal): AsyncGenerator<RunEvent> {
  const cmd = fillCommand(s.pack.run.projectCommand, { entrypoint: s.entrypoint, file: s.entrypoint });
  return client.sandboxes.execStream(id, { cmd, cwd: WORKDIR, stdin: s.stdin || undefined, timeoutMs: s.timeoutMs }, signal);
}

/** Starter projects per pack: two files, so imports across files are shown from the start. */
export function starterFiles(pack: PackInfo): ProjectFile[] {
  switch (pack.name) {
    case 'python':
      return [
        { path: 'main.py', content: 'import time\nfrom helper import answer\n\nprint("thinking...", flush=True)\ntime.sleep(1)\nprint(answer())\n' },
        { path: 'helper.py', content: 'def answer():\n    return 6 * 7\n' },
      ];
    case 'node':
      return [
        { path: 'main.js', content: "const { answer } = require('./helper.js');\n\nconsole.log('thinking...');\nsetTimeout(() => console.log(answer()), 1000);\n" },
        { path: 'helper.js', content: 'exports.answer = () => 6 * 7;\n' },
      ];
    case 'go':
      return [
        { path: 'main.go', content: 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("thinking...")\n\tfmt.Println(answer())\n}\n' },
        { path: 'helper.go', content: 'package main\n\nfunc answer() int { return 6 * 7 }\n' },
        { path: 'go.mod', content: 'module example\n\ngo 1.19\n' },
      ];
    case 'shell':
      return [
        { path: 'main.sh', content: 'source ./helper.sh\necho thinking...\nsleep 1\nanswer\n' },
        { path: 'helper.sh', content: 'answer() { echo $((6 * 7)); }\n' },
      ];
    default:
      return [{ path: pack.run.fileName, content: '' }];
  }
}
