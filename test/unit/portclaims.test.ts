import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { blockKey, claimChanges, touchedBlocks, type ClaimBlock, type ClaimOps } from '../../src/cluster/portclaims.js';
import type { PortConfig } from '../../src/cluster/publish.js';
import type { Versioned } from '../../src/cluster/store.js';

const ports = (first: number, n: number, mode: 'ingress' | 'host' = 'ingress', proto: 'tcp' | 'udp' = 'tcp'): PortConfig[] =>
  Array.from({ length: n }, (_, i) => ({ Protocol: proto, TargetPort: 80, PublishedPort: first + i, PublishMode: mode }));

/** A store of blocks that applies a transaction's claim operations as etcd would (compares first). */
class Blocks {
  readonly kv = new Map<string, Versioned<ClaimBlock>>();
  private rev = 1;
  read(keys: string[]): Map<string, Versioned<ClaimBlock> | undefined> {
    return new Map(keys.map((k) => [k, this.kv.get(k)]));
  }
  apply(ops: ClaimOps): boolean {
    for (const c of ops.cmp) {
      const v = this.kv.get(c.key);
      if (c.target === 'Create' ? v !== undefined : v?.modRevision !== c.value) return false;
    }
    this.rev++;
    for (const p of ops.puts) this.kv.set(p.key, { value: p.value, modRevision: this.rev });
    for (const d of ops.deletes) this.kv.delete(d);
    return true;
  }
  holders(): Map<number, string> {
    return new Map([...this.kv.values()].flatMap((b) => Object.entries(b.value).map(([p, s]) => [Number(p), s] as [number, string])));
  }
}

function change(store: Blocks, service: string, had: PortConfig[], want: PortConfig[]): ReturnType<typeof claimChanges> {
  return claimChanges(store.read(touchedBlocks(had, want)), service, had, want);
}

describe('published port claims in blocks', () => {
  it('claims 1,000 ingress ports with a handful of operations (etcd allows 128 in a transaction)', () => {
    const store = new Blocks();
    const c = change(store, 'A', [], ports(20000, 1000)) as ClaimOps;
    assert.ok(!('taken' in c));
    assert.ok(c.cmp.length + c.puts.length + c.deletes.length <= 4, `${c.cmp.length} compares, ${c.puts.length} puts`);
    assert.ok(store.apply(c));
    assert.equal(store.holders().size, 1000);
    assert.ok([...store.holders().values()].every((s) => s === 'A'));
    // Every port of every block a whole range could touch: still 32 keys at most.
    assert.equal(touchedBlocks([], [...ports(1, 65535), ...ports(1, 65535, 'ingress', 'udp')]).length, 32);
  });

  it('host-mode ports claim nothing; tcp and udp of one number are two claims', () => {
    const store = new Blocks();
    assert.deepEqual(change(store, 'A', [], ports(8080, 3, 'host')), { cmp: [], puts: [], deletes: [] });
    const c = change(store, 'A', [], [...ports(8080, 1), ...ports(8080, 1, 'ingress', 'udp')]) as ClaimOps;
    assert.ok(store.apply(c));
    assert.deepEqual([...store.kv.keys()].sort(), [blockKey('tcp', 8080), blockKey('udp', 8080)].sort());
  });

  it('refuses a port another service holds, naming it; a service may keep its own', () => {
    const store = new Blocks();
    assert.ok(store.apply(change(store, 'A', [], ports(8000, 10)) as ClaimOps));
    assert.deepEqual(change(store, 'B', [], ports(8009, 2)), { taken: { port: 8009, holder: 'A' } });
    // A's update that keeps its ports and adds one writes one block, compared with what was read.
    const c = change(store, 'A', ports(8000, 10), ports(8000, 11)) as ClaimOps;
    assert.equal(c.cmp.length, 1);
    assert.equal(c.cmp[0]!.target, 'Mod');
    assert.ok(store.apply(c));
    assert.equal(store.holders().get(8010), 'A');
  });

  it('moves, frees and deletes: a block left empty goes, other services\' claims in it stay', () => {
    const store = new Blocks();
    assert.ok(store.apply(change(store, 'A', [], [...ports(100, 5), ...ports(9000, 5)]) as ClaimOps));
    assert.ok(store.apply(change(store, 'B', [], ports(105, 5)) as ClaimOps));
    // A moves 9000-9004 to 9100-9104 and drops 100-104: its block of 0-4095 keeps B's.
    assert.ok(store.apply(change(store, 'A', [...ports(100, 5), ...ports(9000, 5)], ports(9100, 5)) as ClaimOps));
    assert.deepEqual([...store.holders()].sort((a, b) => a[0] - b[0]), [...[105, 106, 107, 108, 109].map((p) => [p, 'B']), ...[9100, 9101, 9102, 9103, 9104].map((p) => [p, 'A'])]);
    // A removed: its block (8192-12287) is deleted, compared with its revision.
    const rm = change(store, 'A', ports(9100, 5), []) as ClaimOps;
    assert.deepEqual(rm.deletes, [blockKey('tcp', 9100)]);
    assert.deepEqual(rm.puts, []);
    assert.ok(store.apply(rm));
    assert.ok(!store.kv.has(blockKey('tcp', 9100)));
  });

  it('two services racing for one port: the second transaction fails its compare, and its retry sees the holder', () => {
    const store = new Blocks();
    const a = change(store, 'A', [], ports(7000, 1)) as ClaimOps;
    const b = change(store, 'B', [], ports(7000, 1)) as ClaimOps;
    assert.ok(store.apply(a));
    assert.equal(store.apply(b), false);
    assert.deepEqual(change(store, 'B', [], ports(7000, 1)), { taken: { port: 7000, holder: 'A' } });
    // Another port of the same block, claimed after A's: a fresh read succeeds.
    const c = change(store, 'C', [], ports(7001, 1)) as ClaimOps;
    assert.ok(store.apply(c));
  });
});
