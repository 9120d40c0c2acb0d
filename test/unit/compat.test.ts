import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { resolveInRoot } from '../../src/engine/archive.js';
import { ociMounts, parseMounts, parseTmpfs } from '../../src/engine/mounts.js';
import { resolveName, type Asker } from '../../src/dns/lookup.js';
import { ociResources, ociRlimits, validateProcessLimits, validateResources } from '../../src/engine/resources.js';
import { afterProbe, probeCommand, validateHealthcheck, type Health } from '../../src/engine/health.js';

describe('bind mounts and volumes', () => {
  it('parses -v and --mount as Docker does', () => {
    assert.deepEqual(parseMounts(['/h:/c', '/a/../b:/d:ro,rshared'], [{ Type: 'bind', Source: '/s', Target: '/t', ReadOnly: true }]), [
      { Type: 'bind', Source: '/h', Destination: '/c', Mode: '', RW: true, Propagation: 'rprivate' },
      { Type: 'bind', Source: '/b', Destination: '/d', Mode: 'ro,rshared', RW: false, Propagation: 'rshared' },
      { Type: 'bind', Source: '/s', Destination: '/t', Mode: '', RW: false, Propagation: 'rprivate' },
    ]);
    assert.deepEqual(ociMounts(parseMounts(['/h:/c:ro'], null)), [{ destination: '/c', type: 'bind', source: '/h', options: ['rbind', 'rprivate', 'ro'] }]);
  });
  it('tmpfs: Docker\'s defaults, later options win', () => {
    assert.deepEqual(ociMounts(parseTmpfs({ '/run': 'exec,size=64m' })), [{ destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'exec', 'size=64m'] }]);
    assert.deepEqual(ociMounts(parseMounts(null, [{ Type: 'tmpfs', Target: '/t', TmpfsOptions: { SizeBytes: 1048576, Mode: 0o1777 } }])),
      [{ destination: '/t', type: 'tmpfs', source: 'tmpfs', options: ['noexec', 'nosuid', 'nodev', 'size=1048576', 'mode=1777'] }]);
  });
  it('refuses what it cannot honour instead of ignoring it', () => {
    assert.deepEqual(parseMounts(['data:/x:ro,nocopy'], [{ Type: 'volume', Target: '/y' }]), [
      { Type: 'volume', Name: 'data', Source: '', Destination: '/x', Mode: 'ro,nocopy', RW: false, Propagation: '', NoCopy: true },
      { Type: 'volume', Name: '', Source: '', Destination: '/y', Mode: 'z', RW: true, Propagation: '', NoCopy: false },
    ]);
    assert.throws(() => parseMounts(null, [{ Type: 'npipe', Target: '/x' }]), /only bind, volume and tmpfs/);
    assert.throws(() => parseMounts(null, [{ Type: 'tmpfs', Source: '/a', Target: '/x' }]), /source must not be specified/);
    assert.throws(() => parseMounts(null, [{ Type: 'volume', Source: 'v', Target: '/x', VolumeOptions: { DriverConfig: { Name: 'nfs' } } }]), /only the local volume driver/);
    assert.throws(() => parseMounts(['/a:/x', '/b:/x'], null), /Duplicate mount point: \/x/);
    assert.throws(() => parseMounts(['/a:x'], null), /absolute/);
    assert.throws(() => parseMounts(['/a:/x:bogus'], null), /invalid mode: bogus/);
  });
});

describe('container paths for docker cp', () => {
  it('follows symlinks inside the root and never out of it', async () => {
    const root = await fs.mkdtemp(join(tmpdir(), 'berth-unit-'));
    try {
      await fs.mkdir(join(root, 'etc'));
      await fs.symlink('/', join(root, 'up'));
      await fs.symlink('../../../../etc', join(root, 'rel'));
      await fs.symlink('/etc/passwd', join(root, 'pw'));
      assert.equal(await resolveInRoot(root, '/up/etc/passwd'), join(root, 'etc/passwd'));
      assert.equal(await resolveInRoot(root, '/rel/x'), join(root, 'etc/x'));
      assert.equal(await resolveInRoot(root, '/../../etc'), join(root, 'etc'));
      assert.equal(await resolveInRoot(root, '/pw'), join(root, 'etc/passwd'));
      assert.equal(await resolveInRoot(root, '/pw', false), join(root, 'pw'));
      await fs.symlink('loop', join(root, 'loop'));
      await assert.rejects(resolveInRoot(root, '/loop'), /too many levels of symbolic links/);
    } finally {
      await fs.rm(root, { recursive: true, force: true });
    }
  });
});

describe('link aliases in the embedded DNS', () => {
  it('answer the linking container only, before other names', () => {
    const net = { id: 'n1', name: 'net', internal: false, endpoints: [
      { containerId: 'a'.repeat(64), containerName: 'cache', ip: '10.0.0.2', names: ['cache'] },
      { containerId: 'b'.repeat(64), containerName: 'redis', ip: '10.0.0.3', names: ['redis'] },
    ] };
    const linker: Asker = { containerId: 'c', networks: [net], links: new Map([['redis', ['10.0.0.2']]]) };
    const other: Asker = { containerId: 'd', networks: [net] };
    assert.deepEqual(resolveName(linker, 'REDIS.'), ['10.0.0.2']);
    assert.deepEqual(resolveName(other, 'redis'), ['10.0.0.3']);
  });
});

describe('health checks', () => {
  const entry = (code: number) => ({ Start: '', End: '', ExitCode: code, Output: 'x' });
  it('count failures in a row, forgive them in the start period, recover on one success', () => {
    const hc = { Test: ['CMD', 'true'], Retries: 2, StartPeriod: 5e9 };
    let h: Health = { Status: 'starting', FailingStreak: 0, Log: [] };
    h = afterProbe(h, entry(1), 1000, hc);
    assert.deepEqual([h.Status, h.FailingStreak], ['starting', 0], 'inside the start period');
    h = afterProbe(h, entry(1), 6000, hc);
    h = afterProbe(h, entry(1), 7000, hc);
    assert.deepEqual([h.Status, h.FailingStreak], ['unhealthy', 2]);
    h = afterProbe(h, entry(0), 8000, hc);
    assert.deepEqual([h.Status, h.FailingStreak], ['healthy', 0]);
    for (let i = 0; i < 10; i++) h = afterProbe(h, entry(0), 9000, hc);
    assert.equal(h.Log.length, 5, 'Docker keeps the last five results');
  });
  it('reads Test as Docker does and checks the config', () => {
    assert.deepEqual(probeCommand({ Test: ['CMD-SHELL', 'curl -f x'] }), ['/bin/sh', '-c', 'curl -f x']);
    assert.deepEqual(probeCommand({ Test: ['CMD', 'a', 'b'] }), ['a', 'b']);
    assert.equal(probeCommand({ Test: ['NONE'] }), undefined);
    assert.throws(() => validateHealthcheck({ Test: ['BOGUS'] }), /unknown health check type/);
    assert.throws(() => validateHealthcheck({ Interval: 10 }), /cannot be less than 1ms/);
  });
});

describe('resource limits', () => {
  it('map to OCI LinuxResources as Docker sets them', () => {
    assert.deepEqual(ociResources({ Memory: 64 << 20, NanoCpus: 1.5e9, PidsLimit: 10, CpuShares: 512, CpusetCpus: '0' }, true), {
      memory: { limit: 64 << 20, swap: 128 << 20 }, cpu: { shares: 512, period: 100000, quota: 150000, cpus: '0' }, pids: { limit: 10 },
    });
    assert.deepEqual(ociResources({ Memory: 64 << 20, MemorySwap: -1 }, false), { memory: { limit: 64 << 20 } });
    assert.deepEqual(ociResources({ PidsLimit: -1 }, true), { pids: { limit: -1 } });
  });
  it('refuse what Docker refuses, with its words', () => {
    assert.throws(() => validateResources({ Memory: 1024 }), /Minimum memory limit allowed is 6MB/);
    assert.throws(() => validateResources({ MemorySwap: 1 << 30 }), /always set the Memory limit/);
    assert.throws(() => validateResources({ NanoCpus: 1e9, CpuQuota: 50000 }), /Nano CPUs and CPU Quota cannot both be set/);
    assert.throws(() => validateResources({ NanoCpus: 3e9 }, 2), /Range of CPUs is from 0.01 to 2.00/);
    assert.doesNotThrow(() => validateResources({ Memory: 64 << 20, MemorySwap: -1 }));
    assert.throws(() => validateProcessLimits({ Sysctls: { 'kernel.hostname': 'x' } }), /sysctl 'kernel.hostname' is not whitelisted/);
    assert.throws(() => validateProcessLimits({ Sysctls: { 'net.core.somaxconn': '1' }, NetworkMode: 'host' }), /not allowed in host network namespace/);
    assert.throws(() => validateProcessLimits({ Ulimits: [{ Name: 'nofile', Soft: 20, Hard: 10 }] }), /soft limit must be less than or equal to hard limit: 20 > 10/);
    assert.deepEqual(ociRlimits({ Ulimits: [{ Name: 'nofile', Soft: 1, Hard: 2 }] }), [{ type: 'RLIMIT_NOFILE', soft: 1, hard: 2 }]);
  });
});
