/** Runs one host networking tool (ip, nft, tc, nsenter) and fails with its own words. */
import { spawn } from 'node:child_process';

export class ToolError extends Error {
  constructor(
    readonly tool: string,
    readonly stderr: string,
  ) {
    super(`${tool}: ${stderr.trim().split('\n').slice(-3).join(' | ') || 'failed'}`);
  }
}

export function runTool(bin: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } });
    let out = '';
    let err = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
    });
    child.stderr!.on('data', (c: Buffer) => {
      err += c.toString();
    });
    child.on('error', (e) => reject(new ToolError(`${bin} ${args.slice(0, 3).join(' ')}`, e.message)));
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new ToolError(`${bin} ${args.slice(0, 3).join(' ')}`, err || `exit ${code}`))));
    if (input !== undefined) child.stdin!.end(input);
  });
}
