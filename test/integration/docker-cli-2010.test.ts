import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from '../../src/util/exec.js';
import { PACKAGE_ROOT, TestHost, waitFor } from './harness.js';

/** Debian's docker CLI 20.10 (unpacked from docker.io by setup, no daemon) against berthd. */
const DOCKER_2010 = join(PACKAGE_ROOT, 'build', 'docker-20.10', 'usr', 'bin', 'docker');

describe('the docker 20.10 CLI (Debian docker.io) against berthd', () => {
  let host: TestHost;
  const docker = (args: string[], input?: string) => run(DOCKER_2010, ['-H', `unix://${host.socket}`, ...args], {
    env: { ...process.env, DOCKER_CONFIG: join(host.dir, 'docker-2010-config') },
    ...(input !== undefined ? { input } : {}),
  });
  const ok = async (args: string[], input?: string) => {
    const r = await docker(args, input);
    assert.equal(r.code, 0, `docker ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    assert.ok(existsSync(DOCKER_2010), `${DOCKER_2010} is missing: scripts/setup.sh unpacks it`);
    host = await TestHost.create();
  });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  it('speaks API 1.41 and runs containers: foreground, stdin, detached with a published port', async () => {
    assert.equal(await ok(['version', '--format', '{{.Client.Version}} {{.Server.APIVersion}}']), '20.10.24+dfsg1 1.41\n');
    assert.equal(await ok(['run', '--rm', 'busybox', 'echo', 'hello']), 'hello\n');
    assert.equal(await ok(['run', '-i', '--rm', 'busybox', 'tr', 'a-z', 'A-Z'], 'quiet\n'), 'QUIET\n');
    const failed = await docker(['run', '--rm', 'busybox', 'sh', '-c', 'exit 4']);
    assert.equal(failed.code, 4);
    await ok(['run', '-dit', '--name', 'web1', '-p', '8080:80', 'busybox', 'sh', '-c', 'mkdir /www && echo site-page > /www/index.html && echo up && exec httpd -f -p 80 -h /www']);
    assert.equal(await ok(['ps', '--format', '{{.Names}} {{.Ports}}']), 'web1 0.0.0.0:8080->80/tcp\n');
    assert.equal(await ok(['port', 'web1']), '80/tcp -> 0.0.0.0:8080\n');
    assert.equal(await ok(['exec', 'web1', 'sh', '-c', 'echo $((6*7))']), '42\n');
    await waitFor(async () => (await ok(['logs', 'web1'])).includes('up'), 'log line');
    assert.match(await ok(['top', 'web1']), /httpd -f -p 80 -h \/www/);
    assert.match(await ok(['stats', '--no-stream', '--format', '{{.Name}} {{.PIDs}}', 'web1']), /^web1 1\n$/);
  });

  it('the networking tutorial: user network, alias, names resolve there and not on the default bridge', async () => {
    await ok(['network', 'create', '--subnet', '10.88.0.0/24', 'tut']);
    await ok(['network', 'connect', '--alias', 'site', 'tut', 'web1']);
    assert.equal(await ok(['inspect', '-f', '{{.NetworkSettings.Networks.tut.IPAddress}}', 'web1']), '10.88.0.2\n');
    assert.equal(await ok(['network', 'inspect', '-f', '{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}', 'tut']), 'web1 10.88.0.2/24\n');
    assert.equal(await ok(['run', '--rm', '--network', 'tut', 'busybox', 'wget', '-qO-', 'http://site/']), 'site-page\n');
    const bridge = await docker(['run', '--rm', 'busybox', 'ping', '-c', '1', '-W', '1', 'web1']);
    assert.notEqual(bridge.code, 0);
    assert.match(bridge.stdout + bridge.stderr, /bad address 'web1'/);
    assert.match(await ok(['network', 'ls', '--format', '{{.Name}} {{.Driver}}']), /^tut bridge$/m);
    // The tutorial's `docker network connect bridge alpine4`: the CLI sends an empty alias list,
    // which is no alias (it was refused as one); a real alias on the default bridge still is.
    await ok(['run', '-dit', '--name', 'alpine4', '--network', 'tut', 'busybox']);
    const alias = await docker(['network', 'connect', '--alias', 'x', 'bridge', 'alpine4']);
    assert.equal(alias.code, 1);
    assert.match(alias.stderr, /network-scoped alias is supported only for containers in user defined networks/);
    await ok(['network', 'connect', 'bridge', 'alpine4']);
    assert.equal(await ok(['inspect', '-f', '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}', 'alpine4']), 'bridge tut \n');
    const web1 = (await ok(['inspect', '-f', '{{.NetworkSettings.Networks.bridge.IPAddress}}', 'web1'])).trim();
    assert.equal(await ok(['exec', 'alpine4', 'wget', '-qO-', `http://${web1}/`]), 'site-page\n');
    await ok(['rm', '-f', 'alpine4']);
    await ok(['network', 'disconnect', 'tut', 'web1']);
    await ok(['network', 'rm', 'tut']);
  });

  it("prints Docker's errors", async () => {
    const rm = await docker(['rm', 'nosuch']);
    assert.equal(rm.code, 1);
    assert.equal(rm.stderr, 'Error: No such container: nosuch\n');
    const pre = await docker(['network', 'rm', 'bridge']);
    assert.equal(pre.code, 1);
    assert.match(pre.stderr, /bridge is a pre-defined network and cannot be removed/);
    const image = await docker(['run', 'nosuchimage']);
    assert.equal(image.code, 125);
    assert.match(image.stderr, /Unable to find image 'nosuchimage:latest' locally/);
    await ok(['rm', '-f', 'web1']);
    assert.equal(await ok(['ps', '-aq']), '');
  });
});
