import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { parseHost, queryString, resolveHost } from '../../src/cli/client.js';
import { portLines } from '../../src/cli/commands/containers.js';
import { splitTag } from '../../src/cli/commands/images.js';
import { servicePortsText } from '../../src/cli/commands/service.js';
import { ipamConfig, networkCreateBody } from '../../src/cli/commands/networks.js';
import { filtersJson } from '../../src/cli/context.js';
import { CONTAINER_FORMAT, containerRow, displayablePorts, NETWORK_FORMAT, networkRow } from '../../src/cli/format/contexts.js';
import { formatList, renderInspect } from '../../src/cli/format/formatter.js';
import { renderTemplate } from '../../src/cli/gotemplate.js';
import { createBody, parseBytes, parseExpose, parsePublish, type ContainerFlags } from '../../src/cli/runflags.js';
import { Demuxer, demuxBuffer } from '../../src/cli/streams.js';
import { REMOTE_DIAL, sshArgv } from '../../src/cli/remote.js';

function flags(over: Partial<ContainerFlags> = {}): ContainerFlags {
  return {
    env: [], envFile: [], label: [], networkAlias: [], publish: [], expose: [], dns: [], dnsSearch: [], dnsOption: [],
    addHost: [], link: [], capAdd: [], capDrop: [], securityOpt: [], restart: 'no', ...over,
  };
}

function frame(stream: number, text: string): Buffer {
  const payload = Buffer.from(text);
  const head = Buffer.alloc(8);
  head[0] = stream;
  head.writeUInt32BE(payload.length, 4);
  return Buffer.concat([head, payload]);
}

describe('berth CLI: run flags', () => {
  it('parses every -p form docker takes', () => {
    assert.deepEqual(parsePublish(['8080:80']).PortBindings, { '80/tcp': [{ HostIp: '', HostPort: '8080' }] });
    assert.deepEqual(parsePublish(['80']).PortBindings, { '80/tcp': [{ HostIp: '', HostPort: '' }] });
    assert.deepEqual(parsePublish(['127.0.0.1:8081:80']).PortBindings, { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8081' }] });
    assert.deepEqual(parsePublish(['127.0.0.1::80']).PortBindings, { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }] });
    assert.deepEqual(parsePublish(['[::1]:8082:80']).PortBindings, { '80/tcp': [{ HostIp: '::1', HostPort: '8082' }] });
    assert.deepEqual(parsePublish(['53:53/udp']).PortBindings, { '53/udp': [{ HostIp: '', HostPort: '53' }] });
    assert.deepEqual(parsePublish(['8000-8001:80-81']).PortBindings, {
      '80/tcp': [{ HostIp: '', HostPort: '8000' }], '81/tcp': [{ HostIp: '', HostPort: '8001' }],
    });
    assert.deepEqual(parsePublish(['8000-8005:80']).PortBindings, { '80/tcp': [{ HostIp: '', HostPort: '8000-8005' }] });
    assert.deepEqual(Object.keys(parsePublish(['9000-9002']).ExposedPorts), ['9000/tcp', '9001/tcp', '9002/tcp']);
    // the same container port published twice keeps both bindings
    assert.equal(parsePublish(['8080:80', '127.0.0.1:9090:80']).PortBindings['80/tcp']!.length, 2);
  });

  it('rejects malformed -p and --expose with docker\'s words', () => {
    assert.throws(() => parsePublish(['8000-8002:80-81']), /invalid ranges specified/);
    assert.throws(() => parsePublish(['80/icmp']), /invalid proto: icmp/);
    assert.throws(() => parsePublish(['a:b:c:d']), /invalid port format/);
    assert.throws(() => parsePublish(['70000']), /invalid containerPort/);
    assert.throws(() => parsePublish(['8080:']), /no port specified/);
    assert.deepEqual(parseExpose(['7000-7001/udp']), { '7000/udp': {}, '7001/udp': {} });
  });

  it('builds the create body docker sends for run -dit', () => {
    const body = createBody('busybox', ['sh', '-c', 'echo hi'], flags({
      detach: true, interactive: true, tty: true, env: ['A=1', 'FROM_HOST', 'MISSING'], workdir: '/tmp', hostname: 'h1',
      network: 'mynet', networkAlias: ['db'], ip: '10.1.0.9', publish: ['8080:80'], label: ['x=y', 'flag'], rm: true,
    }), { FROM_HOST: 'yes' });
    assert.equal(body.AttachStdin, false);
    assert.equal(body.AttachStdout, false);
    assert.equal(body.OpenStdin, true);
    assert.equal(body.Tty, true);
    assert.deepEqual(body.Env, ['A=1', 'FROM_HOST=yes']);
    assert.deepEqual(body.Cmd, ['sh', '-c', 'echo hi']);
    assert.deepEqual(body.Labels, { x: 'y', flag: '' });
    assert.deepEqual(body.ExposedPorts, { '80/tcp': {} });
    const hc = body.HostConfig as Record<string, unknown>;
    assert.equal(hc.NetworkMode, 'mynet');
    assert.equal(hc.AutoRemove, true);
    assert.deepEqual(body.NetworkingConfig, { EndpointsConfig: { mynet: { IPAMConfig: { IPv4Address: '10.1.0.9' }, Aliases: ['db'] } } });
    const attached = createBody('busybox', [], flags({ interactive: true }));
    assert.equal(attached.AttachStdin, true);
    assert.equal(attached.StdinOnce, true);
    assert.equal(attached.Cmd, null);
    assert.deepEqual(createBody('busybox', [], flags({ entrypoint: '' })).Entrypoint, ['']);
  });

  it('turns -v, --tmpfs, -m, --cpus and --pids-limit into HostConfig', () => {
    const hc = createBody('busybox', [], flags({ volume: ['/src:/dst:ro', 'vol:/v'], tmpfs: ['/t:size=1m', '/u'], memory: '64m', cpus: '1.5', pidsLimit: '50' })).HostConfig as Record<string, unknown>;
    assert.deepEqual(hc.Binds, ['/src:/dst:ro', 'vol:/v']);
    assert.deepEqual(hc.Tmpfs, { '/t': 'size=1m', '/u': '' });
    assert.equal(hc.Memory, 64 * 1024 * 1024);
    assert.equal(hc.NanoCpus, 1.5e9);
    assert.equal(hc.PidsLimit, 50);
    assert.equal(parseBytes('1g'), 1024 ** 3);
    assert.equal(parseBytes('512'), 512);
    assert.equal(parseBytes('2kb'), 2048);
    assert.throws(() => parseBytes('lots'), /invalid size/);
    assert.throws(() => createBody('busybox', [], flags({ cpus: 'many' })), /--cpus/);
  });

  it('refuses aliases and --ip off user-defined networks, as docker does', () => {
    assert.throws(() => createBody('busybox', [], flags({ networkAlias: ['x'] })), /user defined networks/);
    assert.throws(() => createBody('busybox', [], flags({ network: 'bridge', ip: '172.17.0.9' })), /user defined networks only/);
    assert.throws(() => createBody('busybox', [], flags({ restart: 'sometimes' })), /invalid restart policy/);
  });
});

describe('berth CLI: network create', () => {
  it('groups ranges, gateways and aux addresses with the subnet that holds them', () => {
    const cfg = ipamConfig({ subnet: ['10.1.0.0/16', '10.2.0.0/24'], ipRange: ['10.1.5.0/24'], gateway: ['10.2.0.254', '10.1.0.1'], auxAddress: ['router=10.2.0.2'] });
    assert.deepEqual(cfg, [
      { Subnet: '10.1.0.0/16', IPRange: '10.1.5.0/24', Gateway: '10.1.0.1' },
      { Subnet: '10.2.0.0/24', Gateway: '10.2.0.254', AuxiliaryAddresses: { router: '10.2.0.2' } },
    ]);
    assert.throws(() => ipamConfig({ subnet: ['10.1.0.0/16'], ipRange: [], gateway: ['10.9.0.1'], auxAddress: [] }), /no matching subnet for gateway 10.9.0.1/);
    assert.throws(() => ipamConfig({ subnet: ['10.1.0.0/16'], ipRange: [], gateway: ['10.1.0.1', '10.1.0.2'], auxAddress: [] }), /multiple gateways/);
  });

  it('sends options and labels as maps', () => {
    const body = networkCreateBody('n1', { driver: 'bridge', subnet: [], ipRange: [], gateway: [], auxAddress: [], label: ['a=b', 'c'], opt: ['com.docker.network.bridge.name=br1'], ipamDriver: 'default', ipamOpt: [], internal: true });
    assert.deepEqual(body.Labels, { a: 'b', c: '' });
    assert.deepEqual(body.Options, { 'com.docker.network.bridge.name': 'br1' });
    assert.equal(body.Internal, true);
    assert.equal(body.CheckDuplicate, true);
  });
});

describe('berth CLI: output', () => {
  const summary = {
    Id: 'a'.repeat(64), Names: ['/web'], Image: 'busybox', ImageID: 'sha256:' + 'b'.repeat(64), Command: 'httpd -f -p 80 -h /www/with/a/long/path',
    Created: Math.floor(Date.now() / 1000) - 120, State: 'running', Status: 'Up 2 minutes',
    Ports: [{ IP: '0.0.0.0', PrivatePort: 80, PublicPort: 8080, Type: 'tcp' }, { PrivatePort: 443, Type: 'tcp' }],
    Labels: { b: '2', a: '1' }, NetworkSettings: { Networks: { mynet: {}, bridge: {} } },
  };

  it('shows a service\'s ingress ports as docker service ls does: host-mode ones left to service ps, consecutive ones as a range, tcp first', () => {
    const p = (PublishedPort: number, TargetPort: number, Protocol = 'tcp', PublishMode = 'ingress') => ({ Protocol, TargetPort, PublishedPort, PublishMode });
    assert.equal(servicePortsText([p(8082, 82), p(53, 53, 'udp'), p(8080, 80), p(8081, 81), p(9090, 80, 'tcp', 'host'), p(9000, 90)]),
      '*:8080-8082->80-82/tcp, *:9000->90/tcp, *:53->53/udp');
    // The CLI's own quirks: consecutive published ports to one target are one range, and a target
    // inside a range's targets starts another.
    assert.equal(servicePortsText([p(8080, 80), p(8081, 80)]), '*:8080-8081->80/tcp');
    assert.equal(servicePortsText([p(8080, 80), p(8081, 81), p(8082, 81)]), '*:8080-8081->80-81/tcp, *:8082->81/tcp');
    assert.equal(servicePortsText([p(9090, 80, 'tcp', 'host')]), '');
  });

  it('renders docker ps tables and templates', () => {
    const table = formatList(undefined, [containerRow(summary, true)], CONTAINER_FORMAT);
    const [header, row] = table.split('\n');
    assert.equal(header, 'CONTAINER ID   IMAGE     COMMAND                  CREATED         STATUS         PORTS                           NAMES');
    assert.equal(row, 'aaaaaaaaaaaa   busybox   "httpd -f -p 80 -h /…"   2 minutes ago   Up 2 minutes   443/tcp, 0.0.0.0:8080->80/tcp   web');
    assert.equal(formatList('{{.Names}}|{{.Networks}}|{{.Label "a"}}|{{.Labels}}', [containerRow(summary, true)], CONTAINER_FORMAT), 'web|bridge,mynet|1|a=1,b=2\n');
    assert.equal(formatList(undefined, [containerRow(summary, true)], CONTAINER_FORMAT, true), 'aaaaaaaaaaaa\n');
    assert.equal(formatList('table {{.Names}}\t{{.State}}', [containerRow(summary, true)], CONTAINER_FORMAT), 'NAMES     STATE\nweb       running\n');
    // docker 20.10 groups a range only where host and container ports are equal
    assert.equal(displayablePorts([{ IP: '0.0.0.0', PrivatePort: 8000, PublicPort: 8000, Type: 'tcp' }, { IP: '0.0.0.0', PrivatePort: 8001, PublicPort: 8001, Type: 'tcp' }]), '0.0.0.0:8000-8001->8000-8001/tcp');
    assert.equal(displayablePorts([{ IP: '0.0.0.0', PrivatePort: 80, PublicPort: 8000, Type: 'tcp' }, { IP: '0.0.0.0', PrivatePort: 81, PublicPort: 8001, Type: 'tcp' }]), '0.0.0.0:8000->80/tcp, 0.0.0.0:8001->81/tcp');
  });

  it('renders network ls and inspect templates', () => {
    const n = { Id: 'c'.repeat(64), Name: 'mynet', Driver: 'bridge', Scope: 'local', Internal: false, Labels: {} };
    assert.equal(formatList(undefined, [networkRow(n, true)], NETWORK_FORMAT), 'NETWORK ID     NAME      DRIVER    SCOPE\ncccccccccccc   mynet     bridge    local\n');
    const inspected = { Name: 'mynet', Containers: { x: { Name: 'a', IPv4Address: '10.0.0.2/24' }, y: { Name: 'b', IPv4Address: '10.0.0.3/24' } } };
    assert.equal(renderInspect([inspected], '{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}'), 'a=10.0.0.2/24 b=10.0.0.3/24 \n');
    assert.equal(renderInspect([inspected], '{{json .Containers.x}}'), '{"IPv4Address":"10.0.0.2/24","Name":"a"}\n');
    assert.equal(renderInspect([], undefined), '[]\n');
    assert.equal(renderInspect([{ b: 1, a: { d: '<x>', c: [2] } }], '{{json .}}'), '{"a":{"c":[2],"d":"\\u003cx\\u003e"},"b":1}\n');
    assert.equal(renderTemplate('{{if eq .A "x"}}yes{{else}}no{{end}} {{len .L}} {{index .L 1}} {{upper .A}}', { A: 'x', L: [1, 2] }), 'yes 2 2 X');
  });

  it('prints docker port lines', () => {
    const ports = { '80/tcp': [{ HostIp: '0.0.0.0', HostPort: '8080' }, { HostIp: '::', HostPort: '8080' }], '53/udp': [{ HostIp: '127.0.0.1', HostPort: '5353' }], '9/tcp': null };
    assert.deepEqual(portLines(ports), ['53/udp -> 127.0.0.1:5353', '80/tcp -> 0.0.0.0:8080', '80/tcp -> [::]:8080']);
    assert.deepEqual(portLines(ports, '80'), ['0.0.0.0:8080', '[::]:8080']);
    assert.deepEqual(portLines(ports, '53/udp'), ['127.0.0.1:5353']);
  });
});

describe('berth CLI: plumbing', () => {
  it('demultiplexes frames split across chunks', async () => {
    const out = new PassThrough();
    const err = new PassThrough();
    const d = new Demuxer(out, err);
    const all = Buffer.concat([frame(1, 'hello '), frame(2, 'oops'), frame(1, 'world')]);
    for (let i = 0; i < all.length; i += 3) d.write(all.subarray(i, i + 3));
    d.end();
    await new Promise((r) => d.on('finish', r));
    assert.equal(out.read()?.toString(), 'hello world');
    assert.equal(err.read()?.toString(), 'oops');
    assert.deepEqual(demuxBuffer(all), [[1, 'hello '], [2, 'oops'], [1, 'world']]);
  });

  it('finds the daemon like docker finds its own', () => {
    assert.equal(resolveHost(undefined, {}), 'unix:///run/berth/berth.sock');
    assert.equal(resolveHost(undefined, { DOCKER_HOST: 'unix:///d.sock' }), 'unix:///d.sock');
    assert.equal(resolveHost(undefined, { DOCKER_HOST: 'unix:///d.sock', BERTH_HOST: 'unix:///b.sock' }), 'unix:///b.sock');
    assert.equal(resolveHost('unix:///flag.sock', { BERTH_HOST: 'unix:///b.sock' }), 'unix:///flag.sock');
    assert.deepEqual(parseHost('tcp://127.0.0.1:2375'), { host: '127.0.0.1', port: 2375 });
    assert.throws(() => parseHost('ftp://x'), /unable to parse host/);
    assert.deepEqual(parseHost('ssh://root@build1:2222'), { ssh: { host: 'build1', user: 'root', port: 2222 } });
    assert.deepEqual(parseHost('ssh://[fd00::1]'), { ssh: { host: 'fd00::1' } });
    assert.throws(() => parseHost('ssh://u:pw@h'), /plain-text password is not supported/);
    assert.throws(() => parseHost('ssh://h/var/run/x.sock'), /extra path after the host is not supported/);
    // The flags docker's connhelper passes; `--` keeps a host called "-oProxyCommand=…" from being an option.
    assert.deepEqual(sshArgv({ host: '-oProxyCommand=x', user: 'me', port: 22 }, REMOTE_DIAL), ['ssh', '-l', 'me', '-p', '22', '--', '-oProxyCommand=x', 'berth', 'system', 'dial-stdio']);
    assert.equal(queryString({ a: true, b: undefined, names: ['x', 'y z'] }), '?a=1&names=x&names=y%20z');
    assert.equal(filtersJson(['name=web', 'label=a=b', 'name=db']), '{"name":{"web":true,"db":true},"label":{"a=b":true}}');
    assert.deepEqual(splitTag('localhost:5000/app:v1'), { repo: 'localhost:5000/app', tag: 'v1' });
    assert.deepEqual(splitTag('localhost:5000/app'), { repo: 'localhost:5000/app' });
  });
});
