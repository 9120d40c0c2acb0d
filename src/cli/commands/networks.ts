/** `berth network …`: ls, create, inspect, connect, disconnect, rm, prune. */
import type { Command } from 'commander';
import { CliExit, command, confirm, filtersJson, forEachTarget, type CliContext } from '../context.js';
import { NETWORK_FORMAT, networkRow, naturalLess, type NetworkResource } from '../format/contexts.js';
import { formatList } from '../format/formatter.js';
import { collect } from '../runflags.js';
import { inspectMany } from './containers.js';
import { policyCommand } from './policy.js';
import { traceCommand } from './trace.js';

export interface NetworkCreateFlags {
  driver: string;
  subnet: string[];
  ipRange: string[];
  gateway: string[];
  auxAddress: string[];
  internal?: boolean;
  attachable?: boolean;
  ipv6?: boolean;
  label: string[];
  opt: string[];
  ipamDriver: string;
  ipamOpt: string[];
}

function keyValues(list: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new CliExit(`invalid ${what} "${item}": expected key=value`, 1);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

function contains(subnet: string, ip: string): boolean {
  const [base, bits] = subnet.split('/') as [string, string];
  const toInt = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip) || !/^\d+\.\d+\.\d+\.\d+$/.test(base)) return false;
  const size = 2 ** (32 - Number(bits));
  return Math.floor(toInt(base) / size) === Math.floor(toInt(ip) / size);
}

/**
 * docker's consolidateIpam: each --ip-range, --gateway and --aux-address goes with the --subnet
 * that contains it; one that fits no subnet is an error, as is a second gateway for a subnet.
 */
export function ipamConfig(f: Pick<NetworkCreateFlags, 'subnet' | 'ipRange' | 'gateway' | 'auxAddress'>): Array<Record<string, unknown>> {
  if (f.subnet.length < f.ipRange.length) throw new CliExit('Error: multiple overlapping subnet configuration is not supported', 1);
  const configs = f.subnet.map((s) => ({ Subnet: s } as { Subnet: string; IPRange?: string; Gateway?: string; AuxiliaryAddresses?: Record<string, string> }));
  const owner = (ip: string, what: string) => {
    const base = ip.split('/')[0]!;
    const c = configs.find((x) => contains(x.Subnet, base));
    if (!c) throw new CliExit(`Error: no matching subnet for ${what} ${ip}`, 1);
    return c;
  };
  for (const r of f.ipRange) {
    const c = owner(r, 'range');
    if (c.IPRange) throw new CliExit(`Error: cannot configure multiple ranges (${r}, ${c.IPRange}) on the same subnet (${c.Subnet})`, 1);
    c.IPRange = r;
  }
  for (const g of f.gateway) {
    const c = owner(g, 'gateway');
    if (c.Gateway) throw new CliExit(`Error: cannot configure multiple gateways (${g}, ${c.Gateway}) for the same subnet (${c.Subnet})`, 1);
    c.Gateway = g;
  }
  for (const [name, ip] of Object.entries(keyValues(f.auxAddress, 'aux-address'))) {
    const c = owner(ip, 'aux-address');
    (c.AuxiliaryAddresses ??= {})[name] = ip;
  }
  return configs;
}

export function networkCreateBody(name: string, f: NetworkCreateFlags): Record<string, unknown> {
  return {
    Name: name,
    CheckDuplicate: true,
    Driver: f.driver,
    Internal: Boolean(f.internal),
    Attachable: Boolean(f.attachable),
    EnableIPv6: Boolean(f.ipv6),
    IPAM: { Driver: f.ipamDriver, Config: ipamConfig(f), Options: keyValues(f.ipamOpt, 'ipam-opt') },
    Options: keyValues(f.opt, 'option'),
    Labels: keyValues(f.label.map((l) => (l.includes('=') ? l : `${l}=`)), 'label'),
  };
}

export function networkCommands(program: Command, ctx: CliContext): void {
  const network = command('network', 'Manage networks');

  network.addCommand(command('ls', 'List networks').aliases(['list'])
    .option('-f, --filter <filter>', 'Provide filter values (e.g. "driver=bridge")', collect, [])
    .option('--format <string>', 'Pretty-print networks using a Go template')
    .option('-q, --quiet', 'Only display network IDs')
    .option('--no-trunc', 'Do not truncate the output')
    .action(async (opts: { filter: string[]; format?: string; quiet?: boolean; trunc: boolean }) => {
      const list = await ctx.client().json<NetworkResource[]>('GET', '/networks', { query: { filters: filtersJson(opts.filter) } });
      list.sort((a, b) => (naturalLess(a.Name, b.Name) ? -1 : naturalLess(b.Name, a.Name) ? 1 : 0));
      process.stdout.write(formatList(opts.format, list.map((n) => networkRow(n, opts.trunc)), NETWORK_FORMAT, Boolean(opts.quiet)));
    }));

  network.addCommand(command('create', 'Create a network')
    .option('-d, --driver <string>', 'Driver to manage the Network', 'bridge')
    .option('--subnet <string>', 'Subnet in CIDR format that represents a network segment', collect, [])
    .option('--ip-range <string>', 'Allocate container ip from a sub-range', collect, [])
    .option('--gateway <string>', 'IPv4 or IPv6 Gateway for the master subnet', collect, [])
    .option('--aux-address <map>', 'Auxiliary IPv4 or IPv6 addresses used by Network driver', collect, [])
    .option('--internal', 'Restrict external access to the network')
    .option('--attachable', 'Enable manual container attachment')
    .option('--ipv6', 'Enable IPv6 networking')
    .option('--label <list>', 'Set metadata on a network', collect, [])
    .option('-o, --opt <map>', 'Set driver specific options', collect, [])
    .option('--ipam-driver <string>', 'IP Address Management Driver', 'default')
    .option('--ipam-opt <map>', 'Set IPAM driver specific options', collect, [])
    .argument('<name>')
    .action(async (name: string, flags: NetworkCreateFlags) => {
      const r = await ctx.client().json<{ Id: string; Warning?: string }>('POST', '/networks/create', { body: networkCreateBody(name, flags) });
      if (r.Warning) process.stderr.write(`WARNING: ${r.Warning}\n`);
      process.stdout.write(`${r.Id}\n`);
    }));

  network.addCommand(command('inspect', 'Display detailed information on one or more networks')
    .option('-f, --format <string>', 'Format the output using the given Go template')
    .option('-v, --verbose', 'Verbose output for diagnostics')
    .argument('<network...>')
    .action(async (targets: string[], opts: { format?: string }) => {
      await inspectMany(targets, opts.format, (t) => ctx.client().json('GET', `/networks/${encodeURIComponent(t)}`), 'network');
    }));

  network.addCommand(command('connect', 'Connect a container to a network')
    .option('--ip <string>', 'IPv4 address (e.g., 172.30.100.104)')
    .option('--ip6 <string>', 'IPv6 address (e.g., 2001:db8::33)')
    .option('--alias <strings>', 'Add network-scoped alias for the container', collect, [])
    .option('--link <list>', 'Add link to another container', collect, [])
    .argument('<network>').argument('<container>')
    .action(async (net: string, container: string, opts: { ip?: string; ip6?: string; alias: string[]; link: string[] }) => {
      const ipam = opts.ip || opts.ip6 ? { IPv4Address: opts.ip ?? '', IPv6Address: opts.ip6 ?? '' } : null;
      await ctx.client().raw('POST', `/networks/${encodeURIComponent(net)}/connect`, {
        body: { Container: container, EndpointConfig: { IPAMConfig: ipam, Aliases: opts.alias.length ? opts.alias : null, Links: opts.link.length ? opts.link : null } },
      });
    }));

  network.addCommand(command('disconnect', 'Disconnect a container from a network')
    .option('-f, --force', 'Force the container to disconnect from a network')
    .argument('<network>').argument('<container>')
    .action(async (net: string, container: string, opts: { force?: boolean }) => {
      await ctx.client().raw('POST', `/networks/${encodeURIComponent(net)}/disconnect`, { body: { Container: container, Force: Boolean(opts.force) } });
    }));

  network.addCommand(command('rm', 'Remove one or more networks').aliases(['remove'])
    .argument('<network...>')
    .action(async (targets: string[]) => {
      await forEachTarget(targets, async (n) => { await ctx.client().raw('DELETE', `/networks/${encodeURIComponent(n)}`); return n; });
    }));

  network.addCommand(command('prune', 'Remove all unused networks')
    .option('-f, --force', 'Do not prompt for confirmation')
    .option('--filter <filter>', 'Provide filter values (e.g. "until=<timestamp>")', collect, [])
    .action(async (opts: { force?: boolean; filter: string[] }) => {
      if (!opts.force && !(await confirm('WARNING! This will remove all custom networks not used by at least one container.'))) return;
      const r = await ctx.client().json<{ NetworksDeleted: string[] | null }>('POST', '/networks/prune', { query: { filters: filtersJson(opts.filter) } });
      if (r.NetworksDeleted?.length) process.stdout.write(`Deleted Networks:\n${r.NetworksDeleted.join('\n')}\n`);
    }));

  network.addCommand(policyCommand(ctx));
  network.addCommand(traceCommand(ctx));

  program.addCommand(network);
}
