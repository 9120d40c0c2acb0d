import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { detectCgroupLayout, readCgroupV1, readCgroupV2, sampleStats } from '../../src/engine/metrics.js';
import { swapAccounting } from '../../src/engine/resources.js';

/**
 * The cgroup readers on files laid out as the kernel lays them out (copied from a Debian 12 host on
 * cgroup v2 and from this machine's v1 hierarchies), so the v2 path is checked on a machine that
 * does not boot with it.
 */

const V2_FILES: Record<string, string> = {
  'cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n',
  'cpu.stat': 'usage_usec 1520034\nuser_usec 1010022\nsystem_usec 510012\ncore_sched.force_idle_usec 0\nnr_periods 40\nnr_throttled 3\nthrottled_usec 12345\nnr_bursts 0\nburst_usec 0\n',
  'memory.current': '5242880\n',
  'memory.max': '67108864\n',
  'memory.peak': '6291456\n',
  'memory.stat': 'anon 1048576\nfile 3145728\nkernel 262144\nkernel_stack 16384\npagetables 49152\nsock 0\nshmem 0\nfile_mapped 1048576\nfile_dirty 0\nfile_writeback 0\ninactive_anon 0\nactive_anon 1048576\ninactive_file 2097152\nactive_file 1048576\nunevictable 0\npgfault 1200\npgmajfault 3\n',
  'pids.current': '3\n',
  'pids.max': '40\n',
  'io.stat': '8:0 rbytes=40960 wbytes=8192 rios=10 wios=2 dbytes=0 dios=0\n254:1 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n',
  'cgroup.threads': '101\n102\n103\n',
};

describe('cgroup statistics', () => {
  let dir: string;
  before(async () => { dir = await fs.mkdtemp(join(tmpdir(), 'berth-cg-')); });
  after(async () => { await fs.rm(dir, { recursive: true, force: true }); });

  async function layout(files: Record<string, string>, sub: string): Promise<string> {
    const root = join(dir, sub);
    for (const [name, text] of Object.entries(files)) {
      await fs.mkdir(join(root, name, '..'), { recursive: true });
      await fs.writeFile(join(root, name), text);
    }
    return root;
  }

  it('tells cgroup v2 from v1 by cgroup.controllers at the root', async () => {
    const v2 = await layout({ 'cgroup.controllers': 'cpu memory pids\n' }, 'detect2');
    const v1 = await layout({ 'memory/memory.stat': '' }, 'detect1');
    assert.deepEqual(detectCgroupLayout(v2), { version: 2, root: v2 });
    assert.deepEqual(detectCgroupLayout(v1), { version: 1, root: v1 });
  });

  it('reads cgroup v2 files in Docker\'s units and shape', async () => {
    const root = await layout({ 'cgroup.controllers': V2_FILES['cgroup.controllers']!, ...Object.fromEntries(Object.entries(V2_FILES).map(([k, v]) => [`berth/abc/${k}`, v])) }, 'v2');
    const s = await readCgroupV2(join(root, 'berth/abc'));
    assert.equal(s.cpuTotalNs, 1_520_034_000);
    assert.equal(s.cpuUserNs, 1_010_022_000);
    assert.equal(s.cpuSystemNs, 510_012_000);
    assert.equal(s.perCpuNs, undefined);
    assert.deepEqual(s.throttling, { periods: 40, throttled_periods: 3, throttled_time: 12_345_000 });
    assert.equal(s.memUsage, 5_242_880);
    assert.equal(s.memLimit, 67_108_864);
    assert.equal(s.memStat.inactive_file, 2_097_152);
    assert.equal(s.pidsCurrent, 3);
    assert.equal(s.pidsLimit, 40);
    assert.deepEqual(s.io, [
      { major: 8, minor: 0, op: 'read', value: 40960 }, { major: 8, minor: 0, op: 'write', value: 8192 },
      { major: 254, minor: 1, op: 'read', value: 4096 }, { major: 254, minor: 1, op: 'write', value: 0 },
    ]);
    // Through the API shape, with the layout detected from the fake root.
    const api = await sampleStats('/berth/abc', 0, 'c', 'abc', detectCgroupLayout(root)) as any;
    assert.equal(api.memory_stats.usage, 5_242_880);
    assert.equal(api.memory_stats.limit, Math.min(67_108_864, totalmem()));
    assert.equal(api.memory_stats.max_usage, undefined, 'Docker has no max_usage on v2');
    assert.equal(api.cpu_stats.cpu_usage.total_usage, 1_520_034_000);
    assert.equal(api.cpu_stats.cpu_usage.percpu_usage, undefined);
    assert.deepEqual(api.pids_stats, { current: 3, limit: 40 });
    assert.equal(api.blkio_stats.io_service_bytes_recursive.length, 4);
  });

  it('on v2, an unlimited cgroup ("max") reports the host memory, and missing controllers leave their figures out', async () => {
    const root = await layout({
      'cgroup.controllers': 'cpu\n', 'berth/x/cpu.stat': 'usage_usec 10\nuser_usec 6\nsystem_usec 4\n',
      'berth/x/memory.max': 'max\n', 'berth/x/pids.max': 'max\n', 'berth/x/cgroup.threads': '7\n8\n',
    }, 'v2max');
    const api = await sampleStats('/berth/x', 0, 'x', 'x', detectCgroupLayout(root)) as any;
    assert.equal(api.memory_stats.limit, totalmem());
    assert.equal(api.memory_stats.usage, 0);
    // No pids controller: the threads listed in the cgroup are its count.
    assert.deepEqual(api.pids_stats, { current: 2 });
    assert.deepEqual(api.blkio_stats.io_service_bytes_recursive, []);
    assert.equal(api.cpu_stats.cpu_usage.total_usage, 10_000);
  });

  it('reads cgroup v1 hierarchies', async () => {
    const root = await layout({
      'cpuacct/berth/y/cpuacct.usage': '2000000000\n', 'cpuacct/berth/y/cpuacct.usage_percpu': '1200000000 800000000 \n',
      'cpuacct/berth/y/cpuacct.stat': 'user 120\nsystem 80\n', 'cpu/berth/y/cpu.stat': 'nr_periods 5\nnr_throttled 1\nthrottled_time 999\n',
      'memory/berth/y/memory.usage_in_bytes': '4096\n', 'memory/berth/y/memory.limit_in_bytes': '9223372036854771712\n',
      'memory/berth/y/memory.max_usage_in_bytes': '8192\n', 'memory/berth/y/memory.stat': 'cache 0\ntotal_inactive_file 1024\n',
      'pids/berth/y/pids.current': '2\n', 'pids/berth/y/pids.max': 'max\n',
      'blkio/berth/y/blkio.throttle.io_service_bytes_recursive': '8:0 Read 512\n8:0 Write 0\nTotal 512\n',
    }, 'v1');
    const s = await readCgroupV1(root, '/berth/y');
    assert.equal(s.cpuTotalNs, 2_000_000_000);
    assert.deepEqual(s.perCpuNs, [1_200_000_000, 800_000_000]);
    assert.equal(s.cpuUserNs, 1_200_000_000);
    assert.deepEqual(s.throttling, { periods: 5, throttled_periods: 1, throttled_time: 999 });
    assert.equal(s.pidsLimit, undefined);
    assert.deepEqual(s.io, [{ major: 8, minor: 0, op: 'Read', value: 512 }, { major: 8, minor: 0, op: 'Write', value: 0 }]);
    const api = await sampleStats('/berth/y', 0, 'y', 'y', detectCgroupLayout(root)) as any;
    assert.equal(api.memory_stats.limit, totalmem());
    assert.equal(api.memory_stats.max_usage, 8192);
  });

  it('knows swap accounting from memsw on v1 and memory.swap.max on v2', async () => {
    const v1 = await layout({ 'memory/memory.memsw.limit_in_bytes': '9223372036854771712\n' }, 'swap1');
    assert.equal(swapAccounting(v1), true);
    assert.equal(swapAccounting(await layout({ 'memory/memory.stat': '' }, 'swap1off')), false);
    assert.equal(swapAccounting(await layout({ 'cgroup.controllers': 'memory\n', 'init.scope/memory.swap.max': 'max\n' }, 'swap2')), true);
    assert.equal(swapAccounting(await layout({ 'cgroup.controllers': 'memory\n', 'init.scope/memory.max': 'max\n' }, 'swap2off')), false);
  });
});
