import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { runMultihostChaos, type MultihostReport } from '../chaos/multihost.js';

/**
 * The short, seeded form of `npm run chaos -- --hosts` (issue 22, many hosts): three managers on
 * the lab's underlay, containers run and removed and a service scaled on every host while a host's
 * berthd is killed, a host is cut off past the lease TTL, the etcd leader's member is killed, quorum
 * is lost, a whole host is restarted, each healed; then no stale or missing FDB, neighbour, DNS or
 * VIP entry on any host, no shared address, every survivor runs, no task lost or duplicated.
 * BERTH_MH_SEED replays a seed, BERTH_MH_CYCLES runs more.
 */
// An empty BERTH_MH_SEED is no seed (Number('') would replay seed 0).
const seed = Number(process.env.BERTH_MH_SEED || Date.now() % 1_000_000);
const cycles = Number(process.env.BERTH_MH_CYCLES ?? 5);

describe(`chaos across hosts: ${cycles} seeded fault cycles (seed ${seed}; replay with BERTH_MH_SEED=${seed})`, () => {
  let report: MultihostReport;

  before(async () => {
    report = await runMultihostChaos({ seed, cycles, log: (l) => console.log(l) });
    console.log(`multihost chaos report: ${JSON.stringify(report)}`);
  }, { timeout: 20 * 60_000 });

  it('runs every cycle, each fault kind at least once, with operations in flight', () => {
    assert.equal(report.cycles, cycles, `stopped at cycle ${report.cycles}: ${report.hangs.join('; ')}`);
    for (const [kind, n] of Object.entries(report.faults)) assert.ok(n >= 1, `no ${kind} fault injected`);
    const ops = Object.values(report.operations).reduce((a, o) => a + o.ok, 0);
    assert.ok(ops >= cycles, `only ${ops} operations succeeded`);
  });

  it('never hangs: every operation answered within its bound, every node Ready again', () => {
    assert.deepEqual(report.hangs, []);
  });

  it('the hosts agree after every fault: no stale or missing FDB, neighbour, name or VIP backend, no shared address, no lost container, no task lost or duplicated', () => {
    assert.deepEqual(report.violations, []);
  });

  it('leaves nothing behind', () => {
    assert.deepEqual(report.leaks, []);
  });
});
