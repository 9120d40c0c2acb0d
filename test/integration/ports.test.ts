import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { exec, execOut, fetchIn, TestHost, waitFor } from './harness.js';

const HTTPD = ['sh', '-c', 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 80 -h /www'];

describe('published ports', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create({ outside: true }); });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  /** The page, or `failed: ECONNREFUSED` / `failed: timeout` (the client's own 2 s timeout). */
  async function fetchFrom(where: 'host' | 'outside', url: string): Promise<string> {
    const r = await fetchIn(where === 'host' ? host.netnsPath : `/run/netns/${host.outside}`, url);
    return r.error === undefined ? r.body : `failed: ${r.error}`;
  }

  /** Waits until the container's own server answers, so a failed fetch means the path, not a slow start. */
  async function serving(id: string, check = 'wget -qO- http://127.0.0.1/ >/dev/null'): Promise<void> {
    await waitFor(async () => /READY/.test(await execOut(host, id, ['sh', '-c', `${check} && echo READY`])), `container ${id} serving`);
  }

  it('-p 8080:80 is reachable from outside, from the host address, 127.0.0.1 and other containers (hairpin), with no proxy process', async () => {
    const id = await host.runDetached({ Cmd: HTTPD, ExposedPorts: { '80/tcp': {} }, HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8080' }] } } }, 'web');
    await serving(id);
    const short = id.slice(0, 12);
    assert.equal(await fetchFrom('outside', 'http://10.200.0.1:8080/'), `hello from ${short}\n`);
    assert.equal(await fetchFrom('host', 'http://10.200.0.1:8080/'), `hello from ${short}\n`);
    assert.equal(await fetchFrom('host', 'http://127.0.0.1:8080/'), `hello from ${short}\n`);
    const other = await host.runDetached({ Cmd: ['sleep', '300'] });
    // busybox wget has no timeout of its own; these must answer, so a hang fails the exec's wait.
    assert.deepEqual(await exec(host, other, ['wget', '-qO-', 'http://10.200.0.1:8080/']), { code: 0, stdout: `hello from ${short}\n`, stderr: '', out: `hello from ${short}\n` });
    assert.equal((await exec(host, id, ['wget', '-qO-', 'http://10.200.0.1:8080/'])).stdout, `hello from ${short}\n`, 'the container reaches itself');
    const insp = (await host.api('GET', '/containers/web/json')).json;
    assert.deepEqual(insp.NetworkSettings.Ports['80/tcp'], [{ HostIp: '0.0.0.0', HostPort: '8080' }]);
    assert.deepEqual(insp.HostConfig.PortBindings['80/tcp'], [{ HostIp: '', HostPort: '8080' }]);
    const row = (await host.api('GET', '/containers/json')).json.find((c: { Id: string }) => c.Id === id);
    assert.deepEqual(row.Ports, [{ IP: '0.0.0.0', PrivatePort: 80, PublicPort: 8080, Type: 'tcp' }]);
    // the data path is the kernel's: no process other than berthd holds the port
    const ss = await host.inNetns('ss', ['-Htlnp', 'sport = :8080']);
    assert.doesNotMatch(ss.stdout, /docker-proxy|conmon/);
    for (const c of [id, other]) await host.api('DELETE', `/containers/${c}?force=1`);
    assert.equal(await fetchFrom('host', 'http://127.0.0.1:8080/'), 'failed: ECONNREFUSED', 'rules vanish with the container');
  });

  it('a port bound to 127.0.0.1 answers the host only, never a neighbour on the link', async () => {
    const id = await host.runDetached({ Cmd: HTTPD, HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8081' }] } } });
    await serving(id);
    assert.match(await fetchFrom('host', 'http://127.0.0.1:8081/'), /^hello/);
    // Not DNATed there: the host's own stack has no listener and refuses.
    assert.equal(await fetchFrom('host', 'http://10.200.0.1:8081/'), 'failed: ECONNREFUSED');
    // A neighbour that routes 127.0.0.1 at the host (moby#45610) gets nothing: the host drops a
    // loopback destination arriving on a wire, so the client times out. The same client reaches a
    // port published on every address.
    const open = await host.runDetached({ Cmd: HTTPD, HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8083' }] } } });
    await serving(open);
    assert.match(await fetchFrom('outside', 'http://10.200.0.1:8083/'), /^hello/);
    await host.inOutside('ip', ['route', 'add', '127.0.0.2/32', 'via', '10.200.0.1']);
    try {
      assert.equal(await fetchFrom('outside', 'http://127.0.0.2:8081/'), 'failed: timeout');
    } finally {
      await host.inOutside('ip', ['route', 'del', '127.0.0.2/32']);
    }
    await host.api('DELETE', `/containers/${open}?force=1`);
    await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('a port bound to a host IP answers only on that IP', async () => {
    await host.inNetns('ip', ['addr', 'add', '10.200.0.5/24', 'dev', 'btvo0']);
    const id = await host.runDetached({ Cmd: HTTPD, HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '10.200.0.5', HostPort: '8082' }] } } });
    await serving(id);
    assert.match(await fetchFrom('outside', 'http://10.200.0.5:8082/'), /^hello/);
    assert.equal(await fetchFrom('outside', 'http://10.200.0.1:8082/'), 'failed: ECONNREFUSED');
    await host.api('DELETE', `/containers/${id}?force=1`);
    await host.inNetns('ip', ['addr', 'del', '10.200.0.5/24', 'dev', 'btvo0']);
  });

  it('publishes UDP, ephemeral ports, -P for exposed ports, and ranges', async () => {
    const id = await host.runDetached({
      Cmd: ['httpd', '-f', '-p', '80', '-h', '/'],
      ExposedPorts: { '80/tcp': {}, '9000/udp': {} },
      HostConfig: { PublishAllPorts: true, PortBindings: { '9000/udp': [{ HostIp: '', HostPort: '9000' }] } },
    });
    await serving(id, 'netstat -lnt | grep -q :80');
    // Debian's busybox has no UDP server (its nc lacks -u), so a UDP echo server runs in the
    // container's network namespace: the packets take exactly the container's path.
    const echo = "const s = require('dgram').createSocket('udp4'); s.on('message', (m, r) => s.send('echo:' + m, r.port, r.address, () => process.exit(0))); s.bind(9000); setTimeout(() => process.exit(1), 8000)";
    const server = host.inNetns('nsenter', [`--net=${host.root}/netns/${id.slice(0, 12)}`, process.execPath, '-e', echo]);
    await waitFor(async () => /:9000\s/.test(await execOut(host, id, ['netstat', '-lnu'])), 'the UDP echo server bound');
    const ports = (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Ports;
    assert.deepEqual(ports['9000/udp'], [{ HostIp: '0.0.0.0', HostPort: '9000' }]);
    const eph = Number(ports['80/tcp'][0].HostPort);
    assert.ok(eph >= 1024, `ephemeral port ${eph}`);
    const client = "const s = require('dgram').createSocket('udp4'); s.on('message', (m) => { console.log(String(m)); process.exit(0); }); s.send('udp-works', 9000, '10.200.0.1'); setTimeout(() => { console.log('timeout'); process.exit(1); }, 2000)";
    assert.equal((await host.inOutside(process.execPath, ['-e', client])).stdout.trim(), 'echo:udp-works');
    await server;
    await host.api('DELETE', `/containers/${id}?force=1`);
    const r = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8100-8105' }], '81/tcp': [{ HostIp: '', HostPort: '8100-8105' }] } } });
    const rp = (await host.api('GET', `/containers/${r}/json`)).json.NetworkSettings.Ports;
    assert.deepEqual([rp['80/tcp'][0].HostPort, rp['81/tcp'][0].HostPort], ['8100', '8101']);
    await host.api('DELETE', `/containers/${r}?force=1`);
  });

  it('a taken host port fails the start with Docker\'s words ("port is already allocated" when a container holds it, "address already in use" for another process) and publishes nothing', async () => {
    const first = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8090' }] } } });
    const c = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { PortBindings: { '81/tcp': [{ HostIp: '', HostPort: '8091' }], '80/tcp': [{ HostIp: '', HostPort: '8090' }] } } });
    const s = await host.api('POST', `/containers/${c.json.Id}/start`);
    assert.equal(s.status, 500);
    assert.match(s.json.message, /Bind for 0\.0\.0\.0:8090 failed: port is already allocated/);
    assert.equal((await host.api('GET', `/containers/${c.json.Id}/json`)).json.State.Running, false);
    // the port it did get first was given back, in the rules and as a reservation
    const ruleset = (await host.inNetns('nft', ['list', 'map', 'ip', 'berth', 'pub_any'])).stdout;
    assert.doesNotMatch(ruleset, /8091/);
    const again = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { PortBindings: { '81/tcp': [{ HostIp: '', HostPort: '8091' }] } } });
    // a port held by another process on the host
    const squatter = host.inNetns(process.execPath, ['-e', "require('net').createServer().listen(8095, () => setTimeout(() => process.exit(0), 3000))"]);
    await waitFor(async () => /:8095\s/.test((await host.inNetns('ss', ['-Htln'])).stdout), 'the squatter listening');
    const c2 = await host.api('POST', '/containers/create', { Image: 'busybox', Cmd: ['sleep', '300'], HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8095' }] } } });
    const s2 = await host.api('POST', `/containers/${c2.json.Id}/start`);
    assert.match(s2.json.message, /address already in use/);
    await squatter;
    for (const id of [first, again, c.json.Id, c2.json.Id]) await host.api('DELETE', `/containers/${id}?force=1`);
  });

  it('--network host -p warns that published ports are discarded', async () => {
    const r = await host.docker(['run', '-d', '--network', 'host', '-p', '80:80', 'busybox', 'sleep', '300']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Published ports are discarded when using host network mode/);
    await host.docker(['rm', '-f', r.stdout.trim()]);
  });

  it("the user's own nft table filters published ports, and berth never touches it", async () => {
    const id = await host.runDetached({ Cmd: HTTPD, HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8500' }] } } });
    await serving(id);
    assert.match(await fetchFrom('outside', 'http://10.200.0.1:8500/'), /^hello/);
    // What DOCKER-USER is for Docker: any table of the user's with a forward chain. A drop there is
    // final, whatever berth's own chains accept.
    const userTable = 'table inet userfw {\n chain forward_in {\n  type filter hook forward priority filter; policy accept;\n  ip saddr 10.200.0.2 meta l4proto tcp ct original proto-dst 8500 drop\n }\n}\n';
    assert.equal((await host.inNetns('nft', ['-f', '-'], userTable)).code, 0);
    assert.equal(await fetchFrom('outside', 'http://10.200.0.1:8500/'), 'failed: timeout', 'the user\'s drop');
    assert.match(await fetchFrom('host', 'http://127.0.0.1:8500/'), /^hello/, 'the host itself is not forwarded traffic');
    await host.stopDaemon();
    await host.startDaemon();
    const other = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8501' }] } } });
    assert.match((await host.inNetns('nft', ['list', 'table', 'inet', 'userfw'])).stdout, /ct original proto-dst 8500 drop/);
    assert.equal(await fetchFrom('outside', 'http://10.200.0.1:8500/'), 'failed: timeout', 'the user\'s drop');
    await host.inNetns('nft', ['delete', 'table', 'inet', 'userfw']);
    assert.match(await fetchFrom('outside', 'http://10.200.0.1:8500/'), /^hello/);
    for (const c of [id, other]) await host.api('DELETE', `/containers/${c}?force=1`);
  });

  it('publishing survives a daemon restart; many ports are map elements, not rules', async () => {
    const id = await host.runDetached({ Cmd: HTTPD, HostConfig: { PortBindings: { '80/tcp': [{ HostIp: '', HostPort: '8300' }] } } });
    await serving(id);
    await host.stopDaemon('SIGKILL');
    await host.startDaemon();
    assert.match(await fetchFrom('outside', 'http://10.200.0.1:8300/'), /^hello/);
    const rulesBefore = (await host.inNetns('nft', ['-a', 'list', 'table', 'ip', 'berth'])).stdout.split('\n').filter((l) => /# handle/.test(l) && !/map|set|chain|table/.test(l)).length;
    const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {};
    for (let p = 0; p < 50; p++) bindings[`${1000 + p}/tcp`] = [{ HostIp: '', HostPort: String(8400 + p) }];
    const many = await host.runDetached({ Cmd: ['sleep', '300'], HostConfig: { PortBindings: bindings } });
    const rulesAfter = (await host.inNetns('nft', ['-a', 'list', 'table', 'ip', 'berth'])).stdout.split('\n').filter((l) => /# handle/.test(l) && !/map|set|chain|table/.test(l)).length;
    assert.equal(rulesAfter, rulesBefore, 'no rule per port');
    for (const c of [id, many]) await host.api('DELETE', `/containers/${c}?force=1`);
  });
});
