import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { TestHost } from './harness.js';

/**
 * Found by `npm run chaos` (seed 20261205): a `network create` after a crash answered 500
 * "nft … File exists" because an element the crashed berthd had written held the new network's
 * key. berth's records are the truth: a create or rm whose incremental rules meet such leftovers
 * rebuilds the table from the records and succeeds.
 */
describe('network create and rm with firewall leftovers of a crash', () => {
  let host: TestHost;

  before(async () => {
    host = await TestHost.create();
  });
  after(async () => {
    assert.deepEqual(await host.destroy(), []);
  });

  async function postSrc(): Promise<string> {
    const r = await host.inNetns('nft', ['list', 'map', 'ip', 'berth', 'post_src']);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  }

  it('create succeeds when a stale element holds the subnet, and the element is the new network\'s', async () => {
    const stale = await host.inNetns('nft', ['add', 'element', 'ip', 'berth', 'post_src', '{ 10.91.0.0/24 : accept }']);
    assert.equal(stale.code, 0, stale.stderr);
    const r = await host.api('POST', '/networks/create', { Name: 'heal', IPAM: { Config: [{ Subnet: '10.91.0.0/24' }] } });
    assert.equal(r.status, 201, r.body);
    const map = await postSrc();
    assert.match(map, /10\.91\.0\.0\/24 : jump n[0-9a-f]+_post/);
    assert.doesNotMatch(map, /10\.91\.0\.0\/24 : accept/);
  });

  it('rm succeeds when the network\'s element is already gone, and leaves no rule of it', async () => {
    assert.equal((await host.inNetns('nft', ['delete', 'element', 'ip', 'berth', 'post_src', '{ 10.91.0.0/24 }'])).code, 0);
    const r = await host.api('DELETE', '/networks/heal');
    assert.equal(r.status, 204, r.body);
    const all = await host.inNetns('nft', ['list', 'table', 'ip', 'berth']);
    assert.doesNotMatch(all.stdout, /10\.91\.0\.0/);
    assert.equal((await host.api('GET', '/networks/heal')).status, 404);
  });
});
