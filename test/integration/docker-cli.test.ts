import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import pty from 'node-pty';
import { DOCKER_CLI, TestHost, waitFor } from './harness.js';

/**
 * The docker CLI pointed at berthd must work unchanged: Debian's 20.10 client that setup unpacks, or
 * the one BERTH_TEST_DOCKER names (a newer client negotiates API 1.41 down).
 */
describe('the docker CLI against berthd', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  it('docker version and info talk API 1.41', async () => {
    const v = await host.docker(['version', '--format', '{{.Server.APIVersion}}']);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout.trim(), '1.41');
    const i = await host.docker(['info', '--format', '{{.OSType}} {{.Driver}}']);
    assert.equal(i.stdout.trim(), 'linux overlay2');
  });

  it('docker run prints output and returns the exit code (create, attach, wait, start)', async () => {
    const r = await host.docker(['run', '--rm', 'busybox', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    assert.equal(r.code, 3);
    assert.equal(r.stdout, 'out\n');
    assert.equal(r.stderr, 'err\n');
    const ps = await host.docker(['ps', '-aq']);
    assert.equal(ps.stdout.trim(), '', '--rm removed it');
  });

  it('--security-opt: a seccomp profile file (the CLI sends its JSON), unconfined, and the default filter', async () => {
    const profile = join(host.dir, 'no-mkdir.json');
    await fs.writeFile(profile, JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }] }, null, 2));
    for (const cli of [(a: string[]) => host.docker(a), (a: string[]) => host.berth(a)]) {
      const denied = await cli(['run', '--rm', '--security-opt', `seccomp=${profile}`, 'busybox', 'mkdir', '/x']);
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /Operation not permitted/);
      assert.equal((await cli(['run', '--rm', '--security-opt', 'seccomp=unconfined', 'busybox', 'unshare', '-U', 'true'])).code, 0);
      assert.match((await cli(['run', '--rm', 'busybox', 'unshare', '-U', 'true'])).stderr, /Operation not permitted/);
      const bad = await cli(['run', '--rm', '--security-opt', 'bogus=1', 'busybox', 'true']);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /invalid --security-opt 2: "bogus=1"/);
    }
  });

  it('docker run -i passes stdin through and closes it', async () => {
    const r = await host.docker(['run', '--rm', '-i', 'busybox', 'sh', '-c', 'cat; echo done'], 'hello from stdin\n');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hello from stdin\ndone\n');
  });

  it('docker run -dit, exec, logs, ps, inspect, top, stats, stop, rm -f', async () => {
    const run = await host.docker(['run', '-dit', '--name', 'b1', 'busybox']);
    assert.equal(run.code, 0, run.stderr);
    const id = run.stdout.trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    const ps = await host.docker(['ps', '--format', '{{.Names}} {{.Image}} {{.Status}}']);
    assert.match(ps.stdout, /^b1 busybox Up /m);
    const ex = await host.docker(['exec', 'b1', 'sh', '-c', 'echo hi from $(hostname)']);
    assert.equal(ex.stdout, `hi from ${id.slice(0, 12)}\n`);
    const exi = await host.docker(['exec', '-i', 'b1', 'cat'], 'piped\n');
    assert.equal(exi.stdout, 'piped\n');
    const code = await host.docker(['exec', 'b1', 'sh', '-c', 'exit 4']);
    assert.equal(code.code, 4);
    const insp = await host.docker(['inspect', '-f', '{{.State.Status}} {{.Config.Tty}} {{.Config.OpenStdin}}', 'b1']);
    assert.equal(insp.stdout.trim(), 'running true true');
    const top = await host.docker(['top', 'b1']);
    assert.match(top.stdout, /PID/);
    const stats = await host.docker(['stats', '--no-stream', '--format', '{{.Name}} {{.MemUsage}}', 'b1']);
    assert.equal(stats.code, 0, stats.stderr);
    assert.match(stats.stdout, /^b1 \d/);
    const logs = await host.docker(['run', '-d', '--name', 'talker', 'busybox', 'sh', '-c', 'echo line1; echo line2']);
    assert.equal(logs.code, 0);
    await host.docker(['wait', 'talker']);
    const l = await host.docker(['logs', 'talker']);
    assert.equal(l.stdout, 'line1\nline2\n');
    const tail = await host.docker(['logs', '--tail', '1', 'talker']);
    assert.equal(tail.stdout, 'line2\n');
    const stop = await host.docker(['stop', '-t', '1', 'b1']);
    assert.equal(stop.code, 0, stop.stderr);
    const rm = await host.docker(['rm', '-f', 'b1', 'talker']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal((await host.docker(['ps', '-aq'])).stdout.trim(), '');
  });

  it('docker logs -f follows until the container exits', async () => {
    await host.docker(['run', '-d', '--name', 'ticker', 'busybox', 'sh', '-c', 'for i in 1 2 3; do echo tick $i; sleep 0.3; done']);
    const f = await host.docker(['logs', '-f', 'ticker']);
    assert.equal(f.stdout, 'tick 1\ntick 2\ntick 3\n');
    await host.docker(['rm', '-f', 'ticker']);
  });

  it('docker exec -it and docker run -it work with a terminal', async () => {
    await host.docker(['run', '-dit', '--name', 'tty1', 'busybox']);
    const out = await inTerminal(['-H', `unix://${host.socket}`, 'exec', '-it', 'tty1', 'sh'], 'stty size; echo tty-$((40+2)); exit 9\r');
    assert.match(out.output, /30 100/);
    assert.match(out.output, /tty-42/);
    assert.equal(out.code, 9);
    const r = await inTerminal(['-H', `unix://${host.socket}`, 'run', '--rm', '-it', 'busybox', 'sh', '-c', 'tty; read x; echo got-$x'], 'abc\r');
    assert.match(r.output, /\/dev\/pts\/0/);
    assert.match(r.output, /got-abc/);
    assert.equal(r.code, 0);
    await host.docker(['rm', '-f', 'tty1']);
  });

  it('prints Docker errors and exit codes', async () => {
    const missing = await host.docker(['run', '--rm', 'busybox', '/no/such/cmd']);
    assert.equal(missing.code, 127, missing.stderr);
    assert.match(missing.stderr, /no such file or directory/);
    const noImg = await host.docker(['create', 'nosuchimage']);
    assert.notEqual(noImg.code, 0);
    assert.match(noImg.stderr, /nosuchimage/);
    await host.docker(['create', '--name', 'taken', 'busybox']);
    const dup = await host.docker(['create', '--name', 'taken', 'busybox']);
    assert.match(dup.stderr, /Conflict\. The container name "\/taken" is already in use/);
    const rm = await host.docker(['rm', 'nosuch']);
    assert.match(rm.stderr, /No such container: nosuch/);
    await host.docker(['rm', '-f', 'taken']);
    await waitFor(async () => (await host.docker(['ps', '-aq'])).stdout.trim() === '', 'containers gone');
  });

  it('docker images, tag, save, load, rmi and import', async () => {
    const imgs = await host.docker(['images', '--format', '{{.Repository}}:{{.Tag}}']);
    assert.match(imgs.stdout, /^busybox:latest$/m);
    assert.equal((await host.docker(['tag', 'busybox', 'mybox:1'])).code, 0);
    const saved = `${host.dir}/saved.tar`;
    const save = await host.docker(['save', '-o', saved, 'mybox:1']);
    assert.equal(save.code, 0, save.stderr);
    assert.equal((await host.docker(['rmi', 'mybox:1'])).stdout.trim(), 'Untagged: mybox:1');
    const load = await host.docker(['load', '-i', saved]);
    assert.equal(load.code, 0, load.stderr);
    assert.match(load.stdout, /Loaded image: mybox:1/);
    const run = await host.docker(['run', '--rm', 'mybox:1', 'echo', 'loaded ok']);
    assert.equal(run.stdout, 'loaded ok\n');
    await host.docker(['rmi', 'mybox:1']);
  });
});

/** Runs the docker CLI on a pseudo terminal (30 rows, 100 columns), types `input`, collects output. */
function inTerminal(args: string[], input: string): Promise<{ output: string; code: number }> {
  return new Promise((resolve, reject) => {
    const term = pty.spawn(DOCKER_CLI, args, { cols: 100, rows: 30, env: process.env as Record<string, string> });
    let output = '';
    let typed = false;
    term.onData((d) => {
      output += d;
      if (!typed) {
        typed = true;
        setTimeout(() => term.write(input), 300);
      }
    });
    const timer = setTimeout(() => { term.kill(); reject(new Error(`terminal session timed out: ${output}`)); }, 20_000);
    term.onExit(({ exitCode }) => { clearTimeout(timer); resolve({ output, code: exitCode }); });
    // A shell that prints nothing before reading still needs its input.
    setTimeout(() => { if (!typed) { typed = true; term.write(input); } }, 1000);
  });
}
