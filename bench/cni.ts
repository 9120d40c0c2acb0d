/**
 * node dist/bench/cni.js [--quick] [--no-write]   (npm run bench:cni)
 * CNI both ways, berth only (Docker 20.10 cannot consume CNI: its networks are libnetwork's, so
 * there is no Docker side for `run -d` on a CNI network). In one test host (a namespace with its
 * own berthd), interleaved:
 *  - one interface with an address on a bridge, ADD then DEL, into a fresh namespace: berth-cni
 *    (onto a berth bridge network) against Debian's bridge plugin with host-local (the same job by
 *    the reference plugins), each run as a CNI runtime runs it (an exec, the list on stdin);
 *  - `run -d` until running and `rm -f` on a cni network (bridge + host-local list) against the
 *    same on a berth bridge network.
 * Everything is made under a temp directory and inside the test host's namespace, and removed at
 * the end, even on failure.
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestHost } from '../test/integration/harness.js';
import { PACKAGE_ROOT } from '../src/daemon/paths.js';
import { emitSideResults } from './report.js';
import { log, median, now, quantile, run } from './util.js';

const quick = process.argv.includes('--quick');
const write = !process.argv.includes('--no-write');
const N = quick ? 10 : 60;
const PLUGINS = '/usr/lib/cni';
const BERTH_CNI = join(PACKAGE_ROOT, 'bin', 'berth-cni');

const stats = (v: number[]) => ({ p50: Math.round(median(v) * 10) / 10, p90: Math.round(quantile(v, 0.9) * 10) / 10, n: v.length });

async function main(): Promise<void> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'berth-bench-cni-'));
  let host: TestHost | undefined;
  const results: Record<string, unknown> = { when: new Date().toISOString(), quick, iterations: N };
  try {
    await fs.mkdir(join(dir, 'net.d'));
    await fs.mkdir(join(dir, 'bin'));
    await fs.symlink(BERTH_CNI, join(dir, 'bin', 'berth-cni'));
    await fs.writeFile(join(dir, 'net.d', 'benchcni.conflist'), JSON.stringify({
      cniVersion: '1.0.0', name: 'benchcni',
      plugins: [{ type: 'bridge', bridge: 'cnibench1', isGateway: true, ipam: { type: 'host-local', subnet: '10.89.0.0/24', routes: [{ dst: '0.0.0.0/0' }], dataDir: join(dir, 'ipam') } }],
    }));
    host = await TestHost.create({ daemonArgs: ['--cni-conf-dir', join(dir, 'net.d'), '--cni-plugin-dir', join(dir, 'bin'), '--cni-plugin-dir', PLUGINS] });
    const h = host;
    const docker = async (args: string[]) => {
      const r = await h.docker(args);
      if (r.code !== 0) throw new Error(`docker ${args.join(' ')}: ${r.stderr.trim()}`);
      return r.stdout.trim();
    };
    await docker(['network', 'create', 'bn']);
    await docker(['network', 'create', '-d', 'cni', '-o', 'cni.conflist=benchcni', 'cn']);

    // The same job by both plugins: one interface with an address on a bridge, in a namespace of its own.
    const bridgeConf = { cniVersion: '1.0.0', name: 'benchbr', type: 'bridge', bridge: 'cnibench0', isGateway: true, ipam: { type: 'host-local', subnet: '10.88.0.0/24', dataDir: join(dir, 'ipam') } };
    const berthConf = { cniVersion: '1.0.0', name: 'benchberth', type: 'berth-cni', network: 'bn', socket: h.socket };
    const exec = async (plugin: string, command: string, conf: unknown, ns: string) => {
      const r = await run('nsenter', [`--net=${h.netnsPath}`, plugin], {
        input: JSON.stringify(conf),
        env: { PATH: process.env.PATH, CNI_COMMAND: command, CNI_CONTAINERID: `bench-${ns}`, CNI_NETNS: `/run/netns/${ns}`, CNI_IFNAME: 'eth0', CNI_ARGS: 'IgnoreUnknown=1', CNI_PATH: `${join(dir, 'bin')}:${PLUGINS}` },
      });
      if (r.code !== 0) throw new Error(`${plugin} ${command}: ${r.stdout} ${r.stderr}`);
    };
    const addDel: Record<'berth_cni' | 'debian_bridge', number[]> = { berth_cni: [], debian_bridge: [] };
    for (let i = 0; i < N; i++) {
      for (const [key, plugin, conf] of [['debian_bridge', join(PLUGINS, 'bridge'), bridgeConf], ['berth_cni', BERTH_CNI, berthConf]] as const) {
        const ns = `${h.netns}b${i % 2}`;
        await run('ip', ['netns', 'add', ns]);
        try {
          const t0 = now();
          await exec(plugin, 'ADD', conf, ns);
          await exec(plugin, 'DEL', conf, ns);
          addDel[key].push(now() - t0);
        } finally {
          await run('ip', ['netns', 'del', ns]);
        }
      }
    }
    results.add_del_ms = { berth_cni: stats(addDel.berth_cni), debian_bridge: stats(addDel.debian_bridge) };
    log(`ADD+DEL: berth-cni ${JSON.stringify(stats(addDel.berth_cni))}, Debian bridge ${JSON.stringify(stats(addDel.debian_bridge))}`);

    const runRm: Record<'cni' | 'bridge', { run: number[]; rm: number[] }> = { cni: { run: [], rm: [] }, bridge: { run: [], rm: [] } };
    for (let i = 0; i < N; i++) {
      for (const [key, net] of [['cni', 'cn'], ['bridge', 'bn']] as const) {
        const t0 = now();
        await docker(['run', '-d', '--name', `r${i}`, '--network', net, 'busybox', 'sleep', '300']);
        runRm[key].run.push(now() - t0);
        const t1 = now();
        await docker(['rm', '-f', `r${i}`]);
        runRm[key].rm.push(now() - t1);
      }
    }
    results.run_d_ms = { cni: stats(runRm.cni.run), bridge: stats(runRm.bridge.run) };
    results.rm_f_ms = { cni: stats(runRm.cni.rm), bridge: stats(runRm.bridge.rm) };
    results.docker = 'Docker 20.10 cannot consume CNI (no cni driver in libnetwork): no Docker side for these';
    await docker(['network', 'rm', 'cn', 'bn']);
    // The reference bridge plugin never removes its bridges: the bench does, in its own namespace.
    for (const br of ['cnibench0', 'cnibench1']) await h.inNetns('ip', ['link', 'del', br]);
  } finally {
    const leaks = host ? await host.destroy() : [];
    await fs.rm(dir, { recursive: true, force: true });
    if (leaks.length) log(`leaked: ${leaks.join(', ')}`);
  }
  await emitSideResults(PACKAGE_ROOT, 'cni', results, { write, quick, log });
}

await main();
