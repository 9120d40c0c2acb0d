import { spawn, type ChildProcess } from 'node:child_process';
import { nftApply, nftDeleteTable } from './nft.js';

/**
 * nftables tracing for `network trace`: a table of berth's own, `inet berth-trace`, whose chains
 * set `meta nftrace` on the probe's packets only (matched by address, protocol and port), and
 * `nft monitor` reading the trace events. nftrace does not survive a move between namespaces
 * (the kernel scrubs it on a veth), so each namespace the packet crosses gets the table and a
 * monitor of its own. Nothing else is touched: the chains only mark and accept.
 */
export const TRACE_TABLE = 'berth-trace';

export type TraceHook = 'prerouting' | 'output' | 'input' | 'forward' | 'postrouting';

/** The table: `mark` chains set nftrace for the match; `watch` chains are empty and only show the hook was passed. */
export function traceTableScript(match: string, mark: TraceHook[], watch: TraceHook[] = []): string {
  const chain = (hook: TraceHook, rule: string) => [`  chain ${hook} {`, `    type filter hook ${hook} priority -350; policy accept;`, ...(rule ? [`    ${rule}`] : []), '  }'];
  return [
    // Replaces a table a killed trace left, in the same transaction.
    `table inet ${TRACE_TABLE}`,
    `delete table inet ${TRACE_TABLE}`,
    `table inet ${TRACE_TABLE} {`,
    ...mark.flatMap((h) => chain(h, `${match} meta nftrace set 1`)),
    ...watch.filter((h) => !mark.includes(h)).flatMap((h) => chain(h, '')),
    '}',
  ].join('\n') + '\n';
}

export function applyTraceTable(script: string, netns?: string): Promise<void> {
  return nftApply(script, netns ? { netns } : {});
}

export function deleteTraceTable(netns?: string): Promise<void> {
  return nftDeleteTable('inet', TRACE_TABLE, netns);
}

/**
 * `nft monitor` in berthd's namespace or another, bounded by `timeout` so that it ends by itself
 * even if berthd is killed while a trace runs. It reports ruleset events as well as traces: the
 * trace table's own creation, seen after the monitor started, proves it is listening.
 */
export class TraceMonitor {
  readonly lines: string[] = [];
  private readonly child: ChildProcess;
  private partial = '';
  private readonly exited: Promise<void>;

  constructor(readonly netns: string | undefined, maxSeconds = 30) {
    // nft buffers its output when it is not a terminal: line buffering makes each event arrive as it happens.
    const argv = ['timeout', String(maxSeconds), 'stdbuf', '-oL', 'nft', 'monitor'];
    this.child = netns ? spawn('nsenter', [`--net=${netns}`, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => {
      const text = this.partial + d.toString();
      const parts = text.split('\n');
      this.partial = parts.pop() ?? '';
      this.lines.push(...parts);
    });
    this.child.stderr!.on('data', (d: Buffer) => { this.lines.push(`# ${d.toString().trim()}`); });
    this.exited = new Promise((r) => this.child.once('close', () => r()));
  }

  /** Resolves once a line matches, rejects after `ms` or when the monitor ends first. */
  async waitFor(test: (l: string) => boolean, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    let ended = false;
    void this.exited.then(() => { ended = true; });
    while (!this.lines.some(test)) {
      if (ended) throw new Error(`nft monitor ended: ${this.lines.slice(-3).join(' | ')}`);
      if (Date.now() > deadline) throw new Error(`nft monitor${this.netns ? ` in ${this.netns}` : ''} did not report within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<string[]> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    await this.exited;
    if (this.partial) this.lines.push(this.partial);
    return this.lines;
  }
}
