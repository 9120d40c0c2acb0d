import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { checkInvariants } from '../chaos/invariants.js';
import { ARCHIVE_TARGETS, runArchiveFuzz, type ArchiveFuzzReport } from '../chaos/archivefuzz.js';
import { TestHost } from './harness.js';

/**
 * Hostile tar archives for load, import, cp and build contexts (fast-check, seeded):
 * BERTH_FUZZ_SEED replays, BERTH_ARCHIVE_FUZZ_RUNS runs more (or `npm run chaos -- --archive-fuzz N`).
 */
const seed = Number(process.env.BERTH_FUZZ_SEED ?? Date.now() % 1_000_000);
const runs = Number(process.env.BERTH_ARCHIVE_FUZZ_RUNS ?? 80);

describe(`hostile archives: ${runs} fuzzed tars for load, import, cp and build (seed ${seed}; replay with BERTH_FUZZ_SEED=${seed})`, () => {
  let host: TestHost;
  let report: ArchiveFuzzReport;

  before(async () => {
    host = await TestHost.create();
    await host.runDetached({ Cmd: ['sleep', '600'], HostConfig: { NetworkMode: 'none' } }, 'tarfz');
    report = await runArchiveFuzz(host, { runs, seed, container: 'tarfz' });
    console.log(`archive fuzz: ${report.tried} archives, by status ${JSON.stringify(report.byStatus)}`);
  });

  after(async () => {
    assert.deepEqual(await host.destroy(), []);
  });

  it('sends archives to every route that unpacks one', () => {
    for (const t of ARCHIVE_TARGETS) assert.ok(Object.keys(report.byStatus).some((k) => k.startsWith(`${t} `)), `no archive went to ${t}: ${JSON.stringify(report.byStatus)}`);
  });

  it('answers each with a 2xx or a 4xx with a message, never a 5xx or a hang; berthd stays, nothing lands outside, the host file stays unlinked and untold', () => {
    assert.deepEqual(report.failures, []);
  });

  it('leaves the store and the kernel in agreement', async () => {
    await checkInvariants(host);
  });
});
