import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { DOCKER_CLI, fetchIn, TestHost } from './harness.js';

/**
 * docker-compose 1.29.2 (Debian's, docker-py underneath, API version negotiation) against berthd,
 * unchanged: only DOCKER_HOST points at the test host's socket.
 */
describe('docker-compose 1.29 against berthd', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  async function project(name: string, yaml: string): Promise<(args: string[]) => ReturnType<typeof run>> {
    const dir = join(host.dir, name);
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(join(dir, 'docker-compose.yml'), yaml);
    return (args) => run('docker-compose', ['-p', name, '--no-ansi', ...args], {
      // compose's exec runs the `docker` it finds on PATH: the suite's client, not whatever the machine has.
      cwd: dir, env: { ...process.env, PATH: `${dirname(DOCKER_CLI)}:${process.env.PATH ?? ''}`, DOCKER_HOST: `unix://${host.socket}`, DOCKER_CONFIG: join(host.dir, 'docker-config') },
    });
  }
  const inspect = async (name: string) => {
    const r = await host.api('GET', `/containers/${name}/json`);
    assert.equal(r.status, 200, r.body);
    return r.json;
  };
  const ipOn = async (name: string, net: string): Promise<string> => (await inspect(name)).NetworkSettings.Networks[net].IPAddress as string;

  // busybox httpd as pid 1 ignores SIGTERM (as under Docker), so stops use -t 1.
  const web = (text: string) => `sh -c 'mkdir -p /www && echo ${text} > /www/index.html && echo ${text} ready && exec httpd -f -p 80 -h /www'`;

  it('the front/back example: up -d, ps, logs, exec -T, networks with options, aliases, ports, depends_on, labels, scale, down', async () => {
    const dc = await project('fb', `
version: "3.8"
services:
  proxy:
    image: busybox
    command: ${web('proxy')}
    networks: [front]
    ports: ["8080:80"]
    depends_on: [app]
  app:
    image: busybox
    command: ${web('app')}
    networks:
      front:
      back:
        aliases: [api]
    depends_on: [db]
  db:
    image: busybox
    command: ${web('db')}
    networks: [back]
    mem_limit: 64m
    cpus: 0.5
    pids_limit: 40
networks:
  front:
    driver: bridge
    driver_opts:
      com.docker.network.driver.mtu: "1300"
    labels:
      purpose: edge
  back:
`);
    const up = await dc(['up', '-d']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stderr, /Creating network "fb_front" with driver "bridge"/);
    assert.match(up.stderr, /Creating network "fb_back" with the default driver/);

    // Networks carry compose's labels and the driver option took effect in the container.
    const front = (await host.api('GET', '/networks/fb_front')).json;
    assert.equal(front.Options['com.docker.network.driver.mtu'], '1300');
    assert.equal(front.Labels['com.docker.compose.project'], 'fb');
    assert.equal(front.Labels['com.docker.compose.network'], 'front');
    assert.equal(front.Labels.purpose, 'edge');
    const proxyId = (await inspect('fb_proxy_1')).Id as string;
    assert.ok(front.Containers[proxyId], 'inspect lists the proxy on front');

    // Resource limits reach the container's cgroups.
    const dbId = (await inspect('fb_db_1')).Id as string;
    assert.equal(await fs.readFile(`/sys/fs/cgroup/memory/berth/${dbId}/memory.limit_in_bytes`, 'utf8'), `${64 * 1024 * 1024}\n`);
    assert.equal(await fs.readFile(`/sys/fs/cgroup/cpu/berth/${dbId}/cpu.cfs_quota_us`, 'utf8'), '50000\n');
    assert.equal(await fs.readFile(`/sys/fs/cgroup/pids/berth/${dbId}/pids.max`, 'utf8'), '40\n');

    // depends_on: db started before app, app before proxy.
    const started = async (n: string) => Date.parse((await inspect(n)).State.StartedAt as string);
    assert.ok(await started('fb_db_1') <= await started('fb_app_1'));
    assert.ok(await started('fb_app_1') <= await started('fb_proxy_1'));

    const ps = await dc(['ps']);
    assert.equal(ps.code, 0, ps.stderr);
    for (const n of ['fb_proxy_1', 'fb_app_1', 'fb_db_1']) assert.match(ps.stdout, new RegExp(`^${n} .* Up `, 'm'));
    assert.match(ps.stdout, /0\.0\.0\.0:8080->80\/tcp/);
    assert.equal((await dc(['ps', '-q'])).stdout.trim().split('\n').length, 3);
    const port = await dc(['port', 'proxy', '80']);
    assert.equal(port.stdout.trim(), '0.0.0.0:8080');

    // compose's labels, and the label filters compose itself and users rely on.
    const labels = (await inspect('fb_app_1')).Config.Labels;
    assert.equal(labels['com.docker.compose.project'], 'fb');
    assert.equal(labels['com.docker.compose.service'], 'app');
    assert.equal(labels['com.docker.compose.container-number'], '1');
    assert.equal(labels['com.docker.compose.oneoff'], 'False');
    const filtered = await host.docker(['ps', '--filter', 'label=com.docker.compose.project=fb', '--filter', 'label=com.docker.compose.service=db', '--format', '{{.Names}}']);
    assert.equal(filtered.stdout.trim(), 'fb_db_1');
    const byNet = await host.docker(['ps', '--filter', 'network=fb_front', '--format', '{{.Names}}']);
    assert.deepEqual(byNet.stdout.trim().split('\n').sort(), ['fb_app_1', 'fb_proxy_1']);

    const logs = await dc(['logs', '--no-color', 'db']);
    assert.equal(logs.code, 0, logs.stderr);
    assert.match(logs.stdout, /db_1 +\| db ready/);

    // The app sees both sides by name; the back alias answers with its back address.
    const dbIp = await ipOn('fb_db_1', 'fb_back');
    const proxyIp = await ipOn('fb_proxy_1', 'fb_front');
    const appBack = await ipOn('fb_app_1', 'fb_back');
    const fromApp = await dc(['exec', '-T', 'app', 'sh', '-c', 'nslookup db; nslookup proxy; wget -qO- http://db/; wget -qO- http://proxy/']);
    assert.equal(fromApp.code, 0, fromApp.stderr);
    assert.ok(fromApp.stdout.includes(`Address: ${dbIp}`), fromApp.stdout);
    assert.ok(fromApp.stdout.includes(`Address: ${proxyIp}`), fromApp.stdout);
    assert.match(fromApp.stdout, /^db\nproxy\n/m);
    const alias = await dc(['exec', '-T', 'db', 'nslookup', 'api']);
    assert.ok(alias.stdout.includes(`Address: ${appBack}`), alias.stdout);
    const code = await dc(['exec', '-T', 'app', 'sh', '-c', 'exit 3']);
    assert.equal(code.code, 3);
    // Without the docker CLI: compose's own exec through docker-py (create, start hijack, inspect).
    const pyExec = await run('docker-compose', ['-p', 'fb', 'exec', '-T', 'app', 'sh', '-c', 'echo via-py; exit 4'], {
      cwd: join(host.dir, 'fb'), env: { ...process.env, DOCKER_HOST: `unix://${host.socket}`, COMPOSE_INTERACTIVE_NO_CLI: '1' },
    });
    assert.equal(pyExec.stdout, 'via-py\n');
    assert.equal(pyExec.code, 4);

    // The proxy can neither resolve nor reach the db. berth's resolver does not know the name there
    // and forwards it to the upstream, which this test host lacks: SERVFAIL, not a timeout. nc's own
    // connect timeout, not an outer kill, says the SYN went unanswered; the same probes from the proxy
    // resolve and reach the app on its own network.
    const appFront = await ipOn('fb_app_1', 'fb_front');
    const fromProxy = await dc(['exec', '-T', 'proxy', 'sh', '-c', `nslookup db; nc -w 2 ${dbIp} 80 </dev/null; echo "nc=$?"; nslookup app; echo | nc -w 2 ${appFront} 80 >/dev/null; echo "own=$?"`]);
    assert.match(fromProxy.stdout + fromProxy.stderr, /server can't find db: SERVFAIL/);
    assert.match(fromProxy.stdout + fromProxy.stderr, /nc: timed out/);
    assert.match(fromProxy.stdout, /nc=1/);
    assert.match(fromProxy.stdout, new RegExp(`Address: ${appFront.replace(/\./g, '\\.')}`));
    assert.match(fromProxy.stdout, /own=0/);

    // The published port from the test host (its own namespace).
    const page = await fetchIn(host.netnsPath, 'http://127.0.0.1:8080/', 3000);
    assert.equal(page.body, 'proxy\n');

    // --scale: three db containers behind one name, round-robin in DNS.
    const scale = await dc(['up', '-d', '--scale', 'db=3']);
    assert.equal(scale.code, 0, scale.stderr);
    assert.match(scale.stderr, /fb_app_1 is up-to-date/);
    const dbs = await host.docker(['ps', '--filter', 'label=com.docker.compose.service=db', '--format', '{{.Names}}']);
    assert.deepEqual(dbs.stdout.trim().split('\n').sort(), ['fb_db_1', 'fb_db_2', 'fb_db_3']);
    const all = await dc(['exec', '-T', 'app', 'nslookup', 'db']);
    const ips = [...all.stdout.matchAll(/Address: (172\.\S+)/g)].map((m) => m[1]);
    assert.equal(new Set(ips).size, 3, all.stdout);

    const down = await dc(['down', '-t', '1']);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stderr, /Removing network fb_front/);
    assert.equal((await host.docker(['ps', '-aq'])).stdout.trim(), '');
    const nets = await host.docker(['network', 'ls', '--format', '{{.Name}}']);
    assert.deepEqual(nets.stdout.trim().split('\n').sort(), ['bridge', 'host', 'none']);
  });

  it('healthcheck and depends_on: condition: service_healthy', async () => {
    const dc = await project('hc', `
version: "3.8"
services:
  db:
    image: busybox
    command: sh -c 'trap "exit 0" TERM; sleep 1; touch /tmp/ready; while true; do sleep 1; done'
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 300ms
      retries: 20
  app:
    image: busybox
    command: sh -c 'trap "exit 0" TERM; while true; do sleep 1; done'
    depends_on:
      db:
        condition: service_healthy
`);
    const up = await dc(['up', '-d']);
    assert.equal(up.code, 0, up.stderr);
    const db = await inspect('hc_db_1');
    assert.equal(db.State.Health.Status, 'healthy');
    const firstHealthy = db.State.Health.Log.find((l: { ExitCode: number }) => l.ExitCode === 0);
    assert.ok(firstHealthy, JSON.stringify(db.State.Health));
    assert.ok(Date.parse((await inspect('hc_app_1')).State.StartedAt) >= Date.parse(firstHealthy.End), 'app started once db was healthy');
    assert.match((await dc(['ps'])).stdout, /^hc_db_1 .* Up \(healthy\)/m);
    const healthy = await host.docker(['ps', '--filter', 'health=healthy', '--format', '{{.Names}}']);
    assert.equal(healthy.stdout.trim(), 'hc_db_1');
    assert.equal((await dc(['down', '-t', '1'])).code, 0);
  });

  it('named volumes keep data across down and up, down -v removes them; anonymous volumes', async () => {
    const dc = await project('vol', `
version: "3.8"
services:
  db:
    image: busybox
    command: sh -c 'trap "exit 0" TERM; echo $$(( $$(cat /data/count 2>/dev/null || echo 0) + 1 )) > /data/count; while true; do sleep 1; done'
    volumes:
      - dbdata:/data
      - /scratch
volumes:
  dbdata:
    labels:
      kind: db
`);
    assert.equal((await dc(['up', '-d'])).code, 0);
    const vol = await host.api('GET', '/volumes/vol_dbdata');
    assert.equal(vol.status, 200, vol.body);
    assert.equal(vol.json.Labels.kind, 'db');
    assert.equal(vol.json.Labels['com.docker.compose.project'], 'vol');
    const mounts = (await inspect('vol_db_1')).Mounts as Array<{ Type: string; Name: string; Destination: string }>;
    assert.deepEqual(mounts.map((m) => `${m.Type} ${m.Destination}`).sort(), ['volume /data', 'volume /scratch']);
    assert.equal((await dc(['down', '-t', '1'])).code, 0);
    assert.equal((await dc(['up', '-d'])).code, 0);
    const count = await dc(['exec', '-T', 'db', 'cat', '/data/count']);
    assert.equal(count.stdout, '2\n', 'the second run saw the first one\'s data');
    const down = await dc(['down', '-t', '1', '-v']);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stderr, /Removing volume vol_dbdata/);
    assert.equal((await host.api('GET', '/volumes/vol_dbdata')).status, 404);
    // The first run's anonymous volume stays, as with Docker (down without -v keeps it); prune clears it.
    const prune = await host.docker(['volume', 'prune', '-f']);
    assert.equal(prune.code, 0, prune.stderr);
    assert.deepEqual((await host.api('GET', '/volumes')).json.Volumes, []);
  });

  it('links, external networks, environment, run --rm, stop/start/restart, port ranges and protocols', async () => {
    const ext = await host.docker(['network', 'create', '--label', 'owner=test', 'shared_ext']);
    assert.equal(ext.code, 0, ext.stderr);
    const dc = await project('lk', `
version: "3.8"
services:
  web:
    image: busybox
    command: ${web('web')}
    labels:
      tier: web
    links:
      - "cache:redis"
    networks: [default, ext]
    ports:
      - "127.0.0.1:9090:80"
      - "9091:81/udp"
  static:
    image: busybox
    command: httpd -f -p 80 -h /site
    volumes:
      - ./site:/site:ro
    tmpfs:
      - /scratch:size=1m
    ulimits:
      nofile: { soft: 1024, hard: 2048 }
    sysctls:
      net.core.somaxconn: 1024
    shm_size: 16m
  cache:
    image: busybox
    command: sh -c 'trap "exit 0" TERM; echo cache up $$ROLE; while true; do sleep 1; done'
    environment:
      ROLE: cache
networks:
  ext:
    external: true
    name: shared_ext
`);
    await fs.mkdir(join(host.dir, 'lk', 'site'));
    await fs.writeFile(join(host.dir, 'lk', 'site', 'index.html'), 'from a bind mount\n');
    const up = await dc(['up', '-d']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stderr, /Creating network "lk_default" with the default driver/);

    // A relative bind mount (compose makes it absolute), read-only.
    const mounted = await dc(['exec', '-T', 'web', 'wget', '-qO-', 'http://static/']);
    assert.equal(mounted.stdout, 'from a bind mount\n');
    const ro = await dc(['exec', '-T', 'static', 'sh', '-c', 'echo x > /site/x']);
    assert.notEqual(ro.code, 0, 'the mount is read-only');
    // The container's own process (pid 1) carries the ulimits: runc 1.1.5's exec gives its
    // processes the hard limit as the soft one whatever the spec says, under Docker as here.
    const limits = await dc(['exec', '-T', 'static', 'sh', '-c', 'grep "open files" /proc/1/limits; cat /proc/sys/net/core/somaxconn; grep " /dev/shm " /proc/mounts']);
    assert.match(limits.stdout, /^Max open files +1024 +2048 +files *\n1024\nshm \/dev\/shm tmpfs .*size=16384k/);
    const tmp = await dc(['exec', '-T', 'static', 'sh', '-c', 'grep " /scratch " /proc/mounts']);
    assert.match(tmp.stdout, /^tmpfs \/scratch tmpfs rw,nosuid,nodev,noexec,relatime,size=1024k/m);
    assert.deepEqual((await inspect('lk_static_1')).Mounts, [{ Type: 'bind', Source: join(host.dir, 'lk', 'site'), Destination: '/site', Mode: 'ro', RW: false, Propagation: 'rprivate' }]);

    const logs = await dc(['logs', '--no-color']);
    assert.match(logs.stdout, /cache_1 +\| cache up cache/);
    const webInfo = await inspect('lk_web_1');
    assert.deepEqual(Object.keys(webInfo.NetworkSettings.Networks).sort(), ['lk_default', 'shared_ext']);
    assert.equal(webInfo.Config.Labels.tier, 'web');
    assert.deepEqual(webInfo.HostConfig.PortBindings['81/udp'], [{ HostIp: '', HostPort: '9091' }]);

    // The link alias resolves for the linking container, from the embedded DNS.
    const cacheIp = await ipOn('lk_cache_1', 'lk_default');
    const link = await dc(['exec', '-T', 'web', 'nslookup', 'redis']);
    assert.ok(link.stdout.includes(`Address: ${cacheIp}`), link.stdout);
    const env = await dc(['exec', '-T', 'cache', 'sh', '-c', 'echo $ROLE']);
    assert.equal(env.stdout, 'cache\n');

    const page = await fetchIn(host.netnsPath, 'http://127.0.0.1:9090/', 3000);
    assert.equal(page.body, 'web\n');

    const once = await dc(['run', '--rm', 'cache', 'echo', 'one-off']);
    assert.equal(once.code, 0, once.stderr);
    assert.equal(once.stdout.trim(), 'one-off');

    assert.equal((await dc(['restart', '-t', '1', 'cache'])).code, 0);
    const stop = await dc(['stop', '-t', '1']);
    assert.equal(stop.code, 0, stop.stderr);
    const ps = await dc(['ps']);
    assert.match(ps.stdout, /^lk_cache_1 .* Exit 0 /m);
    const start = await dc(['start']);
    assert.equal(start.code, 0, start.stderr);
    assert.equal((await inspect('lk_web_1')).State.Running, true);
    assert.equal((await dc(['pause', 'cache'])).code, 0);
    assert.match((await dc(['ps'])).stdout, /^lk_cache_1 .* Paused /m);
    assert.equal((await dc(['unpause', 'cache'])).code, 0);
    assert.equal((await inspect('lk_cache_1')).State.Status, 'running');

    const down = await dc(['down', '-t', '1']);
    assert.equal(down.code, 0, down.stderr);
    assert.match(down.stderr, /Network shared_ext is external, skipping/);
    assert.equal((await host.api('GET', '/networks/shared_ext')).status, 200, 'an external network is left alone');
    assert.equal((await host.api('GET', '/networks/lk_default')).status, 404);
    assert.equal((await host.docker(['network', 'rm', 'shared_ext'])).code, 0);
    assert.equal((await host.docker(['ps', '-aq'])).stdout.trim(), '');
  });
});
