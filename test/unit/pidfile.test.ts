import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { livePidFileHolder, pidFileText } from '../../src/daemon/pidfile.js';

/** A stale pidfile (zombie, reused pid, another program) must not block berthd; a live berthd must. */
describe('berthd pidfile', () => {
  let proc: string;
  // /proc/PID/stat as the kernel writes it; the command name may hold spaces and parentheses.
  const stat = (pid: number, comm: string, state: string, start: number) =>
    `${pid} (${comm}) ${state} 1 ${pid} ${pid} 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0 ${start} 1000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n`;
  async function fakeProcess(pid: number, comm: string, state: string, start: number, cmdline: string[]): Promise<void> {
    await fs.mkdir(join(proc, String(pid)), { recursive: true });
    await fs.writeFile(join(proc, String(pid), 'stat'), stat(pid, comm, state, start));
    await fs.writeFile(join(proc, String(pid), 'cmdline'), cmdline.join('\0') + '\0');
  }
  before(async () => {
    proc = await fs.mkdtemp(join(tmpdir(), 'berth-proc-'));
    await fakeProcess(100, 'node', 'S', 5000, ['node', '/opt/berth/dist/src/daemon/berthd.js', '--root', '/var/lib/berth']);
    await fakeProcess(101, 'node', 'Z', 5100, []);
    await fakeProcess(102, 'a (weird) name', 'S', 777, ['sleep', '300']);
  });
  after(async () => { await fs.rm(proc, { recursive: true, force: true }); });

  it('writes the pid with its start time, parsed past a command name with spaces and parentheses', async () => {
    assert.equal(await pidFileText(100, proc), '100 5000\n');
    assert.equal(await pidFileText(102, proc), '102 777\n');
  });

  it('names a live berthd with the same start time, or an old pidfile\'s berthd by its command line', async () => {
    assert.equal(await livePidFileHolder('100 5000\n', 1, proc), 100);
    assert.equal(await livePidFileHolder('100\n', 1, proc), 100);
  });

  it('calls stale: a zombie, a reused pid (other start time or another program), no such process, itself, garbage', async () => {
    assert.equal(await livePidFileHolder('101 5100\n', 1, proc), undefined, 'zombie');
    assert.equal(await livePidFileHolder('100 4999\n', 1, proc), undefined, 'reused pid: another start time');
    assert.equal(await livePidFileHolder('102\n', 1, proc), undefined, 'reused pid: not berthd');
    assert.equal(await livePidFileHolder('999\n', 1, proc), undefined, 'gone');
    assert.equal(await livePidFileHolder('100 5000\n', 100, proc), undefined, 'its own pid');
    assert.equal(await livePidFileHolder('', 1, proc), undefined);
    assert.equal(await livePidFileHolder('x\n', 1, proc), undefined);
  });
});
