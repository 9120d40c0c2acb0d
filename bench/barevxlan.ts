/**
 * The kernel's own VXLAN path between two lab hosts, made by hand with no engine: in each host's
 * namespace a VXLAN device (a VNI and UDP port of its own, static FDB and neighbour entries) on a
 * bridge, and a veth into a scratch namespace standing for a container, at the MTU the engine's
 * overlay gave its containers. An engine's overlay can be no faster than this on the same
 * underlay, so its figures say how much of an overlay's gap to the underlay is the engine's and
 * how much is VXLAN's (encapsulation, a bridge and a veth each way). Everything it makes is
 * removed when `body` returns or throws.
 */
import { cleanupOnStop, run, runOk } from './util.js';

export interface BareHost { addr: string; netnsPath: string }

const VNI = '16000001';
const PORT = '4790';
const SUBNET = '10.213.0';

const inNs = (netnsPath: string, args: string[]) => runOk('nsenter', [`--net=${netnsPath}`, ...args]);

export async function withBareVxlan<T>(hosts: [BareHost, BareHost], mtu: number, body: (clientNs: string, serverNs: string, serverIp: string) => Promise<T>): Promise<T> {
  const names = [`bvx${process.pid}a`, `bvx${process.pid}b`];
  const made: string[] = [];
  const kept = cleanupOnStop(async () => { for (const ns of made) await run('ip', ['netns', 'del', ns]); });
  try {
    for (const [i, h] of hosts.entries()) {
      const ns = names[i]!;
      await runOk('ip', ['netns', 'add', ns]);
      made.push(ns);
      await inNs(h.netnsPath, ['ip', 'link', 'add', 'bvxbr', 'type', 'bridge']);
      await inNs(h.netnsPath, ['ip', 'link', 'set', 'bvxbr', 'mtu', String(mtu), 'up']);
      await inNs(h.netnsPath, ['ip', 'link', 'add', 'bvx0', 'type', 'vxlan', 'id', VNI, 'local', h.addr, 'dstport', PORT, 'nolearning']);
      await inNs(h.netnsPath, ['ip', 'link', 'set', 'bvx0', 'mtu', String(mtu), 'master', 'bvxbr', 'up']);
      await inNs(h.netnsPath, ['ip', 'link', 'add', 'bvxe', 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', ns]);
      await inNs(h.netnsPath, ['ip', 'link', 'set', 'bvxe', 'master', 'bvxbr', 'up']);
      await runOk('ip', ['-n', ns, 'addr', 'add', `${SUBNET}.${i + 1}/24`, 'dev', 'eth0']);
      await runOk('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
      await runOk('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    const macs = await Promise.all(names.map(async (ns) => /link\/ether (\S+)/.exec(await runOk('ip', ['-n', ns, 'link', 'show', 'eth0']))![1]!));
    for (const [i, h] of hosts.entries()) {
      const peer = 1 - i;
      await inNs(h.netnsPath, ['bridge', 'fdb', 'append', macs[peer]!, 'dev', 'bvx0', 'dst', hosts[peer]!.addr]);
      await runOk('ip', ['-n', names[i]!, 'neigh', 'add', `${SUBNET}.${peer + 1}`, 'lladdr', macs[peer]!, 'dev', 'eth0']);
    }
    return await body(`/run/netns/${names[0]}`, `/run/netns/${names[1]}`, `${SUBNET}.2`);
  } finally {
    for (const h of hosts) {
      await run('nsenter', [`--net=${h.netnsPath}`, 'ip', 'link', 'del', 'bvx0']);
      await run('nsenter', [`--net=${h.netnsPath}`, 'ip', 'link', 'del', 'bvxbr']);
    }
    for (const ns of made) await run('ip', ['netns', 'del', ns]);
    kept();
  }
}

/** The MTU of a namespace's eth0 (the overlay's, as the engine set it). */
export async function mtuOf(netnsPath: string): Promise<number> {
  const m = /\bmtu (\d+)/.exec(await inNs(netnsPath, ['ip', '-o', 'link', 'show', 'eth0']));
  if (!m) throw new Error(`no eth0 MTU in ${netnsPath}`);
  return Number(m[1]);
}
