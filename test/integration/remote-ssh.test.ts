import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run, runOk } from '../../src/util/exec.js';
import { BERTH_CLI, DOCKER_CLI, PACKAGE_ROOT, TestHost, waitFor } from './harness.js';

/**
 * `DOCKER_HOST=ssh://…` and `berth -H ssh://…` against Debian's OpenSSH server, run by the test in
 * the test host's namespace on its loopback with a host key, a client key and configs the test made
 * (ssh's `-F` through a wrapper first on the clients' PATH): the machine's own sshd and ~/.ssh are
 * never read or written. The remote side is what the README tells a user to set up: berth's CLI on
 * the PATH as `berth` and as `docker`, and BERTH_HOST naming berthd's socket.
 */
const PORT = 2222;
const PORT_DOCKER = 2223;

describe('remote hosts over ssh', () => {
  let host: TestHost;
  const sshds: ChildProcess[] = [];
  const sshdLog: Record<number, string> = {};
  let dir: string;
  let clientPath: string;
  const url = `ssh://root@127.0.0.1:${PORT}`;
  const homeSshExisted = existsSync('/root/.ssh');

  /** A client run inside the test host's namespace (127.0.0.1 is its loopback), ssh wrapped with the test's config. */
  const client = (cmd: string, args: string[], opts: { env?: Record<string, string>; input?: string } = {}) => run('nsenter', [`--net=${host.netnsPath}`, cmd, ...args], {
    env: { ...process.env, PATH: `${clientPath}:${process.env.PATH}`, DOCKER_CONFIG: join(dir, 'docker-config'), ...opts.env },
    ...(opts.input !== undefined ? { input: opts.input } : {}),
  });
  const docker = (args: string[], input?: string) => client(DOCKER_CLI, args, { env: { DOCKER_HOST: url }, ...(input !== undefined ? { input } : {}) });
  const berth = (args: string[], input?: string) => client(process.execPath, [BERTH_CLI, '-H', url, ...args], input !== undefined ? { input } : {});
  const ok = async (r: Promise<{ code: number; stdout: string; stderr: string }>, what: string) => {
    const out = await r;
    assert.equal(out.code, 0, `${what}: ${out.stderr}${out.stdout}`);
    return out.stdout;
  };

  before(async () => {
    assert.ok(existsSync('/usr/sbin/sshd'), '/usr/sbin/sshd is missing: scripts/setup.sh installs openssh-server');
    host = await TestHost.create();
    dir = join(host.dir, 'ssh');
    await fs.mkdir(dir, { mode: 0o700 });
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'berth-test-host', '-f', join(dir, 'hostkey')]);
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'berth-test-client', '-f', join(dir, 'clientkey')]);
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'berth-test-stranger', '-f', join(dir, 'strangerkey')]);
    await fs.copyFile(join(dir, 'clientkey.pub'), join(dir, 'authorized_keys'));
    // The remote's PATH: berth's CLI as `berth`, and as `docker` for the docker CLI's `docker system dial-stdio`.
    const remoteBin = join(dir, 'remote-bin');
    await fs.mkdir(remoteBin);
    await fs.symlink(join(PACKAGE_ROOT, 'bin', 'berth'), join(remoteBin, 'berth'));
    await fs.symlink(join(PACKAGE_ROOT, 'bin', 'berth'), join(remoteBin, 'docker'));
    // The README's other way: a real docker CLI on the remote, pointed at berthd's socket.
    const dockerBin = join(dir, 'remote-bin-docker');
    await fs.mkdir(dockerBin);
    await fs.symlink(DOCKER_CLI, join(dockerBin, 'docker'));
    const hostPub = (await fs.readFile(join(dir, 'hostkey.pub'), 'utf8')).trim().split(' ').slice(0, 2).join(' ');
    await fs.writeFile(join(dir, 'known_hosts'), [PORT, PORT_DOCKER].map((p) => `[127.0.0.1]:${p} ${hostPub}\n`).join(''));
    await fs.writeFile(join(dir, 'ssh_config'), [
      'Host *', `  IdentityFile ${join(dir, 'clientkey')}`, '  IdentitiesOnly yes', `  UserKnownHostsFile ${join(dir, 'known_hosts')}`,
      '  GlobalKnownHostsFile /dev/null', '  StrictHostKeyChecking yes', '  BatchMode yes', '  LogLevel ERROR',
    ].join('\n') + '\n');
    clientPath = join(dir, 'client-bin');
    await fs.mkdir(clientPath);
    await fs.writeFile(join(clientPath, 'ssh'), `#!/bin/sh\nexec /usr/bin/ssh -F ${join(dir, 'ssh_config')} "$@"\n`, { mode: 0o755 });
    // sshd's privilege separation directory (Debian's init script makes it; there is none running here).
    await fs.mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    await startSshd(PORT, `PATH=${remoteBin}:/usr/local/bin:/usr/bin:/bin BERTH_HOST=unix://${host.socket}`);
    await startSshd(PORT_DOCKER, `PATH=${dockerBin}:/usr/local/bin:/usr/bin:/bin DOCKER_HOST=unix://${host.socket}`);
  });

  /** An sshd of the test's on the test host's loopback, with `env` set for its sessions (sshd_config's SetEnv). */
  async function startSshd(port: number, env: string): Promise<void> {
    const config = join(dir, `sshd_config_${port}`);
    await fs.writeFile(config, [
      `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${join(dir, 'hostkey')}`, `PidFile ${join(dir, `sshd_${port}.pid`)}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      // The keys live under the test's directory in /tmp (world-writable), which strict modes refuse.
      'StrictModes no', 'UsePAM no', 'PasswordAuthentication no', 'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password', 'LogLevel VERBOSE', `SetEnv ${env}`,
    ].join('\n') + '\n');
    const child = spawn('nsenter', [`--net=${host.netnsPath}`, '/usr/sbin/sshd', '-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    sshds.push(child);
    child.stderr!.on('data', (d: Buffer) => { sshdLog[port] = (sshdLog[port] ?? '') + d.toString(); });
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`sshd exited: ${sshdLog[port]}`);
      return (await host.inNetns('ss', ['-Htln', `sport = :${port}`])).stdout.includes(`127.0.0.1:${port}`);
    }, `sshd to listen on ${port}`);
  }

  after(async () => {
    for (const sshd of sshds) {
      if (sshd.exitCode !== null) continue;
      const exited = new Promise((r) => sshd.once('exit', r));
      sshd.kill('SIGTERM');
      await exited;
    }
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
    assert.equal(existsSync('/root/.ssh'), homeSshExisted, 'the test must not make or remove ~/.ssh');
  });

  it('system dial-stdio bridges stdin and stdout to the daemon socket', async () => {
    const out = await ok(host.berth(['system', 'dial-stdio'], 'GET /_ping HTTP/1.0\r\nHost: berth\r\n\r\n'), 'dial-stdio');
    assert.match(out, /^HTTP\/1\.[01] 200 OK\r\n/);
    assert.match(out, /\r\n\r\nOK$/);
  });

  it('the docker 20.10 CLI with DOCKER_HOST=ssh:// runs ps, run, network ls on the remote berthd', async () => {
    assert.equal(await ok(docker(['version', '--format', '{{.Server.APIVersion}}']), 'docker version'), '1.41\n');
    assert.equal(await ok(docker(['run', '--rm', 'busybox', 'echo', 'over-ssh']), 'docker run'), 'over-ssh\n');
    // stdin through the hijacked connection, and its end reaching the container (tr exits on EOF).
    assert.equal(await ok(docker(['run', '-i', '--rm', 'busybox', 'tr', 'a-z', 'A-Z'], 'quiet\n'), 'docker run -i'), 'QUIET\n');
    await ok(docker(['network', 'create', '--subnet', '10.89.0.0/24', 'remote-net']), 'docker network create');
    await ok(docker(['run', '-d', '--name', 'far', '--network', 'remote-net', 'busybox', 'sleep', '300']), 'docker run -d');
    assert.equal(await ok(docker(['ps', '--format', '{{.Names}} {{.Networks}}']), 'docker ps'), 'far remote-net\n');
    assert.match(await ok(docker(['network', 'ls', '--format', '{{.Name}} {{.Driver}}']), 'docker network ls'), /^remote-net bridge$/m);
    // The same daemon seen through its local socket.
    const local = await host.api('GET', '/containers/far/json');
    assert.equal(local.json.NetworkSettings.Networks['remote-net'].IPAddress, '10.89.0.2');
    const failed = await docker(['run', '--rm', 'busybox', 'sh', '-c', 'exit 3']);
    assert.equal(failed.code, 3);
    assert.match(sshdLog[PORT]!, /Accepted publickey for root from 127\.0\.0\.1/);
  });

  it('berth -H ssh:// runs ps, run, network ls the same way', async () => {
    assert.equal(await ok(berth(['ps', '--format', '{{.Names}}']), 'berth ps'), 'far\n');
    assert.match(await ok(berth(['run', '--rm', '--network', 'remote-net', 'busybox', 'ping', '-c', '1', '-W', '2', 'far']), 'berth run'), /1 packets received/);
    assert.equal((await ok(berth(['run', '-i', '--rm', 'busybox', 'wc', '-c'], 'twelve bytes'), 'berth run -i')).trim(), '12');
    assert.match(await ok(berth(['network', 'ls', '--format', '{{.Name}}']), 'berth network ls'), /^remote-net$/m);
    // A command's requests share one ssh session (create, then start): one login, not one per request.
    const logins = () => (sshdLog[PORT]!.match(/Accepted publickey for root/g) ?? []).length;
    const before = logins();
    await ok(berth(['run', '-d', '--name', 'near', 'busybox', 'sleep', '300']), 'berth run -d');
    await waitFor(async () => logins() > before, 'sshd to log the login');
    assert.equal(logins() - before, 1);
    await ok(berth(['rm', '-f', 'near']), 'berth rm near');
    await ok(berth(['rm', '-f', 'far']), 'berth rm');
    await ok(berth(['network', 'rm', 'remote-net']), 'berth network rm');
    assert.equal(await ok(host.berth(['ps', '-aq']), 'local ps'), '');
  });

  it('a remote whose `docker` is a real docker CLI pointed at berthd works the same', async () => {
    const viaDocker = (args: string[]) => client(DOCKER_CLI, args, { env: { DOCKER_HOST: `ssh://root@127.0.0.1:${PORT_DOCKER}` } });
    assert.equal(await ok(viaDocker(['run', '--rm', 'busybox', 'echo', 'via-real-docker']), 'docker run'), 'via-real-docker\n');
    assert.match(await ok(viaDocker(['network', 'ls', '--format', '{{.Name}}']), 'docker network ls'), /^bridge$/m);
    assert.match(sshdLog[PORT_DOCKER]!, /Accepted publickey for root from 127\.0\.0\.1/);
  });

  it('a key the remote does not accept fails with ssh\'s reason', async () => {
    const stranger = { env: { PATH: `${join(dir, 'stranger-bin')}:${process.env.PATH}` } };
    await fs.mkdir(join(dir, 'stranger-bin'), { recursive: true });
    await fs.writeFile(join(dir, 'stranger-bin', 'ssh'), `#!/bin/sh\nsed 's#clientkey#strangerkey#' ${join(dir, 'ssh_config')} > ${join(dir, 'stranger_config')}\nexec /usr/bin/ssh -F ${join(dir, 'stranger_config')} "$@"\n`, { mode: 0o755 });
    const r = await client(process.execPath, [BERTH_CLI, '-H', url, 'ps'], stranger);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error during connect: command \[ssh -l root -p 2222 -- 127\.0\.0\.1 berth system dial-stdio\] has exited with exit status 255/);
    assert.match(r.stderr, /Permission denied \(publickey\)/);
  });
});
