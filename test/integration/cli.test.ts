import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BERTH_CLI, PACKAGE_ROOT, TestHost, waitFor } from './harness.js';
import { run } from '../../src/util/exec.js';

describe('the berth CLI against berthd', () => {
  let host: TestHost;
  before(async () => { host = await TestHost.create(); });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  async function ok(args: string[], input?: string): Promise<string> {
    const r = await host.berth(args, input);
    assert.equal(r.code, 0, `berth ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }

  it('run: foreground output, exit status, stdin with -i, flags that shape the process', async () => {
    assert.equal(await ok(['run', '--rm', 'busybox', 'echo', 'hello']), 'hello\n');
    const failed = await host.berth(['run', '--rm', 'busybox', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.equal(failed.code, 7);
    assert.equal(failed.stdout, 'out\n');
    assert.equal(failed.stderr, 'err\n');
    assert.equal(await ok(['run', '--rm', '-i', 'busybox', 'tr', 'a-z', 'A-Z'], 'shout\n'), 'SHOUT\n');
    const shaped = await ok(['run', '--rm', '-e', 'GREETING=hi', '--env', 'OTHER=x', '-w', '/tmp', '--hostname', 'box1', '--entrypoint', 'sh', 'busybox', '-c', 'echo $GREETING $OTHER $(pwd) $(hostname)']);
    assert.equal(shaped, 'hi x /tmp box1\n');
    assert.equal(await ok(['run', '--rm', '--network', 'none', 'busybox', 'sh', '-c', 'ls /sys/class/net | tr "\\n" " "']), 'lo ');
    // a process that exits at once is still seen to exit (it once raced the start's bookkeeping)
    for (let i = 0; i < 10; i++) assert.equal((await host.berth(['run', '--rm', 'busybox', 'true'])).code, 0);
    // no container is left behind by --rm
    assert.equal(await ok(['ps', '-aq']), '');
  });

  it('run -it gives the container a terminal', async () => {
    const r = await run('script', ['-qec', `${process.execPath} ${BERTH_CLI} -H unix://${host.socket} run -it --rm busybox sh -c 'tty; exit 4'`, '/dev/null']);
    assert.equal(r.code, 4, r.stderr);
    assert.match(r.stdout, /\/dev\/pts\/0/);
  });

  it('run -d, ps, exec, logs, top, stats, port, inspect, stop, start, restart, kill, wait, rm', async () => {
    const id = (await ok(['run', '-dit', '--name', 'b1', '-p', '127.0.0.1:8800:80', '-l', 'role=web', 'busybox', 'sh', '-c', 'trap "exit 143" TERM; echo started; httpd -f -p 80 & wait'])).trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    const table = await ok(['ps']);
    assert.match(table.split('\n')[0]!, /^CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+PORTS\s+NAMES$/);
    assert.match(table, new RegExp(`^${id.slice(0, 12)}\\s+busybox\\s+"sh -c 'trap \\\\"exit 1…"\\s+.*Up .*127\\.0\\.0\\.1:8800->80/tcp\\s+b1$`, 'm'));
    assert.equal(await ok(['ps', '-q']), `${id.slice(0, 12)}\n`);
    assert.equal(await ok(['ps', '--filter', 'name=b1', '--format', '{{.Names}} {{.Label "role"}} {{.State}}']), 'b1 web running\n');
    assert.equal(await ok(['ps', '--filter', 'name=nomatch', '-q']), '');
    assert.equal(await ok(['exec', '-e', 'X=1', '-w', '/etc', 'b1', 'sh', '-c', 'echo $X $(pwd)']), '1 /etc\n');
    assert.equal((await host.berth(['exec', 'b1', 'sh', '-c', 'exit 3'])).code, 3);
    assert.equal(await ok(['exec', '-i', 'b1', 'cat'], 'piped\n'), 'piped\n');
    await waitFor(async () => (await ok(['logs', 'b1'])).includes('started'), 'log line');
    assert.equal(await ok(['logs', '--tail', '1', 'b1']), 'started\r\n', 'a TTY container logs what its terminal wrote');
    assert.match(await ok(['top', 'b1']), /^UID\s+PID\s+PPID\s+C\s+STIME\s+TTY\s+TIME\s+CMD\n(.*\n)*root\s+\d+.*httpd -f -p 80\n/);
    assert.match(await ok(['stats', '--no-stream', 'b1']), /^CONTAINER ID\s+NAME\s+CPU %\s+MEM USAGE \/ LIMIT\s+MEM %\s+NET I\/O\s+BLOCK I\/O\s+PIDS\n[0-9a-f]{12}\s+b1\s+[\d.]+%/);
    assert.equal(await ok(['port', 'b1']), '80/tcp -> 127.0.0.1:8800\n');
    assert.equal(await ok(['port', 'b1', '80/tcp']), '127.0.0.1:8800\n');
    assert.equal(await ok(['inspect', '-f', '{{.Name}} {{.Config.Tty}} {{.State.Status}} {{index .Config.Labels "role"}}', 'b1']), '/b1 true running web\n');
    const inspected = JSON.parse(await ok(['container', 'inspect', 'b1'])) as Array<{ Id: string }>;
    assert.equal(inspected[0]!.Id, id);
    assert.equal(await ok(['stop', '-t', '1', 'b1']), 'b1\n');
    assert.equal(await ok(['inspect', '-f', '{{.State.Running}}', 'b1']), 'false\n');
    assert.equal(await ok(['start', 'b1']), 'b1\n');
    assert.equal(await ok(['restart', '-t', '1', 'b1']), 'b1\n');
    assert.equal(await ok(['kill', '-s', 'TERM', 'b1']), 'b1\n');
    assert.equal(await ok(['wait', 'b1']), '143\n');
    assert.match(await ok(['ps', '-a', '--format', '{{.Status}}']), /^Exited \(143\)/);
    assert.equal(await ok(['rm', 'b1']), 'b1\n');
  });

  it('create then start -a; container rename; container ls and prune', async () => {
    const id = (await ok(['create', '--name', 'c1', 'busybox', 'echo', 'created'])).trim();
    assert.match(await ok(['container', 'ls', '-a', '--no-trunc', '--format', '{{.ID}} {{.Status}}']), new RegExp(`^${id} Created$`, 'm'));
    await ok(['container', 'rename', 'c1', 'c2']);
    assert.equal(await ok(['start', '-a', 'c2']), 'created\n');
    assert.match(await ok(['container', 'prune', '-f']), new RegExp(`Deleted Containers:\n${id}\n`));
  });

  it('volumes, bind mounts, tmpfs and limits; attach, pause, unpause, diff, export', async () => {
    const dir = join(host.dir, 'shared');
    await fs.mkdir(dir);
    await fs.writeFile(join(dir, 'f'), 'from-host\n');
    assert.equal(await ok(['run', '--rm', '-v', `${dir}:/data:ro`, 'busybox', 'cat', '/data/f']), 'from-host\n');
    assert.notEqual((await host.berth(['run', '--rm', '-v', `${dir}:/data:ro`, 'busybox', 'touch', '/data/g'])).code, 0, 'read-only bind');
    assert.equal(await ok(['volume', 'create', '--label', 'k=v', 'vol1']), 'vol1\n');
    await ok(['run', '--rm', '-v', 'vol1:/v', 'busybox', 'sh', '-c', 'echo kept > /v/x']);
    assert.equal(await ok(['run', '--rm', '-v', 'vol1:/v', 'busybox', 'cat', '/v/x']), 'kept\n');
    assert.equal(await ok(['volume', 'ls', '--filter', 'label=k=v', '--format', '{{.Name}} {{.Driver}}']), 'vol1 local\n');
    assert.equal(await ok(['volume', 'inspect', '-f', '{{.Name}} {{.Labels}}', 'vol1']), 'vol1 map[k:v]\n');
    assert.match(await ok(['run', '--rm', '--tmpfs', '/scratch:size=1m', 'busybox', 'sh', '-c', 'mount | grep scratch']), /tmpfs on \/scratch type tmpfs .*size=1024k/);
    assert.equal(await ok(['run', '--rm', '-m', '64m', '--cpus', '0.5', '--pids-limit', '50', 'busybox', 'true']), '');
    const limited = (await ok(['create', '-m', '64m', '--cpus', '0.5', '--pids-limit', '50', 'busybox', 'true'])).trim();
    assert.equal(await ok(['inspect', '-f', '{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}', limited]), '67108864 500000000 50\n');
    await ok(['rm', limited]);
    await ok(['run', '-dit', '--name', 'at1', 'busybox', 'sh']);
    assert.equal(await ok(['pause', 'at1']), 'at1\n');
    assert.match(await ok(['ps', '--format', '{{.Status}}', '--filter', 'name=at1']), /\(Paused\)/);
    assert.equal(await ok(['unpause', 'at1']), 'at1\n');
    await ok(['exec', 'at1', 'touch', '/newfile']);
    assert.match(await ok(['diff', 'at1']), /^A \/newfile$/m);
    const tar = join(host.dir, 'at1.tar');
    await ok(['export', '-o', tar, 'at1']);
    assert.ok((await fs.stat(tar)).size > 1_000_000);
    const attached = await host.berth(['attach', 'at1'], 'echo attached-ok\nexit 3\n');
    assert.equal(attached.code, 3);
    assert.match(attached.stdout, /attached-ok/);
    await ok(['rm', 'at1']);
    assert.equal(await ok(['volume', 'rm', 'vol1']), 'vol1\n');
  });

  it('errors read as docker\'s and exit with its statuses', async () => {
    const missing = await host.berth(['rm', 'nosuch']);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, 'Error response from daemon: No such container: nosuch\n');
    const inspect = await host.berth(['inspect', 'nosuch']);
    assert.equal(inspect.code, 1);
    assert.equal(inspect.stdout, '[]\n');
    assert.equal(inspect.stderr, 'Error: No such object: nosuch\n');
    const badImage = await host.berth(['run', 'nosuchimage']);
    assert.equal(badImage.code, 125);
    assert.match(badImage.stderr, /Unable to find image 'nosuchimage' locally/);
    const badFlag = await host.berth(['run', '--bogus', 'busybox']);
    assert.equal(badFlag.code, 125);
    assert.match(badFlag.stderr, /unknown option '--bogus'/);
    const badPort = await host.berth(['run', '-p', '1-3:80-81', 'busybox']);
    assert.equal(badPort.code, 125);
    assert.match(badPort.stderr, /invalid ranges specified/);
    const noDaemon = await run(process.execPath, [BERTH_CLI, '-H', 'unix:///nonexistent/berth.sock', 'ps']);
    assert.equal(noDaemon.code, 1);
    assert.match(noDaemon.stderr, /Cannot connect to berthd at unix:\/\/\/nonexistent\/berth.sock/);
    const viaEnv = await run(process.execPath, [BERTH_CLI, 'version', '--format', '{{.Server.ApiVersion}}'], { env: { ...process.env, BERTH_HOST: `unix://${host.socket}` } });
    assert.equal(viaEnv.stdout, '1.41\n');
  });

  it('images: ls, tag, save, load, import, inspect, history, rmi, prune', async () => {
    const tar = join(host.dir, 'bb.tar');
    assert.match(await ok(['images']), /^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE\nbusybox\s+latest\s+[0-9a-f]{12}\s+/);
    await ok(['tag', 'busybox', 'mybox:v1']);
    assert.deepEqual((await ok(['images', '--format', '{{.Repository}}:{{.Tag}}'])).trim().split('\n').sort(), ['busybox:latest', 'mybox:v1']);
    await ok(['save', '-o', tar, 'mybox:v1']);
    assert.ok((await fs.stat(tar)).size > 1_000_000);
    assert.equal(await ok(['rmi', 'mybox:v1']), 'Untagged: mybox:v1\n');
    assert.equal(await ok(['load', '-i', tar]), 'Loaded image: mybox:v1\n');
    assert.equal(await ok(['run', '--rm', 'mybox:v1', 'echo', 'from loaded']), 'from loaded\n');
    const imported = (await ok(['import', join(PACKAGE_ROOT, 'build', 'busybox.tar'), 'imported:v2'])).trim();
    assert.match(imported, /^sha256:[0-9a-f]{64}$/);
    assert.equal(await ok(['image', 'inspect', '-f', '{{.Id}}', 'imported:v2']), `${imported}\n`);
    assert.match(await ok(['history', 'imported:v2']), /^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT\n/);
    assert.match(await ok(['image', 'rm', 'imported:v2', 'mybox:v1']), /Untagged: imported:v2\n/);
    assert.match(await ok(['image', 'prune', '-f']), /Total reclaimed space: /);
    assert.equal(await ok(['images', '-q']), `${(await ok(['image', 'inspect', '-f', '{{.Id}}', 'busybox'])).trim().slice(7, 19)}\n`);
  });

  it('networks: create, ls, inspect, connect with an alias, disconnect, rm, prune; system prune', async () => {
    const id = (await ok(['network', 'create', '--subnet', '10.77.0.0/24', '--gateway', '10.77.0.254', '--label', 'team=a', 'n1'])).trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.match(await ok(['network', 'ls']), new RegExp(`^${id.slice(0, 12)}\\s+n1\\s+bridge\\s+local$`, 'm'));
    assert.equal(await ok(['network', 'ls', '--filter', 'label=team=a', '--format', '{{.Name}} {{.Driver}}']), 'n1 bridge\n');
    assert.equal(await ok(['network', 'inspect', '-f', '{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}', 'n1']), '10.77.0.0/24 10.77.0.254\n');
    await ok(['run', '-d', '--name', 'srv', 'busybox', 'sleep', '300']);
    await ok(['network', 'connect', '--alias', 'db', '--ip', '10.77.0.50', 'n1', 'srv']);
    assert.equal(await ok(['network', 'inspect', '-f', '{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}', 'n1']), 'srv 10.77.0.50/24\n');
    assert.match(await ok(['run', '--rm', '--network', 'n1', 'busybox', 'nslookup', 'db']), /Address: 10\.77\.0\.50/);
    const busy = await host.berth(['network', 'rm', 'n1']);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /has active endpoints/);
    await ok(['network', 'disconnect', 'n1', 'srv']);
    assert.equal(await ok(['network', 'rm', 'n1']), 'n1\n');
    await ok(['network', 'create', 'unused']);
    assert.equal(await ok(['network', 'prune', '-f']), 'Deleted Networks:\nunused\n');
    await ok(['rm', '-f', 'srv']);
    await ok(['create', 'busybox', 'true']);
    assert.match(await ok(['system', 'prune', '-f']), /Deleted Containers:\n[0-9a-f]{64}\n/);
    assert.match(await ok(['info']), /Server Version: \d+\.\d+\.\d+/);
  });
});
