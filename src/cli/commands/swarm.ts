/** `berth swarm …` and `berth node …`: the swarm commands of the docker CLI, with its words. */
import type { Command } from 'commander';
import { CliExit, command, filtersJson, forEachTarget, type CliContext } from '../context.js';
import { formatList } from '../format/formatter.js';
import { parseGoDuration } from '../format/human.js';
import { Struct } from '../gotemplate.js';
import { collect } from '../runflags.js';
import { inspectMany } from './containers.js';

interface SwarmInfo { NodeID: string; NodeAddr: string; ControlAvailable: boolean; RemoteManagers: Array<{ NodeID: string; Addr: string }> | null }
interface NodeJson {
  ID: string; Version: { Index: number };
  Spec: { Name?: string; Labels: Record<string, string>; Role: string; Availability: string };
  Description: { Hostname: string; Engine: { EngineVersion: string } };
  Status: { State: string };
  ManagerStatus?: { Leader?: boolean; Reachability: string };
}

export const title = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

interface TlsInfo { TrustRoot: string; CertIssuerSubject: string; CertIssuerPublicKey: string }
interface SwarmJson { Version: { Index: number }; Spec: { CAConfig?: Record<string, unknown>; Dispatcher?: Record<string, unknown>; Orchestration?: Record<string, unknown>; Raft?: Record<string, unknown> } & Record<string, unknown>; TLSInfo: TlsInfo; RootRotationInProgress: boolean }

/** A Go duration flag ("2160h", "90m") in nanoseconds, as the docker CLI sends it. */
export function durationNs(flag: string) {
  return (v: string): number => {
    const ms = parseGoDuration(v);
    if (ms === undefined) throw new CliExit(`invalid argument "${v}" for "--${flag}" flag: time: invalid duration "${v}"`, 125);
    return Math.round(ms * 1e6);
  };
}

/**
 * docker's progress.RootRotationProgress: a rotation is done when no rotation is under way, every
 * node's certificate comes from the root and every node trusts the root alone.
 */
function rotationProgress(s: SwarmJson, nodes: Array<{ Description: { TLSInfo?: TlsInfo } }>): { certs: number; roots: number; total: number; done: boolean } {
  const certs = nodes.filter((n) => n.Description.TLSInfo?.CertIssuerPublicKey === s.TLSInfo.CertIssuerPublicKey && n.Description.TLSInfo?.CertIssuerSubject === s.TLSInfo.CertIssuerSubject).length;
  const roots = nodes.filter((n) => n.Description.TLSInfo?.TrustRoot === s.TLSInfo.TrustRoot).length;
  const settled = certs === nodes.length && !s.RootRotationInProgress;
  return { certs, roots: settled ? roots : 0, total: nodes.length, done: settled && roots === nodes.length };
}

const NODE_FORMAT = {
  table: 'table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}',
  headers: { ID: 'ID', Self: '', Hostname: 'HOSTNAME', Status: 'STATUS', Availability: 'AVAILABILITY', ManagerStatus: 'MANAGER STATUS', EngineVersion: 'ENGINE VERSION', TLSStatus: 'TLS STATUS' },
  quiet: '{{.ID}}',
};

function nodeRow(n: NodeJson, self: string): Struct {
  return new Struct('*formatter.nodeContext', {
    ID: () => n.ID, Self: () => n.ID === self, Hostname: () => n.Description.Hostname,
    Status: () => title(n.Status.State), Availability: () => title(n.Spec.Availability),
    ManagerStatus: () => (n.ManagerStatus ? (n.ManagerStatus.Leader ? 'Leader' : title(n.ManagerStatus.Reachability)) : ''),
    EngineVersion: () => n.Description.Engine.EngineVersion, TLSStatus: () => 'Ready',
  });
}

export function swarmCommands(program: Command, ctx: CliContext): void {
  const info = async () => (await ctx.client().json<{ Swarm: SwarmInfo }>('GET', '/info')).Swarm;
  /** What docker prints for a token: the join command with this manager's address. */
  const printToken = async (role: 'worker' | 'manager', quiet: boolean) => {
    const swarm = await ctx.client().json<{ JoinTokens: { Worker: string; Manager: string } }>('GET', '/swarm');
    const token = role === 'worker' ? swarm.JoinTokens.Worker : swarm.JoinTokens.Manager;
    if (quiet) return void process.stdout.write(`${token}\n`);
    const i = await info();
    const addr = i.RemoteManagers?.find((m) => m.NodeID === i.NodeID)?.Addr ?? `${i.NodeAddr}:2377`;
    process.stdout.write(`To add a ${role} to this swarm, run the following command:\n\n    berth swarm join --token ${token} ${addr}\n\n`);
  };

  const swarm = command('swarm', 'Manage Swarm');
  swarm.addCommand(command('init', 'Initialize a swarm')
    .option('--advertise-addr <string>', 'Advertised address (format: <ip|interface>[:port])')
    .option('--listen-addr <string>', 'Listen address (format: <ip|interface>[:port])', '0.0.0.0:2377')
    .option('--data-path-addr <string>', 'Address or interface to use for data path traffic (format: <ip|interface>)')
    .option('--data-path-port <port>', 'Port number to use for data path traffic (1024 - 49151)', (v: string) => Number(v), 0)
    .option('--default-addr-pool <list>', 'default address pool in CIDR format', collect, [])
    .option('--default-addr-pool-mask-length <n>', 'default address pool subnet mask length', (v: string) => Number(v), 24)
    .option('--cert-expiry <duration>', 'Validity period for node certificates (ns|us|ms|s|m|h)', durationNs('cert-expiry'), 7_776_000_000_000_000)
    .option('--force-new-cluster', 'Force create a new cluster from current state')
    .action(async (o: { advertiseAddr?: string; listenAddr: string; dataPathAddr?: string; dataPathPort: number; defaultAddrPool: string[]; defaultAddrPoolMaskLength: number; certExpiry: number; forceNewCluster?: boolean }) => {
      const id = await ctx.client().json<string>('POST', '/swarm/init', { body: {
        ListenAddr: o.listenAddr, AdvertiseAddr: o.advertiseAddr ?? '', DataPathAddr: o.dataPathAddr ?? '', DataPathPort: o.dataPathPort,
        DefaultAddrPool: o.defaultAddrPool, SubnetSize: o.defaultAddrPoolMaskLength, ForceNewCluster: Boolean(o.forceNewCluster),
        Spec: { CAConfig: { NodeCertExpiry: o.certExpiry } },
      } });
      process.stdout.write(`Swarm initialized: current node (${id}) is now a manager.\n\n`);
      await printToken('worker', false);
      process.stdout.write("To add a manager to this swarm, run 'berth swarm join-token manager' and follow the instructions.\n\n");
    }));
  swarm.addCommand(command('join', 'Join a swarm as a node and/or manager')
    .requiredOption('--token <string>', 'Token for entry into the swarm')
    .option('--advertise-addr <string>', 'Advertised address (format: <ip|interface>[:port])')
    .option('--listen-addr <string>', 'Listen address (format: <ip|interface>[:port])', '0.0.0.0:2377')
    .option('--data-path-addr <string>', 'Address or interface to use for data path traffic')
    .argument('<host:port>')
    .action(async (remote: string, o: { token: string; advertiseAddr?: string; listenAddr: string; dataPathAddr?: string }) => {
      await ctx.client().raw('POST', '/swarm/join', { body: { JoinToken: o.token, RemoteAddrs: [remote], ListenAddr: o.listenAddr, AdvertiseAddr: o.advertiseAddr ?? '', DataPathAddr: o.dataPathAddr ?? '' } });
      process.stdout.write(`This node joined a swarm as a ${(await info()).ControlAvailable ? 'manager' : 'worker'}.\n`);
    }));
  swarm.addCommand(command('join-token', 'Manage join tokens')
    .option('-q, --quiet', 'Only display token')
    .option('--rotate', 'Rotate join token')
    .argument('<worker|manager>')
    .action(async (role: string, o: { quiet?: boolean; rotate?: boolean }) => {
      if (role !== 'worker' && role !== 'manager') throw new CliExit('unknown role ' + role, 1);
      if (o.rotate) {
        const s = await ctx.client().json<{ Version: { Index: number }; Spec: unknown }>('GET', '/swarm');
        await ctx.client().raw('POST', '/swarm/update', { query: { version: s.Version.Index, [role === 'worker' ? 'rotateWorkerToken' : 'rotateManagerToken']: true }, body: s.Spec });
        if (!o.quiet) process.stdout.write(`Successfully rotated ${role} join token.\n\n`);
      }
      await printToken(role, Boolean(o.quiet));
    }));
  swarm.addCommand(command('leave', 'Leave the swarm')
    .option('-f, --force', 'Force this node to leave the swarm, ignoring warnings')
    .action(async (o: { force?: boolean }) => {
      await ctx.client().raw('POST', '/swarm/leave', { query: { force: Boolean(o.force) } });
      process.stdout.write('Node left the swarm.\n');
    }));
  swarm.addCommand(command('update', 'Update the swarm')
    .option('--cert-expiry <duration>', 'Validity period for node certificates (ns|us|ms|s|m|h)', durationNs('cert-expiry'))
    .option('--dispatcher-heartbeat <duration>', 'Dispatcher heartbeat period (ns|us|ms|s|m|h)', durationNs('dispatcher-heartbeat'))
    .option('--task-history-limit <n>', 'Task history retention limit', (v: string) => Number(v))
    .option('--snapshot-interval <n>', 'Number of log entries between Raft snapshots', (v: string) => Number(v))
    .option('--autolock <bool>', 'Change manager autolocking setting (true|false)')
    .action(async (o: { certExpiry?: number; dispatcherHeartbeat?: number; taskHistoryLimit?: number; snapshotInterval?: number; autolock?: string }) => {
      const s = await ctx.client().json<SwarmJson>('GET', '/swarm');
      const spec = s.Spec;
      if (o.certExpiry !== undefined) spec.CAConfig = { ...spec.CAConfig, NodeCertExpiry: o.certExpiry };
      if (o.dispatcherHeartbeat !== undefined) spec.Dispatcher = { ...spec.Dispatcher, HeartbeatPeriod: o.dispatcherHeartbeat };
      if (o.taskHistoryLimit !== undefined) spec.Orchestration = { ...spec.Orchestration, TaskHistoryRetentionLimit: o.taskHistoryLimit };
      if (o.snapshotInterval !== undefined) spec.Raft = { ...spec.Raft, SnapshotInterval: o.snapshotInterval };
      if (o.autolock !== undefined) spec.EncryptionConfig = { AutoLockManagers: o.autolock === 'true' };
      await ctx.client().raw('POST', '/swarm/update', { query: { version: s.Version.Index, rotateWorkerToken: false, rotateManagerToken: false, rotateManagerUnlockKey: false }, body: spec });
      process.stdout.write('Swarm updated.\n');
    }));
  swarm.addCommand(command('ca', 'Display and rotate the root CA')
    .option('--rotate', 'Rotate the swarm CA - if no certificate or key are provided, new ones will be generated')
    .option('--ca-cert <pem-file>', 'Path to the PEM-formatted root CA certificate to use for the new cluster')
    .option('--ca-key <pem-file>', 'Path to the PEM-formatted root CA key to use for the new cluster')
    .option('--cert-expiry <duration>', 'Validity period for node certificates (ns|us|ms|s|m|h)', durationNs('cert-expiry'))
    .option('-d, --detach', 'Exit immediately instead of waiting for the root rotation to converge')
    .option('-q, --quiet', 'Suppress progress output')
    .action(async (o: { rotate?: boolean; caCert?: string; caKey?: string; certExpiry?: number; detach?: boolean; quiet?: boolean }) => {
      const c = ctx.client();
      const s = await c.json<SwarmJson>('GET', '/swarm');
      if (!o.rotate) {
        for (const [flag, set] of [['ca-cert', o.caCert], ['ca-key', o.caKey], ['cert-expiry', o.certExpiry]] as const) {
          if (set !== undefined) throw new CliExit(`\`--${flag}\` flag requires the \`--rotate\` flag to update the CA`, 1);
        }
        return void process.stdout.write(`${s.TLSInfo.TrustRoot.trim()}\n`);
      }
      const { readFile } = await import('node:fs/promises');
      const ca: Record<string, unknown> = { ...s.Spec.CAConfig };
      if (o.certExpiry !== undefined) ca.NodeCertExpiry = o.certExpiry;
      if (o.caCert || o.caKey) {
        ca.SigningCACert = o.caCert ? await readFile(o.caCert, 'utf8') : '';
        ca.SigningCAKey = o.caKey ? await readFile(o.caKey, 'utf8') : '';
      } else {
        ca.ForceRotate = Number(ca.ForceRotate ?? 0) + 1;
      }
      await c.raw('POST', '/swarm/update', { query: { version: s.Version.Index }, body: { ...s.Spec, CAConfig: ca } });
      if (o.detach) return;
      let last = '';
      for (;;) {
        const [now, nodes] = await Promise.all([c.json<SwarmJson>('GET', '/swarm'), c.json<Array<{ Description: { TLSInfo?: TlsInfo } }>>('GET', '/nodes')]);
        const p = rotationProgress(now, nodes);
        const line = `rotated TLS certificates: ${p.certs}/${p.total} nodes, rotated CA certificates: ${p.roots}/${p.total} nodes`;
        if (!o.quiet && line !== last) process.stdout.write(`${line}\n`);
        last = line;
        if (p.done) return void process.stdout.write(`${now.TLSInfo.TrustRoot.trim()}\n`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }));
  swarm.addCommand(command('unlock-key', 'Manage the unlock key')
    .option('-q, --quiet', 'Only display token')
    .action(async () => {
      const k = await ctx.client().json<{ UnlockKey: string }>('GET', '/swarm/unlockkey');
      if (!k.UnlockKey) throw new CliExit('Error: no unlock key is set', 1);
      process.stdout.write(`${k.UnlockKey}\n`);
    }));
  program.addCommand(swarm);

  const node = command('node', 'Manage Swarm nodes');
  const get = (ref: string) => ctx.client().json<NodeJson>('GET', `/nodes/${encodeURIComponent(ref)}`);
  const update = async (ref: string, change: (spec: NodeJson['Spec']) => void) => {
    const n = await get(ref);
    change(n.Spec);
    await ctx.client().raw('POST', `/nodes/${n.ID}/update`, { query: { version: n.Version.Index }, body: n.Spec });
    return n;
  };
  node.addCommand(command('ls', 'List nodes in the swarm').aliases(['list'])
    .option('-f, --filter <filter>', 'Filter output based on conditions provided', collect, [])
    .option('--format <string>', 'Pretty-print nodes using a Go template')
    .option('-q, --quiet', 'Only display IDs')
    .action(async (o: { filter: string[]; format?: string; quiet?: boolean }) => {
      const list = await ctx.client().json<NodeJson[]>('GET', '/nodes', { query: { filters: filtersJson(o.filter) } });
      const self = (await info()).NodeID;
      list.sort((a, b) => a.Description.Hostname.localeCompare(b.Description.Hostname));
      process.stdout.write(formatList(o.format, list.map((n) => nodeRow(n, self)), NODE_FORMAT, Boolean(o.quiet)));
    }));
  node.addCommand(command('inspect', 'Display detailed information on one or more nodes')
    .option('-f, --format <string>', 'Format the output using the given Go template')
    .argument('<self|node...>')
    .action(async (refs: string[], o: { format?: string }) => {
      const self = refs.includes('self') ? (await info()).NodeID : '';
      await inspectMany(refs.map((r) => (r === 'self' ? self : r)), o.format, (r) => get(r), 'node');
    }));
  node.addCommand(command('update', 'Update a node')
    .option('--availability <state>', 'Availability of the node ("active"|"pause"|"drain")')
    .option('--role <role>', 'Role of the node ("worker"|"manager")')
    .option('--label-add <list>', 'Add or update a node label (key=value)', collect, [])
    .option('--label-rm <list>', 'Remove a node label if exists', collect, [])
    .argument('<node>')
    .action(async (ref: string, o: { availability?: string; role?: string; labelAdd: string[]; labelRm: string[] }) => {
      await update(ref, (s) => {
        if (o.availability) s.Availability = o.availability;
        if (o.role) s.Role = o.role;
        s.Labels ??= {};
        for (const l of o.labelAdd) { const i = l.indexOf('='); s.Labels[i < 0 ? l : l.slice(0, i)] = i < 0 ? '' : l.slice(i + 1); }
        for (const l of o.labelRm) delete s.Labels[l];
      });
      process.stdout.write(`${ref}\n`);
    }));
  for (const [verb, role, said] of [['promote', 'manager', 'promoted to a manager in the swarm'], ['demote', 'worker', 'demoted in the swarm']] as const) {
    node.addCommand(command(verb, `${verb === 'promote' ? 'Promote' : 'Demote'} one or more nodes ${verb === 'promote' ? 'to manager' : 'from manager'} in the swarm`)
      .argument('<node...>')
      .action(async (refs: string[]) => {
        await forEachTarget(refs, async (ref) => {
          const n = await get(ref);
          if (n.Spec.Role === role) return verb === 'promote' ? `Node ${ref} is already a manager.` : `Node ${ref} is already a worker.`;
          await update(ref, (s) => { s.Role = role; });
          return verb === 'promote' ? `Node ${ref} ${said}.` : `Manager ${ref} ${said}.`;
        });
      }));
  }
  node.addCommand(command('rm', 'Remove one or more nodes from the swarm').aliases(['remove'])
    .option('-f, --force', 'Force remove a node from the swarm')
    .argument('<node...>')
    .action(async (refs: string[], o: { force?: boolean }) => {
      await forEachTarget(refs, async (ref) => { await ctx.client().raw('DELETE', `/nodes/${encodeURIComponent(ref)}`, { query: { force: Boolean(o.force) } }); return ref; });
    }));
  program.addCommand(node);
}
