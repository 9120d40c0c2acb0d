import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync, promises as fs } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Lab } from '../integration/lab.js';
import { pidAlive } from '../../src/util/process.js';

/**
 * npm run lab -- up N | down | status
 *
 * `up` starts a keeper process that makes the lab (test/integration/lab.ts, the same code the
 * cluster tests use) and holds its berthds; `up` returns once every host answers, printing each
 * host's DOCKER_HOST. `down` asks the keeper to take everything down and waits for it.
 */

const STATE = process.env.BERTH_LAB_STATE ?? '/run/berth-lab.json';
const LOG = STATE.replace(/\.json$/, '.log');

interface LabState { keeper: number; ready: boolean; error?: string; hosts: Array<{ name: string; addr: string; dockerHost: string; netns: string; root: string }>; underlay?: string }

async function readState(): Promise<LabState | undefined> {
  try { return JSON.parse(await fs.readFile(STATE, 'utf8')) as LabState; } catch { return undefined; }
}

function print(s: LabState): void {
  for (const h of s.hosts) console.log(`${h.name}  ${h.addr}  DOCKER_HOST=${h.dockerHost}  (netns ${h.netns})`);
  console.log(`\ne.g.  DOCKER_HOST=${s.hosts[0]?.dockerHost} docker swarm init --advertise-addr ${s.hosts[0]?.addr}`);
}

async function up(n: number): Promise<void> {
  const cur = await readState();
  if (cur && pidAlive(cur.keeper)) throw new Error(`a lab is already up (keeper pid ${cur.keeper}); run "npm run lab -- down" first`);
  await fs.rm(STATE, { force: true });
  const fd = openSync(LOG, 'w');
  const keeper = spawn(process.execPath, [fileURLToPath(import.meta.url), 'keep', String(n)], { detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  keeper.unref();
  const deadline = Date.now() + 60_000 + n * 20_000;
  for (;;) {
    const s = await readState();
    if (s?.ready) return print(s);
    if (s?.error) throw new Error(`the lab did not come up: ${s.error} (log: ${LOG})`);
    if (keeper.exitCode !== null || Date.now() > deadline) throw new Error(`the lab did not come up (log: ${LOG})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function keep(n: number): Promise<void> {
  const write = (s: LabState) => fs.writeFile(STATE, JSON.stringify(s, null, 2));
  let lab: Lab;
  try {
    lab = await Lab.create(n, { seedBusybox: true, leaseTtlSec: Number(process.env.BERTH_LAB_LEASE_TTL ?? 5) });
  } catch (e) {
    await write({ keeper: process.pid, ready: false, error: (e as Error).message, hosts: [] });
    process.exit(1);
  }
  await write({
    keeper: process.pid, ready: true, underlay: lab.underlay,
    hosts: lab.hosts.map((h) => ({ name: h.name, addr: h.addr, dockerHost: h.dockerHost, netns: h.host.netns, root: h.host.root })),
  });
  const stop = async () => {
    const leaks = await lab.destroy();
    for (const l of leaks) console.error(`lab: left behind: ${l}`);
    await fs.rm(STATE, { force: true });
    process.exit(leaks.length ? 1 : 0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  setInterval(() => undefined, 1 << 30);
}

async function down(): Promise<void> {
  const s = await readState();
  if (!s || !pidAlive(s.keeper)) {
    await fs.rm(STATE, { force: true });
    console.log('no lab is up');
    return;
  }
  process.kill(s.keeper, 'SIGTERM');
  const deadline = Date.now() + 120_000;
  while (pidAlive(s.keeper) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  if (pidAlive(s.keeper)) throw new Error(`the lab keeper (pid ${s.keeper}) did not finish; see ${LOG}`);
  const leftover = s.hosts.filter((h) => existsSync(`/run/netns/${h.netns}`)).map((h) => h.netns);
  if (s.underlay && existsSync(`/run/netns/${s.underlay}`)) leftover.push(s.underlay);
  if (leftover.length) throw new Error(`left behind: ${leftover.join(', ')} (see ${LOG})`);
  console.log('lab down: nothing left behind');
}

async function main(): Promise<void> {
  const [cmd, arg] = process.argv.slice(2);
  if (cmd === 'up') {
    const n = Number(arg ?? 3);
    if (!Number.isInteger(n) || n < 1 || n > 9) throw new Error('usage: npm run lab -- up N   (1 to 9 hosts)');
    return up(n);
  }
  if (cmd === 'keep') return keep(Number(arg));
  if (cmd === 'down') return down();
  if (cmd === 'status') {
    const s = await readState();
    if (s?.ready && pidAlive(s.keeper)) print(s);
    else console.log('no lab is up');
    return;
  }
  throw new Error('usage: npm run lab -- up N | down | status');
}

main().catch((e) => {
  console.error(`lab: ${(e as Error).message}`);
  process.exit(1);
});
