import { access } from 'node:fs/promises';
import { hostIp } from '../../kernel/netns.js';
import { hostNft, nftApply, nftDeleteTable, nftListJson } from '../../kernel/nft.js';
import { BadRequestError, errorMessage } from '../../util/errors.js';
import { SerialQueue } from '../../util/serial.js';
import type { NetworkRecord } from '../types.js';
import { DIRECTIONS, labelsMeet, parsePolicyLabels, type Direction } from './labels.js';
import {
  addEndpointCommands, addSetCommands, buildPolicyTable, deleteEndpointCommands, deleteSetCommands, memberCommands,
  POLICY_TABLE, selectorName, selectorsOf, type EffectiveRule, type Placement, type PolicedEndpoint, type Selector, type SetContent,
} from './rules.js';

/** An endpoint as policy sees it: who owns it (labels), where it is, how to reach its namespace. */
export interface PolicyEndpointInfo {
  containerId: string;
  containerName: string;
  labels: Record<string, string>;
  endpointId: string;
  ip: string;
  ip6?: string;
  ifname: string;
  netnsPath: string;
}

/** The narrow hook the sandbox calls: before an endpoint's interface exists, and once it is gone. */
export interface EndpointPolicy {
  joining(n: NetworkRecord, ep: PolicyEndpointInfo): Promise<void>;
  left(endpointId: string): Promise<void>;
}

export interface Known extends PolicyEndpointInfo {
  networkId: string;
  networkName: string;
  placement: Placement;
  /** Present when the endpoint is isolated in some direction. */
  policed?: PolicedEndpoint;
  /** The labels that isolate it, per direction (what `policy inspect` shows). */
  isolatedBy: Record<Direction, string[]>;
}

interface Target { placement: Placement; netnsPath?: string; sets: Map<string, { sel: Selector; refs: number }> }

const HOST = 'host';

/** What the policy service needs to know of networks: records, and where their policy lives. */
export interface PolicyNetworks {
  get(id: string): NetworkRecord | undefined;
  /** Whether berthd's namespace sees what the network's endpoints send each other (policy lives there; else in each container's namespace). */
  policyOnHost(n: NetworkRecord): boolean;
  /** The network's bridge in berthd's namespace, if berth made one (not an adopted bridge: that is the user's). */
  bridgeOf(n: NetworkRecord): string | undefined;
}

/**
 * Network policy on this host: the endpoints that live here, the selector sets their policies use
 * and the rules that enforce them (rules.ts), kept in step with every join and leave before the
 * call that made it returns. One queue orders all changes, so the kernel sees them in the order
 * the state did.
 *
 * Across hosts (docs/architecture.md, "Network policy"): an overlay's endpoints on other hosts
 * come from the cluster store through `setPeers`, which changes set members only: the selector
 * sets are the one place where where a peer lives stops mattering.
 */
export class NetworkPolicy implements EndpointPolicy {
  private readonly endpoints = new Map<string, Known>();
  /** Endpoints of other hosts (overlay): members of selector sets, never policed here. */
  private readonly peers = new Map<string, Known>();
  private readonly targets = new Map<string, Target>();
  private readonly queue = new SerialQueue();
  private readonly bridgesReady = new Set<string>();
  private brNetfilter?: boolean;

  constructor(private readonly nets: PolicyNetworks) {}

  // ---------------------------------------------------------------- the sandbox's hook

  joining(n: NetworkRecord, info: PolicyEndpointInfo): Promise<void> {
    const ep = this.describe(n, info);
    return this.queue.run(async () => {
      // Only a bridge that holds a policed endpoint needs its bridged traffic seen by the IP hooks.
      if (ep.placement === 'host' && ep.policed) await this.bridgeNetfilter(n, true);
      this.endpoints.set(ep.endpointId, ep);
      try {
        await this.applyJoin(ep);
      } catch (e) {
        // Whatever part of the change reached the kernel, the whole state is written again without it.
        this.endpoints.delete(ep.endpointId);
        this.rebuildTargets();
        await this.applyAll().catch((e2: Error) => console.error(`berthd: network policy rebuild: ${e2.message}`));
        throw e;
      }
    });
  }

  left(endpointId: string): Promise<void> {
    return this.queue.run(async () => {
      const ep = this.endpoints.get(endpointId);
      if (!ep) return;
      this.endpoints.delete(endpointId);
      try {
        await this.applyLeave(ep);
      } catch (e) {
        console.error(`berthd: network policy of endpoint ${endpointId.slice(0, 12)}: ${errorMessage(e)}: rebuilt`);
        this.rebuildTargets();
        await this.applyAll().catch((e2: Error) => console.error(`berthd: network policy rebuild: ${e2.message}`));
      }
    });
  }

  /** At start: the endpoints of the running containers, from their records; the kernel is rewritten whole. */
  sync(list: Array<{ n: NetworkRecord; info: PolicyEndpointInfo }>): Promise<void> {
    return this.queue.run(async () => {
      this.endpoints.clear();
      for (const { n, info } of list) {
        try {
          this.endpoints.set(info.endpointId, this.describe(n, info));
        } catch (e) {
          // Labels an older berth accepted: the container keeps running, closed rather than open.
          console.error(`berthd: network policy of ${info.containerName}: ${errorMessage(e)}`);
          const ep = this.describe(n, { ...info, labels: { 'berth.policy.isolate': 'ingress,egress' } });
          this.endpoints.set(info.endpointId, ep);
        }
      }
      this.rebuildTargets();
      for (const ep of this.endpoints.values()) if (ep.placement === 'host' && ep.policed) {
        const n = this.nets.get(ep.networkId);
        if (n) await this.bridgeNetfilter(n, true).catch((e: Error) => console.error(`berthd: ${e.message}`));
      }
      await this.applyAll();
    });
  }

  /** `berthd --cleanup`: the host's table (containers' namespaces take theirs with them). */
  async removeAll(): Promise<string[]> {
    const problems: string[] = [];
    await nftDeleteTable('inet', POLICY_TABLE).catch((e: Error) => problems.push(e.message));
    return problems;
  }

  // ---------------------------------------------------------------- cluster peers (overlay)

  /**
   * The endpoints other hosts have on a swarm network: each is a member of the selector sets it
   * matches, and nothing else (its own policy is enforced by its host). `list` is all of them, or
   * with `gone` only those that came or changed since, `gone` naming those that left: a host
   * following the store hears one endpoint at a time, and comparing every peer for each was
   * O(peers) per change. Only what differs changes the kernel, in one transaction per place.
   */
  setPeers(networkId: string, networkName: string, list: PolicyEndpointInfo[], gone?: string[]): Promise<void> {
    return this.queue.run(async () => {
      const want = new Map(list.map((i) => [i.endpointId, this.peerOf(networkId, networkName, i)]));
      const changes = new Map<string, string[]>();
      const add = (m: Map<string, string[]>) => { for (const [k, c] of m) changes.set(k, [...(changes.get(k) ?? []), ...c]); };
      const had = gone ? [...new Set([...gone, ...want.keys()])].map((id) => this.peers.get(id)).filter((ep): ep is Known => !!ep) : [...this.peers.values()];
      for (const ep of had) {
        if (ep.networkId !== networkId) continue;
        const id = ep.endpointId;
        const w = want.get(id);
        if (w && w.ip === ep.ip && w.ip6 === ep.ip6 && w.networkName === ep.networkName && sameLabels(w.labels, ep.labels)) { want.delete(id); continue; }
        this.peers.delete(id);
        add(this.memberChanges(ep, 'delete'));
      }
      for (const [id, ep] of want) {
        this.peers.set(id, ep);
        add(this.memberChanges(ep, 'add'));
      }
      for (const [key, commands] of changes) {
        await this.run(key, this.targets.get(key), commands).catch(async (e: Error) => {
          // A set already holding an address another peer had (one moved hosts) or a namespace gone: written whole.
          console.error(`berthd: network policy peers of ${networkName}: ${e.message}: rebuilt`);
          await this.applyAll();
        });
      }
    });
  }

  /** The swarm networks that have peers here. */
  peerNetworks(): string[] {
    return [...new Set([...this.peers.values()].map((p) => p.networkId))];
  }

  private peerOf(networkId: string, networkName: string, info: PolicyEndpointInfo): Known {
    return { ...info, networkId, networkName, placement: 'host', isolatedBy: { ingress: [], egress: [] } };
  }

  // ---------------------------------------------------------------- views

  /** The endpoints of one container as policy has them. */
  endpointsOf(containerId: string): Known[] {
    return [...this.endpoints.values()].filter((e) => e.containerId === containerId);
  }

  all(): Known[] {
    return [...this.endpoints.values()];
  }

  /** Every endpoint (local and peer) a selector's sets hold now. */
  membersOf(sel: Selector): Known[] {
    return [...this.endpoints.values(), ...this.peers.values()].filter((e) => matches(sel, e));
  }

  /**
   * The counters of one place's table: per chain, packets by rule tag (allows) and under "deny".
   * An endpoint whose namespace is gone has none.
   */
  async counters(ep: Known): Promise<Map<string, Map<string, number>>> {
    const out = new Map<string, Map<string, number>>();
    const json = await nftListJson('inet', POLICY_TABLE, ep.placement === 'netns' ? ep.netnsPath : undefined).catch(() => undefined);
    for (const item of (json as { nftables?: Array<Record<string, any>> } | undefined)?.nftables ?? []) {
      const rule = item.rule as { chain: string; comment?: string; expr?: Array<Record<string, any>> } | undefined;
      if (!rule?.comment || !rule.chain.startsWith(`ep_${ep.endpointId.slice(0, 16)}_`)) continue;
      const packets = (rule.expr ?? []).find((x) => x.counter)?.counter?.packets ?? 0;
      const chain = out.get(rule.chain) ?? new Map<string, number>();
      chain.set(rule.comment, (chain.get(rule.comment) ?? 0) + Number(packets));
      out.set(rule.chain, chain);
    }
    return out;
  }

  // ---------------------------------------------------------------- state

  private describe(n: NetworkRecord, info: PolicyEndpointInfo): Known {
    const own = parsePolicyLabels(info.labels);
    const net = parsePolicyLabels(n.Labels);
    const rules: EffectiveRule[] = [...own.rules.map((r) => ({ ...r, source: 'container' as const })), ...net.rules.map((r) => ({ ...r, source: 'network' as const }))];
    const isolatedBy: Record<Direction, string[]> = { ingress: [], egress: [] };
    for (const d of DIRECTIONS) {
      if (own.isolate.includes(d)) isolatedBy[d].push('berth.policy.isolate');
      if (net.isolate.includes(d)) isolatedBy[d].push(`network ${n.Name}: berth.policy.isolate`);
      for (const r of rules.filter((x) => x.direction === d)) isolatedBy[d].push(r.source === 'network' ? `network ${n.Name}: ${r.label}` : r.label);
    }
    const isolate = DIRECTIONS.filter((d) => isolatedBy[d].length);
    const placement: Placement = this.nets.policyOnHost(n) ? 'host' : 'netns';
    const ep: Known = { ...info, networkId: n.Id, networkName: n.Name, placement, isolatedBy };
    if (isolate.length) ep.policed = { endpointId: info.endpointId, ip: info.ip, ...(info.ip6 ? { ip6: info.ip6 } : {}), ifname: info.ifname, isolate, rules };
    return ep;
  }

  private targetKey(ep: Known): string {
    return ep.placement === 'host' ? HOST : ep.netnsPath;
  }

  private target(ep: Known): Target {
    const key = this.targetKey(ep);
    let t = this.targets.get(key);
    if (!t) {
      t = { placement: ep.placement, ...(ep.placement === 'netns' ? { netnsPath: ep.netnsPath } : {}), sets: new Map() };
      this.targets.set(key, t);
    }
    return t;
  }

  private rebuildTargets(): void {
    this.targets.clear();
    this.targets.set(HOST, { placement: 'host', sets: new Map() });
    for (const ep of this.endpoints.values()) {
      if (!ep.policed) continue;
      const t = this.target(ep);
      for (const sel of selectorsOf(ep.policed)) {
        const name = selectorName(sel);
        const s = t.sets.get(name) ?? { sel, refs: 0 };
        s.refs++;
        t.sets.set(name, s);
      }
    }
  }

  private setContent(name: string, sel: Selector): SetContent {
    const members = this.membersOf(sel);
    return { name, v4: members.map((m) => m.ip).filter(Boolean), v6: members.map((m) => m.ip6).filter((x): x is string => !!x) };
  }

  // ---------------------------------------------------------------- kernel

  private async run(key: string, t: Target | undefined, commands: string[]): Promise<void> {
    if (!commands.length) return;
    if (key === HOST) return hostNft.run(commands);
    await nftApply(commands.join('\n') + '\n', { netns: t?.netnsPath ?? key });
  }

  /** Member changes of one endpoint in every place whose sets select it. */
  private memberChanges(ep: Known, op: 'add' | 'delete', skip?: { key: string; names: Set<string> }): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const [key, t] of this.targets) {
      for (const [name, s] of t.sets) {
        if (skip && skip.key === key && skip.names.has(name)) continue;
        if (!ep.ip || !matches(s.sel, ep)) continue;
        out.set(key, [...(out.get(key) ?? []), ...memberCommands(op, name, ep.ip, ep.ip6)]);
      }
    }
    return out;
  }

  private async applyJoin(ep: Known): Promise<void> {
    // Into the sets that already exist, in every place that has them.
    const changes = this.memberChanges(ep, 'add');
    if (ep.policed) {
      const key = this.targetKey(ep);
      const fresh = !this.targets.has(key);
      const t = this.target(ep);
      const own: string[] = [];
      for (const sel of selectorsOf(ep.policed)) {
        const name = selectorName(sel);
        const s = t.sets.get(name);
        if (s) { s.refs++; continue; }
        t.sets.set(name, { sel, refs: 1 });
        own.push(...addSetCommands(this.setContent(name, sel)));
      }
      if (fresh && t.placement === 'netns') {
        // The namespace's first policed endpoint: its table is made whole, with the member changes.
        changes.delete(key);
        await nftApply(this.tableText(key, t), { netns: t.netnsPath! });
      } else {
        changes.set(key, [...own, ...(changes.get(key) ?? []), ...addEndpointCommands(ep.policed, t.placement)]);
      }
    }
    for (const [key, commands] of changes) await this.run(key, this.targets.get(key), commands);
  }

  private async applyLeave(ep: Known): Promise<void> {
    const key = this.targetKey(ep);
    const gone = new Set<string>();
    const own: string[] = [];
    if (ep.policed) {
      const t = this.targets.get(key);
      own.push(...deleteEndpointCommands(ep.policed, ep.placement));
      for (const sel of selectorsOf(ep.policed)) {
        const name = selectorName(sel);
        const s = t?.sets.get(name);
        if (!s) continue;
        if (--s.refs > 0) continue;
        t!.sets.delete(name);
        gone.add(name);
        own.push(...deleteSetCommands(name));
      }
    }
    const changes = this.memberChanges(ep, 'delete', { key, names: gone });
    if (ep.policed) {
      // Chains go before the sets they use; members of surviving sets with them, one transaction.
      const members = changes.get(key) ?? [];
      const t = this.targets.get(key);
      if (ep.placement === 'netns' && t && ![...this.endpoints.values()].some((e) => e.policed && this.targetKey(e) === key)) {
        this.targets.delete(key);
        changes.delete(key);
        // The last policed endpoint of a namespace: the table goes (the namespace may be going too).
        await nftDeleteTable('inet', POLICY_TABLE, ep.netnsPath).catch(() => undefined);
      } else {
        changes.set(key, [...members, ...own]);
      }
    }
    for (const [k, commands] of changes) {
      await this.run(k, this.targets.get(k), commands).catch((e: Error) => {
        // A container namespace that is already gone took its table with it.
        if (k === HOST) throw e;
      });
    }
  }

  private tableText(key: string, t: Target): string {
    const policed = [...this.endpoints.values()].filter((e) => e.policed && this.targetKey(e) === key).map((e) => e.policed!);
    const sets = [...t.sets].map(([name, s]) => this.setContent(name, s.sel));
    return buildPolicyTable(t.placement, policed, sets);
  }

  private async applyAll(): Promise<void> {
    for (const [key, t] of this.targets) {
      if (key === HOST) await nftApply(this.tableText(key, t));
      else await nftApply(this.tableText(key, t), { netns: t.netnsPath! }).catch((e: Error) => console.error(`berthd: network policy in ${key}: ${e.message}`));
    }
  }

  /**
   * Traffic between two ports of one bridge reaches the IP hooks only through br_netfilter: its
   * sysctl is the kernel's default but not a given, so berth asks for it on its own bridges
   * (the per-bridge switch, leaving other bridges as they are). A kernel without br_netfilter
   * cannot police bridged traffic: an isolated endpoint is refused rather than left open.
   */
  private async bridgeNetfilter(n: NetworkRecord, needed: boolean): Promise<void> {
    if (this.brNetfilter === undefined) this.brNetfilter = await access('/proc/sys/net/bridge/bridge-nf-call-iptables').then(() => true, () => false);
    if (!this.brNetfilter) {
      if (needed) throw new BadRequestError('network policy on bridge networks needs br_netfilter, which this kernel lacks');
      return;
    }
    // By network id: a network made again under the same bridge name gets a new bridge.
    const bridge = this.nets.bridgeOf(n);
    if (!bridge || this.bridgesReady.has(n.Id)) return;
    await hostIp.run([`link set dev ${bridge} type bridge nf_call_iptables 1 nf_call_ip6tables 1`]);
    this.bridgesReady.add(n.Id);
  }
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

function matches(sel: Selector, ep: Known): boolean {
  return (sel.network === undefined || sel.network === ep.networkName) && labelsMeet(sel.labels, ep.labels);
}
