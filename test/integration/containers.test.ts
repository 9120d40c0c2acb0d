import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readCgroupV2 } from '../../src/engine/metrics.js';
import { run } from '../../src/util/exec.js';
import { BERTHD, demux, exec, execOut, probePing, TestHost, waitFor } from './harness.js';

describe('containers through the Engine API', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, [], 'nothing may leak');
  });

  it('answers /_ping with the API version headers, with and without a version prefix', async () => {
    for (const path of ['/_ping', '/v1.41/_ping', '/v1.24/_ping']) {
      const r = await host.api('GET', path);
      assert.equal(r.status, 200);
      assert.equal(r.body, 'OK');
      assert.equal(r.headers['api-version'], '1.41');
      assert.equal(r.headers['ostype'], 'linux');
    }
    const head = await host.api('HEAD', '/_ping');
    assert.equal(head.status, 200);
    const tooNew = await host.api('GET', '/v1.99/version');
    assert.equal(tooNew.status, 400);
    assert.match(tooNew.json.message, /too new/);
  });

  it('serves the socket as root-only 0660', async () => {
    const st = await fs.stat(host.socket);
    assert.equal(st.mode & 0o777, 0o660);
    assert.equal(st.uid, 0);
    // A non-root user cannot connect.
    const { run } = await import('../../src/util/exec.js');
    const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e',
      `require('http').get({socketPath:${JSON.stringify(host.socket)},path:'/_ping'},r=>{console.log('status',r.statusCode)}).on('error',e=>{console.log('error',e.code)})`]);
    assert.match(r.stdout, /error EACCES/);
  });

  it('reports version and info in Docker shape', async () => {
    const v = await host.api('GET', '/version');
    assert.equal(v.json.ApiVersion, '1.41');
    assert.equal(v.json.Os, 'linux');
    assert.ok(Array.isArray(v.json.Components));
    const i = await host.api('GET', '/info');
    assert.equal(typeof i.json.Containers, 'number');
    assert.equal(i.json.DockerRootDir, host.root);
    assert.equal(i.json.OSType, 'linux');
  });

  it('has the busybox image on a fresh store', async () => {
    const r = await host.api('GET', '/images/json');
    assert.equal(r.status, 200);
    assert.ok(r.json.some((i: { RepoTags: string[] }) => i.RepoTags.includes('busybox:latest')), r.body);
  });

  it('runs a container, shows it in ps and inspect, stops and removes it', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], Labels: { tier: 'test' } }, 'sleeper');
    const ps = await host.api('GET', '/containers/json');
    const row = ps.json.find((c: { Id: string }) => c.Id === id);
    assert.ok(row, 'running container is listed');
    assert.deepEqual(row.Names, ['/sleeper']);
    assert.equal(row.State, 'running');
    assert.match(row.Status, /^Up /);
    assert.equal(row.Command, 'sleep 300');
    const insp = await host.api('GET', '/containers/sleeper/json');
    assert.equal(insp.json.Id, id);
    assert.equal(insp.json.State.Status, 'running');
    assert.equal(insp.json.State.Running, true);
    assert.ok(insp.json.State.Pid > 0);
    assert.equal(insp.json.Config.Hostname, id.slice(0, 12));
    assert.deepEqual(insp.json.Config.Labels, { tier: 'test' });
    assert.equal(insp.json.Name, '/sleeper');
    assert.deepEqual(insp.json.Args, ['300']);
    // by id prefix
    assert.equal((await host.api('GET', `/containers/${id.slice(0, 6)}/json`)).json.Id, id);
    // filters
    const byLabel = await host.api('GET', `/containers/json?filters=${encodeURIComponent(JSON.stringify({ label: ['tier=test'] }))}`);
    assert.deepEqual(byLabel.json.map((c: { Id: string }) => c.Id), [id]);
    // sleep as PID 1 has no SIGTERM handler, so (as in Docker) stop ends it with SIGKILL.
    assert.equal((await host.api('POST', `/containers/${id}/stop?t=1`)).status, 204);
    const stopped = await host.api('GET', `/containers/${id}/json`);
    assert.equal(stopped.json.State.Status, 'exited');
    assert.equal(stopped.json.State.ExitCode, 137);
    assert.equal((await host.api('POST', `/containers/${id}/stop`)).status, 304);
    assert.equal((await host.api('DELETE', `/containers/${id}`)).status, 204);
    assert.equal((await host.api('GET', `/containers/${id}/json`)).status, 404);
  });

  it('stop sends SIGTERM first', async () => {
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.1; done'] });
    assert.equal((await host.api('POST', `/containers/${id}/stop?t=10`)).status, 204);
    // Exit 0 is the TERM handler's; a SIGKILL after the grace period would give 137.
    assert.equal((await host.api('GET', `/containers/${id}/json`)).json.State.ExitCode, 0);
    await host.api('DELETE', `/containers/${id}`);
  });

  it('stop waits the grace period, then escalates to SIGKILL', async () => {
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'trap "" TERM; while true; do sleep 1; done'] });
    const t0 = Date.now();
    const r = await host.api('POST', `/containers/${id}/stop?t=1`);
    assert.equal(r.status, 204);
    // Only a lower bound: the grace period is the claim; how long a loaded machine takes after it is not.
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 900, `stopped after ${elapsed} ms, before the 1 s grace period`);
    const insp = await host.api('GET', `/containers/${id}/json`);
    assert.equal(insp.json.State.ExitCode, 137);
    await host.api('DELETE', `/containers/${id}`);
  });

  it('exec runs in the container and reports its exit code', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], Env: ['FOO=bar'] });
    const ex = await host.api('POST', `/containers/${id}/exec`, { Cmd: ['sh', '-c', 'echo $FOO $EXTRA; hostname; exit 7'], Env: ['EXTRA=x'], AttachStdout: true, AttachStderr: true });
    assert.equal(ex.status, 201);
    const start = await host.api('POST', `/exec/${ex.json.Id}/start`, { Detach: false, Tty: false });
    assert.equal(start.status, 200);
    // multiplexed frames: [1,0,0,0,len]...
    const buf = start.raw;
    assert.equal(buf[0], 1);
    assert.match(start.body, /bar x/);
    assert.match(start.body, new RegExp(id.slice(0, 12)));
    const insp = await waitFor(async () => {
      const r = await host.api('GET', `/exec/${ex.json.Id}/json`);
      return r.json.Running === false ? r.json : undefined;
    }, 'exec to finish');
    assert.equal(insp.ExitCode, 7);
    assert.equal((await host.api('POST', `/exec/${ex.json.Id}/start`, {})).status, 409);
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('keeps logs with stdout and stderr apart, with tail and timestamps', async () => {
    // stdout and stderr are separate pipes: pause between writes so their order is defined.
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three'] });
    await host.api('POST', `/containers/${id}/wait`);
    const all = await host.api('GET', `/containers/${id}/logs?stdout=1&stderr=1`);
    const frames = demux(all.raw);
    assert.deepEqual(frames, [[1, 'one\n'], [2, 'two\n'], [1, 'three\n']]);
    const out = demux((await host.api('GET', `/containers/${id}/logs?stdout=1`)).raw);
    assert.deepEqual(out, [[1, 'one\n'], [1, 'three\n']]);
    const tail = demux((await host.api('GET', `/containers/${id}/logs?stdout=1&stderr=1&tail=1`)).raw);
    assert.deepEqual(tail, [[1, 'three\n']]);
    const ts = demux((await host.api('GET', `/containers/${id}/logs?stdout=1&timestamps=1`)).raw);
    assert.match(ts[0]![1], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z one\n$/);
    await host.api('DELETE', `/containers/${id}`);
  });

  it('wait returns the exit code; kill, restart and top work', async () => {
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'exit 3'] });
    const w = await host.api('POST', `/containers/${id}/wait`);
    assert.deepEqual(w.json, { StatusCode: 3, Error: null });
    await host.api('DELETE', `/containers/${id}`);

    const id2 = await host.runDetached({ Cmd: ['sleep', '300'] });
    const top = await host.api('GET', `/containers/${id2}/top`);
    assert.ok(top.json.Titles.includes('PID'));
    assert.ok(top.json.Processes.some((p: string[]) => p.join(' ').includes('sleep 300')), JSON.stringify(top.json));
    const startedAt = (await host.api('GET', `/containers/${id2}/json`)).json.State.StartedAt;
    assert.equal((await host.api('POST', `/containers/${id2}/restart?t=1`)).status, 204);
    const after = (await host.api('GET', `/containers/${id2}/json`)).json;
    assert.equal(after.State.Status, 'running');
    assert.notEqual(after.State.StartedAt, startedAt);
    assert.equal((await host.api('POST', `/containers/${id2}/kill?signal=SIGKILL`)).status, 204);
    await waitFor(async () => (await host.api('GET', `/containers/${id2}/json`)).json.State.Status === 'exited', 'kill');
    assert.equal((await host.api('POST', `/containers/${id2}/kill`)).status, 409);
    await host.api('DELETE', `/containers/${id2}`);
  });

  it('stats reports cgroup figures', async (t) => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'] });
    const s = await host.api('GET', `/containers/${id}/stats?stream=false&one-shot=true`);
    assert.equal(s.status, 200);
    assert.ok(s.json.memory_stats.usage > 0, s.body);
    assert.ok(s.json.cpu_stats.system_cpu_usage > 0);
    assert.ok(s.json.pids_stats.current >= 1);
    // The cgroup v2 reader on a real unified hierarchy: this hybrid machine mounts one (without
    // controllers) at /sys/fs/cgroup/unified, and runc puts the container there too, with cpu.stat
    // and its thread list. memory.*, io.* and pids.* exist only where v2 owns the controllers.
    const unified = join('/sys/fs/cgroup/unified/berth', id);
    if (existsSync(unified)) {
      const v2 = await readCgroupV2(unified);
      assert.ok(v2.cpuTotalNs > 0, JSON.stringify(v2));
      assert.ok(v2.cpuUserNs + v2.cpuSystemNs > 0);
      assert.equal(v2.pidsCurrent, 1, 'sleep is the one thread in the cgroup');
    } else {
      t.diagnostic(`no cgroup v2 hierarchy with the container at ${unified}: the v2 reader is checked by the unit tests only`);
    }
    await host.api('DELETE', `/containers/${id}?force=true`);
  });

  it('--network none gives only loopback; --network host shares the host namespace', async () => {
    const none = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'none' } });
    const ex = await execOut(host, none, ['ip', '-o', 'link']);
    assert.match(ex, /1: lo:/);
    assert.doesNotMatch(ex, /2: /);
    const insp = await host.api('GET', `/containers/${none}/json`);
    assert.ok(insp.json.NetworkSettings.Networks.none);
    // host mode sees an interface that exists only in the test host's namespace
    await host.inNetns('ip', ['link', 'add', 'btv0', 'type', 'veth', 'peer', 'name', 'btv1']);
    try {
      const h = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { NetworkMode: 'host' } });
      assert.match(await execOut(host, h, ['ip', '-o', 'link']), /btv0/);
      await host.api('DELETE', `/containers/${h}?force=1`);
    } finally {
      await host.inNetns('ip', ['link', 'del', 'btv0']);
    }
    await host.api('DELETE', `/containers/${none}?force=1`);
  });

  it('writes /etc/hosts, /etc/hostname and /etc/resolv.conf as Docker does', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], Hostname: 'web1', HostConfig: { NetworkMode: 'none', ExtraHosts: ['db:10.9.9.9'], Dns: ['10.1.1.1'], DnsSearch: ['example.test'], DnsOptions: ['ndots:2'] } });
    assert.equal((await execOut(host, id, ['hostname'])).trim(), 'web1');
    const hosts = await execOut(host, id, ['cat', '/etc/hosts']);
    assert.match(hosts, /127\.0\.0\.1\tlocalhost/);
    assert.match(hosts, /10\.9\.9\.9\tdb/);
    const resolv = await execOut(host, id, ['cat', '/etc/resolv.conf']);
    assert.match(resolv, /nameserver 10\.1\.1\.1/);
    assert.match(resolv, /search example\.test/);
    assert.match(resolv, /options ndots:2/);
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('--rm removes the container after it exits', async () => {
    const id = await host.runDetached({ Cmd: ['true'], HostConfig: { AutoRemove: true } });
    await waitFor(async () => (await host.api('GET', `/containers/${id}/json`)).status === 404, 'auto-remove');
  });

  it('on-failure:2 restarts a failing container twice, then leaves it exited', async () => {
    const since = Math.floor(Date.now() / 1000) - 1;
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'exit 1'], HostConfig: { RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 2 } } });
    // Counted in events: RestartCount counts a restart when it is decided (as Docker does), and
    // inspect at one moment cannot tell the last exit from a back-off that just ended.
    const dies = async () => (await host.api('GET', `/events?since=${since}&until=${Math.ceil(Date.now() / 1000)}&filters=${encodeURIComponent(JSON.stringify({ container: [id], event: ['die'] }))}`)).body.split('\n').filter(Boolean).length;
    await waitFor(async () => (await dies()) >= 3, 'the first run and two restarts to exit', 15_000);
    const given = (await host.api('GET', `/containers/${id}/json`)).json;
    assert.equal(given.RestartCount, 2);
    assert.equal(given.State.Status, 'exited');
    assert.equal(given.State.ExitCode, 1);
    // Stopping at the maximum is an absence: look again well past the longest back-off so far
    // (100 ms, doubled per restart), and nothing more may have happened.
    await new Promise((r) => setTimeout(r, 1500));
    const later = (await host.api('GET', `/containers/${id}/json`)).json;
    assert.equal(later.RestartCount, 2);
    assert.equal(later.State.Status, 'exited');
    assert.equal(later.State.StartedAt, given.State.StartedAt, 'not started again');
    assert.equal(await dies(), 3, 'three runs in all');
    // A zero exit is not a failure: on-failure does not restart it at all.
    const ok = await host.runDetached({ Cmd: ['true'], HostConfig: { RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 2 } } });
    assert.deepEqual((await host.api('POST', `/containers/${ok}/wait`)).json, { StatusCode: 0, Error: null });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await host.api('GET', `/containers/${ok}/json`)).json.RestartCount, 0);
    for (const c of [id, ok]) await host.api('DELETE', `/containers/${c}?force=1`);
  });

  it('answers bad input with Docker status codes and leaves nothing behind', async () => {
    const before = (await host.api('GET', '/containers/json?all=1')).json.length;
    const noImage = await host.api('POST', '/containers/create', { Image: 'nosuchimage:1.0', Cmd: ['true'] });
    assert.equal(noImage.status, 404);
    assert.equal(noImage.json.message, 'No such image: nosuchimage:1.0');
    const bad = await host.api('POST', '/containers/create', '{"Image": "busybox",');
    assert.equal(bad.status, 400);
    assert.match(bad.json.message, /invalid JSON/);
    const wrongType = await host.api('POST', '/containers/create', { Image: 'busybox', Env: 'A=1' });
    assert.equal(wrongType.status, 400);
    assert.match(wrongType.json.message, /Env/);
    const badName = await host.api('POST', '/containers/create?name=-bad', { Image: 'busybox', Cmd: ['true'] });
    assert.equal(badName.status, 400);
    await host.runDetached({ Cmd: ['sleep', '300'] }, 'dup');
    const dup = await host.api('POST', '/containers/create?name=dup', { Image: 'busybox', Cmd: ['true'] });
    assert.equal(dup.status, 409);
    assert.match(dup.json.message, /^Conflict\. The container name "\/dup" is already in use by container "[0-9a-f]{64}"\. You have to remove \(or rename\) that container to be able to reuse that name\.$/);
    const running = await host.api('DELETE', '/containers/dup');
    assert.equal(running.status, 409);
    assert.match(running.json.message, /You cannot remove a running container/);
    await host.api('DELETE', '/containers/dup?force=1');
    assert.equal((await host.api('GET', '/containers/nosuch/json')).status, 404);
    assert.equal((await host.api('GET', '/containers/nosuch/json')).json.message, 'No such container: nosuch');
    assert.equal((await host.api('GET', '/containers/json?all=1')).json.length, before);
  });

  it('applies Docker\'s default seccomp filter, --security-opt and --privileged', async () => {
    const sh = (id: string, script: string) => execOut(host, id, ['sh', '-c', `${script} 2>&1; echo "exit=$?"`]);
    const ids: string[] = [];
    const run = async (hc: Record<string, unknown>) => { const id = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: hc }); ids.push(id); return id; };
    // Default: a user namespace needs no capability, but the filter refuses it; everything else runs.
    const plain = await run({});
    assert.match(await sh(plain, 'unshare -U true'), /Operation not permitted\s+exit=1/);
    assert.match(await sh(plain, 'grep Seccomp: /proc/self/status'), /Seccomp:\s+2\s+exit=0/);
    assert.match(await sh(plain, 'mkdir /made && echo made'), /made\s+exit=0/);
    // unconfined lifts it; no-new-privileges sets the flag.
    const loose = await run({ SecurityOpt: ['seccomp=unconfined', 'no-new-privileges'] });
    assert.match(await sh(loose, 'unshare -U true'), /^exit=0/);
    assert.match(await sh(loose, 'grep -E "NoNewPrivs|Seccomp:" /proc/self/status'), /NoNewPrivs:\s+1\s+Seccomp:\s+0/);
    // CAP_SYS_ADMIN lets the namespace calls through, as Docker's profile does; --privileged has no filter.
    assert.match(await sh(await run({ CapAdd: ['SYS_ADMIN'] }), 'unshare -m true'), /^exit=0/);
    const priv = await run({ Privileged: true });
    assert.match(await sh(priv, 'unshare -U true'), /^exit=0/);
    assert.match(await sh(priv, 'grep Seccomp: /proc/self/status'), /Seccomp:\s+0/);
    // A profile in Docker's format, as `--security-opt seccomp=FILE` sends it.
    const profile = JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }] });
    const custom = await run({ SecurityOpt: [`seccomp=${profile}`] });
    assert.match(await sh(custom, 'mkdir /x'), /Operation not permitted\s+exit=1/);
    for (const [opt, message] of [['foo', 'invalid --security-opt 1: "foo"'], ['foo=bar', 'invalid --security-opt 2: "foo=bar"'], ['seccomp={bad', /^Decoding seccomp profile failed/]] as const) {
      const before = (await host.api('GET', '/containers/json?all=1')).json.length;
      const r = await host.api('POST', '/containers/create', { Image: 'busybox', HostConfig: { SecurityOpt: [opt] } });
      assert.equal(r.status, 400);
      if (typeof message === 'string') assert.equal(r.json.message, message); else assert.match(r.json.message, message);
      assert.equal((await host.api('GET', '/containers/json?all=1')).json.length, before);
    }
    assert.ok((await host.api('GET', '/info')).json.SecurityOptions.includes('name=seccomp,profile=default'));
    for (const id of ids) await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('a missing binary leaves the container created with the error and nothing running', async () => {
    const c = await host.api('POST', '/containers/create?name=nobin', { Image: 'busybox', Cmd: ['/no/such/binary'] });
    assert.equal(c.status, 201);
    const s = await host.api('POST', `/containers/${c.json.Id}/start`);
    assert.equal(s.status, 400, s.body);
    assert.match(s.json.message, /no such file or directory|not found/);
    const insp = (await host.api('GET', `/containers/${c.json.Id}/json`)).json;
    assert.equal(insp.State.Status, 'created');
    assert.equal(insp.State.ExitCode, 127);
    assert.match(insp.State.Error, /no such file|not found/);
    const leaks = await host.leaks();
    assert.deepEqual(leaks.filter((l) => l.includes(c.json.Id.slice(0, 12)) || l.startsWith('runc')), []);
    await host.api('DELETE', `/containers/${c.json.Id}`);
  });

  it('keeps containers and their logs across a kill -9 of berthd', async () => {
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'echo before; sleep 300'] }, 'survivor');
    // `quick` waits for a file the test makes once berthd is down, so it exits while berthd is away.
    const quick = await host.runDetached({ Cmd: ['sh', '-c', 'while [ ! -e /go ]; do sleep 0.05; done; exit 5'] }, 'quick');
    await host.stopDaemon('SIGKILL');
    const rootfs = join(host.root, 'containers', quick, 'rootfs');
    await fs.writeFile(join(rootfs, 'go'), '');
    // conmon records the exit code in the exits directory: that is the exit happening.
    await waitFor(async () => (await fs.stat(join(host.root, 'exits', quick)).catch(() => undefined)) !== undefined, '`quick` to exit while berthd is down');
    await host.startDaemon();
    const insp = (await host.api('GET', `/containers/${id}/json`)).json;
    assert.equal(insp.State.Status, 'running');
    const q = (await host.api('GET', `/containers/${quick}/json`)).json;
    assert.equal(q.State.Status, 'exited');
    assert.equal(q.State.ExitCode, 5);
    const logs = await host.api('GET', `/containers/${id}/logs?stdout=1`);
    assert.match(logs.body, /before/);
    assert.equal((await host.api('POST', `/containers/${id}/stop?t=1`)).status, 204);
    assert.equal((await host.api('GET', `/containers/${id}/json`)).json.State.Status, 'exited');
    await host.api('DELETE', `/containers/${id}`);
    await host.api('DELETE', `/containers/${quick}`);
  });

  it('state survives kill -9 at any moment: a crash mid-create leaves a consistent store', async () => {
    // Leave a half-written container directory as a crash between mkdir and the record write would.
    await fs.mkdir(join(host.root, 'containers', 'f'.repeat(64)), { recursive: true });
    await host.stopDaemon('SIGKILL');
    await host.startDaemon();
    assert.equal((await host.api('GET', `/containers/${'f'.repeat(64)}/json`)).status, 404);
    await assert.rejects(fs.stat(join(host.root, 'containers', 'f'.repeat(64))));
  });
  it('run -u and exec -u: the process runs as the given user; an unknown user fails the start', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], User: '1234:5678' });
    assert.match((await exec(host, id, ['id'])).stdout, /^uid=1234 gid=5678\b/);
    // exec inherits the container's user unless it names its own.
    assert.match((await exec(host, id, ['id', '-u'])).stdout, /^1234\n$/);
    assert.match((await exec(host, id, ['id'], { User: 'root' })).stdout, /^uid=0\(root\) gid=0\(root\)/);
    assert.match((await exec(host, id, ['id'], { User: '42:43' })).stdout, /^uid=42 gid=43\b/);
    // The process really lacks root's power: writing to / is refused.
    const denied = await exec(host, id, ['touch', '/as-1234']);
    assert.equal(denied.code, 1);
    assert.match(denied.out, /Permission denied/);
    const c = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['true'], User: 'nosuchuser' });
    assert.equal(c.status, 201, c.body);
    const st = await host.api('POST', `/containers/${c.json.Id}/start`);
    assert.notEqual(st.status, 204);
    assert.match(st.json.message, /unable to find user nosuchuser: no matching entries in passwd file/);
    for (const x of [id, c.json.Id]) await host.api('DELETE', `/containers/${x}?force=1`);
  });

  it('--cap-drop removes the capability: ping without NET_RAW and chown without CHOWN are refused', async () => {
    const plain = await host.runDetached({ Cmd: ['sleep', '300'] });
    const dropped = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { CapDrop: ['NET_RAW', 'CAP_CHOWN'] } });
    assert.equal(await probePing(host, plain, '127.0.0.1'), 'reached');
    const ping = await exec(host, dropped, ['ping', '-c', '1', '-W', '1', '127.0.0.1']);
    assert.equal(ping.code, 1);
    assert.match(ping.out, /permission denied|Operation not permitted/i);
    assert.equal((await exec(host, plain, ['chown', '1', '/tmp'])).code, 0);
    const chown = await exec(host, dropped, ['chown', '1', '/tmp']);
    assert.equal(chown.code, 1);
    assert.match(chown.out, /Operation not permitted/);
    const caps = (await host.api('GET', `/containers/${dropped}/json`)).json.HostConfig.CapDrop;
    assert.deepEqual(caps, ['NET_RAW', 'CAP_CHOWN']);
    for (const x of [plain, dropped]) await host.api('DELETE', `/containers/${x}?force=1`);
  });

  it('exec -d starts the process and returns at once; its exit code is inspectable', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'] });
    const ex = await host.api('POST', `/containers/${id}/exec`, { Cmd: ['sh', '-c', 'while [ ! -e /go ]; do sleep 0.05; done; touch /done; exit 6'] });
    assert.equal(ex.status, 201);
    const start = await host.api('POST', `/exec/${ex.json.Id}/start`, { Detach: true });
    assert.equal(start.status, 200, start.body);
    assert.equal(start.raw.length, 0, 'no output stream');
    // Returned while the process still waits for /go: it is running.
    assert.equal((await host.api('GET', `/exec/${ex.json.Id}/json`)).json.Running, true);
    await execOut(host, id, ['touch', '/go']);
    const insp = await waitFor(async () => {
      const r = (await host.api('GET', `/exec/${ex.json.Id}/json`)).json;
      return r.Running === false ? r : undefined;
    }, 'the detached exec to finish');
    assert.equal(insp.ExitCode, 6);
    assert.equal((await exec(host, id, ['test', '-e', '/done'])).code, 0);
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('a paused container: state, no exec, stop and kill still work, unpause resumes it', async () => {
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'trap "exit 0" TERM; while true; do sleep 0.1; done'] });
    assert.equal((await host.api('POST', `/containers/${id}/pause`)).status, 204);
    const paused = (await host.api('GET', `/containers/${id}/json`)).json.State;
    assert.equal(paused.Status, 'paused');
    assert.equal(paused.Paused, true);
    assert.equal(paused.Running, true);
    const ps = (await host.api('GET', `/containers/json?filters=${encodeURIComponent(JSON.stringify({ status: ['paused'] }))}`)).json;
    assert.deepEqual(ps.map((c: { Id: string }) => c.Id), [id]);
    const ex = await host.api('POST', `/containers/${id}/exec`, { Cmd: ['true'] });
    assert.equal(ex.status, 409);
    assert.match(ex.json.message, new RegExp(`Container ${id} is paused, unpause the container before exec`));
    assert.equal((await host.api('POST', `/containers/${id}/pause`)).status, 409, 'already paused');
    const rm = await host.api('DELETE', `/containers/${id}`);
    assert.equal(rm.status, 409);
    assert.equal((await host.api('POST', `/containers/${id}/unpause`)).status, 204);
    assert.equal((await host.api('GET', `/containers/${id}/json`)).json.State.Status, 'running');
    assert.equal((await exec(host, id, ['true'])).code, 0);
    assert.equal((await host.api('POST', `/containers/${id}/unpause`)).status, 409, 'not paused');
    // stop of a paused container: the signal is delivered once it is thawed, as in Docker.
    assert.equal((await host.api('POST', `/containers/${id}/pause`)).status, 204);
    assert.equal((await host.api('POST', `/containers/${id}/stop?t=5`)).status, 204);
    const stopped = (await host.api('GET', `/containers/${id}/json`)).json.State;
    assert.equal(stopped.Status, 'exited');
    assert.equal(stopped.Paused, false);
    assert.equal(stopped.ExitCode, 0, 'SIGTERM reached the handler');
    // kill of a paused container.
    const k = await host.runDetached({ Cmd: ['sleep', '300'] });
    assert.equal((await host.api('POST', `/containers/${k}/pause`)).status, 204);
    const kill = await host.api('POST', `/containers/${k}/kill`);
    assert.equal(kill.status, 204, kill.body);
    await waitFor(async () => (await host.api('GET', `/containers/${k}/json`)).json.State.Status === 'exited', 'the paused container killed');
    for (const x of [id, k]) await host.api('DELETE', `/containers/${x}?force=1`);
  });

  it('wait next-exit waits for the exit after the call, also of a container that has exited before', async () => {
    const c = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['sh', '-c', 'exit 3'] });
    const id = c.json.Id as string;
    const first = host.api('POST', `/containers/${id}/wait?condition=next-exit`);
    assert.equal((await host.api('POST', `/containers/${id}/start`)).status, 204);
    assert.deepEqual((await first).json, { StatusCode: 3, Error: null });
    // The container has exited: not-running answers at once, next-exit only after another run.
    assert.deepEqual((await host.api('POST', `/containers/${id}/wait?condition=not-running`)).json, { StatusCode: 3, Error: null });
    let settled = false;
    const next = host.api('POST', `/containers/${id}/wait?condition=next-exit`).then((r) => { settled = true; return r; });
    // Registered (a later request on the same daemon is answered after it was read), not yet answered.
    await host.api('GET', '/_ping');
    assert.equal(settled, false, 'next-exit must not answer with the old exit');
    assert.equal((await host.api('POST', `/containers/${id}/start`)).status, 204);
    assert.deepEqual((await next).json, { StatusCode: 3, Error: null });
    await host.api('DELETE', `/containers/${id}`);
  });

  it('logs since and until select by timestamp, both bounds inclusive', async () => {
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'echo one; sleep 0.3; echo two; sleep 0.3; echo three'] });
    await host.api('POST', `/containers/${id}/wait`);
    const lines = demux((await host.api('GET', `/containers/${id}/logs?stdout=1&timestamps=1`)).raw).map(([, t]) => t);
    assert.equal(lines.length, 3);
    // Docker takes "SECONDS.NANOSECONDS"; the timestamps come back RFC 3339 with nanoseconds.
    const at = (line: string) => {
      const m = /^(\S+?)\.(\d{9})Z /.exec(line)!;
      return BigInt(Date.parse(`${m[1]}Z`) / 1000) * 1_000_000_000n + BigInt(m[2]!);
    };
    const fmt = (ns: bigint) => `${ns / 1_000_000_000n}.${String(ns % 1_000_000_000n).padStart(9, '0')}`;
    const two = at(lines[1]!);
    const logs = async (q: string) => demux((await host.api('GET', `/containers/${id}/logs?stdout=1&${q}`)).raw).map(([, t]) => t);
    assert.deepEqual(await logs(`since=${fmt(two)}`), ['two\n', 'three\n']);
    assert.deepEqual(await logs(`until=${fmt(two)}`), ['one\n', 'two\n']);
    assert.deepEqual(await logs(`since=${fmt(two)}&until=${fmt(two)}`), ['two\n']);
    assert.deepEqual(await logs(`since=${fmt(at(lines[2]!) + 1n)}`), []);
    await host.api('DELETE', `/containers/${id}`);
  });

  it('ps filters: status, name, exited, label, ancestor, id', async () => {
    const list = async (f: Record<string, string[]>) => (await host.api('GET', `/containers/json?all=1&filters=${encodeURIComponent(JSON.stringify(f))}`)).json.map((c: { Names: string[] }) => c.Names[0]).sort();
    const up = await host.runDetached({ Cmd: ['sleep', '300'], Labels: { role: 'psf', tier: 'a' } }, 'psf-up');
    const down = await host.runDetached({ Cmd: ['sh', '-c', 'exit 4'], Labels: { role: 'psf' } }, 'psf-down');
    await host.api('POST', `/containers/${down}/wait`);
    const made = (await host.api('POST', '/containers/create?name=psf-made', { Image: 'busybox', Labels: { role: 'psf' } })).json.Id;
    assert.deepEqual(await list({ label: ['role=psf'] }), ['/psf-down', '/psf-made', '/psf-up']);
    assert.deepEqual(await list({ label: ['role=psf'], status: ['running'] }), ['/psf-up']);
    assert.deepEqual(await list({ label: ['role=psf'], status: ['exited'] }), ['/psf-down']);
    assert.deepEqual(await list({ label: ['role=psf'], status: ['created'] }), ['/psf-made']);
    assert.deepEqual(await list({ label: ['role=psf'], exited: ['4'] }), ['/psf-down']);
    assert.deepEqual(await list({ label: ['role=psf'], exited: ['0'] }), []);
    assert.deepEqual(await list({ label: ['tier=a'] }), ['/psf-up']);
    assert.deepEqual(await list({ label: ['tier'] }), ['/psf-up']);
    assert.deepEqual(await list({ name: ['psf-d'] }), ['/psf-down']);
    assert.deepEqual(await list({ id: [made.slice(0, 12)] }), ['/psf-made']);
    assert.deepEqual(await list({ label: ['role=psf'], ancestor: ['busybox'] }), ['/psf-down', '/psf-made', '/psf-up']);
    assert.deepEqual(await list({ label: ['role=psf'], ancestor: ['nosuchimage'] }), []);
    // Without all=1 only running ones.
    const running = (await host.api('GET', `/containers/json?filters=${encodeURIComponent(JSON.stringify({ label: ['role=psf'] }))}`)).json;
    assert.deepEqual(running.map((c: { Id: string }) => c.Id), [up]);
    const bad = await host.api('GET', `/containers/json?filters=${encodeURIComponent(JSON.stringify({ status: ['sleepy'] }))}`);
    assert.equal(bad.status, 400);
    for (const x of [up, down, made]) await host.api('DELETE', `/containers/${x}?force=1`);
  });

  it('events: a container\'s life in order, filtered by container and event, bounded by since/until', async () => {
    const since = Math.floor(Date.now() / 1000) - 1;
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'exit 2'] }, 'eventful');
    await host.api('POST', `/containers/${id}/wait`);
    await host.api('DELETE', `/containers/${id}`);
    const until = Math.ceil(Date.now() / 1000) + 1;
    const get = async (filters: Record<string, string[]>) => {
      const r = await host.api('GET', `/events?since=${since}&until=${until}&filters=${encodeURIComponent(JSON.stringify(filters))}`);
      assert.equal(r.status, 200);
      return r.body.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    };
    const mine = await get({ container: [id] });
    assert.deepEqual(mine.map((e) => e.Action), ['create', 'start', 'die', 'destroy']);
    assert.ok(mine.every((e) => e.Type === 'container' && e.Actor.ID === id && e.Actor.Attributes.name === 'eventful'));
    assert.equal(mine.find((e) => e.Action === 'die').Actor.Attributes.exitCode, '2');
    assert.deepEqual((await get({ container: ['eventful'], event: ['die'] })).map((e) => e.Action), ['die']);
  });

  it('restart policies at daemon start: Docker\'s rule (always even if stopped, unless-stopped only if not, on-failure after a failure)', async () => {
    const always = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { RestartPolicy: { Name: 'always' } } }, 'pol-always');
    const unless = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { RestartPolicy: { Name: 'unless-stopped' } } }, 'pol-unless');
    const unlessUp = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { RestartPolicy: { Name: 'unless-stopped' } } }, 'pol-unless-up');
    const alwaysUp = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { RestartPolicy: { Name: 'always' } } }, 'pol-always-up');
    const failed = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { RestartPolicy: { Name: 'on-failure' } } }, 'pol-failed');
    const clean = await host.runDetached({ Cmd: ['true'], HostConfig: { RestartPolicy: { Name: 'on-failure' } } }, 'pol-clean');
    const none = await host.runDetached({ Cmd: ['sleep', '300'] }, 'pol-none');
    // Never started: Docker's HasBeenStartedBefore keeps it created.
    const created = (await host.api('POST', '/containers/create?name=pol-created', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { RestartPolicy: { Name: 'always' } } })).json.Id as string;
    assert.equal((await host.api('POST', `/containers/${clean}/wait`)).json.StatusCode, 0);
    for (const x of [always, unless, failed]) assert.equal((await host.api('POST', `/containers/${x}/stop?t=0`)).status, 204);
    // A manual stop is final while the daemon runs.
    for (const x of [always, unless, failed]) assert.equal((await host.api('GET', `/containers/${x}/json`)).json.State.Status, 'exited');
    // unless-up's and none's processes die while berthd is down (a crash of the container, not a
    // stop); always-up's dies with berthd killed, so no one records its exit either.
    const pidOf = async (x: string) => (await host.api('GET', `/containers/${x}/json`)).json.State.Pid as number;
    const pids = [await pidOf(unlessUp), await pidOf(none), await pidOf(alwaysUp)];
    await host.stopDaemon('SIGKILL');
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    for (const x of [unlessUp, none, alwaysUp]) {
      await waitFor(async () => (await fs.stat(join(host.root, 'exits', x)).catch(() => undefined)) !== undefined, 'the container to exit while berthd is down');
    }
    await host.startDaemon();
    // Docker starts them before it serves the API.
    const inspect = async (x: string) => (await host.api('GET', `/containers/${x}/json`)).json;
    for (const x of [always, unlessUp, alwaysUp, failed]) {
      const j = await inspect(x);
      assert.equal(j.State.Status, 'running', j.Name);
      assert.equal(j.RestartCount, 0, 'a start at daemon start resets the count, as a user start does');
    }
    assert.equal((await inspect(unless)).State.Status, 'exited', 'unless-stopped stays stopped');
    assert.equal((await inspect(clean)).State.Status, 'exited', 'on-failure after exit 0 stays exited');
    assert.equal((await inspect(none)).State.Status, 'exited');
    assert.equal((await inspect(none)).State.ExitCode, 137);
    assert.equal((await inspect(created)).State.Status, 'created');
    for (const x of [always, unless, unlessUp, alwaysUp, failed, clean, none, created]) await host.api('DELETE', `/containers/${x}?force=1`);
  });

  it('shows a restart policy\'s back-off as "restarting" (Running, Restarting, the count of restarts decided) until it runs again or is stopped', async () => {
    const since = Math.floor(Date.now() / 1000) - 1;
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'exit 3'], HostConfig: { RestartPolicy: { Name: 'always' } } }, 'backoff');
    const dies = async () => (await host.api('GET', `/events?since=${since}&until=${Math.ceil(Date.now() / 1000)}&filters=${encodeURIComponent(JSON.stringify({ container: [id], event: ['die'] }))}`)).body.split('\n').filter(Boolean).length;
    // The back-off doubles from 100 ms: from the fifth exit it lasts 1.6 s, long enough to look at.
    const j = await waitFor(async () => {
      const r = (await host.api('GET', `/containers/${id}/json`)).json;
      return r.State.Status === 'restarting' && r.RestartCount >= 5 ? r : undefined;
    }, 'the fifth back-off', 20_000);
    // A waiter registered now sees the next exit, not this one (Docker counts the container as running).
    const waiting = host.api('POST', `/containers/${id}/wait`);
    const [ps, execd, started] = await Promise.all([
      host.api('GET', `/containers/json?filters=${encodeURIComponent(JSON.stringify({ id: [id] }))}`),
      host.api('POST', `/containers/${id}/exec`, { Cmd: ['true'] }),
      host.api('POST', `/containers/${id}/start`),
    ]);
    assert.equal(j.State.Restarting, true);
    assert.equal(j.State.Running, true);
    assert.equal(j.State.Pid, 0);
    assert.equal(j.State.ExitCode, 3);
    // Docker counts a restart when it decides it (daemon/monitor.go): one per exit so far.
    assert.equal(j.RestartCount, await dies());
    assert.equal(ps.json.length, 1, 'ps without -a lists it');
    assert.equal(ps.json[0].State, 'restarting');
    assert.match(ps.json[0].Status, /^Restarting \(3\) .* ago$/);
    assert.equal(execd.status, 409);
    assert.equal(execd.json.message, `Container ${id} is restarting, wait until the container is running`);
    assert.equal(started.status, 304);
    const removed = await host.api('DELETE', `/containers/${id}`);
    assert.equal(removed.status, 409);
    assert.equal(removed.json.message, `You cannot remove a restarting container ${id}. Stop the container before attempting removal or force remove`);
    // stop ends the back-off: no further run.
    assert.equal((await host.api('POST', `/containers/${id}/stop`)).status, 204);
    assert.deepEqual((await waiting).json, { StatusCode: 3, Error: null });
    const n = await dies();
    const stopped = (await host.api('GET', `/containers/${id}/json`)).json;
    assert.equal(stopped.State.Status, 'exited');
    assert.equal(stopped.State.Restarting, false);
    assert.equal(stopped.State.Running, false);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(await dies(), n, 'not started again');
    assert.equal((await host.api('GET', `/containers/${id}/json`)).json.State.Status, 'exited');
    // A user's start begins a fresh restart manager: the count goes back to 0 (seen with the
    // policy off, so that no restart follows the exit).
    assert.equal((await host.api('POST', `/containers/${id}/update`, { RestartPolicy: { Name: 'no' } })).status, 200);
    const exited = host.api('POST', `/containers/${id}/wait?condition=next-exit`);
    assert.equal((await host.api('POST', `/containers/${id}/start`)).status, 204);
    assert.equal((await exited).json.StatusCode, 3);
    assert.equal((await host.api('GET', `/containers/${id}/json`)).json.RestartCount, 0);
    // SIGKILL ends a back-off too (Docker's ExitOnNext).
    assert.equal((await host.api('POST', `/containers/${id}/update`, { RestartPolicy: { Name: 'always' } })).status, 200);
    assert.equal((await host.api('POST', `/containers/${id}/start`)).status, 204);
    await waitFor(async () => {
      const r = (await host.api('GET', `/containers/${id}/json`)).json;
      return r.State.Status === 'restarting' && r.RestartCount >= 4;
    }, 'the fourth back-off', 20_000);
    assert.equal((await host.api('POST', `/containers/${id}/kill`)).status, 204);
    const m = await dies();
    await new Promise((r) => setTimeout(r, 1200));
    assert.equal(await dies(), m, 'not started again after kill');
    assert.equal((await host.api('GET', `/containers/${id}/json`)).json.State.Status, 'exited');
    assert.equal((await host.api('DELETE', `/containers/${id}`)).status, 204);
  });

  it('resizes a container\'s terminal and an exec\'s (stty size inside)', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'], Tty: true, OpenStdin: true });
    const size = async () => (await exec(host, id, ['stty', '-F', '/proc/1/fd/0', 'size'])).out.trim();
    assert.equal((await host.api('POST', `/containers/${id}/resize?h=33&w=111`)).status, 200);
    assert.equal(await size(), '33 111');
    assert.equal((await host.api('POST', `/containers/${id}/resize?h=20&w=70`)).status, 200);
    assert.equal(await size(), '20 70');
    // An exec with its own terminal: resized while it runs, it reports the new size.
    const ex = await host.api('POST', `/containers/${id}/exec`, { Cmd: ['sh', '-c', 'sleep 1; stty size'], Tty: true, AttachStdout: true, AttachStderr: true });
    assert.equal(ex.status, 201);
    const started = host.api('POST', `/exec/${ex.json.Id}/start`, { Detach: false, Tty: true });
    await waitFor(async () => (await host.api('GET', `/exec/${ex.json.Id}/json`)).json.Running === true || undefined, 'the exec to run');
    const rs = await host.api('POST', `/exec/${ex.json.Id}/resize?h=44&w=122`);
    assert.ok(rs.status === 200 || rs.status === 201, rs.body);
    assert.match((await started).body, /^44 122\r?\n$/);
    // Not running: Docker's 409.
    assert.equal((await host.api('POST', `/containers/${id}/kill`)).status, 204);
    const stopped = await host.api('POST', `/containers/${id}/resize?h=10&w=10`);
    assert.equal(stopped.status, 409);
    assert.equal(stopped.json.message, `Container ${id} is not running`);
    await host.api('DELETE', `/containers/${id}`);
  });

  it('kill of a paused container thaws it and answers once it has stopped', async () => {
    for (let i = 0; i < 5; i++) {
      const id = await host.runDetached({ Cmd: ['sleep', '300'] });
      assert.equal((await host.api('POST', `/containers/${id}/pause`)).status, 204);
      const k = await host.api('POST', `/containers/${id}/kill`);
      assert.equal(k.status, 204, k.body);
      // kill with SIGKILL waits for the exit: the state is final when it answers.
      const st = (await host.api('GET', `/containers/${id}/json`)).json.State;
      assert.deepEqual([st.Status, st.Paused, st.Running, st.ExitCode], ['exited', false, false, 137]);
      assert.equal((await host.api('DELETE', `/containers/${id}`)).status, 204);
    }
    // A paused container removed with force goes the same way.
    const id = await host.runDetached({ Cmd: ['sleep', '300'] });
    assert.equal((await host.api('POST', `/containers/${id}/pause`)).status, 204);
    assert.equal((await host.api('DELETE', `/containers/${id}?force=1`)).status, 204);
  });

  it('masks /sys/devices/virtual/powercap as Docker 25+ does, except for --privileged', async (t) => {
    if (!existsSync('/sys/devices/virtual/powercap')) t.diagnostic('the host has no powercap directory: only the mask\'s presence in the mounts is checked');
    const plain = await host.runDetached({ Cmd: ['sleep', '300'] });
    const priv = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { Privileged: true } });
    const mountsOf = async (x: string) => (await exec(host, x, ['cat', '/proc/self/mountinfo'])).stdout;
    if (existsSync('/sys/devices/virtual/powercap')) {
      assert.match(await mountsOf(plain), / \/sys\/devices\/virtual\/powercap /);
      assert.equal((await exec(host, plain, ['ls', '/sys/devices/virtual/powercap'])).stdout, '', 'nothing visible');
      assert.doesNotMatch(await mountsOf(priv), / \/sys\/devices\/virtual\/powercap /);
    }
    // The other masks hold beside it.
    assert.match(await mountsOf(plain), / \/proc\/keys /);
    for (const x of [plain, priv]) await host.api('DELETE', `/containers/${x}?force=1`);
  });

  it('a stale pidfile (a zombie, a reused pid) does not block the start; a live berthd does', async () => {
    const pidFile = join(host.root, 'berthd.pid');
    // A zombie: the child exits at once and its parent never reaps it. perl (Debian's essential
    // perl-base) rather than `sh -c 'true & … exec sleep'`: a shell may reap its job before the exec
    // (the suite once waited 10 s for a zombie that never showed).
    const parent = spawn('perl', ['-e', '$| = 1; my $p = fork(); exit 0 unless $p; print "$p\n"; sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    const reused = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      const zombie = Number(await new Promise<string>((r) => parent.stdout!.once('data', (d: Buffer) => r(d.toString()))));
      await waitFor(async () => / Z /.test(await fs.readFile(`/proc/${zombie}/stat`, 'utf8').catch(() => '')), 'the zombie');
      for (const [what, pid] of [['zombie', zombie], ['reused', reused.pid!]] as const) {
        await host.stopDaemon('SIGKILL');
        await fs.writeFile(pidFile, `${pid}\n`);
        await host.startDaemon().catch((e) => { throw new Error(`berthd did not start over a pidfile naming a ${what}: ${e}`); });
      }
      // The running berthd's own pidfile is honoured: a second one on the same root refuses.
      const second = await run('nsenter', [`--net=${host.netnsPath}`, process.execPath, BERTHD, '--root', host.root, '-H', `unix://${join(host.dir, 'second.sock')}`, '--no-seed-busybox']);
      assert.equal(second.code, 1);
      assert.match(second.stderr, new RegExp(`another berthd \\(pid ${host.daemonPid}\\) is using ${host.root}`));
      assert.equal((await host.api('GET', '/_ping')).status, 200);
    } finally {
      parent.kill();
      reused.kill();
    }
  });
});

