import { spawn, type SpawnOptions } from 'node:child_process';

export interface RunResult { code: number; stdout: string; stderr: string }

/** Runs a program to completion and collects its output. Never throws for a non-zero exit. */
export function run(cmd: string, args: string[], opts: SpawnOptions & { input?: string | Buffer } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const { input, ...spawnOpts } = opts;
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...spawnOpts });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({
      code: code ?? (signal ? 128 : 1),
      stdout: Buffer.concat(out).toString(),
      stderr: Buffer.concat(err).toString(),
    }));
    if (input !== undefined) child.stdin?.end(input);
    else child.stdin?.end();
  });
}

/** Like run(), but throws with the program's stderr when it fails. */
export async function runOk(cmd: string, args: string[], opts: SpawnOptions & { input?: string | Buffer } = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')}: ${(r.stderr || r.stdout).trim() || `exit ${r.code}`}`);
  }
  return r.stdout;
}
