import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { run, runOk } from '../../src/util/exec.js';
import { exec, probeTcp, TestHost } from './harness.js';
import { CASES, type NetSpec } from './policy-cases.js';
import { runCases, type CaseHosts } from './policytable.js';

/**
 * Network policy (berth.policy.* labels) on one host: a truth table in the style of Kubernetes'
 * policy conformance tests, then the three-tier example of the README with busybox nc inside the
 * containers, bad labels, changes that take effect before the API call returns, a kill -9 of
 * berthd, and what is left in nft afterwards.
 */

const PARENT = 'pmlan0';
const CONCURRENCY = 3;

async function policyTable(host: TestHost): Promise<string> {
  const r = await host.inNetns('nft', ['list', 'table', 'inet', 'berth-policy']);
  return r.code === 0 ? r.stdout : '';
}

describe('network policy', () => {
  let host: TestHost;

  before(async () => {
    host = await TestHost.create();
    // macvlan's parent: a veth whose both ends stay in the test host (children of one parent reach each other).
    await runOk('ip', ['-n', host.netns, '-batch', '-'], { input: `link add ${PARENT} mtu 1400 type veth peer name pmlan1 mtu 1400\nlink set ${PARENT} up\nlink set pmlan1 up\n` });
  });

  after(async () => {
    await run('ip', ['-n', host.netns, 'link', 'del', PARENT]);
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  it('bad labels are a 400 at create, naming the label, and nothing is made', async () => {
    const c = await host.api('POST', '/containers/create?name=badlabel', { Image: 'busybox', Labels: { 'berth.policy.ingress.db': 'labels:tier=app ports:54x32' } });
    assert.equal(c.status, 400, c.body);
    assert.match(c.json.message, /^invalid label berth\.policy\.ingress\.db: "54x32" is not a port/);
    assert.equal((await host.api('GET', '/containers/badlabel/json')).status, 404);
    const n = await host.api('POST', '/networks/create', { Name: 'badnet', Labels: { 'berth.policy.isolate': 'both' } });
    assert.equal(n.status, 400, n.body);
    assert.match(n.json.message, /invalid label berth\.policy\.isolate: "both" is not ingress, egress or ingress,egress/);
    assert.equal((await host.api('GET', '/networks/badnet')).status, 404);
    const d = await host.docker(['run', '--rm', '--label', 'berth.policy.ingres=any', 'busybox', 'true']);
    assert.notEqual(d.code, 0);
    assert.match(d.stderr, /invalid label berth\.policy\.ingres: unknown policy key/);
  });

  describe('three tiers (README), busybox nc inside the containers', () => {
    const ids: Record<string, string> = {};
    const ip: Record<string, string> = {};
    const keys: Record<string, string> = {};
    const tcp = (from: string, to: string, port: number) => probeTcp(host, ids[from]!, ip[to]!, port, 2);
    /** The same busybox nc probe without berthd (which runs exec): the host's busybox in the container's namespace. */
    const nsTcp = async (from: string, to: string, port: number) => {
      const r = await run('nsenter', [`--net=${keys[from]}`, 'busybox', 'nc', '-w', '2', ip[to]!, String(port)], { input: '' });
      if (r.code === 0) return 'connected';
      if (/timed out/.test(r.stderr + r.stdout)) return 'timeout';
      throw new Error(`nc ${to}:${port} from ${from} did not run as a probe (exit ${r.code}): ${r.stderr}`);
    };
    const runTier = async (name: string, labels: string[], port: number, extra: string[] = []) => {
      const r = await host.docker(['run', '-d', '--name', name, '--network', 'back', ...extra, ...labels.flatMap((l) => ['--label', l]), 'busybox', 'nc', '-ll', '-p', String(port), '-e', 'echo', name]);
      assert.equal(r.code, 0, r.stderr);
      ids[name] = r.stdout.trim();
      const insp = (await host.api('GET', `/containers/${name}/json`)).json;
      ip[name] = insp.NetworkSettings.Networks.back.IPAddress as string;
      keys[name] = insp.NetworkSettings.SandboxKey as string;
    };

    before(async () => {
      const n = await host.docker(['network', 'create', '--label', 'berth.policy.isolate=ingress', 'back']);
      assert.equal(n.code, 0, n.stderr);
      await runTier('db', ['tier=db', 'berth.policy.ingress.app=labels:tier=app ports:5432'], 5432);
      await runTier('app', ['tier=app', 'berth.policy.ingress.proxy=labels:tier=proxy ports:8080'], 8080);
      await runTier('proxy', ['tier=proxy', 'berth.policy.ingress.web=any ports:80'], 80);
    });

    it('db accepts only app on 5432, app only proxy, proxy anyone; a refused probe has a passing twin', async () => {
      assert.equal(await tcp('app', 'db', 5432), 'connected');
      assert.equal(await tcp('proxy', 'db', 5432), 'timeout');
      assert.equal(await tcp('proxy', 'app', 8080), 'connected');
      assert.equal(await tcp('db', 'app', 8080), 'timeout');
      assert.equal(await tcp('db', 'proxy', 80), 'connected');
      assert.equal(await tcp('app', 'proxy', 80), 'connected');
    });

    it('an egress-isolated container still resolves names at 127.0.0.11 and reaches only what it may', async () => {
      await runTier('worker', ['tier=app', 'berth.policy.isolate=egress', 'berth.policy.egress.db=labels:tier=db ports:5432'], 9000);
      const r = await exec(host, ids.worker!, ['nslookup', 'db']);
      assert.match(r.out, new RegExp(`Address:\\s*${ip.db!.replace(/\./g, '\\.')}`), r.out);
      assert.equal(await tcp('worker', 'db', 5432), 'connected');
      assert.equal(await tcp('worker', 'proxy', 80), 'timeout');
    });

    it('policy ls and inspect show the grants, the peers and the counters', async () => {
      const api = await host.api('GET', '/berth/policy/db');
      assert.equal(api.status, 200, api.body);
      const ep = api.json.Endpoints[0];
      assert.equal(ep.Network, 'back');
      assert.equal(ep.Ingress.Isolated, true);
      assert.deepEqual(ep.Ingress.IsolatedBy, ['network back: berth.policy.isolate', 'berth.policy.ingress.app']);
      assert.equal(ep.Egress.Isolated, false);
      const rule = ep.Ingress.Rules[0];
      assert.equal(rule.Label, 'berth.policy.ingress.app');
      assert.equal(rule.Ports, '5432/tcp');
      assert.ok(rule.Peers.some((p: string) => p.startsWith(`app ${ip.app} `)), JSON.stringify(rule.Peers));
      assert.ok(rule.Peers.some((p: string) => p.startsWith('worker ')), JSON.stringify(rule.Peers));
      assert.ok(rule.Matched >= 1, `matched ${rule.Matched}`);
      assert.ok(ep.Ingress.Denied >= 1, `denied ${ep.Ingress.Denied}`);
      const cli = await host.berth(['network', 'policy', 'inspect', 'db']);
      assert.equal(cli.code, 0, cli.stderr);
      assert.match(cli.stdout, /May be reached by \(isolated by network back: berth\.policy\.isolate, berth\.policy\.ingress\.app; \d+ packets denied\):/);
      assert.match(cli.stdout, /labels:tier=app on 5432\/tcp \(granted by berth\.policy\.ingress\.app; \d+ connections\)/);
      assert.match(cli.stdout, /May reach: anyone/);
      const ls = await host.berth(['network', 'policy', 'ls']);
      assert.equal(ls.code, 0, ls.stderr);
      assert.match(ls.stdout, /^CONTAINER\s+NETWORK\s+ADDRESS\s+INGRESS\s+EGRESS\s+DENIED IN\/OUT$/m);
      assert.match(ls.stdout, new RegExp(`^db\\s+back\\s+${ip.db!.replace(/\./g, '\\.')}\\s+1 rule\\s+open\\s+\\d+/0$`, 'm'));
      assert.match(ls.stdout, /^worker\s+back\s+\S+\s+deny all\s+1 rule\s+/m);
      assert.equal((await host.api('GET', '/berth/policy/nosuch')).status, 404);
    });

    it('changes take effect before the call returns: rm then an intruder on the same address, start, connect', async () => {
      const appIp = ip.app!;
      assert.equal((await host.api('DELETE', `/containers/${ids.app}?force=1`)).status, 204);
      // The intruder gets app's address the moment it is free: it must not inherit app's grant.
      await runTier('intruder', [], 7000, ['--ip', appIp]);
      assert.equal(ip.intruder, appIp);
      assert.equal(await tcp('intruder', 'db', 5432), 'timeout');
      assert.equal(await tcp('intruder', 'proxy', 80), 'connected');
      await runTier('app2', ['tier=app'], 7001);
      assert.equal(await tcp('app2', 'db', 5432), 'connected');
      // A container of the app tier on another network joins back: allowed at once.
      assert.equal((await host.docker(['network', 'create', 'other'])).code, 0);
      const late = await host.docker(['run', '-d', '--name', 'late', '--network', 'other', '--label', 'tier=app', 'busybox', 'sleep', '600']);
      assert.equal(late.code, 0, late.stderr);
      ids.late = late.stdout.trim();
      assert.equal((await host.docker(['network', 'connect', 'back', 'late'])).code, 0);
      ip.late = (await host.api('GET', '/containers/late/json')).json.NetworkSettings.Networks.back.IPAddress as string;
      assert.equal(await tcp('late', 'db', 5432), 'connected');
      assert.equal((await host.docker(['network', 'disconnect', 'back', 'late'])).code, 0);
      // Its old address on back left db's grant with it: a container that takes it is refused.
      await runTier('intruder2', [], 7002, ['--ip', ip.late]);
      assert.equal(await tcp('intruder2', 'db', 5432), 'timeout');
      assert.equal(await tcp('intruder2', 'proxy', 80), 'connected');
    });

    it('berthd killed with -9: the rules hold meanwhile and are rebuilt from the records', async () => {
      const before = await policyTable(host);
      const pid = host.daemonPid!;
      await host.stopDaemon('SIGKILL');
      assert.throws(() => process.kill(pid, 0), 'berthd is gone');
      assert.equal(await nsTcp('proxy', 'db', 5432), 'timeout');
      assert.equal(await nsTcp('app2', 'db', 5432), 'connected');
      await host.startDaemon();
      const afterRestart = await policyTable(host);
      // The same chains, sets, elements and rules; counters start again, element order may differ.
      const shape = (t: string) => t.replace(/packets \d+ bytes \d+/g, '').split(/[\n{},]/).map((l) => l.trim()).filter(Boolean).sort().join('\n');
      assert.equal(shape(afterRestart), shape(before));
      assert.equal(await tcp('proxy', 'db', 5432), 'timeout');
      assert.equal(await tcp('app2', 'db', 5432), 'connected');
      assert.equal(await tcp('intruder', 'db', 5432), 'timeout');
      const ep = (await host.api('GET', '/berth/policy/db')).json.Endpoints[0];
      assert.ok(ep.Ingress.Rules[0].Peers.some((p: string) => p.startsWith('app2 ')));
    });

    it('nothing of a policy stays in nft once its containers are gone', async () => {
      for (const name of Object.keys(ids)) await host.api('DELETE', `/containers/${name}?force=1`);
      assert.equal((await host.docker(['network', 'rm', 'back', 'other'])).code, 0);
      const table = await policyTable(host);
      assert.match(table, /chain forward/);
      assert.doesNotMatch(table, /chain ep_|set sel_|elements/, table);
    });
  });

  it(`truth table: ${CASES.length} cases, every pair × tcp and udp ports, expected from the policy model`, async () => {
    assert.ok(CASES.length >= 30);
    const single: CaseHosts = {
      manager: host, hostOf: () => host, concurrency: CONCURRENCY,
      driver: (spec: NetSpec) => (spec.macvlan ? { Driver: 'macvlan', Options: { parent: PARENT } } : { Driver: 'bridge' }),
    };
    const { failures, probes } = await runCases(single, CASES.map((c, i) => [i, c]));
    assert.ok(probes > 30 * 40, `only ${probes} probes ran`);
    assert.equal(failures.length, 0, `differences from the expected matrix:\n${failures.join('\n')}`);
    // Every case's containers and networks are gone: no chain, set or element is left behind.
    const table = await policyTable(host);
    assert.doesNotMatch(table, /chain ep_|set sel_|elements/, table);
  });
});
