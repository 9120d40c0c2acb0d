import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CniRunner } from '../../src/cni/runner.js';
import {
  CniError, describeFailure, endpointAddresses, formatArgs, negotiateVersion, parseArgs, parseConfList, parseResult, pluginInput, type ConfList,
} from '../../src/cni/spec.js';
import { resultFor, runPlugin } from '../../src/cni/plugin.js';
import { ipamConfig, portMappings } from '../../src/network/cnidriver.js';
import { SharedExclusive } from '../../src/util/serial.js';

describe('cni spec: configuration lists', () => {
  it('reads a list, and a single plugin configuration as a list of one', () => {
    const l = parseConfList(JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'bridge' }, { type: 'portmap', capabilities: { portMappings: true } }] }), 'f');
    assert.deepEqual(l.plugins.map((p) => p.type), ['bridge', 'portmap']);
    const one = parseConfList(JSON.stringify({ cniVersion: '0.4.0', name: 'n', type: 'bridge', bridge: 'b0' }), 'f');
    assert.deepEqual(one, { name: 'n', cniVersion: '0.4.0', plugins: [{ type: 'bridge', bridge: 'b0' }] });
  });

  it('refuses what a runtime cannot run, naming the file', () => {
    const bad = (v: unknown, re: RegExp) => assert.throws(() => parseConfList(typeof v === 'string' ? v : JSON.stringify(v), '/x.conflist'), (e: Error) => e instanceof CniError && re.test(e.message));
    bad('{', /\/x\.conflist: not JSON/);
    bad({ cniVersion: '1.0.0', name: 'a b', plugins: [{ type: 'bridge' }] }, /"name" must be/);
    bad({ name: 'n', plugins: [{ type: 'bridge' }] }, /"cniVersion" is missing/);
    bad({ cniVersion: '1.0.0', name: 'n', plugins: [] }, /at least one plugin/);
    // A type is a file name in the plugin directory, never a path out of it.
    bad({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: '../../bin/sh' }] }, /plugin 1 has no usable "type"/);
    bad({ cniVersion: '1.0.0', name: 'n', disableGC: 'yes', plugins: [{ type: 'b' }] }, /"disableGC" must be true or false/);
  });

  it('negotiates the version: cniVersion as given, or the highest of cniVersions every plugin speaks', () => {
    const list = (extra: Partial<ConfList>): ConfList => ({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'a' }, { type: 'b' }], ...extra });
    const both = new Map([['a', ['0.4.0', '1.0.0', '1.1.0']], ['b', ['0.4.0', '1.0.0']]]);
    assert.equal(negotiateVersion(list({}), both), '1.0.0');
    assert.equal(negotiateVersion(list({ cniVersion: '1.1.0', cniVersions: ['1.0.0', '1.1.0'] }), both), '1.0.0');
    assert.equal(negotiateVersion(list({ cniVersion: '1.1.0', cniVersions: ['1.0.0', '1.1.0'] }), new Map([['a', ['1.1.0', '1.0.0']], ['b', ['1.1.0']]])), '1.1.0');
    assert.throws(() => negotiateVersion(list({ cniVersion: '1.1.0' }), both), (e: Error) => e instanceof CniError && e.code === 1 && /plugin b does not speak CNI version 1\.1\.0/.test(e.message));
    assert.throws(() => negotiateVersion(list({ cniVersion: '0.2.0' }), both), /0\.2\.0 of configuration n is not one berth speaks/);
  });

  it('gives each plugin the list name, the version, prevResult and only the runtime values of capabilities it declares', () => {
    const l: ConfList = { cniVersion: '1.0.0', name: 'net', plugins: [{ type: 'portmap', capabilities: { portMappings: true, mac: false }, runtimeConfig: { stale: 1 } }] };
    const prev = { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24' }] };
    const input = pluginInput(l, l.plugins[0]!, '1.0.0', { portMappings: [{ hostPort: 80 }], mac: 'x', ips: ['y'] }, prev);
    assert.deepEqual(input, { type: 'portmap', capabilities: { portMappings: true, mac: false }, name: 'net', cniVersion: '1.0.0', runtimeConfig: { portMappings: [{ hostPort: 80 }] }, prevResult: prev });
    assert.equal('runtimeConfig' in pluginInput(l, { type: 'bridge' }, '1.0.0', { portMappings: [] }), false);
  });
});

describe('cni spec: results and errors', () => {
  const result = {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'cni0', mac: 'AA:00:00:00:00:01' }, { name: 'veth1', mac: 'aa:00:00:00:00:02' }, { name: 'eth0', mac: 'AA:00:00:00:00:03', sandbox: '/run/ns/c' }],
    ips: [{ address: '10.1.0.5/16', gateway: '10.1.0.1', interface: 2 }, { address: 'fd00::5/64', gateway: 'fd00::1', interface: 2 }, { address: '10.9.0.1/24', interface: 0 }],
    routes: [{ dst: '0.0.0.0/0' }],
  };

  it("takes the container interface's addresses and MAC from a result", () => {
    const r = parseResult(JSON.stringify(result), 'bridge');
    assert.deepEqual(endpointAddresses(r, 'eth0', '/run/ns/c'), { mac: 'aa:00:00:00:00:03', ip: '10.1.0.5', prefix: 16, gateway: '10.1.0.1', ip6: 'fd00::5', prefix6: 64, gateway6: 'fd00::1' });
    // A result naming no interfaces (an IPAM plugin's): its addresses are the container's.
    assert.deepEqual(endpointAddresses({ cniVersion: '0.4.0', ips: [{ version: '4', address: '10.2.0.3/24' }] }, 'eth0', '/x'), { ip: '10.2.0.3', prefix: 24, gateway: '' });
  });

  it('refuses results berth cannot use, naming the plugin', () => {
    assert.throws(() => parseResult('not json', 'p'), /plugin p answered ADD with no JSON result/);
    assert.throws(() => parseResult(JSON.stringify({ cniVersion: '0.2.0', ip4: {} }), 'p'), (e: Error) => e instanceof CniError && e.code === 1);
    assert.throws(() => parseResult(JSON.stringify({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.1' }] }), 'p'), /not in CIDR form/);
    assert.throws(() => parseResult(JSON.stringify({ cniVersion: '1.0.0', interfaces: [], ips: [{ address: '10.0.0.1/8', interface: 0 }] }), 'p'), /names interface 0/);
  });

  it("words a plugin's failure with the spec's code and meaning, or its exit status and stderr", () => {
    const e = describeFailure('bridge', 'ADD', 1, JSON.stringify({ cniVersion: '1.0.0', code: 7, msg: 'bad bridge', details: 'b0 is a veth' }), '');
    assert.equal(e.code, 7);
    assert.equal(e.message, 'CNI plugin bridge failed ADD: error 7 (invalid network configuration): bad bridge (b0 is a veth)');
    assert.equal(describeFailure('x', 'DEL', 2, '', 'panic: oops\n').message, 'CNI plugin x failed DEL: exit status 2: panic: oops');
  });

  it('CNI_ARGS both ways; unsafe pairs are dropped', () => {
    assert.equal(formatArgs({ IgnoreUnknown: '1', K8S_POD_NAME: 'web', 'bad key': 'x', V: 'a;b' }), 'IgnoreUnknown=1;K8S_POD_NAME=web');
    assert.deepEqual(parseArgs('IgnoreUnknown=1;K8S_POD_NAME=web;junk'), { IgnoreUnknown: '1', K8S_POD_NAME: 'web' });
  });

  it("shows the list's subnets in inspect and turns -p into portMappings (fixed host ports only)", () => {
    const l = parseConfList(JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'bridge', ipam: { type: 'host-local', ranges: [[{ subnet: '10.1.0.0/24', gateway: '10.1.0.254' }], [{ subnet: '10.2.0.0/24' }]] } }, { type: 'macvlan', ipam: { type: 'host-local', subnet: '10.3.0.0/24' } }] }), 'f');
    assert.deepEqual(ipamConfig(l), [{ Subnet: '10.1.0.0/24', Gateway: '10.1.0.254' }, { Subnet: '10.2.0.0/24' }, { Subnet: '10.3.0.0/24' }]);
    assert.deepEqual(portMappings({ bindings: { '80/tcp': [{ HostPort: '8080' }, { HostIp: '127.0.0.1', HostPort: '8081' }], '53/udp': [{ HostPort: '53' }] }, publishAll: false, exposed: [] }),
      [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }, { hostPort: 8081, containerPort: 80, protocol: 'tcp', hostIP: '127.0.0.1' }, { hostPort: 53, containerPort: 53, protocol: 'udp' }]);
    assert.throws(() => portMappings({ bindings: { '80/tcp': [{ HostPort: '' }] }, publishAll: false, exposed: [] }), /fixed host ports only/);
  });
});

/**
 * The runner against fake plugins: small Python executables (they start in a tenth of Node's
 * time) that record every call (command,
 * environment, stdin) to a log and answer as their configuration tells them. They test the
 * protocol berth speaks; the reference plugins themselves run in test/integration/cni.test.ts.
 */
const FAKE = `import json, os, sys
raw = sys.stdin.read()
inp = json.loads(raw or '{}')
cmd = os.environ.get('CNI_COMMAND')
me = os.path.basename(sys.argv[0])
conf = inp.get('fake') or {}
env = {k: os.environ.get(v) for k, v in (('id', 'CNI_CONTAINERID'), ('netns', 'CNI_NETNS'), ('ifname', 'CNI_IFNAME'), ('args', 'CNI_ARGS'), ('path', 'CNI_PATH'))}
with open(conf.get('log') or '/dev/null', 'a') as f:
    f.write(json.dumps({'plugin': me, 'cmd': cmd, 'env': {k: v for k, v in env.items() if v is not None}, 'input': inp}) + '\\n')
if cmd == 'VERSION':
    print(json.dumps({'cniVersion': inp.get('cniVersion'), 'supportedVersions': ['0.4.0', '1.0.0'] if me == 'old' else ['0.4.0', '1.0.0', '1.1.0']}))
    sys.exit(0)
if conf.get('fail') == cmd:
    print(json.dumps({'cniVersion': inp.get('cniVersion'), 'code': 11, 'msg': me + ' refuses ' + cmd}))
    sys.exit(1)
if cmd == 'ADD':
    prev = inp.get('prevResult') or {'cniVersion': inp.get('cniVersion'), 'interfaces': [], 'ips': []}
    out = json.loads(json.dumps(prev))
    out['cniVersion'] = inp.get('cniVersion')
    if conf.get('ip'):
        out['interfaces'].append({'name': os.environ.get('CNI_IFNAME'), 'mac': '02:00:00:00:00:01', 'sandbox': os.environ.get('CNI_NETNS')})
        out['ips'].append({'address': conf['ip'], 'gateway': conf.get('gw'), 'interface': len(out['interfaces']) - 1})
    out['seen'] = (prev.get('seen') or []) + [me]
    print(json.dumps(out))
`;

describe('cni runner: the protocol, against fake plugins', () => {
  let dir: string;
  let log: string;
  let runner: CniRunner;
  const calls = async () => (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { plugin: string; cmd: string; env: Record<string, string>; input: Record<string, any> });
  const list = (version: string, extra: Record<string, unknown>[] = [{}, {}, {}], more: Partial<ConfList> = {}): ConfList => ({
    cniVersion: version, name: 'fakes',
    plugins: ['first', 'second', 'third'].map((type, i) => ({ type, fake: { log, ...(i === 0 ? { ip: '10.5.0.7/24', gw: '10.5.0.1' } : {}), ...extra[i] } })),
    ...more,
  });
  const att = { containerId: 'c0ffee', netns: '/run/netns/fake', ifname: 'eth0', args: { IgnoreUnknown: '1' }, runtime: {} };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-cni-unit-'));
    log = join(dir, 'calls.log');
    for (const name of ['first', 'second', 'third', 'old']) {
      await writeFile(join(dir, name), `#!/usr/bin/python3\n${FAKE}`);
      await chmod(join(dir, name), 0o755);
    }
    runner = new CniRunner({ pluginDirs: [join(dir, 'none'), dir], cacheDir: join(dir, 'cache'), timeoutMs: 10_000 });
  });
  after(async () => { await rm(dir, { recursive: true, force: true }); });

  it('ADD in order with each result as the next prevResult; DEL in reverse with the cached result', async () => {
    await rm(log, { force: true });
    const l = list('1.0.0');
    const version = await runner.prepare(l);
    assert.equal(version, '1.0.0');
    const r = await runner.add('k1', 'net1', l, version, att);
    assert.deepEqual((r as any).seen, ['first', 'second', 'third']);
    const adds = (await calls()).filter((c) => c.cmd === 'ADD');
    assert.deepEqual(adds.map((c) => c.plugin), ['first', 'second', 'third']);
    assert.equal(adds[0]!.input.prevResult, undefined);
    assert.deepEqual(adds[1]!.input.prevResult.seen, ['first']);
    assert.deepEqual(adds[2]!.input.prevResult.seen, ['first', 'second']);
    assert.deepEqual(adds[0]!.env, { id: 'c0ffee', netns: '/run/netns/fake', ifname: 'eth0', args: 'IgnoreUnknown=1', path: `${join(dir, 'none')}:${dir}` });
    assert.equal(adds[0]!.input.name, 'fakes');
    assert.deepEqual((await runner.cached('k1'))?.result, r);

    await rm(log, { force: true });
    // As after a restart: a new runner, the cache on disk is all it has.
    const fresh = new CniRunner({ pluginDirs: [dir], cacheDir: join(dir, 'cache') });
    await fresh.del('k1', '');
    const dels = await calls();
    assert.deepEqual(dels.map((c) => `${c.cmd} ${c.plugin}`), ['DEL third', 'DEL second', 'DEL first']);
    assert.deepEqual(dels.map((c) => c.input.prevResult), [r, r, r]);
    assert.equal(dels[0]!.env.netns, '');
    assert.equal(await fresh.cached('k1'), undefined);
    await rm(log, { force: true });
    await fresh.del('k1');
    assert.deepEqual(await calls(), [], 'a second DEL of an attachment already gone asks nothing');
  });

  it('a plugin failing ADD: the list is DEL\'d in reverse with the result so far, the error names it, no cache is left', async () => {
    await rm(log, { force: true });
    const l = list('1.0.0', [{}, {}, { fail: 'ADD' }]);
    await assert.rejects(runner.add('k2', 'net1', l, '1.0.0', att), (e: Error) => e instanceof CniError && e.code === 11 && e.message === 'CNI plugin third failed ADD: error 11 (try again later): third refuses ADD');
    const seq = await calls();
    assert.deepEqual(seq.map((c) => `${c.cmd} ${c.plugin}`), ['ADD first', 'ADD second', 'ADD third', 'DEL third', 'DEL second', 'DEL first']);
    assert.deepEqual(seq[3]!.input.prevResult.seen, ['first', 'second']);
    assert.equal(await runner.cached('k2'), undefined);
  });

  it('a DEL that fails: every plugin still asked, the entry kept and marked for GC', async () => {
    const l = list('1.0.0', [{}, { fail: 'DEL' }, {}]);
    await runner.add('k3', 'net1', l, '1.0.0', att);
    await rm(log, { force: true });
    await assert.rejects(runner.del('k3'), /CNI plugin second failed DEL/);
    assert.deepEqual((await calls()).map((c) => `${c.cmd} ${c.plugin}`), ['DEL third', 'DEL second', 'DEL first']);
    assert.equal((await runner.cached('k3'))?.deleteFailed, true);
    await rm(join(dir, 'cache', 'k3.json'));
  });

  it('CHECK with the cached result from 0.4.0 on, unless disableCheck', async () => {
    await runner.add('k4', 'net1', list('0.4.0'), '0.4.0', att);
    await rm(log, { force: true });
    assert.equal(await runner.check('k4'), 'checked');
    const checks = await calls();
    assert.deepEqual(checks.map((c) => `${c.cmd} ${c.plugin}`), ['CHECK first', 'CHECK second', 'CHECK third']);
    assert.deepEqual(checks[0]!.input.prevResult.seen, ['first', 'second', 'third']);
    await runner.del('k4');
    await runner.add('k5', 'net1', list('1.0.0', undefined, { disableCheck: true }), '1.0.0', att);
    assert.equal(await runner.check('k5'), 'not supported');
    await runner.del('k5');
  });

  it('STATUS and GC only at 1.1.0: the valid attachments under both names, no container variables', async () => {
    const l10 = list('1.0.0');
    await rm(log, { force: true });
    await runner.status(l10, '1.0.0');
    await runner.gc(l10, '1.0.0', []);
    assert.deepEqual(await calls(), [], 'a 1.0.0 list has no STATUS or GC');
    const l11 = list('1.1.0');
    assert.equal(await runner.prepare(l11), '1.1.0');
    await rm(log, { force: true });
    await runner.status(l11, '1.1.0');
    const valid = [{ containerID: 'c0ffee', ifname: 'eth0' }];
    await runner.gc(l11, '1.1.0', valid);
    const seq = await calls();
    assert.deepEqual(seq.map((c) => `${c.cmd} ${c.plugin}`), ['STATUS first', 'STATUS second', 'STATUS third', 'GC first', 'GC second', 'GC third']);
    assert.deepEqual(seq[3]!.input['cni.dev/valid-attachments'], valid);
    assert.deepEqual(seq[3]!.input['cni.dev/attachments'], valid);
    assert.equal(seq[3]!.env.id, undefined);
    await assert.rejects(runner.status(list('1.1.0', [{}, { fail: 'STATUS' }, {}]), '1.1.0'), /CNI plugin second failed STATUS: error 11/);
    await runner.gc(list('1.1.0', undefined, { disableGC: true }), '1.1.0', []);
    // A list allowing 1.1.0 runs at 1.0.0 on a plugin that stops there: then no STATUS or GC.
    const mixed: ConfList = { cniVersion: '1.1.0', cniVersions: ['1.0.0', '1.1.0'], name: 'm', plugins: [{ type: 'first', fake: { log } }, { type: 'old', fake: { log } }] };
    assert.equal(await runner.prepare(mixed), '1.0.0');
    assert.deepEqual(await readdir(join(dir, 'cache')), []);
  });

  it('a plugin that is nowhere: libcni\'s words, before anything runs', async () => {
    await assert.rejects(runner.prepare({ cniVersion: '1.0.0', name: 'x', plugins: [{ type: 'first' }, { type: 'ghost' }] }), /failed to find plugin "ghost" in path \[/);
  });
});

describe('berth-cni: the plugin side', () => {
  it('answers VERSION without berthd, and refuses a version it does not speak', async () => {
    assert.deepEqual(JSON.parse(await runPlugin('VERSION', '{"cniVersion":"1.0.0"}')), { cniVersion: '1.0.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
    await assert.rejects(runPlugin('ADD', '{"cniVersion":"0.2.0","name":"n"}'), (e: Error) => e instanceof CniError && e.code === 1);
    await assert.rejects(runPlugin('ADD', '{"cniVersion":"1.0.0"}'), (e: Error) => e instanceof CniError && e.code === 7);
    await assert.rejects(runPlugin('FLY', '{"cniVersion":"1.0.0","name":"n"}'), (e: Error) => e instanceof CniError && e.code === 4);
  });

  it('a berthd that is not there: "try again later" for ADD, "not available" for STATUS', async () => {
    const conf = JSON.stringify({ cniVersion: '1.1.0', name: 'n', socket: '/nonexistent/berth.sock' });
    const saved = { ...process.env };
    Object.assign(process.env, { CNI_CONTAINERID: 'c', CNI_NETNS: '/x', CNI_IFNAME: 'eth0' });
    try {
      await assert.rejects(runPlugin('ADD', conf), (e: Error) => e instanceof CniError && e.code === 11 && /berthd at \/nonexistent\/berth\.sock does not answer/.test(e.message));
      await assert.rejects(runPlugin('STATUS', conf), (e: Error) => e instanceof CniError && e.code === 50);
    } finally {
      for (const k of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']) if (saved[k] === undefined) delete process.env[k];
    }
  });

  it('words results in the version asked for: addresses name their family before 1.0.0', () => {
    const r = { cniVersion: '1.1.0', ips: [{ address: '10.0.0.2/24', interface: 0 }, { address: 'fd00::2/64', interface: 0 }] };
    assert.deepEqual(resultFor('0.4.0', r).ips!.map((i) => i.version), ['4', '6']);
    assert.deepEqual(resultFor('1.0.0', r), { ...r, cniVersion: '1.0.0' });
  });

  it('GC holds attachments back while it runs, and waits for those in flight', async () => {
    const gate = new SharedExclusive();
    const order: string[] = [];
    let release!: () => void;
    const inFlight = gate.withShared(() => new Promise<void>((r) => { release = () => { order.push('add 1 done'); r(); }; }));
    const gc = gate.withExclusive(async () => { order.push('gc'); });
    await new Promise((r) => setImmediate(r));
    const later = gate.withShared(async () => { order.push('add 2'); });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, []);
    release();
    await Promise.all([inFlight, gc, later]);
    assert.deepEqual(order, ['add 1 done', 'gc', 'add 2']);
  });
});
