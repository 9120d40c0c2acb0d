import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { checkInvariants } from '../chaos/invariants.js';
import { apiRoutes, runFuzz, type FuzzReport } from '../chaos/fuzz.js';
import { TestHost } from './harness.js';

/**
 * Property-based fuzzing of every API route (fast-check, seeded): paths, queries and bodies a
 * hostile client might send. BERTH_FUZZ_SEED replays, BERTH_FUZZ_RUNS runs more (or
 * `npm run chaos -- --fuzz N`).
 */
const seed = Number(process.env.BERTH_FUZZ_SEED ?? Date.now() % 1_000_000);
const runs = Number(process.env.BERTH_FUZZ_RUNS ?? 200);

describe(`hostile input: ${runs} fuzzed requests over every route (seed ${seed}; replay with BERTH_FUZZ_SEED=${seed})`, () => {
  let host: TestHost;
  let report: FuzzReport;

  before(async () => {
    host = await TestHost.create();
    assert.equal((await host.api('POST', '/networks/create', { Name: 'fzn', IPAM: { Config: [{ Subnet: '10.83.0.0/24' }] } })).status, 201);
    assert.equal((await host.api('POST', '/volumes/create', { Name: 'fzv' })).status, 201);
    await host.runDetached({ Cmd: ['sleep', '600'], HostConfig: { NetworkMode: 'fzn' } }, 'fz');
    report = await runFuzz(host, { runs, seed, fixtures: { container: 'fz', network: 'fzn', volume: 'fzv', image: 'busybox' } });
    console.log(`fuzz: ${report.tried} requests, by status ${JSON.stringify(report.byStatus)}`);
  });

  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  it('covers the real router (every route registered in src/api/routes)', () => {
    const routes = apiRoutes();
    assert.ok(routes.length > 80, `${routes.length} routes`);
    assert.ok(routes.some((r) => r.method === 'PUT' && r.template === '/containers/{p}/archive'));
    assert.ok(routes.some((r) => r.method === 'DELETE' && r.template === '/images/{p*}'));
  });

  it('answers every input with a 2xx/3xx/4xx (4xx with a JSON message), never a hang, with the same berthd and nothing written outside its root', () => {
    assert.equal(report.tried, runs);
    assert.deepEqual(report.failures, []);
  });

  it('leaves the store and the kernel in agreement', async () => {
    // The fuzz may have removed its fixtures (a DELETE with the right name is valid input).
    await checkInvariants(host);
  });
});
