import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EndpointState, PortMapping, SandboxRef, SandboxSpec, SandboxState } from '../model/network.js';
import { BadRequestError, errorMessage } from '../util/errors.js';
import { macFor } from './mac.js';
import { planEndpoints, releaseLeases, type Plan } from './sandboxplan.js';
import { AddressTakenError, type JoinResult } from './driver.js';
import { Steps } from '../util/steps.js';
import { ownsNamespace, publishTarget, usesEmbeddedDns } from './endpoints.js';
import type { Firewall } from './firewallapi.js';
import { cloneEndpoints, entryOf, journalFromRef, JournalStore, type JournalEndpoint, type SandboxJournal } from './journal.js';
import { OPT_HOST_BINDING } from './options.js';
import { requestedPorts, requestsOf, type PortMapper } from './portmapper.js';
import { PREFIX as POLICY_PREFIX } from './policy/labels.js';
import type { NamespaceOps } from './namespaces.js';
import type { EndpointPolicy } from './policy/policy.js';
import type { NetworkRegistry } from './registry.js';
import type { Resolver } from './resolver.js';
import { SandboxDns } from './sandboxdns.js';
import { etcFilesIn, sandboxResolvConf, writeSandboxFiles } from './sandboxfiles.js';
import type { NetworkRecord } from './types.js';

export interface SandboxDeps {
  registry: NetworkRegistry;
  firewall: Firewall;
  ports: PortMapper;
  namespaces: NamespaceOps;
  /** Where namespaces are pinned, and where journals are kept. */
  netnsDir: string;
  journalDir: string;
  hostResolvConf?: string;
  /** Network policy, told of each endpoint before its interface exists and after it is gone. */
  policy?: EndpointPolicy;
}

/**
 * A container's network sandbox, as libnetwork means it: its namespace, the order in which
 * endpoints join and leave it, its resolver, its published ports and its /etc files. Everything it
 * makes is written to its journal before it is made, so a crash at any moment leaves only what the
 * next start finds and removes (`recover`) or keeps (`adopt`).
 */
export class Sandboxes {
  private readonly journals: JournalStore;
  private readonly dns: SandboxDns;
  /** Running sandboxes found at start, whose resolvers must be opened again once the resolver is attached. */
  private adopted: Array<{ id: string; netnsPath: string; endpoints: Record<string, EndpointState> }> = [];

  constructor(private readonly d: SandboxDeps) {
    this.journals = new JournalStore(d.journalDir);
    this.dns = new SandboxDns(d.registry, (path, port, fresh) => d.namespaces.redirectResolver(path, port, fresh));
  }

  load(): Promise<void> {
    return this.journals.load();
  }

  // ---------------------------------------------------------------- set up and tear down

  async setUp(spec: SandboxSpec, sharedWith?: { netnsPath: string; etcDir: string }): Promise<SandboxState> {
    if (spec.mode === 'host') {
      const etcFiles = await writeSandboxFiles(spec, { addresses: [], shareHostNetwork: true, embeddedDns: false, ...this.resolvConfSource() });
      return { endpoints: {}, published: [], etcFiles };
    }
    if (spec.mode.startsWith('container:')) {
      if (!sharedWith?.netnsPath) throw Object.assign(new Error(`cannot join network of a non running container: ${spec.mode.slice(10)}`), { status: 409 });
      return { netnsPath: sharedWith.netnsPath, endpoints: {}, published: [], etcFiles: etcFilesIn(sharedWith.etcDir) };
    }
    const path = join(this.d.netnsDir, spec.id.slice(0, 12));
    const endpoints = cloneEndpoints(spec.endpoints);
    const journal: SandboxJournal = { id: spec.id, netnsPath: path, endpoints: [] };
    const plans = await planEndpoints(this.d.registry, endpoints, journal, 0);
    let saved: Promise<void>;
    try {
      // The journal names the namespace and every address before the kernel sees any of it.
      ({ saved } = await this.persist(journal, plans.map((p) => p.n)));
    } catch (e) {
      await releaseLeases(this.d.registry, plans);
      await this.journals.remove(spec.id).catch(() => undefined);
      throw e;
    }
    try {
      await this.d.namespaces.create(path);
      for (const p of plans) await this.join(spec, path, p);
      await this.dns.program(spec.id, path, endpoints, true);
      const published = await this.publish(spec, endpoints);
      const etcFiles = await writeSandboxFiles(spec, {
        addresses: Object.values(endpoints).flatMap((e) => [e.IPAddress, e.GlobalIPv6Address ?? '']).filter(Boolean),
        shareHostNetwork: false, embeddedDns: usesEmbeddedDns(this.d.registry, endpoints), ...this.resolvConfSource(),
      });
      await saved;
      return { netnsPath: path, endpoints, published, etcFiles };
    } catch (e) {
      await saved.catch(() => undefined);
      await this.tearDown({ id: spec.id, mode: spec.mode, netnsPath: path, endpoints, published: [] }).catch(() => undefined);
      throw e;
    }
  }

  /** Frees everything the sandbox holds, following its journal. Safe to call twice; collects errors instead of stopping. */
  async tearDown(ref: SandboxRef): Promise<void> {
    const errors: string[] = [];
    await this.d.ports.unpublish(ref.id).catch((e: Error) => errors.push(e.message));
    this.dns.close(ref.id, true);
    if (!ownsNamespace(ref.mode)) return void (await this.journals.remove(ref.id));
    const journal = this.journalOf(ref);
    // The record may name an endpoint the journal already dropped (a crash between the two writes).
    for (const extra of journalFromRef(ref)?.endpoints ?? []) {
      if (!journal.endpoints.some((e) => e.endpointId === extra.endpointId)) journal.endpoints.push(extra);
    }
    if (!journal.netnsPath) return void (await this.journals.remove(ref.id));
    // Interfaces go before their namespace: the kernel frees a dead namespace's interfaces late,
    // and meanwhile a macvlan child stays on the parent's wire with its address and MAC, and a
    // veth's host end on its bridge, visible to the host.
    // The journal names them all until it goes: a crash halfway is a sandbox the next start
    // removes. The networks' records are written while the namespace goes.
    const pinned = await this.d.namespaces.exists(journal.netnsPath);
    const saving: Array<Promise<void>> = [];
    for (const entry of [...journal.endpoints]) {
      await this.removeEndpoint(ref.id, journal, entry, pinned, saving, 'with the journal').catch((e: Error) => errors.push(e.message));
    }
    if (pinned) await this.d.namespaces.remove(journal.netnsPath).catch((e: Error) => errors.push(e.message));
    await this.journals.remove(ref.id).catch((e: Error) => errors.push(e.message));
    for (const r of await Promise.allSettled(saving)) if (r.status === 'rejected') errors.push(errorMessage(r.reason));
    if (errors.length) throw new Error(errors.join('; '));
  }

  // ---------------------------------------------------------------- connect and disconnect

  /** A running container's new endpoint joins its sandbox now; returns the endpoint as connected. */
  async connect(spec: SandboxSpec, netnsPath: string, published: PortMapping[], n: NetworkRecord, ep: EndpointState): Promise<{ endpoint: EndpointState; published: PortMapping[] }> {
    const journal = this.journalOf({ id: spec.id, mode: spec.mode, netnsPath, endpoints: spec.endpoints, published });
    const used = new Set(Object.values(spec.endpoints).map((e) => e.ifname));
    let index = 0;
    while (used.has(`eth${index}`)) index++;
    const endpoint = { ...ep };
    const [plan] = await planEndpoints(this.d.registry, { [n.Id]: endpoint }, journal, index, Object.keys(spec.endpoints).length === 0);
    let saved: Promise<void>;
    try {
      ({ saved } = await this.persist(journal, [plan!.n]));
    } catch (e) {
      await releaseLeases(this.d.registry, [plan!]);
      throw e;
    }
    try {
      await this.join(spec, netnsPath, plan!);
      await saved;
    } catch (e) {
      await saved.catch(() => undefined);
      await this.removeEndpoint(spec.id, journal, plan!.entry, true).catch(() => undefined);
      throw e;
    }
    const endpoints = { ...spec.endpoints, [n.Id]: endpoint };
    // A container that had nowhere to publish publishes on its new endpoint; a port taken meanwhile
    // fails the connect, which leaves nothing (it left the endpoint unrecorded: chaos seed 424242).
    if (!published.length) {
      published = await this.publish(spec, endpoints).catch(async (e: Error) => {
        await this.removeEndpoint(spec.id, journal, plan!.entry, true).catch(() => undefined);
        throw e;
      });
    }
    const hadDns = usesEmbeddedDns(this.d.registry, spec.endpoints, true);
    await this.dns.program(spec.id, netnsPath, endpoints);
    // Like Docker's sandbox, which starts its resolver when the first endpoint that needs one
    // joins: a container started on the default bridge learns names once it joins a user network.
    if (!hadDns && usesEmbeddedDns(this.d.registry, endpoints)) {
      await writeFile(etcFilesIn(spec.etcDir).resolvConf, await sandboxResolvConf(spec, false, true, this.d.hostResolvConf));
    }
    return { endpoint, published };
  }

  /** A running container's endpoint leaves its sandbox; published ports follow to the next endpoint, as Docker's external connectivity does. */
  async disconnect(spec: SandboxSpec, netnsPath: string, published: PortMapping[], n: NetworkRecord): Promise<{ published: PortMapping[]; saved: Promise<void> }> {
    const ep = spec.endpoints[n.Id]!;
    const journal = this.journalOf({ id: spec.id, mode: spec.mode, netnsPath, endpoints: spec.endpoints, published });
    const moving = published.some((p) => p.containerIp === ep.IPAddress || (!!ep.GlobalIPv6Address && p.containerIp === ep.GlobalIPv6Address));
    // The ports stop leading to the address before it is freed, so no later holder inherits them.
    if (moving) await this.d.ports.unpublish(spec.id);
    const entry = journal.endpoints.find((e) => e.endpointId === ep.EndpointID) ?? entryOf(n.Id, ep);
    // Marked leaving first: a crash from here on is a disconnect the next start finishes (adopt),
    // whatever the records say, so the rest (mostly the kernel's) runs while the engine writes the
    // container's record. An allocation a crash keeps in the network's record, written meanwhile
    // too, is one no journal names, which the next start frees (allocsweep.ts).
    entry.leaving = true;
    if (!journal.endpoints.includes(entry)) journal.endpoints.push(entry);
    await this.journals.write(journal);
    const saving: Array<Promise<void>> = [];
    const removed = this.removeEndpoint(spec.id, journal, entry, true, saving, 'last');
    const saved = removed.then(() => Promise.all(saving)).then(() => undefined);
    saved.catch(() => undefined);
    const remaining = { ...spec.endpoints };
    delete remaining[n.Id];
    await this.dns.program(spec.id, netnsPath, remaining);
    if (!moving) return { published, saved };
    await removed;
    const target = publishTarget(this.d.registry, remaining);
    if (!target) return { published: [], saved };
    const moved = await this.d.ports.publish(spec.id, requestsOf(published), { ip: target.ip, ...(target.ip6 ? { ip6: target.ip6 } : {}) }).catch((e: Error) => {
      console.error(`berthd: ${spec.name}: published ports could not move to ${target.n.Name}: ${e.message}`);
      return [];
    });
    return { published: moved, saved };
  }

  // ---------------------------------------------------------------- restart

  /**
   * After a restart, for each container that kept running: its journal is made to agree with the
   * record (a connect cut short is undone; a disconnect cut short is finished), its ports are held
   * again. Returns the endpoints of containers whose record must change.
   */
  async adopt(running: SandboxRef[]): Promise<Map<string, Record<string, EndpointState>>> {
    const fixes = new Map<string, Record<string, EndpointState>>();
    for (const ref of running) {
      let journal = this.journals.get(ref.id);
      if (!journal) {
        journal = journalFromRef(ref);
        if (journal) await this.journals.write(journal);
      }
      const endpoints = cloneEndpoints(ref.endpoints);
      if (journal) {
        const recorded = new Set(Object.values(endpoints).map((e) => e.EndpointID).filter(Boolean));
        const finished = new Set<string>();
        for (const entry of journal.endpoints.filter((e) => e.leaving || !recorded.has(e.endpointId))) {
          await this.removeEndpoint(ref.id, journal, entry, true).catch((e: Error) => console.error(`berthd: ${ref.id.slice(0, 12)}: ${e.message}`));
          finished.add(entry.endpointId);
        }
        const journaled = new Set(journal.endpoints.map((e) => e.endpointId));
        for (const [netId, ep] of Object.entries(endpoints)) {
          if (!ep.EndpointID || journaled.has(ep.EndpointID)) continue;
          if (!finished.has(ep.EndpointID)) await this.removeEndpoint(ref.id, journal, entryOf(netId, ep), true).catch(() => undefined);
          delete endpoints[netId];
          fixes.set(ref.id, endpoints);
        }
      }
      await this.d.ports.adopt(ref.id, ref.published).catch((e: Error) => {
        console.error(`berthd: could not hold the published ports of ${ref.id.slice(0, 12)} again: ${e.message}`);
      });
      this.adopted.push({ id: ref.id, netnsPath: ref.netnsPath, endpoints });
    }
    return fixes;
  }

  /** Removes every sandbox a journal names that no running container holds, and every pin nothing names: what a crash left half-made. */
  async recover(running: SandboxRef[]): Promise<void> {
    const keep = new Set(running.map((r) => r.id));
    for (const j of this.journals.all()) {
      if (keep.has(j.id)) continue;
      await this.tearDown({ id: j.id, mode: 'default', netnsPath: j.netnsPath, endpoints: {}, published: [] })
        .catch((e: Error) => console.error(`berthd: removing the sandbox of ${j.id.slice(0, 12)}: ${e.message}`));
    }
    // A pin that neither a journal nor a running container names (a `none` container's, which
    // earlier berths never released) goes too.
    const named = new Set([...this.journals.all().map((j) => j.netnsPath), ...running.map((r) => r.netnsPath)]);
    for (const f of await readdir(this.d.netnsDir).catch(() => [] as string[])) {
      const path = join(this.d.netnsDir, f);
      if (named.has(path) || !(await this.d.namespaces.exists(path))) continue;
      await this.d.namespaces.remove(path).catch((e: Error) => console.error(`berthd: releasing the namespace pin ${path}: ${e.message}`));
    }
  }

  /** Opens again the resolvers of adopted sandboxes: berthd held their sockets, which died with the previous process. */
  async attachResolver(resolver: Resolver): Promise<void> {
    this.dns.attach(resolver);
    for (const a of this.adopted) {
      await this.dns.program(a.id, a.netnsPath, a.endpoints).catch((e: Error) => console.error(`berthd: embedded DNS for ${a.id.slice(0, 12)}: ${e.message}`));
    }
    this.adopted = [];
  }

  /** Whether berth has a sandbox for this container (its journal exists). */
  has(containerId: string): boolean {
    return !!this.journals.get(containerId);
  }

  /** The endpoints the sandboxes hold now, by id. */
  liveEndpoints(): Set<string> {
    return new Set(this.journals.all().flatMap((j) => j.endpoints.map((e) => e.endpointId)));
  }

  closeResolvers(): void {
    this.dns.closeAll();
  }

  // ---------------------------------------------------------------- steps

  /**
   * The journal is written before the kernel is touched; the networks' records (their allocations)
   * go to disk while the kernel works, as they did before the journal, and the caller awaits them
   * at the end: an allocation the record lost in a crash is one the journal's cleanup frees anyway.
   */
  private async persist(journal: SandboxJournal, networks: NetworkRecord[]): Promise<{ saved: Promise<void> }> {
    const saved = Promise.all([...new Set(networks)].map((n) => this.d.registry.save(n))).then(() => undefined);
    saved.catch(() => undefined);
    await this.journals.write(journal);
    return { saved };
  }

  private async join(owner: SandboxSpec, netnsPath: string, p: Plan): Promise<void> {
    const containerId = owner.id;
    const name = owner.name;
    const { n, entry } = p;
    const gw = p.defaultRoute && !n.Internal;
    const requestedIp = !!p.ep.IPAMConfig?.IPv4Address;
    // Policy rules are written before the interface exists, from the address berth leased: a
    // driver whose backend gives the address later (CNI) has none to police yet.
    if (p.driver.ownsAddresses && Object.keys(owner.labels ?? {}).some((k) => k.startsWith(POLICY_PREFIX))) {
      throw new BadRequestError(`network policy labels (${POLICY_PREFIX}*) are not supported on ${n.Driver} networks (${n.Name})`);
    }
    let mac: string;
    let got: JoinResult | void;
    for (let attempt = 0; ; attempt++) {
      const lease = p.lease;
      mac = p.ep.requestedMac || lease.mac || macFor(lease.ip);
      // Before the interface exists, so no packet of it goes out or in unpoliced.
      await this.d.policy?.joining(n, {
        containerId, containerName: owner.name, labels: owner.labels ?? {}, endpointId: entry.endpointId, ip: lease.ip,
        ...(lease.ip6 ? { ip6: lease.ip6 } : {}), ifname: entry.ifname, netnsPath,
      });
      try {
        got = await p.driver.join(n, {
          netnsPath, ifname: entry.ifname, endpointId: entry.endpointId, mac, addressCidr: `${lease.ip}/${lease.prefix}`,
          gateway: gw ? lease.gateway : undefined,
          ...(lease.ip6 ? { address6Cidr: `${lease.ip6}/${lease.prefix6}`, gateway6: gw ? lease.gateway6 : undefined } : {}),
          owner: { containerId, name, aliases: p.ep.Aliases ?? [], labels: owner.labels ?? {} }, requestedIp, requestedMac: !!p.ep.requestedMac, macFixed: !!(p.ep.requestedMac || lease.mac), ports: owner.ports,
        });
        break;
      } catch (e) {
        // A cluster-wide IPAM: another host claimed this address a moment before. The next free one.
        if (!(e instanceof AddressTakenError) || requestedIp || attempt >= 8) throw e;
        await this.d.policy?.left(entry.endpointId);
        const ipam = this.d.registry.ipamOf(n);
        await ipam.releaseAddress(n, { ip: lease.ip }, entry.endpointId);
        p.lease = await ipam.requestAddress(n, entry.endpointId, {});
        entry.ip = p.lease.ip;
      }
    }
    if (got?.lease) {
      p.lease = got.lease;
      entry.ip = got.lease.ip;
      if (got.lease.ip6) entry.ip6 = got.lease.ip6;
    }
    const lease = p.lease;
    if (got) mac = got.mac;
    if (got?.cni) p.ep.CNI = got.cni;
    Object.assign(p.ep, { EndpointID: entry.endpointId, IPAddress: lease.ip, IPPrefixLen: lease.prefix, Gateway: n.Internal ? '' : lease.gateway, MacAddress: mac, ifname: entry.ifname });
    if (lease.ip6) Object.assign(p.ep, { GlobalIPv6Address: lease.ip6, GlobalIPv6PrefixLen: lease.prefix6, IPv6Gateway: n.Internal ? '' : lease.gateway6 });
    await this.d.firewall.endpointJoined(n, { containerId, endpointId: entry.endpointId, networkId: n.Id, ip: lease.ip, ...(lease.ip6 ? { ip6: lease.ip6 } : {}), mac });
    this.d.registry.changed([n.Id], containerId);
  }

  /**
   * Takes one endpoint out: its journal entry first (so a crash halfway leaves the record naming an
   * endpoint the journal does not, which adopt finishes), then its interface, firewall hooks and
   * addresses; an entry marked leaving (which adopt finishes too) goes last, and a sandbox's own
   * teardown keeps them all until its journal goes. The driver's leave runs even without the
   * namespace: a bridge port's host end and its rules go with it.
   */
  private async removeEndpoint(containerId: string, journal: SandboxJournal, entry: JournalEndpoint, pinned: boolean, saving?: Array<Promise<void>>, entryGoes: 'first' | 'last' | 'with the journal' = 'first'): Promise<void> {
    const forget = async () => {
      journal.endpoints = journal.endpoints.filter((e) => e.endpointId !== entry.endpointId);
      if (entryGoes !== 'with the journal' && this.journals.get(containerId)) await this.journals.write(journal);
    };
    if (entryGoes === 'first') await forget();
    const n = this.d.registry.networks.get(entry.networkId);
    const driver = n && this.d.registry.driverOf(n);
    if (!n || !driver) {
      // The veth's host end would go with the namespace, but not its source guard allowances.
      for (const d of this.d.registry.loadedDrivers()) await d.forgetEndpoint?.(entry.endpointId).catch(() => undefined);
      await this.d.policy?.left(entry.endpointId);
      if (entryGoes !== 'first') await forget();
      return;
    }
    const st = new Steps(`an endpoint's removal from ${n.Name}`);
    await driver.leave(n, { netnsPath: pinned ? journal.netnsPath : '', ifname: entry.ifname, endpointId: entry.endpointId, ip: entry.ip }).catch(() => undefined);
    st.mark('driver');
    // After the interface, before the address is free for another endpoint.
    await this.d.policy?.left(entry.endpointId);
    await this.d.firewall.endpointLeft(n, { containerId, endpointId: entry.endpointId, networkId: n.Id, ip: entry.ip, ...(entry.ip6 ? { ip6: entry.ip6 } : {}), mac: '' });
    if (!driver.ownsAddresses) await this.d.registry.ipamOf(n).releaseAddress(n, { ip: entry.ip, ...(entry.ip6 ? { ip6: entry.ip6 } : {}) }, entry.endpointId);
    const saved = this.d.registry.save(n);
    this.d.registry.changed([n.Id], containerId);
    if (entryGoes !== 'first') await forget();
    st.mark('policy, firewall, address, journal');
    st.done();
    if (saving) saving.push(saved);
    else await saved;
  }

  private async publish(spec: SandboxSpec, endpoints: Record<string, EndpointState>): Promise<PortMapping[]> {
    const target = publishTarget(this.d.registry, endpoints);
    return target ? this.d.ports.publish(spec.id, requestedPorts(spec.ports, target.n.Options[OPT_HOST_BINDING] ?? ''), { ip: target.ip, ...(target.ip6 ? { ip6: target.ip6 } : {}) }) : [];
  }

  /** The sandbox's journal, or one made from the engine's record for a sandbox that has none yet. */
  private journalOf(ref: SandboxRef): SandboxJournal {
    return this.journals.get(ref.id) ?? journalFromRef(ref) ?? { id: ref.id, netnsPath: ref.netnsPath, endpoints: [] };
  }

  private resolvConfSource(): { hostResolvConf?: string } { return this.d.hostResolvConf ? { hostResolvConf: this.d.hostResolvConf } : {}; }
}
