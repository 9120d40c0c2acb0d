/**
 * A lab of three berth hosts (test/integration/lab.ts) or of three Docker 20.10 swarm hosts laid
 * out the same way (bench/swarmlab.ts), seen alike by the benches that run the same steps on both,
 * one lab after the other: each host's name, underlay address, namespace and the docker CLI
 * pointed at its engine; a namespace on the underlay itself for clients from "outside".
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab } from '../test/integration/lab.js';
import { DockerLab } from './swarmlab.js';
import { cleanupOnStop, log, run, runOk } from './util.js';

export interface LabHost {
  name: string; addr: string; netnsPath: string; cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** berthd's pid (berth's lab only): a SIGUSR2 starts or writes its CPU profile (src/daemon/profiling.ts). */
  daemonPid?(): number | undefined;
}
export interface EngineLab { engine: 'berth' | 'docker'; hosts: [LabHost, LabHost, LabHost]; clientNetns: string; destroy(): Promise<string[]> }

/** The docker CLI on a host; its output, or an error naming the host and the command. */
export async function docker(h: LabHost, args: string[]): Promise<string> {
  const r = await h.cli(args);
  if (r.code !== 0) throw new Error(`${h.name}: docker ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/** A swarm of the lab's hosts, the first one its manager, each listening and advertising on its underlay address only. */
export async function formSwarm(lab: EngineLab): Promise<void> {
  const [h0, ...rest] = lab.hosts;
  await docker(h0, ['swarm', 'init', '--advertise-addr', h0.addr, '--listen-addr', `${h0.addr}:2377`]);
  const token = await docker(h0, ['swarm', 'join-token', '-q', 'worker']);
  for (const h of rest) await docker(h, ['swarm', 'join', '--advertise-addr', h.addr, '--listen-addr', `${h.addr}:2377`, '--token', token, `${h0.addr}:2377`]);
}

export async function berthLab(): Promise<EngineLab> {
  const lab = await Lab.create(3, { leaseTtlSec: 3, seedBusybox: true });
  await lab.underlayAddress('10.99.0.250/24');
  const hosts = lab.hosts.map((h) => ({ name: h.name, addr: h.addr, netnsPath: h.host.netnsPath, cli: (a: string[]) => h.host.docker(a), daemonPid: () => h.host.daemonPid }));
  return { engine: 'berth', hosts: hosts as EngineLab['hosts'], clientNetns: `/run/netns/${lab.underlay}`, destroy: () => lab.destroy() };
}

export async function dockerLab(): Promise<EngineLab> {
  const base = await fs.mkdtemp(join(tmpdir(), 'berth-bench-docker-lab-'));
  const lab = await DockerLab.create(3, base);
  await runOk('ip', ['-n', lab.underlay, 'addr', 'replace', '10.98.0.250/24', 'dev', 'bbub0']);
  const hosts = lab.hosts.map((h) => ({ name: `docker${h.index}`, addr: h.addr, netnsPath: h.netnsPath, cli: (a: string[]) => h.cli(a) }));
  return {
    engine: 'docker', hosts: hosts as EngineLab['hosts'], clientNetns: `/run/netns/${lab.underlay}`,
    destroy: async () => {
      const leaks = await lab.destroy();
      await fs.rm(base, { recursive: true, force: true });
      return leaks;
    },
  };
}

/**
 * `measure` on a lab of each engine named by `--engines` (default berth, and docker where dockerd
 * is installed), one after the other; each engine's figures (and any leaks) go into `results`.
 */
export async function onEachLab(script: string, results: Record<string, unknown>, measure: (lab: EngineLab) => Promise<Record<string, unknown>>): Promise<void> {
  const i = process.argv.indexOf('--engines');
  const dockerd = (await run('dockerd', ['--version'])).code === 0;
  const engines = (i > 0 ? process.argv[i + 1]! : dockerd ? 'berth,docker' : 'berth').split(',');
  if (!dockerd && engines.includes('docker')) throw new Error(`dockerd is not installed: npm run ${script} runs scripts/bench-setup.sh first`);
  for (const engine of engines) {
    log(`${engine}: a lab of 3 hosts`);
    const lab = engine === 'docker' ? await dockerLab() : await berthLab();
    const kept = cleanupOnStop(() => lab.destroy());
    try {
      results[engine] = await measure(lab);
    } finally {
      kept();
      const leaks = await lab.destroy();
      if (leaks.length) {
        log(`LEAKS (${engine}): ${leaks.join('; ')}`);
        results[`${engine}_leaks`] = leaks;
      }
    }
  }
}
