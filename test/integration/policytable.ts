import assert from 'node:assert/strict';
import type { TestHost } from './harness.js';
import { addressOf, expected, policyLabels, SLOTS, subnetPrefix, type Case, type NetSpec } from './policy-cases.js';
import { probeAll, type Probe } from './policyprobe.js';

/**
 * The policy truth table's runner, for one host or a lab of several: where each case's networks
 * are made (`manager`, with the driver `driver` gives) and where its containers run (`hostOf`
 * the container's position in the case). Probes run from this machine into the containers'
 * namespaces, wherever their berthd is.
 */
export interface CaseHosts {
  manager: TestHost;
  hostOf(position: number): TestHost;
  driver(spec: NetSpec): { Driver: string; Options?: Record<string, string>; Attachable?: boolean };
  concurrency: number;
}

async function createNetwork(host: TestHost, body: Record<string, unknown>): Promise<string> {
  const r = await host.api('POST', '/networks/create', { CheckDuplicate: true, ...body });
  assert.equal(r.status, 201, `network create ${String(body.Name)}: ${r.body}`);
  return r.json.Id as string;
}

/** Makes a case's networks and containers, probes every pair on every slot, removes it all; returns the differences. */
export async function runCase(t: CaseHosts, index: number, c: Case): Promise<{ rows: string[]; probes: number }> {
  const netName = (key: string) => `pt${index}${key}`;
  const made: Array<{ host: TestHost; id: string }> = [];
  const netns: Record<string, string> = {};
  try {
    for (const [key, spec] of Object.entries(c.nets)) {
      await createNetwork(t.manager, {
        Name: netName(key), ...t.driver(spec),
        IPAM: { Driver: 'default', Config: [{ Subnet: `${subnetPrefix(index, key)}.0/24` }] },
        Labels: policyLabels(index, netName, spec),
      });
    }
    await Promise.all(c.containers.map(async (ct, position) => {
      const host = t.hostOf(position);
      const [first, ...rest] = ct.nets;
      const cfg = (net: string) => ({ IPAMConfig: { IPv4Address: addressOf(index, c, ct.name, net) } });
      const r = await host.api('POST', `/containers/create?name=pt${index}${ct.name}`, {
        Image: 'busybox', Cmd: ['sleep', '600'], Labels: { ...(ct.labels ?? {}), ...policyLabels(index, netName, ct) },
        HostConfig: { NetworkMode: netName(first!) }, NetworkingConfig: { EndpointsConfig: { [netName(first!)]: cfg(first!) } },
      });
      assert.equal(r.status, 201, `create ${ct.name}: ${r.body}`);
      made.push({ host, id: r.json.Id as string });
      for (const net of rest) {
        const cn = await host.api('POST', `/networks/${netName(net)}/connect`, { Container: r.json.Id, EndpointConfig: cfg(net) });
        assert.equal(cn.status, 200, `connect ${ct.name} ${net}: ${cn.body}`);
      }
      const s = await host.api('POST', `/containers/${r.json.Id}/start`);
      assert.equal(s.status, 204, `start ${ct.name}: ${s.body}`);
      const insp = await host.api('GET', `/containers/${r.json.Id}/json`);
      netns[ct.name] = insp.json.NetworkSettings.SandboxKey as string;
    }));
    const probes: Array<Probe & { want?: boolean; what: string }> = [];
    for (const ct of c.containers) {
      // The control: every listener answers its own container over loopback, which no policy sees.
      for (const [proto, port] of SLOTS) probes.push({ id: `self ${ct.name} ${proto}/${port}`, netns: netns[ct.name]!, proto, ip: '127.0.0.1', port, what: 'control' });
    }
    for (const src of c.containers) {
      for (const dst of c.containers) {
        if (src === dst) continue;
        for (const net of src.nets.filter((n) => dst.nets.includes(n))) {
          for (const [proto, port] of SLOTS) {
            probes.push({
              id: `${src.name}>${dst.name} ${net} ${proto}/${port}`, netns: netns[src.name]!, proto, ip: addressOf(index, c, dst.name, net), port,
              want: expected(index, c, src, dst, net, proto, port), what: 'pair',
            });
          }
        }
      }
    }
    const got = await probeAll(t.manager.dir, c.containers.map((ct) => ({ netns: netns[ct.name]!, ports: SLOTS })), probes.map(({ id, netns: ns, proto, ip, port }) => ({ id, netns: ns, proto, ip, port })), 2);
    const rows: string[] = [];
    for (const p of probes) {
      const r = got[p.id];
      if (p.what === 'control') {
        if (r !== 'ok') rows.push(`${p.id.padEnd(28)} control probe ${r}: the probe or the listener is broken`);
        continue;
      }
      if (r !== 'ok' && r !== 'timeout' && r !== 'blocked') rows.push(`${p.id.padEnd(28)} expected ${p.want ? 'allow' : 'deny '} got ${r} (neither a pass nor a drop)`);
      else if ((r === 'ok') !== p.want) rows.push(`${p.id.padEnd(28)} expected ${p.want ? 'allow' : 'deny '} got ${r === 'ok' ? 'allow' : 'deny '}`);
    }
    return { rows, probes: probes.length };
  } finally {
    await Promise.all(made.map(({ host, id }) => host.api('DELETE', `/containers/${id}?force=1`)));
    for (const key of Object.keys(c.nets)) await t.manager.api('DELETE', `/networks/${netName(key)}`);
  }
}

/** Runs cases `concurrency` at a time; a case that fails to run is a failure of its own, and all end before the caller cleans up. */
export async function runCases(t: CaseHosts, cases: Array<[number, Case]>): Promise<{ failures: string[]; probes: number }> {
  const failures: string[] = [];
  let probes = 0;
  let next = 0;
  await Promise.all(Array.from({ length: t.concurrency }, async () => {
    for (let k = next++; k < cases.length; k = next++) {
      const [i, c] = cases[k]!;
      const r = await runCase(t, i, c).catch((e: Error) => ({ rows: [`did not run: ${e.message}`], probes: 0 }));
      probes += r.probes;
      if (r.rows.length) failures.push(`case ${i}: ${c.name}\n  ${'probe'.padEnd(28)} verdict\n  ${r.rows.join('\n  ')}`);
    }
  }));
  return { failures, probes };
}
