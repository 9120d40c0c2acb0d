import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/daemon/paths.js';

/**
 * bin/berth-cni, the native executable (native/berth-cni.c), against a stand-in for berthd's
 * /berth/cni/exec: what it sends (the configuration, the CNI_* variables as headers), what it
 * prints and exits with, which socket it picks from the configuration, and its fallback to the
 * Node form when berthd does not answer.
 */

const BERTH_CNI = join(PACKAGE_ROOT, 'bin', 'berth-cni');

function runCni(input: string, env: Record<string, string>): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(BERTH_CNI, [], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } });
    let stdout = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout }));
    p.stdin.end(input);
  });
}

describe('berth-cni, the native executable', () => {
  let dir: string;
  let server: Server;
  let socket: string;
  const seen: Array<{ method?: string; url?: string; headers: IncomingHttpHeaders; body: string }> = [];
  let answer = { exit: '0', body: '{"cniVersion":"1.0.0"}\n' };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-cni-native-'));
    socket = join(dir, 'sock/et.sock');
    await mkdir(join(dir, 'sock'), { recursive: true });
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => { body += d.toString(); });
      req.on('end', () => {
        seen.push({ method: req.method, url: req.url, headers: req.headers, body });
        res.writeHead(200, { 'Cni-Exit': answer.exit, 'Content-Length': String(Buffer.byteLength(answer.body)) });
        res.end(answer.body);
      });
    });
    await new Promise<void>((r) => server.listen(socket, r));
  });

  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });

  it('hands the configuration and the CNI_* variables to berthd, and prints its answer with its exit status', async () => {
    // The socket as JSON may write it (an escaped slash); a "socket" deeper in the configuration is not it.
    const conf = `{"cniVersion":"1.0.0","name":"n","args":{"socket":"/elsewhere.sock"},"socket":"${socket.replace(/\//g, '\\/')}"}`;
    answer = { exit: '0', body: '{"cniVersion":"1.0.0","ips":[]}\n' };
    const r = await runCni(conf, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/run/netns/x', CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAME=p;IgnoreUnknown=1', CNI_PATH: '/opt/cni/bin' });
    assert.equal(r.code, 0);
    assert.equal(r.stdout, answer.body);
    const got = seen.at(-1)!;
    assert.equal(got.method, 'POST');
    assert.equal(got.url, '/berth/cni/exec');
    assert.equal(got.body, conf);
    assert.deepEqual(
      ['cni-command', 'cni-containerid', 'cni-netns', 'cni-ifname', 'cni-args', 'cni-path'].map((h) => got.headers[h]),
      ['ADD', 'c1', '/run/netns/x', 'eth0', 'K8S_POD_NAME=p;IgnoreUnknown=1', '/opt/cni/bin'],
    );
    answer = { exit: '1', body: '{"cniVersion":"1.0.0","code":7,"msg":"berthd: network n not found"}\n' };
    const failed = await runCni(conf, { CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0' });
    assert.equal(failed.code, 1);
    assert.equal(failed.stdout, answer.body);
    assert.equal(seen.at(-1)!.headers['cni-netns'], undefined, 'an unset variable is not sent');
  });

  it('without berthd, the Node form answers: VERSION still, and the CNI errors for ADD and STATUS', async () => {
    const conf = (extra = '') => `{"cniVersion":"1.1.0","name":"n","socket":"${join(dir, 'nobody.sock')}"${extra}}`;
    const v = await runCni(conf(), { CNI_COMMAND: 'VERSION' });
    assert.equal(v.code, 0);
    assert.deepEqual(JSON.parse(v.stdout).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    const add = await runCni(conf(), { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/x', CNI_IFNAME: 'eth0' });
    assert.equal(add.code, 1);
    assert.equal(JSON.parse(add.stdout).code, 11);
    const status = await runCni(conf(), { CNI_COMMAND: 'STATUS' });
    assert.equal(JSON.parse(status.stdout).code, 50);
  });
});
