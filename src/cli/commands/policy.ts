/** `berth network policy …`: the effective network policy of containers (berth's /berth/policy routes). */
import type { Command } from 'commander';
import type { DirectionView, EndpointPolicyView } from '../../api/views/policy.js';
import { command, type CliContext } from '../context.js';
import { tabwrite } from '../format/table.js';

interface ContainerPolicy { Id: string; Name: string; Endpoints: EndpointPolicyView[] }

function summary(d: DirectionView): string {
  if (!d.Isolated) return 'open';
  return d.Rules.length ? `${d.Rules.length} rule${d.Rules.length > 1 ? 's' : ''}` : 'deny all';
}

export function policyCommand(ctx: CliContext): Command {
  const policy = command('policy', 'Show the network policy (berth.policy.* labels) in effect');

  policy.addCommand(command('ls', 'List running containers\' endpoints and their policy').aliases(['list'])
    .option('--format <string>', 'json: the API\'s answer as it is')
    .action(async (opts: { format?: string }) => {
      const list = await ctx.client().json<ContainerPolicy[]>('GET', '/berth/policy');
      if (opts.format === 'json') return void process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
      const rows = ['CONTAINER\tNETWORK\tADDRESS\tINGRESS\tEGRESS\tDENIED IN/OUT'];
      for (const c of list) {
        for (const e of c.Endpoints) rows.push([c.Name, e.Network, e.IPAddress, summary(e.Ingress), summary(e.Egress), `${e.Ingress.Denied}/${e.Egress.Denied}`].join('\t'));
      }
      process.stdout.write(tabwrite(`${rows.join('\n')}\n`));
    }));

  policy.addCommand(command('inspect', 'Show what a container may reach, what may reach it, and which label granted it')
    .option('--format <string>', 'json: the API\'s answer as it is')
    .argument('<container>')
    .action(async (ref: string, opts: { format?: string }) => {
      const c = await ctx.client().json<ContainerPolicy & { Running: boolean }>('GET', `/berth/policy/${encodeURIComponent(ref)}`);
      if (opts.format === 'json') return void process.stdout.write(`${JSON.stringify(c, null, 2)}\n`);
      const out: string[] = [`Container: ${c.Name} (${c.Id.slice(0, 12)})${c.Running ? '' : ', not running: no policy in effect'}`];
      for (const e of c.Endpoints) {
        out.push('', `Network ${e.Network}, ${e.IPAddress}${e.IPv6Address ? ` ${e.IPv6Address}` : ''} (rules in the ${e.EnforcedIn === 'host' ? 'host\'s' : 'container\'s'} namespace)`);
        for (const [title, d, way] of [['May be reached by', e.Ingress, 'from'], ['May reach', e.Egress, 'to']] as const) {
          if (!d.Isolated) {
            out.push(`  ${title}: anyone (not isolated ${way === 'from' ? 'for ingress' : 'for egress'})`);
            continue;
          }
          out.push(`  ${title} (isolated by ${d.IsolatedBy.join(', ')}; ${d.Denied} packets denied):`);
          if (!d.Rules.length) out.push('    nobody');
          for (const r of d.Rules) {
            out.push(`    ${r.Peer} on ${r.Ports} (granted by ${r.Source === 'network' ? 'network label ' : ''}${r.Label}; ${r.Matched} connections)`);
            for (const p of r.Peers) out.push(`      ${p}`);
          }
        }
      }
      process.stdout.write(`${out.join('\n')}\n`);
    }));
  return policy;
}
