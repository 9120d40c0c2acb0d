/**
 * node dist/bench/plugins.js [--quick] [--no-write]
 * `run -d` on a network of a remote (Docker protocol) network plugin, berth against Docker 20.10
 * in the same run, each with its own copy of the same fake plugin (test/integration/fakeplugin.ts:
 * a bridge per network and a veth per endpoint, made with `ip` in the engine's namespace, the same
 * work for both engines): from the create request until start returns, as the docker CLI's
 * `run -d` waits. Repetitions alternate between the engines (A B, B A …). berthd finds its plugin
 * through --plugin-dir; dockerd runs in a mount namespace whose /etc/docker holds the plugin's spec
 * (as test/integration/plugins.test.ts does), so neither touches the machine's plugin directories.
 * Writes bench/results/plugins-*.json. Never a timed test.
 */
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakePlugin } from '../test/integration/fakeplugin.js';
import { TestHost } from '../test/integration/harness.js';
import { PrivateDocker, type Engine } from './engines.js';
import * as op from './ops.js';
import { emitSideResults } from './report.js';
import { PACKAGE_ROOT } from '../src/daemon/paths.js';
import { apiRequest, log, median, quantile, run } from './util.js';

const quick = process.argv.includes('--quick');
const write = !process.argv.includes('--no-write');
const N = quick ? 5 : 30;

const stats = (v: number[]) => ({ p50: Math.round(median(v) * 10) / 10, p90: Math.round(quantile(v, 0.9) * 10) / 10, n: v.length });

/** berth's test host seen as a bench engine: the same raw API requests as Docker's. */
function asEngine(h: TestHost): Engine {
  const api = (method: string, path: string, body?: unknown) => apiRequest(h.socket, method, `/v1.41${path}`, body);
  return {
    name: 'berth', api,
    apiOk: async (method: string, path: string, body?: unknown) => {
      const r = await api(method, path, body);
      if (r.status >= 300) throw new Error(`berth: ${method} ${path}: ${r.status} ${r.body.trim()}`);
      return r.json;
    },
  } as unknown as Engine;
}

async function main(): Promise<void> {
  if ((await run('dockerd', ['--version'])).code !== 0) throw new Error('dockerd is not installed: npm run bench:plugins runs scripts/bench-setup.sh first');
  if (!existsSync('/etc/docker')) throw new Error('/etc/docker is missing: the private dockerd binds its spec directory over it');
  const dir = await fs.mkdtemp(join(tmpdir(), 'berth-bench-plugins-'));
  const results: Record<string, unknown> = { when: new Date().toISOString(), quick, repetitions: N };
  let berth: TestHost | undefined;
  let docker: PrivateDocker | undefined;
  const plugins: FakePlugin[] = [];
  const leaks: string[] = [];
  try {
    await fs.mkdir(join(dir, 'berth-plugins'));
    await fs.mkdir(join(dir, 'etc-docker', 'plugins'), { recursive: true });
    await fs.mkdir(join(dir, 'docker'));
    berth = await TestHost.create({ daemonArgs: ['--plugin-dir', join(dir, 'berth-plugins'), '--plugin-spec-dir', join(dir, 'none')] });
    docker = new PrivateDocker(join(dir, 'docker'), join(dir, 'etc-docker'));
    const forBerth = new FakePlugin(join(dir, 'berth-plugins'), 'benchplug', berth.netns);
    const forDocker = new FakePlugin(dir, 'benchplug', docker.netns);
    plugins.push(forBerth, forDocker);
    await fs.writeFile(join(dir, 'etc-docker', 'plugins', 'benchplug.spec'), `unix://${forDocker.socket}\n`);
    await forBerth.start();
    await docker.start();
    await forDocker.start();
    const engines = [asEngine(berth), docker] as const;
    const body = { Name: 'pnet', Driver: 'benchplug', IPAM: { Driver: 'benchplug' } };
    for (const e of engines) await e.apiOk('POST', '/networks/create', body);
    const runMs: [number[], number[]] = [[], []];
    for (let rep = -1; rep < N; rep++) {
      // Repetition -1 warms both up; then the order swaps every repetition.
      for (const i of rep % 2 === 0 ? [0, 1] : [1, 0]) {
        const e = engines[i]!;
        const name = `p${rep + 1}`;
        const r = await op.runDetached(e, name, { network: 'pnet' });
        if (rep >= 0) runMs[i]!.push(r.ms);
        await e.apiOk('DELETE', `/containers/${name}?force=1`);
      }
      if (rep >= 0 && (rep + 1) % 10 === 0) log(`plugins: ${rep + 1}/${N}`);
    }
    results.run_d_ms = { berth: stats(runMs[0]), docker: stats(runMs[1]), ratio: Math.round((median(runMs[0]) / median(runMs[1])) * 100) / 100 };
    log(`run -d on a plugin network: berth ${JSON.stringify(stats(runMs[0]))}, Docker ${JSON.stringify(stats(runMs[1]))}, berth/Docker ${(median(runMs[0]) / median(runMs[1])).toFixed(2)}`);
    for (const e of engines) await e.apiOk('DELETE', '/networks/pnet');
  } finally {
    if (docker) leaks.push(...await docker.stop().catch((e) => [`docker: ${e}`]));
    if (berth) leaks.push(...await berth.destroy().catch((e) => [`berth: ${e}`]));
    for (const p of plugins) await p.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
  results.leaks = leaks;
  await emitSideResults(PACKAGE_ROOT, 'plugins', results, { write, quick, log });
  if (leaks.length) throw new Error(`leaks: ${leaks.join('; ')}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
