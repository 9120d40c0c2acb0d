import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { RUNC_SHIM } from '../../src/daemon/paths.js';
import { ensurePrivateBind, mountsHolding, releasePrivateBind } from '../../src/kernel/mount.js';
import { run, runOk } from '../../src/util/exec.js';
import { mountsUnder, TestHost } from './harness.js';

/**
 * berth's root is a private bind of itself, and runc runs (through native/berth-runc.c) in a mount
 * namespace where the per-container mounts below it are gone except those the container uses.
 * Real mounts in a directory of the test's own; everything is unmounted afterwards.
 */

const made: string[] = [];

async function scratch(): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'berth-mt-'));
  made.push(dir);
  return dir;
}

function mountsAt(info: string, path: string): number {
  return info.split('\n').filter((l) => l.split(' ')[4] === path).length;
}

after(async () => {
  for (const dir of made) {
    for (let pass = 0; pass < 3; pass++) for (const m of await mountsUnder(dir)) await run('umount', ['--lazy', m]);
    assert.deepEqual(await mountsUnder(dir), [], `mounts left under ${dir}`);
    await fs.rm(dir, { recursive: true, force: true });
  }
});

/** Runs a shell script through the shim, as conmon runs runc. */
function throughShim(root: string, keep: string[], script: string) {
  return run(RUNC_SHIM, [`--berth-runc=/bin/sh`, `--berth-mount-root=${root}`, ...keep.map((k) => `--berth-keep=${k}`), '-c', script]);
}

describe('berth mount root and the runc shim', () => {
  it('binds the root onto itself once, and recognises its bind after a restart', async () => {
    const root = join(await scratch(), 'root');
    await fs.mkdir(root);
    assert.equal(await ensurePrivateBind(root), true);
    assert.equal(await ensurePrivateBind(root), true);
    const info = await fs.readFile('/proc/self/mountinfo', 'utf8');
    assert.equal(mountsAt(info, root), 1);
    const line = info.split('\n').find((l) => l.split(' ')[4] === root)!;
    assert.doesNotMatch(line, /shared:/, 'the root bind must be private');
    // Named through a symlink, it is the same mount.
    const link = join(root, '..', 'link');
    await fs.symlink(root, link);
    assert.equal(await ensurePrivateBind(link), true);
    assert.equal(mountsAt(await fs.readFile('/proc/self/mountinfo', 'utf8'), root), 1);
    await releasePrivateBind(link);
    assert.equal(mountsAt(await fs.readFile('/proc/self/mountinfo', 'utf8'), root), 0);
  });

  it('makes no bind while an older berthd\'s container mounts lie below the root', async () => {
    const root = join(await scratch(), 'root');
    await fs.mkdir(join(root, 'containers', 'old', 'rootfs'), { recursive: true });
    await runOk('mount', ['-t', 'tmpfs', 'old', join(root, 'containers', 'old', 'rootfs')]);
    assert.equal(await ensurePrivateBind(root), false);
    assert.equal(mountsAt(await fs.readFile('/proc/self/mountinfo', 'utf8'), root), 0);
    await runOk('umount', [join(root, 'containers', 'old', 'rootfs')]);
    assert.equal(await ensurePrivateBind(root), true);
  });

  it('stacks its bind on a mount of the administrator\'s instead of changing it', async () => {
    const root = join(await scratch(), 'root');
    await fs.mkdir(root);
    await runOk('mount', ['-t', 'tmpfs', 'admin', root]);
    await fs.writeFile(join(root, 'data'), 'on the admin tmpfs');
    assert.equal(await ensurePrivateBind(root), true);
    assert.equal(await ensurePrivateBind(root), true);
    assert.equal(mountsAt(await fs.readFile('/proc/self/mountinfo', 'utf8'), root), 2);
    // Detaching berth's bind leaves the administrator's tmpfs, so paths still lead to the same files.
    const r = await throughShim(root, [], `cat ${root}/data; grep -c ' ${root} ' /proc/self/mountinfo`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'on the admin tmpfs1\n');
    // Releasing removes berth's bind only, however often it is asked.
    await releasePrivateBind(root);
    await releasePrivateBind(root);
    assert.equal(mountsAt(await fs.readFile('/proc/self/mountinfo', 'utf8'), root), 1);
    assert.equal(await fs.readFile(join(root, 'data'), 'utf8'), 'on the admin tmpfs');
  });

  it('runs the program without the mounts below the root, except those it keeps', async () => {
    const root = join(await scratch(), 'root');
    await fs.mkdir(join(root, 'containers', 'a', 'rootfs'), { recursive: true });
    await fs.mkdir(join(root, 'containers', 'b', 'rootfs'), { recursive: true });
    await fs.mkdir(join(root, 'volumes', 'v', '_data'), { recursive: true });
    assert.equal(await ensurePrivateBind(root), true);
    const aRootfs = join(root, 'containers', 'a', 'rootfs');
    const bRootfs = join(root, 'containers', 'b', 'rootfs');
    await runOk('mount', ['-t', 'tmpfs', 'a', aRootfs]);
    await runOk('mount', ['-t', 'tmpfs', 'b', bRootfs]);
    await fs.writeFile(join(root, 'containers', 'a', 'config.json'), '{}');
    await fs.writeFile(join(aRootfs, 'inside-a'), 'a');

    // What a container start computes: the rootfs it names, and for a plain directory nothing.
    assert.deepEqual(await mountsHolding(root, [join(aRootfs, 'etc'), join(root, 'volumes', 'v', '_data'), '/etc', '']), [aRootfs]);

    const r = await throughShim(root, [aRootfs], [
      `cat ${root}/containers/a/config.json ${aRootfs}/inside-a`,
      'echo',
      `grep -F ' ${root}' /proc/self/mountinfo | cut -d' ' -f5`,
      `echo written > ${aRootfs}/from-shim`,
      `ls ${bRootfs} | wc -l`,
    ].join('; '));
    assert.equal(r.code, 0, r.stderr);
    const [files, ...rest] = r.stdout.trim().split('\n');
    assert.equal(files, '{}a');
    // Only the kept rootfs is a mount point below the root; b's directory is the empty one beneath.
    assert.deepEqual(rest, [aRootfs, '0']);
    // The kept mount is the same filesystem, and the caller's table is untouched.
    assert.equal(await fs.readFile(join(aRootfs, 'from-shim'), 'utf8'), 'written\n');
    const info = await fs.readFile('/proc/self/mountinfo', 'utf8');
    for (const p of [root, aRootfs, bRootfs]) assert.equal(mountsAt(info, p), 1, p);
  });

  it('passes everything else to runc unchanged when it has no root to trim', async () => {
    const r = await run(RUNC_SHIM, ['--berth-runc=/bin/echo', 'start', '--berth-keep-is-not-ours']);
    assert.equal(r.stdout, 'start --berth-keep-is-not-ours\n');
  });
});

describe('containers on a trimmed mount table', () => {
  it('keep their volumes and shared namespaces, and the root bind survives a restart once', async () => {
    const host = await TestHost.create();
    try {
      await host.api('POST', '/networks/create', { Name: 'mt' });
      const a = await host.runDetached({ Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'mt', Binds: ['mtvol:/data'] } }, 'mta');
      const b = await host.runDetached({ Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'container:mta' } }, 'mtb');
      const exec = async (id: string, cmd: string[]) => {
        const e = await host.api('POST', `/containers/${id}/exec`, { Cmd: cmd, AttachStdout: true, AttachStderr: true });
        const s = await host.api('POST', `/exec/${e.json.Id}/start`, { Detach: false });
        return s.body;
      };
      await exec(a, ['sh', '-c', 'echo kept > /data/f']);
      const vol = (await host.api('GET', '/volumes/mtvol')).json;
      assert.equal(await fs.readFile(join(vol.Mountpoint, 'f'), 'utf8'), 'kept\n');
      const ipA = (await host.api('GET', `/containers/${a}/json`)).json.NetworkSettings.Networks.mt.IPAddress;
      assert.match(await exec(b, ['ip', '-o', '-4', 'addr', 'show', 'eth0']), new RegExp(ipA.replace(/\./g, '\\.')));

      await host.stopDaemon();
      await host.startDaemon();
      assert.equal(mountsAt(await fs.readFile('/proc/self/mountinfo', 'utf8'), host.root), 1);
      const c = await host.runDetached({ Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'mt' } }, 'mtc');
      assert.match(await exec(c, ['ping', '-c1', '-W2', ipA]), /1 packets received/);
      for (const id of [a, b, c]) assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
    } finally {
      assert.deepEqual(await host.destroy(), []);
    }
  });

  it('runs containers under a root named through a symlink, and binds it once', async () => {
    const host = await TestHost.create();
    try {
      const link = join(host.dir, 'root-link');
      await fs.symlink(host.root, link);
      await host.stopDaemon();
      await host.startDaemon(['--root', link]);
      const id = await host.runDetached({ Image: 'busybox', Cmd: ['sleep', '300'] });
      assert.equal((await host.api('GET', `/containers/${id}/json`)).json.State.Running, true);
      await host.stopDaemon();
      await host.startDaemon(['--root', link]);
      assert.equal(mountsAt(await fs.readFile('/proc/self/mountinfo', 'utf8'), host.root), 1);
      assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
    } finally {
      assert.deepEqual(await host.destroy(), []);
    }
  });
});
