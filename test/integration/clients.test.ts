import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import Docker from 'dockerode';
import * as tarStream from 'tar-stream';
import { run } from '../../src/util/exec.js';
import { fetchIn, PACKAGE_ROOT, TestHost, waitFor } from './harness.js';

const HTTPD = ['sh', '-c', 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && httpd -p 80 -h /www && echo "server ready" && exec sleep 3600'];

/** Node clients as their users call them: dockerode, and testcontainers in a process of its own. */
describe('dockerode and testcontainers against berthd', () => {
  let host: TestHost;
  let docker: Docker;
  before(async () => {
    host = await TestHost.create();
    docker = new Docker({ socketPath: host.socket });
  });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  /** Reads a followed log stream until `line` shows up. */
  async function waitForLog(c: Docker.Container, line: string): Promise<string> {
    const stream = await c.logs({ follow: true, stdout: true, stderr: true });
    const out = new PassThrough();
    let seen = '';
    docker.modem.demuxStream(stream, out, out);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "${line}" in the log: ${seen}`)), 10_000);
        out.on('data', (d: Buffer) => {
          seen += d.toString();
          if (seen.includes(line)) { clearTimeout(timer); resolve(); }
        });
      });
    } finally {
      (stream as unknown as { destroy(): void }).destroy();
    }
    return seen;
  }

  it('dockerode: a published port, a log line to wait for, events with filters, wait, remove', async () => {
    const events = await docker.getEvents({ filters: { type: ['container'], event: ['start', 'die'], label: ['suite=dockerode'] } }) as unknown as NodeJS.ReadableStream;
    const seen: Array<{ Action: string; id: string; Actor: { Attributes: Record<string, string> } }> = [];
    let buf = '';
    events.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines.filter(Boolean)) seen.push(JSON.parse(l));
    });

    const c = await docker.createContainer({
      Image: 'busybox', name: 'web1', Cmd: HTTPD, Labels: { suite: 'dockerode' },
      ExposedPorts: { '80/tcp': {} }, HostConfig: { PortBindings: { '80/tcp': [{ HostPort: '' }] } },
    });
    await c.start();
    assert.match(await waitForLog(c, 'server ready'), /server ready/);
    const info = await c.inspect();
    const hostPort = Number(info.NetworkSettings.Ports['80/tcp']![0]!.HostPort);
    assert.ok(hostPort >= 1024, `an ephemeral host port, got ${hostPort}`);
    const page = await fetchIn(host.netnsPath, `http://127.0.0.1:${hostPort}/`, 3000);
    assert.equal(page.body, `hello from ${c.id.slice(0, 12)}\n`);

    // listContainers filters, as testcontainers and compose use them.
    const byLabel = await docker.listContainers({ filters: { label: ['suite=dockerode'], status: ['running'], ancestor: ['busybox'], name: ['web1'], id: [c.id.slice(0, 10)], network: ['bridge'] } });
    assert.deepEqual(byLabel.map((x) => x.Id), [c.id]);
    assert.deepEqual(byLabel[0]!.Ports, [{ IP: '0.0.0.0', PrivatePort: 80, PublicPort: hostPort, Type: 'tcp' }]);
    assert.deepEqual(await docker.listContainers({ filters: { label: ['suite=other'] } }), []);
    assert.equal((await docker.listContainers({ filters: { publish: ['80'], expose: ['70-90/tcp'], health: ['none'], 'is-task': ['false'] } })).length, 1);
    assert.deepEqual(await docker.listContainers({ filters: { publish: ['80/udp'] } }), []);
    assert.deepEqual(await docker.listContainers({ filters: { health: ['healthy'] } }), []);

    // update: the restart policy and the cgroup limits of the running container; what berth cannot apply is refused.
    await c.update({ RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 2 } });
    assert.deepEqual((await c.inspect()).HostConfig.RestartPolicy, { Name: 'on-failure', MaximumRetryCount: 2 });
    await c.update({ Memory: 100 * 1024 * 1024, NanoCpus: 500_000_000 });
    assert.equal(await fs.readFile(`/sys/fs/cgroup/memory/berth/${c.id}/memory.limit_in_bytes`, 'utf8'), `${100 * 1024 * 1024}\n`);
    assert.equal(await fs.readFile(`/sys/fs/cgroup/cpu/berth/${c.id}/cpu.cfs_quota_us`, 'utf8'), '50000\n');
    assert.equal((await c.inspect()).HostConfig.Memory, 100 * 1024 * 1024);
    await assert.rejects(c.update({ KernelMemory: 100 * 1024 * 1024 }), /does not support updating KernelMemory/);
    await assert.rejects(c.update({ Memory: 1024 }), /Minimum memory limit allowed is 6MB/);

    const waited = c.wait({ condition: 'not-running' });
    await c.kill();
    assert.equal((await waited).StatusCode, 137);
    await waitFor(async () => seen.some((e) => e.Action === 'die'), 'the die event');
    assert.deepEqual(seen.map((e) => e.Action), ['start', 'die']);
    assert.ok(seen.every((e) => e.id === c.id && e.Actor.Attributes.name === 'web1'));
    (events as unknown as { destroy(): void }).destroy();
    // The same history replayed with since/until, filtered by the container's name and image.
    const now = Math.ceil(Date.now() / 1000);
    const replay = await host.api('GET', `/events?since=${now - 120}&until=${now}&filters=${encodeURIComponent(JSON.stringify({ container: ['web1'], image: ['busybox'], event: ['die', 'connect'] }))}`);
    assert.deepEqual(replay.body.trim().split('\n').map((l) => JSON.parse(l).Action), ['die'], 'network events belong to the network, not the container');

    const removed = c.wait({ condition: 'removed' });
    await c.remove();
    assert.equal((await removed).StatusCode, 137);
  });

  it('dockerode: two containers on a network talk by alias', async () => {
    const net = await docker.createNetwork({ Name: 'appnet', Labels: { suite: 'dockerode' } });
    const server = await docker.createContainer({
      Image: 'busybox', name: 'srv', Cmd: HTTPD,
      HostConfig: { NetworkMode: 'appnet' }, NetworkingConfig: { EndpointsConfig: { appnet: { Aliases: ['server'] } } },
    });
    await server.start();
    await waitForLog(server, 'server ready');
    const client = await docker.createContainer({
      Image: 'busybox', Cmd: ['wget', '-qO-', 'http://server/'], HostConfig: { NetworkMode: 'appnet' },
    });
    await client.start();
    assert.equal((await client.wait()).StatusCode, 0);
    const logs = await client.logs({ stdout: true });
    assert.match(logs.toString(), new RegExp(`hello from ${server.id.slice(0, 12)}`));
    const inspected = await net.inspect();
    assert.ok(inspected.Containers?.[server.id], 'the network lists its endpoint');
    await client.remove();
    await server.remove({ force: true });
    await net.remove();
  });

  it('archive: HEAD stat, GET tar, PUT tar (dockerode) and docker cp both ways, stopped containers too', async () => {
    const c = await docker.createContainer({ Image: 'busybox', name: 'files', Cmd: ['sleep', '300'] });
    await c.start();
    const ex = await c.exec({ Cmd: ['sh', '-c', 'mkdir -p /data/sub && echo hello > /data/a.txt && echo deep > /data/sub/b && ln -s /etc/hostname /data/hn && ln -s ../../../../.. /data/up'] });
    await (await ex.start({})).resume();
    await waitFor(async () => (await ex.inspect()).Running === false, 'the exec');

    const head = await host.api('HEAD', '/containers/files/archive?path=/data/a.txt');
    assert.equal(head.status, 200);
    const stat = JSON.parse(Buffer.from(head.headers['x-docker-container-path-stat'] as string, 'base64').toString());
    assert.equal(stat.name, 'a.txt');
    assert.equal(stat.size, 6);
    assert.equal(stat.mode, 0o644);
    const dirHead = await host.api('HEAD', '/containers/files/archive?path=/data');
    const dirStat = JSON.parse(Buffer.from(dirHead.headers['x-docker-container-path-stat'] as string, 'base64').toString());
    assert.equal(dirStat.mode, 2 ** 31 + 0o755, 'a directory carries Go\'s ModeDir bit');
    const missing = await host.api('HEAD', '/containers/files/archive?path=/nope');
    assert.equal(missing.status, 404);

    const names: string[] = [];
    const tar = await c.getArchive({ path: '/data' });
    const ex2 = tarStream.extract();
    ex2.on('entry', (h, s, next) => { names.push(`${h.type} ${h.name}`); s.resume(); next(); });
    await new Promise<void>((resolve, reject) => { ex2.on('finish', resolve); ex2.on('error', reject); (tar as NodeJS.ReadableStream).pipe(ex2); });
    assert.deepEqual(names.sort(), ['directory data/', 'directory data/sub/', 'file data/a.txt', 'file data/sub/b', 'symlink data/hn', 'symlink data/up']);

    // PUT: names with .. and paths through a symlink stay inside the container's root.
    const pack = tarStream.pack();
    pack.entry({ name: 'put.txt' }, 'put\n');
    pack.entry({ name: '../../../berth-escape-test' }, 'no\n');
    pack.finalize();
    const chunks: Buffer[] = [];
    for await (const ch of pack) chunks.push(ch as Buffer);
    await c.putArchive(Buffer.concat(chunks), { path: '/data/up/tmp' });
    const check = async (cmd: string) => {
      const e = await c.exec({ Cmd: ['sh', '-c', cmd], AttachStdout: true });
      const s = await e.start({});
      const out = new PassThrough();
      let text = '';
      out.on('data', (d: Buffer) => { text += d.toString(); });
      docker.modem.demuxStream(s, out, out);
      await new Promise((r) => s.on('end', r));
      return text;
    };
    // A `..` name is kept below the target directory (Docker refuses such an archive instead).
    assert.equal(await check('cat /tmp/put.txt; cat /tmp/berth-escape-test'), 'put\nno\n');
    await assert.rejects(fs.stat('/berth-escape-test'), 'nothing written outside the container');
    // The API takes compressed archives too.
    await fs.writeFile(join(host.dir, 'put.tar'), Buffer.concat(chunks));
    await run('gzip', ['-k', join(host.dir, 'put.tar')]);
    await run('xz', ['-k', join(host.dir, 'put.tar')]);
    assert.equal((await host.api('PUT', '/containers/files/archive?path=/root', await fs.readFile(join(host.dir, 'put.tar.gz')), { 'Content-Type': 'application/x-tar' })).status, 200);
    assert.equal((await host.api('PUT', '/containers/files/archive?path=/home', await fs.readFile(join(host.dir, 'put.tar.xz')), { 'Content-Type': 'application/x-tar' })).status, 200);
    assert.equal(await check('cat /root/put.txt /home/put.txt'), 'put\nput\n');
    const notDir = await host.api('PUT', '/containers/files/archive?path=/data/a.txt', Buffer.concat(chunks), { 'Content-Type': 'application/x-tar' });
    assert.equal(notDir.status, 400);
    assert.equal(notDir.json.message, 'not a directory');

    // docker cp, the CLI's way (HEAD, then GET or PUT).
    const local = join(host.dir, 'cp');
    await fs.mkdir(local);
    await fs.writeFile(join(local, 'in.txt'), 'from host\n');
    assert.equal((await host.docker(['cp', join(local, 'in.txt'), 'files:/root/'])).code, 0);
    assert.equal(await check('cat /root/in.txt'), 'from host\n');
    const contents = await host.docker(['cp', 'files:/data/sub/.', join(local, 'flat')]);
    assert.equal(contents.code, 0, contents.stderr);
    assert.equal(await fs.readFile(join(local, 'flat', 'b'), 'utf8'), 'deep\n', 'SRC/. copies the contents');
    const out = await host.docker(['cp', 'files:/data/sub', local]);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(await fs.readFile(join(local, 'sub', 'b'), 'utf8'), 'deep\n');
    const missingCp = await host.docker(['cp', 'files:/nope', local]);
    assert.notEqual(missingCp.code, 0);
    // The CLI words the 404 itself: 20.10 "No such container:path", newer ones "Could not find the file".
    assert.match(missingCp.stderr, /No such container:path: files:\/nope|Could not find the file \/nope in container files/);

    // A stopped container's files: its layer is mounted for the copy and unmounted after.
    await c.stop({ t: 0 });
    assert.equal((await host.docker(['cp', join(local, 'in.txt'), 'files:/root/later.txt'])).code, 0);
    const back = await host.docker(['cp', 'files:/root/later.txt', join(local, 'later.txt')]);
    assert.equal(back.code, 0, back.stderr);
    assert.equal(await fs.readFile(join(local, 'later.txt'), 'utf8'), 'from host\n');
    await c.start();
    assert.equal(await check('cat /root/later.txt'), 'from host\n');

    // size=true: the container's own layer, and that plus its image.
    const sized = (await host.api('GET', '/containers/files/json?size=1')).json;
    assert.ok(sized.SizeRw > 0 && sized.SizeRootFs > sized.SizeRw, `${sized.SizeRw} ${sized.SizeRootFs}`);
    const psSize = await host.docker(['ps', '-s', '--format', '{{.Size}}', '--filter', 'name=files']);
    assert.match(psSize.stdout, /^\d+(\.\d+)?k?B \(virtual \d+(\.\d+)?MB\)\n$/);

    // docker diff and docker export read the same layers.
    const diff = await host.docker(['diff', 'files']);
    assert.equal(diff.code, 0, diff.stderr);
    for (const line of ['A /data', 'A /data/a.txt', 'C /root', 'A /root/later.txt', 'C /tmp', 'A /tmp/put.txt']) assert.ok(diff.stdout.split('\n').includes(line), `${line} in ${diff.stdout}`);
    const exported = join(host.dir, 'files.tar');
    assert.equal((await host.docker(['export', '-o', exported, 'files'])).code, 0);
    const listed = await run('tar', ['-tf', exported]);
    assert.ok(listed.stdout.split('\n').includes('data/a.txt'), 'the export has the container\'s files');
    assert.ok(listed.stdout.split('\n').includes('bin/busybox'), 'and the image\'s');
    await c.remove({ force: true });
  });

  it('volumes: create, list with filters, inspect, mount, in-use refusal, the image\'s files copied in, rm -v, prune', async () => {
    await docker.createVolume({ Name: 'store1', Labels: { suite: 'dockerode' } });
    const v = await docker.getVolume('store1').inspect();
    assert.equal(v.Name, 'store1');
    assert.equal(v.Driver, 'local');
    const again = await host.api('POST', '/volumes/create', { Name: 'store1' });
    assert.equal(again.status, 201, 'creating an existing name answers with it');
    const listed = await docker.listVolumes({ filters: { label: ['suite=dockerode'] } });
    assert.deepEqual(listed.Volumes.map((x) => x.Name), ['store1']);
    const c = await docker.createContainer({ Image: 'busybox', Cmd: ['sh', '-c', 'ls /etc > /etc/listing; sleep 300'], HostConfig: { Binds: ['store1:/etc'] } });
    await c.start();
    await waitFor(async () => (await fs.readFile(join(v.Mountpoint, 'listing'), 'utf8').catch(() => '')).includes('passwd'), 'the listing');
    const df = (await host.api('GET', '/system/df')).json;
    const usage = df.Volumes.find((x: { Name: string }) => x.Name === 'store1').UsageData;
    assert.ok(usage.Size > 0 && usage.RefCount === 1, JSON.stringify(usage));
    const inUse = await host.api('DELETE', '/volumes/store1');
    assert.equal(inUse.status, 409);
    assert.match(inUse.json.message, new RegExp(`^remove store1: volume is in use - \\[${c.id}\\]$`));
    assert.deepEqual((await docker.listVolumes({ filters: { dangling: ['true'] } })).Volumes, []);
    await c.remove({ force: true });
    const anon = await docker.createContainer({ Image: 'busybox', Cmd: ['true'], Volumes: { '/scratch': {} } });
    const anonName = ((await anon.inspect()).Mounts[0] as { Name: string }).Name;
    assert.match(anonName, /^[0-9a-f]{64}$/);
    await anon.remove({ v: true });
    assert.equal((await host.api('GET', `/volumes/${anonName}`)).status, 404, 'rm -v removes the anonymous volume');
    assert.equal((await host.api('GET', '/volumes/store1')).status, 200, 'and keeps named ones');
    assert.equal((await host.api('POST', '/volumes/create', { Name: 'x', Driver: 'nfs' })).status, 404);
    assert.equal((await host.api('POST', '/containers/create', { Image: 'busybox', HostConfig: { Mounts: [{ Type: 'npipe', Source: 'x', Target: '/t' }] } })).status, 400);
    const pruned = await docker.pruneVolumes();
    assert.deepEqual(pruned.VolumesDeleted, ['store1']);
  });

  it('docker commit: the container\'s layer with deletions, --change and --message, then run', async () => {
    const made = await host.docker(['run', '--name', 'tocommit', 'busybox', 'sh', '-c', 'echo committed > /hello; rm /bin/vi']);
    assert.equal(made.code, 0, made.stderr);
    const commit = await host.docker(['commit', '-c', 'CMD ["cat", "/hello"]', '-c', 'ENV STAGE=two', '-m', 'by the test', 'tocommit', 'snap:1']);
    assert.equal(commit.code, 0, commit.stderr);
    assert.match(commit.stdout, /^sha256:[0-9a-f]{64}\n$/);
    const ran = await host.docker(['run', '--rm', 'snap:1']);
    assert.equal(ran.stdout, 'committed\n');
    const gone = await host.docker(['run', '--rm', 'snap:1', 'sh', '-c', 'test -e /bin/vi && echo present || echo deleted; echo $STAGE']);
    assert.equal(gone.stdout, 'deleted\ntwo\n', 'the deletion is a whiteout in the new layer');
    const hist = await host.docker(['history', '--format', '{{.Comment}}', 'snap:1']);
    assert.equal(hist.stdout.split('\n')[0], 'by the test');
    assert.equal((await host.docker(['rm', 'tocommit'])).code, 0);
    assert.equal((await host.docker(['rmi', 'snap:1'])).code, 0);
  });

  it('system df, info, version and ping as clients read them', async () => {
    const df = await docker.df() as { Images: Array<{ RepoTags: string[] }>; Containers: unknown[]; Volumes: unknown[] };
    assert.ok(df.Images.some((i) => i.RepoTags.includes('busybox:latest')));
    assert.deepEqual(df.Containers, []);
    assert.equal((await docker.ping()).toString(), 'OK');
    assert.equal((await docker.version()).ApiVersion, '1.41');
    assert.equal((await docker.info()).OSType, 'linux');
    const swarm = await host.api('GET', '/swarm');
    assert.equal(swarm.status, 503);
  });

  it('testcontainers: GenericContainer with a port and a log wait strategy, exec, a Network with aliases', async () => {
    // Its host port checks connect to the mapped port, so the client runs in the test host's namespace.
    const script = join(PACKAGE_ROOT, 'dist', 'test', 'integration', 'clients', 'testcontainers-run.js');
    const r = await run('nsenter', [`--net=${host.netnsPath}`, process.execPath, script], {
      env: { ...process.env, DOCKER_HOST: `unix://${host.socket}`, TESTCONTAINERS_RYUK_DISABLED: 'true' },
    });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
    assert.match(out.page, /^hello from [0-9a-f]{12}\n$/);
    assert.deepEqual(out.exec, { output: 'exec-out\n', exitCode: 2 });
    assert.equal(out.healthWaited, true, 'Wait.forHealthCheck() saw the container turn healthy');
    assert.match(out.byAlias, /^hello from [0-9a-f]{12}\n$/);
    assert.match(out.serverIp, /^\d+\.\d+\.\d+\.\d+$/);
    // It removed what it made (no reaper needed for that).
    assert.deepEqual(await docker.listContainers({ all: true }), []);
    const nets = (await docker.listNetworks()).map((n) => n.Name).sort();
    assert.deepEqual(nets, ['bridge', 'host', 'none']);
  });
});
