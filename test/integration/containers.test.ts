import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { demux, execOut, TestHost, waitFor } from './harness.js';

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
    const t0 = Date.now();
    assert.equal((await host.api('POST', `/containers/${id}/stop?t=10`)).status, 204);
    assert.ok(Date.now() - t0 < 3000, 'the TERM handler ran, no 10 s wait');
    assert.equal((await host.api('GET', `/containers/${id}/json`)).json.State.ExitCode, 0);
    await host.api('DELETE', `/containers/${id}`);
  });

  it('stop escalates to SIGKILL after the timeout', async () => {
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'trap "" TERM; while true; do sleep 1; done'] });
    const t0 = Date.now();
    const r = await host.api('POST', `/containers/${id}/stop?t=1`);
    assert.equal(r.status, 204);
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 900 && elapsed < 5000, `took ${elapsed} ms`);
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

  it('stats reports cgroup figures', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '300'] });
    const s = await host.api('GET', `/containers/${id}/stats?stream=false&one-shot=true`);
    assert.equal(s.status, 200);
    assert.ok(s.json.memory_stats.usage > 0, s.body);
    assert.ok(s.json.cpu_stats.system_cpu_usage > 0);
    assert.ok(s.json.pids_stats.current >= 1);
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

  it('a restart policy brings a failing container back', async () => {
    const id = await host.runDetached({ Cmd: ['sh', '-c', 'sleep 0.2; exit 1'], HostConfig: { RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 2 } } });
    await waitFor(async () => (await host.api('GET', `/containers/${id}/json`)).json.RestartCount >= 2, 'restarts', 15_000);
    await host.api('DELETE', `/containers/${id}?force=1`);
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
    const quick = await host.runDetached({ Cmd: ['sh', '-c', 'sleep 1; exit 5'] }, 'quick');
    await host.stopDaemon('SIGKILL');
    await new Promise((r) => setTimeout(r, 1500)); // `quick` exits while berthd is down
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
});

