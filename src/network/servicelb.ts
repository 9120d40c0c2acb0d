import { dropUdpFlowsTo } from '../kernel/conntrack.js';
import { nftApply } from '../kernel/nft.js';
import { errorMessage } from '../util/errors.js';

/** One service address as a sandbox balances it: its VIP and the addresses of its running tasks. */
export interface VipEntry { service: string; vip: string; backends: string[] }

export const LB_TABLE = 'berth_svc';

/**
 * The balancer table of one container's namespace, as nft text (pure, unit-tested). As Docker
 * balances in each container's sandbox (IPVS there), so replies come back to the same namespace
 * whatever host the backend is on: the nat `output` hook sends a new connection to a VIP through a
 * verdict map (one element per VIP, so a service added is one element) to the service's chain,
 * which picks a backend with `numgen random mod N` and DNATs to it (kube-proxy's nftables mode,
 * without its masquerade: the client's own address is the source, the backend answers it
 * directly). A VIP with no running task is rejected at once in a filter chain (a nat chain cannot
 * reject) instead of leaving the client waiting. The port is kept: a VIP balances every port, as
 * Docker's does.
 */
export function lbTable(entries: VipEntry[]): string {
  const sorted = [...entries].sort((a, b) => a.vip.localeCompare(b.vip));
  const chain = (e: VipEntry) => `svc_${e.service.slice(0, 12)}`;
  const live = sorted.filter((e) => e.backends.length);
  const empty = sorted.filter((e) => !e.backends.length);
  const lines = [
    `table ip ${LB_TABLE} {`,
    '  map vips {',
    '    type ipv4_addr : verdict',
    ...(live.length ? [`    elements = { ${live.map((e) => `${e.vip} : goto ${chain(e)}`).join(', ')} }`] : []),
    '  }',
    '  set empty {',
    '    type ipv4_addr',
    ...(empty.length ? [`    elements = { ${empty.map((e) => e.vip).join(', ')} }`] : []),
    '  }',
    '  chain out {',
    '    type nat hook output priority -100; policy accept;',
    '    ip daddr vmap @vips',
    '  }',
    '  chain reject_empty {',
    '    type filter hook output priority 0; policy accept;',
    '    ip daddr @empty meta l4proto tcp reject with tcp reset',
    '    ip daddr @empty reject',
    '  }',
  ];
  for (const e of live) {
    const backends = [...e.backends].sort();
    lines.push(`  chain ${chain(e)} {`);
    if (backends.length === 1) lines.push(`    dnat to ${backends[0]}`);
    else lines.push(`    numgen random mod ${backends.length} vmap { ${backends.map((_, i) => `${i} : goto ${chain(e)}_${i}`).join(', ')} }`);
    lines.push('  }');
    if (backends.length > 1) backends.forEach((b, i) => lines.push(`  chain ${chain(e)}_${i} {`, `    dnat to ${b}`, '  }'));
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

/**
 * The balancer tables of this host's sandboxes, each rewritten whole in one transaction when what
 * it should hold changed (`table; delete table; table {…}`: connections keep their conntrack
 * entries, new ones see the new backends). A namespace takes its table with it when it goes.
 */
export class ServiceBalancers {
  private readonly applied = new Map<string, { netns: string; text: string; backends: Set<string> }>();
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly log: (m: string) => void) {}

  /** Makes these sandboxes' tables agree with `want` (container id → namespace and entries); forgets sandboxes not listed when `all`. */
  sync(want: Map<string, { netns: string; entries: VipEntry[] }>, all: boolean): Promise<void> {
    const step = this.queue.then(async () => {
      if (all) for (const id of [...this.applied.keys()]) if (!want.has(id)) this.applied.delete(id);
      await Promise.all([...want].map(async ([id, w]) => {
        const text = w.entries.length ? lbTable(w.entries) : '';
        const had = this.applied.get(id);
        if (had && had.netns === w.netns && had.text === text) return;
        if (!had && !text) return;
        const script = text ? `table ip ${LB_TABLE}\ndelete table ip ${LB_TABLE}\n${text}` : `table ip ${LB_TABLE}\ndelete table ip ${LB_TABLE}\n`;
        const backends = new Set(w.entries.flatMap((e) => e.backends));
        try {
          await nftApply(script, { netns: w.netns });
          this.applied.set(id, { netns: w.netns, text, backends });
          // New datagrams of a flow to a backend that left would still go to it: its flows go too.
          for (const ip of had?.netns === w.netns ? had.backends : []) {
            if (!backends.has(ip)) await dropUdpFlowsTo(ip, w.netns).catch((e: Error) => this.log(`services: ${id.slice(0, 12)}: ${e.message}`));
          }
        } catch (e) {
          // The namespace went meanwhile (the container stopped): nothing to balance there.
          this.applied.delete(id);
          this.log(`services: balancer of ${id.slice(0, 12)}: ${errorMessage(e)}`);
        }
      }));
    });
    this.queue = step.catch(() => undefined);
    return step;
  }
}
