/** `berth network trace A B[:PORT[/PROTO]]`: berth's POST /berth/network/trace, printed for a person. */
import type { Command } from 'commander';
import type { TraceLine } from '../../trace/model.js';
import type { TraceResult } from '../../trace/tracer.js';
import { CliExit, command, type CliContext } from '../context.js';

/** The rules of berth's tables the probe met, one line each, in the order the kernel reported them. */
function ruleLines(lines: TraceLine[]): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const l of lines) {
    if (l.kind !== 'rule' || l.table === 'berth-trace') continue;
    const text = `${l.where ?? l.netns}: ${l.family} ${l.table} ${l.chain}: ${l.text} → ${l.verdict}`;
    if (!seen.has(text) && seen.add(text)) out.push(text);
  }
  return out;
}

/** The hooks the traced packet passed, per namespace (the trace table's own chains in each). */
function hookLines(lines: TraceLine[]): string[] {
  const by = new Map<string, string[]>();
  for (const l of lines) {
    if (l.table !== 'berth-trace' || l.kind !== 'packet') continue;
    const where = l.where ?? l.netns;
    const hooks = by.get(where) ?? [];
    const dev = /(?:iif|oif) "([^"]+)"(?: (?:iif|oif) "([^"]+)")?/.exec(l.text);
    hooks.push(`${l.chain}${dev ? ` (${dev.slice(1).filter(Boolean).join(' → ')})` : ''}`);
    by.set(where, hooks);
  }
  return [...by].map(([where, hooks]) => `${where}: ${[...new Set(hooks)].join(', ')}`);
}

export function render(r: TraceResult): string {
  const p = r.plan;
  const t = p.target;
  const what = t.proto === 'icmp' ? 'ping' : `${t.port}/${t.proto}`;
  const out = [`Trace ${p.from.name} → ${t.host}${t.ip && t.ip !== t.host ? ` (${t.ip})` : ''}, ${what}${t.kind ? `: ${t.kind === 'container' ? `container ${t.container}` : t.kind === 'host' ? `the host${t.container ? `, published by ${t.container}` : ''}` : 'a host outside'}` : ''}`];
  if (p.dns) out.push('', `DNS: "${p.dns.name}" ${p.dns.addresses.length ? `→ ${p.dns.addresses.join(', ')}` : 'does not resolve'}: ${p.dns.note}`);
  if (p.hops.length) out.push('', 'Path:', ...p.hops.map((h, i) => `  ${i + 1}. ${h}`));
  if (p.nft.length) out.push('', 'nftables (model):', ...p.nft.map((n) => `  - ${n}`));
  out.push('', `Verdict: ${p.verdict === 'reachable' ? 'reachable' : 'BLOCKED'}`);
  if (p.reason) out.push(`Reason: ${p.reason.message}`, `Fix: ${p.reason.fix}`);
  if (r.dns) out.push('', `DNS probe from ${p.from.name}'s namespace: ${r.dns.result} (${r.dns.output})`);
  if (r.probe) {
    out.push('', `Probe from ${p.from.name}'s namespace: ${r.probe.kind} to ${p.probe?.ip}${p.probe?.port ? `:${p.probe.port}` : ''}: ${r.probe.result}${r.probe.output && r.probe.output !== r.probe.result ? ` (${r.probe.output.split('\n').pop()})` : ''}`);
    const hooks = hookLines(r.probe.lines);
    if (hooks.length) out.push('Hooks the packet passed (nft trace):', ...hooks.map((h) => `  ${h}`));
    const rules = ruleLines(r.probe.lines);
    out.push(rules.length ? 'Rules it met in berth\'s tables (nft trace):' : 'It met no rule of berth\'s tables.', ...rules.map((x) => `  ${x}`));
  }
  if (r.dns || r.probe) {
    out.push('', r.agrees ? 'The probe agrees with the model.' : `THE PROBE DISAGREES WITH THE MODEL: ${r.disagreement}. This is a bug in berth: please report it with this output (--format json).`);
  }
  return `${out.join('\n')}\n`;
}

export function traceCommand(ctx: CliContext): Command {
  return command('trace', 'Explain and prove the path of a packet from a container to a target')
    .argument('<container>', 'the container the packet leaves from')
    .argument('<target>', 'B[:PORT[/PROTO]]: a container, name or alias as the container resolves it, an IP, or host:PORT (a published port); no port: a ping')
    .option('--format <string>', 'json: the API\'s answer as it is')
    .option('--no-probe', 'only the model\'s explanation, no probe')
    .addHelpText('after', `
It explains the path from berth's model (name resolution, interfaces, bridge, nft chains and map
elements, NAT, network policy), then proves it: a real probe from the container's namespace with
nftables tracing in the namespaces it crosses, and says whether the two agree.

Exit status: 0 reachable, 1 blocked (the reason and fix are printed), 3 the probe disagrees with the model.

Examples:
  berth network trace web db:5432
  berth network trace web host:8080
  berth network trace web 10.0.0.1:53/udp`)
    .action(async (from: string, to: string, opts: { format?: string; probe: boolean }) => {
      const r = await ctx.client().json<TraceResult>('POST', '/berth/network/trace', { body: { From: from, To: to, Probe: opts.probe } });
      process.stdout.write(opts.format === 'json' ? `${JSON.stringify(r, null, 2)}\n` : render(r));
      if (!r.agrees) throw new CliExit('', 3);
      if (r.plan.verdict !== 'reachable') throw new CliExit('', 1);
    });
}
