import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { removeStaleScratch, withScratchDir } from '../../src/util/scratch.js';

test('scratch directories of a berthd that is gone are removed; a live one\'s are kept', async () => {
  // A pid that certainly ended: a child that ran and exited.
  const dead = spawnSync('true').pid;
  const stale = [join(tmpdir(), `berth-pki-${dead}-test`), join(tmpdir(), `berth-nft-${dead}-test`)];
  const live = join(tmpdir(), `berth-pki-${process.pid}-test`);
  for (const d of [...stale, live]) await fs.mkdir(d, { recursive: true });
  await fs.writeFile(join(stale[0]!, 'n.key'), 'a key a killed berthd left');
  try {
    await removeStaleScratch();
    for (const d of stale) assert.equal(existsSync(d), false, `${d} removed`);
    assert.equal(existsSync(live), true, 'the running process keeps its own');
  } finally {
    for (const d of [...stale, live]) await fs.rm(d, { recursive: true, force: true });
  }
});

test('withScratchDir removes its directory after the job, also when the job fails', async () => {
  let seen = '';
  await assert.rejects(withScratchDir('berth-pki', async (dir) => { seen = dir; await fs.writeFile(join(dir, 'x'), 'y'); throw new Error('job failed'); }), /job failed/);
  assert.match(seen, new RegExp(`berth-pki-${process.pid}-`));
  assert.equal(existsSync(seen), false);
});
