import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { EndpointState, PortMapping, SandboxSpec } from '../../src/model/network.js';
import { AddressTakenError, type EndpointJoin, type EndpointLeave, type NetworkDriver } from '../../src/network/driver.js';
import type { Firewall, FirewallEndpoint } from '../../src/network/firewallapi.js';
import { DefaultIpam } from '../../src/network/ipamdriver.js';
import { PortMapper } from '../../src/network/portmapper.js';
import { unheldAllocations } from '../../src/network/allocsweep.js';
import { LocalRecordStore, NetworkRegistry, SWARM_SAVE_MS } from '../../src/network/registry.js';
import type { NamespaceOps } from '../../src/network/namespaces.js';
import { JournalStore, lastState, type JournalEndpoint } from '../../src/network/journal.js';
import { Sandboxes } from '../../src/network/sandbox.js';
import type { NetworkRecord } from '../../src/network/types.js';

/** The network layer with every kernel call replaced by a recorder: what it asks, in which order. */

class FakeDriver implements NetworkDriver {
  readonly name = 'fake';
  readonly avoidsRoutedSubnets = true;
  readonly publishes = true;
  readonly hostFirewall = true;
  readonly ipv6 = true;
  failJoinOn?: string;
  /** Addresses another host holds: a join with one is refused as a cluster-wide IPAM refuses it. */
  takenElsewhere = new Set<string>();
  constructor(private readonly log: string[]) {}
  async configure(): Promise<void> {}
  async ensureNetwork(n: NetworkRecord): Promise<void> { this.log.push(`ensure ${n.Name}`); }
  async deleteNetwork(n: NetworkRecord): Promise<void> { this.log.push(`delete ${n.Name}`); }
  async join(n: NetworkRecord, j: EndpointJoin): Promise<void> {
    if (this.failJoinOn === n.Name) throw new Error(`join ${n.Name} failed`);
    if (this.takenElsewhere.has(j.addressCidr.split('/')[0]!)) throw new AddressTakenError();
    this.log.push(`join ${n.Name} ${j.ifname} ${j.addressCidr} gw=${j.gateway ?? '-'}`);
  }
  /** Holds leaves until it settles (an overlay leave waits for every host). */
  leaveGate?: Promise<void>;
  async leave(n: NetworkRecord, ep: EndpointLeave): Promise<void> { this.log.push(`leave ${n.Name} ${ep.ifname}`); await this.leaveGate; }
}

class FakeFirewall implements Firewall {
  constructor(private readonly log: string[]) {}
  async sync(): Promise<void> { this.log.push('fw sync'); }
  async addNetwork(n: NetworkRecord): Promise<void> { this.log.push(`fw add ${n.Name}`); }
  async removeNetwork(n: NetworkRecord): Promise<void> { this.log.push(`fw remove ${n.Name}`); }
  async endpointJoined(n: NetworkRecord, ep: FirewallEndpoint): Promise<void> { this.log.push(`fw joined ${n.Name} ${ep.ip}`); }
  async endpointLeft(n: NetworkRecord, ep: FirewallEndpoint): Promise<void> { this.log.push(`fw left ${n.Name} ${ep.ip}`); }
  async addPorts(m: PortMapping[]): Promise<void> { for (const p of m) this.log.push(`fw port ${p.hostPort}->${p.containerIp}`); }
  async removePorts(m: PortMapping[]): Promise<void> { for (const p of m) this.log.push(`fw unport ${p.hostPort}->${p.containerIp}`); }
  async removeAll(): Promise<string[]> { return []; }
}

async function layer() {
  const dir = await fs.mkdtemp(join(tmpdir(), 'berth-unit-net-'));
  const log: string[] = [];
  const journalDir = join(dir, 'sandboxes');
  const namespaces: NamespaceOps = {
    async create(path) { log.push(`netns create (journal ${existsSync(journalDir) && (await fs.readdir(journalDir)).length ? 'written' : 'missing'})`); await fs.writeFile(path, 'pinned'); },
    async remove(path) { log.push('netns remove'); await fs.rm(path, { force: true }); },
    async exists(path) { return existsSync(path); },
    async redirectResolver() { log.push('redirect'); },
  };
  const registry = new NetworkRegistry({ local: new LocalRecordStore(join(dir, 'networks')) });
  await registry.load(async () => {});
  const driver = new FakeDriver(log);
  registry.registerDriver(driver);
  const ipam = new DefaultIpam();
  registry.registerIpam(ipam);
  await fs.mkdir(join(dir, 'netns'));
  const firewall = new FakeFirewall(log);
  const ports = new PortMapper(firewall);
  const sandboxes = new Sandboxes({ registry, firewall, ports, namespaces, netnsDir: join(dir, 'netns'), journalDir });
  await sandboxes.load();
  const network = async (name: string, subnet: string): Promise<NetworkRecord> => {
    const n: NetworkRecord = {
      Name: name, Id: `${name}`.padEnd(64, '0'), Created: new Date().toISOString(), Scope: 'local', Driver: 'fake', EnableIPv6: false,
      IPAM: { Driver: 'default', Options: {}, Config: [] }, Internal: false, Attachable: false, Ingress: false, ConfigFrom: { Network: '' }, ConfigOnly: false,
      Options: {}, Labels: {}, pools: ipam.requestPools({ v4: { subnet }, enableIPv6: false }, { v4: [], v6: [] }).pools,
    };
    await registry.add(n);
    return n;
  };
  const spec = (id: string, networks: NetworkRecord[], ports: SandboxSpec['ports']['bindings'] = {}): SandboxSpec => ({
    id: id.padEnd(64, 'c'), name: id, hostname: id, domainname: '', mode: networks[0]!.Name,
    endpoints: Object.fromEntries(networks.map((n) => [n.Id, blank(n.Id)])),
    ports: { bindings: ports, publishAll: false, exposed: [] }, dns: { servers: [], search: [], options: [] },
    extraHosts: [], linkHosts: [], etcDir: dir,
  });
  /** A sandbox made on two networks, alpha (eth0) and beta (eth1). */
  const onAlphaAndBeta = async (id: string) => {
    const a = await network('alpha', '10.1.0.0/24');
    const b = await network('beta', '10.2.0.0/24');
    const s = spec(id, [a, b]);
    return { a, b, s, got: await sandboxes.setUp(s) };
  };
  return { dir, log, registry, driver, sandboxes, network, spec, onAlphaAndBeta, journalDir, cleanup: () => fs.rm(dir, { recursive: true, force: true }) };
}

function blank(networkId: string): EndpointState {
  return { NetworkID: networkId, IPAMConfig: null, Links: null, Aliases: null, EndpointID: '', Gateway: '', IPAddress: '', IPPrefixLen: 0, MacAddress: '', ifname: '' };
}

describe('network registry', () => {
  it('registers a driver once, finds networks by name and unique id prefix, and finishes an interrupted removal', async () => {
    const l = await layer();
    try {
      assert.throws(() => l.registry.registerDriver(l.driver), /registered twice/);
      const a = await l.network('alpha', '10.1.0.0/24');
      await l.network('beta', '10.2.0.0/24');
      assert.equal(l.registry.get('alpha').Id, a.Id);
      assert.equal(l.registry.find('alx'), undefined);
      assert.equal(l.registry.get('alpha0').Name, 'alpha');
      assert.throws(() => l.registry.get('nope'), /network nope not found/);
      await l.registry.beginRemove(a);
      // A new registry over the same files, as after a crash between the two steps of a removal.
      const again = new NetworkRegistry({ local: new LocalRecordStore(join(l.dir, 'networks')) });
      const finished: string[] = [];
      await again.load(async (n) => { finished.push(n.Name); });
      assert.deepEqual(finished, ['alpha']);
      assert.deepEqual(again.list().map((n) => n.Name), ['beta']);
    } finally {
      await l.cleanup();
    }
  });

  it('writes a swarm network\'s record at most once a second, waited for by nobody; berthd\'s stop writes what is due, and a removal drops it', async () => {
    const writes: string[] = [];
    const store = { loadAll: async () => ({ records: [], removing: [] }), save: async (n: NetworkRecord) => { writes.push(n.Name); }, beginRemove: async () => undefined, finishRemove: async () => undefined };
    const registry = new NetworkRegistry({ swarm: store });
    const rec = (name: string) => ({ Name: name, Id: name.padEnd(64, '0'), Scope: 'swarm' } as NetworkRecord);
    const ov = rec('ov');
    await registry.add(ov);
    assert.deepEqual(writes, ['ov'], 'a record registered is written at once');
    writes.length = 0;
    for (let i = 0; i < 5; i++) await registry.save(ov);
    assert.deepEqual(writes, [], 'a join or leave does not wait for the write');
    await new Promise((r) => setTimeout(r, SWARM_SAVE_MS + 100));
    assert.deepEqual(writes, ['ov'], 'five saves, one write');
    writes.length = 0;
    await registry.save(ov);
    await registry.flush();
    assert.deepEqual(writes, ['ov'], 'the stop writes what is due');
    writes.length = 0;
    await registry.save(ov);
    await registry.beginRemove(ov);
    await new Promise((r) => setTimeout(r, SWARM_SAVE_MS + 100));
    assert.deepEqual(writes, [], 'a removed network\'s record is not brought back');
  });
});

describe('sandbox', () => {
  it('a network removed while an endpoint leaves it stays removed: the leave\'s record update does not bring it back', async () => {
    const l = await layer();
    try {
      const a = await l.network('alpha', '10.1.0.0/24');
      const s = l.spec('one', [a]);
      const got = await l.sandboxes.setUp(s);
      let release!: () => void;
      l.driver.leaveGate = new Promise((r) => { release = r; });
      const down = l.sandboxes.tearDown({ id: s.id, mode: s.mode, netnsPath: got.netnsPath!, endpoints: got.endpoints, published: got.published });
      await new Promise((r) => setTimeout(r, 20));
      // As a swarm network dropped by its host while a task container's leave still waits.
      await l.registry.beginRemove(a);
      await l.registry.finishRemove(a);
      release();
      await down;
      assert.deepEqual(l.registry.list().map((n) => n.Name), []);
      assert.deepEqual(await fs.readdir(join(l.dir, 'networks')), []);
    } finally {
      await l.cleanup();
    }
  });

  it('takes the next free address when another host claimed the chosen one a moment before, and never a requested one', async () => {
    const l = await layer();
    try {
      const a = await l.network('alpha', '10.1.0.0/24');
      l.driver.takenElsewhere.add('10.1.0.2');
      const got = await l.sandboxes.setUp(l.spec('one', [a]));
      assert.equal(got.endpoints[a.Id]!.IPAddress, '10.1.0.3');
      assert.deepEqual(l.log.filter((x) => x.startsWith('join')), ['join alpha eth0 10.1.0.3/24 gw=10.1.0.1']);
      assert.deepEqual(Object.keys(a.pools![0]!.allocated), ['10.1.0.3']);
      // --ip of an address another host holds: Docker's 403, and nothing held here.
      l.driver.takenElsewhere.add('10.1.0.9');
      const s2 = l.spec('two', [a]);
      s2.endpoints[a.Id]!.IPAMConfig = { IPv4Address: '10.1.0.9' };
      await assert.rejects(l.sandboxes.setUp(s2), (e) => e instanceof AddressTakenError && e.message === 'Address already in use');
      assert.deepEqual(Object.keys(a.pools![0]!.allocated), ['10.1.0.3']);
    } finally {
      await l.cleanup();
    }
  });

  it('journals before the namespace exists, joins eth0 with the default route then eth1, and publishes on eth0', async () => {
    const l = await layer();
    try {
      const a = await l.network('alpha', '10.1.0.0/24');
      const b = await l.network('beta', '10.2.0.0/24');
      const got = await l.sandboxes.setUp(l.spec('one', [a, b], { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '0' }] }));
      assert.deepEqual(l.log.filter((x) => !x.startsWith('fw port')), [
        'netns create (journal written)',
        'join alpha eth0 10.1.0.2/24 gw=10.1.0.1', 'fw joined alpha 10.1.0.2',
        'join beta eth1 10.2.0.2/24 gw=-', 'fw joined beta 10.2.0.2',
      ]);
      assert.equal(got.published.length, 1);
      assert.equal(got.published[0]!.containerIp, '10.1.0.2');
      assert.equal(got.endpoints[a.Id]!.IPAddress, '10.1.0.2');
      assert.equal(a.pools![0]!.allocated['10.1.0.2'], got.endpoints[a.Id]!.EndpointID);
      await l.sandboxes.tearDown({ id: l.spec('one', [a]).id, mode: 'alpha', netnsPath: got.netnsPath!, endpoints: got.endpoints, published: got.published });
      assert.deepEqual(l.log.slice(-6).filter((x) => !x.startsWith('fw unport')), ['leave alpha eth0', 'fw left alpha 10.1.0.2', 'leave beta eth1', 'fw left beta 10.2.0.2', 'netns remove']);
      assert.deepEqual(a.pools![0]!.allocated, {});
      assert.deepEqual(await fs.readdir(l.journalDir), []);
    } finally {
      await l.cleanup();
    }
  });

  it('a failed join undoes everything: interfaces, namespace, addresses, journal', async () => {
    const l = await layer();
    try {
      const a = await l.network('alpha', '10.1.0.0/24');
      const b = await l.network('beta', '10.2.0.0/24');
      l.driver.failJoinOn = 'beta';
      await assert.rejects(l.sandboxes.setUp(l.spec('two', [a, b])), /join beta failed/);
      assert.ok(l.log.includes('leave alpha eth0') && l.log.includes('netns remove'));
      assert.deepEqual(a.pools![0]!.allocated, {});
      assert.deepEqual(b.pools![0]!.allocated, {});
      assert.deepEqual(await fs.readdir(l.journalDir), []);
    } finally {
      await l.cleanup();
    }
  });

  it('after a crash, recover removes what a journal names and no running container holds', async () => {
    const l = await layer();
    try {
      const a = await l.network('alpha', '10.1.0.0/24');
      const got = await l.sandboxes.setUp(l.spec('three', [a]));
      // berthd dies here: a new process finds the journal, and the container is not running.
      const fresh = new Sandboxes({ registry: l.registry, firewall: new FakeFirewall(l.log), ports: new PortMapper(new FakeFirewall(l.log)), namespaces: { create: async () => {}, remove: async (p) => { l.log.push('netns remove'); await fs.rm(p); }, exists: async (p) => existsSync(p), redirectResolver: async () => {} }, netnsDir: join(l.dir, 'netns'), journalDir: l.journalDir });
      await fresh.load();
      // A pin no journal names (a `none` container's, which earlier berths left), and a running container's.
      await fs.writeFile(join(l.dir, 'netns', 'stray'), 'pinned');
      await fs.writeFile(join(l.dir, 'netns', 'running'), 'pinned');
      l.log.length = 0;
      await fresh.recover([{ id: 'r'.repeat(64), mode: 'none', netnsPath: join(l.dir, 'netns', 'running'), endpoints: {}, published: [] }]);
      assert.deepEqual(l.log, ['leave alpha eth0', 'fw left alpha 10.1.0.2', 'netns remove', 'netns remove']);
      assert.ok(!existsSync(got.netnsPath!));
      assert.ok(!existsSync(join(l.dir, 'netns', 'stray')), 'the stray pin went');
      assert.ok(existsSync(join(l.dir, 'netns', 'running')), 'a running container\'s pin stays');
      assert.deepEqual(a.pools![0]!.allocated, {});
    } finally {
      await l.cleanup();
    }
  });

  it('adopt undoes a connect the record never got, and finishes a disconnect the record still shows', async () => {
    const l = await layer();
    try {
      const a = await l.network('alpha', '10.1.0.0/24');
      const b = await l.network('beta', '10.2.0.0/24');
      const s = l.spec('four', [a]);
      const got = await l.sandboxes.setUp(s);
      const connected = await l.sandboxes.connect({ ...s, endpoints: got.endpoints }, got.netnsPath!, [], b, blank(b.Id));
      l.log.length = 0;
      // The record knows only eth0 (the connect's save was lost): eth1 is taken out again.
      const fixes = await l.sandboxes.adopt([{ id: s.id, mode: 'alpha', netnsPath: got.netnsPath!, endpoints: got.endpoints, published: [] }]);
      assert.deepEqual(l.log, ['leave beta eth1', `fw left beta ${connected.endpoint.IPAddress}`]);
      assert.equal(fixes.size, 0);
      // The record shows an endpoint the journal no longer has (a disconnect's save was lost): it goes.
      const ghost = { ...blank(b.Id), EndpointID: 'f'.repeat(64), IPAddress: '10.2.0.9', ifname: 'eth1' };
      const fixes2 = await l.sandboxes.adopt([{ id: s.id, mode: 'alpha', netnsPath: got.netnsPath!, endpoints: { ...got.endpoints, [b.Id]: ghost }, published: [] }]);
      assert.deepEqual(Object.keys(fixes2.get(s.id) ?? {}), [a.Id]);
    } finally {
      await l.cleanup();
    }
  });

  it('a disconnect cut short after it marked the endpoint leaving is finished by adopt, though the record still shows it', async () => {
    const l = await layer();
    let never: () => void = () => {};
    let cutShort: Promise<unknown> = Promise.resolve();
    try {
      const { a, b, s, got } = await l.onAlphaAndBeta('six');
      // The leave never returns: berthd dies during the kernel's part, before any record changed.
      const driver = l.driver;
      driver.leaveGate = new Promise<void>((resolve) => { never = resolve; });
      cutShort = l.sandboxes.disconnect({ ...s, endpoints: got.endpoints }, got.netnsPath!, [], b).catch(() => {});
      await new Promise((r) => setImmediate(r));
      const file = join(l.journalDir, `${s.id}.json`);
      const states = (await fs.readFile(file, 'utf8')).trim().split('\n');
      assert.equal(states.length, 2, 'the leaving mark is appended to the journal');
      assert.equal(JSON.parse(states[1]!).endpoints.find((e: { networkId: string }) => e.networkId === b.Id).leaving, true);
      driver.leaveGate = undefined;
      l.log.length = 0;
      const fresh = new Sandboxes({ registry: l.registry, firewall: new FakeFirewall(l.log), ports: new PortMapper(new FakeFirewall(l.log)), namespaces: { create: async () => {}, remove: async () => {}, exists: async () => true, redirectResolver: async () => {} }, netnsDir: join(l.dir, 'netns'), journalDir: l.journalDir });
      await fresh.load();
      const fixes = await fresh.adopt([{ id: s.id, mode: 'alpha', netnsPath: got.netnsPath!, endpoints: got.endpoints, published: [] }]);
      assert.deepEqual(l.log.filter((x) => x.includes('beta')), ['leave beta eth1', `fw left beta ${got.endpoints[b.Id]!.IPAddress}`]);
      assert.deepEqual(Object.keys(fixes.get(s.id) ?? {}), [a.Id]);
    } finally {
      // The dead process's disconnect must end before the directory goes: released, it still writes
      // records, and one written between the rm's listing and its rmdir was CI's ENOTEMPTY.
      never();
      await cutShort;
      await l.cleanup();
    }
  });

  it('a journal is appended to, read back from its last whole state, and rewritten once it grows', async () => {
    const dir = await fs.mkdtemp(join(tmpdir(), 'berth-unit-journal-'));
    try {
      const store = new JournalStore(dir);
      await store.load();
      const j = { id: 'c1', netnsPath: '/ns/c1', endpoints: [] as JournalEndpoint[] };
      await store.write(j);
      for (let i = 0; i < 3; i++) {
        j.endpoints.push({ networkId: `n${i}`, endpointId: `e${i}`, ip: `10.0.0.${i + 2}`, ifname: `eth${i}` });
        await store.write(j);
      }
      const file = join(dir, 'c1.json');
      assert.equal((await fs.readFile(file, 'utf8')).trim().split('\n').length, 4);
      // A line the machine's crash cut short: the state before it holds.
      await fs.appendFile(file, '{"id":"c1","netnsPath":"/ns/c1","endp');
      const again = new JournalStore(dir);
      await again.load();
      assert.deepEqual(again.get('c1')?.endpoints.map((e) => e.endpointId), ['e0', 'e1', 'e2']);
      assert.equal(lastState(''), undefined);
      // A file an older berth wrote whole (no newline): read, and rewritten at the next write.
      await fs.writeFile(join(dir, 'c2.json'), JSON.stringify({ id: 'c2', netnsPath: '/ns/c2', endpoints: [] }));
      const old = new JournalStore(dir);
      await old.load();
      await old.write({ id: 'c2', netnsPath: '/ns/c2', endpoints: [{ networkId: 'n', endpointId: 'e', ip: '10.0.0.9', ifname: 'eth0' }] });
      const reread = new JournalStore(dir);
      await reread.load();
      assert.equal(reread.get('c2')?.endpoints[0]?.ip, '10.0.0.9');
      // Growth: the file is rewritten whole, never past the bound by more than one state.
      for (let i = 0; i < 200; i++) await again.write({ ...j, endpoints: j.endpoints.slice(0, i % 3) });
      const size = (await fs.stat(file)).size;
      assert.ok(size <= 16 * 1024, `journal file of ${size} bytes`);
      const last = new JournalStore(dir);
      await last.load();
      assert.equal(last.get('c1')?.endpoints.length, 199 % 3);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('a disconnect takes published ports off the leaving address and moves them to the next endpoint', async () => {
    const l = await layer();
    try {
      const a = await l.network('alpha', '10.1.0.0/24');
      const b = await l.network('beta', '10.2.0.0/24');
      const s = l.spec('five', [a, b], { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '0' }] });
      const got = await l.sandboxes.setUp(s);
      const port = got.published[0]!.hostPort;
      l.log.length = 0;
      const after = await l.sandboxes.disconnect({ ...s, endpoints: got.endpoints }, got.netnsPath!, got.published, a);
      assert.deepEqual(l.log, [`fw unport ${port}->10.1.0.2`, 'leave alpha eth0', 'fw left alpha 10.1.0.2', `fw port ${port}->10.2.0.2`]);
      assert.equal(after.published[0]!.containerIp, '10.2.0.2');
      const rest = { ...got.endpoints };
      delete rest[a.Id];
      await l.sandboxes.tearDown({ id: s.id, mode: 'alpha', netnsPath: got.netnsPath!, endpoints: rest, published: after.published });
    } finally {
      await l.cleanup();
    }
  });

  it('a disconnect hands back the rest of its work, which frees the address and writes the record, whose loss the next start repairs', async () => {
    const l = await layer();
    try {
      const { a, b, s, got } = await l.onAlphaAndBeta('six');
      const leaving = got.endpoints[b.Id]!;
      const out = await l.sandboxes.disconnect({ ...s, endpoints: got.endpoints }, got.netnsPath!, [], b);
      // The engine writes the container's record meanwhile, and answers once both are done.
      await out.saved;
      assert.deepEqual(b.pools![0]!.allocated, {});
      const onDisk = JSON.parse(await fs.readFile(join(l.dir, 'networks', `${b.Id}.json`), 'utf8')) as NetworkRecord;
      assert.deepEqual(onDisk.pools![0]!.allocated, {});
      // Had berthd died before that write, the record would still hold the address: nobody names it.
      onDisk.pools![0]!.allocated[leaving.IPAddress] = leaving.EndpointID;
      const held = l.sandboxes.liveEndpoints();
      assert.ok(held.has(got.endpoints[a.Id]!.EndpointID));
      assert.deepEqual(unheldAllocations(onDisk, held), [leaving.IPAddress]);
      assert.deepEqual(onDisk.pools![0]!.allocated, {});
      // alpha's address is held; swarm networks and plugin IPAMs keep their allocations elsewhere.
      assert.deepEqual(unheldAllocations(a, held), []);
      const orphan = { '10.9.0.5': 'e'.repeat(64) };
      for (const other of [{ ...a, Scope: 'swarm' as const }, { ...a, IPAM: { ...a.IPAM, Driver: 'someplugin' } }]) {
        const n = { ...other, pools: [{ ...a.pools![0]!, allocated: { ...orphan } }] };
        assert.deepEqual(unheldAllocations(n, held), []);
      }
      const rest = { ...got.endpoints };
      delete rest[b.Id];
      await l.sandboxes.tearDown({ id: s.id, mode: 'alpha', netnsPath: got.netnsPath!, endpoints: rest, published: [] });
    } finally {
      await l.cleanup();
    }
  });
});
