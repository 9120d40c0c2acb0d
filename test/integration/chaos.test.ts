import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runChaos, type ChaosReport } from '../chaos/workload.js';
import { TestHost } from './harness.js';

/**
 * The short, seeded form of `npm run chaos` (issue 22): 20 cycles of concurrent mixed operations
 * (run with fixed and random ports, aliases, restart policies, rm -f, connect, disconnect,
 * network create/rm, stop, restart) while berthd, a conmon, a runc, a container's process or
 * "everything" (berthd and every conmon) is killed at a random moment; after each, the invariants
 * of test/chaos/invariants.ts hold. BERTH_CHAOS_SEED replays a seed, BERTH_CHAOS_CYCLES runs more.
 */
const seed = Number(process.env.BERTH_CHAOS_SEED ?? Date.now() % 1_000_000);
const cycles = Number(process.env.BERTH_CHAOS_CYCLES ?? 20);

describe(`chaos: ${cycles} seeded fault cycles under load (seed ${seed}; replay with BERTH_CHAOS_SEED=${seed})`, () => {
  let host: TestHost;
  let report: ChaosReport;

  before(async () => {
    host = await TestHost.create({ outside: true });
    report = await runChaos(host, { seed, cycles, workers: 4, dnsEvery: 5, opTimeoutMs: 45_000, keepGoing: true, log: (l) => console.log(l) });
    console.log(`chaos report: ${JSON.stringify({ ...report, operations: undefined })}`);
  });

  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  it('runs every cycle, each fault kind at least once, with operations in flight', () => {
    assert.equal(report.cycles, cycles, `stopped at cycle ${report.cycles}: ${JSON.stringify(report.violations)} ${report.hangs.join('; ')}`);
    for (const [kind, n] of Object.entries(report.faults)) assert.ok(n >= 1, `no ${kind} fault injected`);
    const ops = Object.values(report.operations).reduce((a, o) => a + o.ok + o.refused + o.serverError + o.interrupted, 0);
    assert.ok(ops > cycles * 4, `only ${ops} operations`);
  });

  it('never hangs: every operation answered within its bound', () => {
    // The message carries the seed and what was seen at each hang: CI keeps only a failure's message.
    assert.deepEqual(report.hangs, [], `seed ${seed}: ${report.hangs.length} hang(s):\n${report.hangEvidence.join('\n\n')}`);
  });

  it('after every fault the store and the kernel agree (links, addresses, pins, mounts, runc, conmon, cgroups, nft, journals, DNS)', () => {
    assert.deepEqual(report.violations, []);
  });

  it('restart policies are honoured and containers nobody touched keep running', () => {
    assert.deepEqual(report.policyViolations, []);
  });
});
