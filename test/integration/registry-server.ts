/**
 * A real registry for tests: Debian's docker-registry (the CNCF distribution server) on a loopback
 * port inside a test host's network namespace, with its own storage directory; optionally with
 * htpasswd basic auth or token auth backed by a small token server (also in the namespace).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { runOk } from '../../src/util/exec.js';
import type { TestHost } from './harness.js';

export interface RegistryServer {
  addr: string;
  storage: string;
  log: () => string;
  stop: () => Promise<void>;
}

function spawnIn(host: TestHost, cmd: string, args: string[], ready: RegExp, what: string): Promise<{ child: ChildProcess; log: () => string }> {
  const child = spawn('nsenter', [`--net=${host.netnsPath}`, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${what} did not start: ${log}`)); }, 15_000);
    const onData = (d: Buffer) => {
      log += d.toString();
      if (ready.test(log)) { clearTimeout(timer); resolve({ child, log: () => log }); }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${what} exited (${code}): ${log}`)); });
  });
}

function stopper(child: ChildProcess): () => Promise<void> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.removeAllListeners('exit');
    child.once('exit', () => undefined);
    // nsenter execs the program, so this pid is the server's own.
    child.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
}

export async function startRegistry(host: TestHost, port: number, auth?: { htpasswd?: { user: string; password: string }; token?: { realm: string; cert: string } }, ip = '127.0.0.1'): Promise<RegistryServer> {
  const dir = join(host.dir, `registry-${port}`);
  const storage = join(dir, 'storage');
  await fs.mkdir(storage, { recursive: true });
  let authYaml = '';
  if (auth?.htpasswd) {
    const file = join(dir, 'htpasswd');
    await runOk('htpasswd', ['-Bbc', file, auth.htpasswd.user, auth.htpasswd.password]);
    authYaml = `auth:\n  htpasswd:\n    realm: basic-realm\n    path: ${file}\n`;
  } else if (auth?.token) {
    authYaml = `auth:\n  token:\n    realm: ${auth.token.realm}\n    service: berth-test-registry\n    issuer: berth-test-issuer\n    rootcertbundle: ${auth.token.cert}\n`;
  }
  const config = join(dir, 'config.yml');
  await fs.writeFile(config, `version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${storage}
  delete:
    enabled: true
http:
  addr: ${ip}:${port}
  secret: berth-test-secret
${authYaml}`);
  const { child, log } = await spawnIn(host, '/usr/bin/docker-registry', ['serve', config], /listening on/, `docker-registry on ${port}`);
  return { addr: `${ip}:${port}`, storage, log, stop: stopper(child) };
}

/**
 * A token server as the distribution spec describes it: checks basic credentials and answers a
 * JWT (RS256, certificate in x5c) granting what the scope asks. Runs as a Node child inside the
 * namespace, since berthd (there) must reach it.
 */
export async function startTokenServer(host: TestHost, port: number, user: string, password: string): Promise<{ realm: string; cert: string; log: () => string; stop: () => Promise<void> }> {
  const dir = join(host.dir, `token-${port}`);
  await fs.mkdir(dir, { recursive: true });
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  await runOk('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=berth-test-token']);
  const script = join(dir, 'server.cjs');
  await fs.writeFile(script, `
const http = require('http'), crypto = require('crypto'), fs = require('fs');
const key = fs.readFileSync(${JSON.stringify(key)});
const der = new crypto.X509Certificate(fs.readFileSync(${JSON.stringify(cert)})).raw.toString('base64');
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  const want = 'Basic ' + Buffer.from(${JSON.stringify(`${user}:${password}`)}).toString('base64');
  if (req.headers.authorization !== want) { console.log('token refused ' + u.search); res.writeHead(401, {'content-type': 'application/json'}); res.end('{"details":"bad credentials"}'); return; }
  const access = u.searchParams.getAll('scope').filter(Boolean).map((s) => { const [type, name, actions] = s.split(':'); return { type, name, actions: actions.split(',') }; });
  const now = Math.floor(Date.now() / 1000);
  const head = b64({ typ: 'JWT', alg: 'RS256', x5c: [der] });
  const body = b64({ iss: 'berth-test-issuer', sub: ${JSON.stringify(user)}, aud: u.searchParams.get('service'), exp: now + 300, nbf: now - 10, iat: now, jti: crypto.randomUUID(), access });
  const sig = crypto.sign('sha256', Buffer.from(head + '.' + body), key).toString('base64url');
  console.log('token issued ' + u.search);
  res.writeHead(200, {'content-type': 'application/json'});
  res.end(JSON.stringify({ token: head + '.' + body + '.' + sig, expires_in: 300 }));
}).listen(${port}, '127.0.0.1', () => console.log('token server listening'));
`);
  const { child, log } = await spawnIn(host, process.execPath, [script], /token server listening/, 'token server');
  return { realm: `http://127.0.0.1:${port}/token`, cert, log, stop: stopper(child) };
}
