import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CommandStream, ipDialect } from '../../src/kernel/stream.js';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runOk } from '../../src/util/exec.js';
import { waitFor } from './harness.js';

/**
 * berthd's long-lived `ip`: each group of commands must report its own errors, never an earlier or
 * a later group's, and a tool that died must be replaced on the next group. Real links in a
 * throwaway namespace.
 */

const NS = `bt${process.pid}st0`;

describe('kernel command streams', () => {
  before(async () => { await runOk('ip', ['netns', 'add', NS]); });
  after(async () => { await run('ip', ['netns', 'del', NS]); });

  it('runs groups in order, attributes errors to their group, and survives the tool dying', async () => {
    const stream = new CommandStream({ ...ipDialect, argv: ['ip', 'netns', 'exec', NS, 'ip', '-force', '-batch', '-'] });
    try {
      await stream.run(['link add bts0 type bridge', 'link set bts0 up']);
      // Three groups queued at once: only the middle one fails, with ip's own message.
      const results = await Promise.allSettled([
        stream.run(['link add bts1 type bridge']),
        stream.run(['link add bts0 type bridge']),
        stream.run(['link add bts2 type bridge']),
      ]);
      assert.equal(results[0].status, 'fulfilled');
      assert.equal(results[1].status, 'rejected');
      assert.match(String((results[1] as PromiseRejectedResult).reason), /File exists/);
      assert.equal(results[2].status, 'fulfilled');
      const links = await runOk('ip', ['-n', NS, '-o', 'link', 'show', 'type', 'bridge']);
      for (const name of ['bts0', 'bts1', 'bts2']) assert.match(links, new RegExp(`${name}:`));
      // Some of ip's parse errors end the process: the group fails with the message, the next
      // group starts a new ip.
      await assert.rejects(stream.run(['addr add not-an-address dev lo']), /not-an-address/);
      await stream.run(['link set bts1 up']);
      // A tool killed between groups is replaced by the next group.
      const first = stream.pid!;
      process.kill(first, 'SIGKILL');
      // Gone (reaped or at least dead), so the next group must find the tool replaced.
      await waitFor(async () => !(await fs.readFile(`/proc/${first}/stat`, 'utf8').catch(() => ' X ')).match(/^\S+ \(.*\) [RSD] /), 'the killed ip to die');
      await stream.run(['link del bts1', 'link del bts2']);
      assert.notEqual(stream.pid, first);
      assert.doesNotMatch(await runOk('ip', ['-n', NS, '-o', 'link', 'show', 'type', 'bridge']), /bts1|bts2/);
    } finally {
      stream.close();
    }
  });
});

describe('berth-spawn', () => {
  before(async () => { await runOk('ip', ['netns', 'add', `${NS}s`]); });
  after(async () => { await run('ip', ['netns', 'del', `${NS}s`]); });

  it('returns status, output and errors as Node\'s spawn did, for concurrent children, inside a namespace when asked', async () => {
    assert.deepEqual(await run('sh', ['-c', 'cat; echo oops >&2; exit 3'], { input: 'hello' }), { code: 3, stdout: 'hello', stderr: 'oops\n' });
    assert.equal((await run('sh', ['-c', 'kill -TERM $$'])).code, 128 + 15);
    await assert.rejects(run('berth-no-such-program', []), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
    // Larger than any pipe buffer both ways.
    const big = 'x'.repeat(3 << 20);
    assert.equal((await run('cat', [], { input: big })).stdout.length, big.length);
    // Children run at once and each answer goes to its own caller, in whatever order they end.
    const outs = await Promise.all([5, 4, 3, 2, 1].map((i) => run('sh', ['-c', `sleep 0.${i}; echo ${i}`])));
    assert.deepEqual(outs.map((o) => o.stdout.trim()), ['5', '4', '3', '2', '1']);
    // Concurrent, not one after the other: each child waits until all five have started, which
    // only children running at the same time can do (the waits end in 10 s either way).
    const meet = await fs.mkdtemp(join(tmpdir(), 'berth-meet-'));
    try {
      const met = await Promise.all([1, 2, 3, 4, 5].map((i) => run('sh', ['-c', `touch ${meet}/${i}; n=0; while [ $(ls ${meet} | wc -l) -lt 5 ]; do n=$((n+1)); [ $n -gt 1000 ] && exit 1; sleep 0.01; done; echo met`])));
      assert.deepEqual(met.map((o) => o.stdout.trim()), ['met', 'met', 'met', 'met', 'met'], 'concurrent, not one after the other');
    } finally {
      await fs.rm(meet, { recursive: true, force: true });
    }
    // Inside a namespace: its own loopback only, and the host's links are not there.
    const inside = await run('ip', ['-o', 'link', 'show'], { netns: `/run/netns/${NS}s` });
    assert.equal(inside.code, 0, inside.stderr);
    assert.deepEqual(inside.stdout.trim().split('\n').map((l) => l.split(': ')[1]), ['lo']);
    await assert.rejects(run('true', [], { netns: '/nonexistent/netns' }), (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
  });
});
