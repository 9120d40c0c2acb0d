import { spawn } from 'node:child_process';
import type { Socket } from 'node:dgram';
import type { Server } from 'node:net';
import { nftApply } from '../kernel/nft.js';
import { dnsRedirectTable } from './redirect.js';

/**
 * Docker's way to the embedded resolver, for drivers whose containers cannot reach berthd's
 * namespace (macvlan, ipvlan): the resolver's UDP and TCP sockets are opened *inside* the
 * container's namespace, on 127.0.0.11 and a free port, and served by berthd. Node cannot enter a
 * namespace, so a short-lived Node child started under `nsenter --net` binds them and hands them
 * back over the IPC channel (the kernel passes the descriptors; the sockets stay in the namespace
 * they were made in). The child exits at once; berthd alone holds the sockets.
 */

export interface SandboxSockets { udp: Socket; tcp: Server; port: number }

const HELPER = `
const dgram = require('dgram'), net = require('net');
const fail = (e) => { process.send({ error: String(e && e.message || e) }); process.exit(1); };
// berthd gone (killed mid-start): never linger holding sockets, and so the namespace, alive.
process.on('disconnect', () => process.exit(0));
const udp = dgram.createSocket('udp4');
udp.on('error', fail);
udp.bind({ address: '127.0.0.11', port: 0, exclusive: true }, () => {
  const port = udp.address().port;
  const tcp = net.createServer();
  tcp.on('error', fail);
  tcp.listen({ host: '127.0.0.11', port, exclusive: true }, () => {
    process.send({ kind: 'udp', port }, udp);
    process.send({ kind: 'tcp', port }, tcp);
    process.on('message', () => process.exit(0));
  });
});
`;

const HELPER_TIMEOUT_MS = 10_000;

export function openSandboxSockets(netnsPath: string): Promise<SandboxSockets> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${netnsPath}`, process.execPath, '-e', HELPER], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    let stderr = '';
    let udp: Socket | undefined;
    let tcp: Server | undefined;
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        udp?.close();
        tcp?.close();
        child.kill('SIGKILL');
        reject(err);
        return;
      }
      // The child's own copies close when it exits; from here the sockets are berthd's alone.
      child.send('done', () => child.disconnect());
      resolve({ udp: udp!, tcp: tcp!, port: udp!.address().port });
    };
    const timer = setTimeout(() => finish(new Error(`embedded DNS: no sockets from the namespace helper within ${HELPER_TIMEOUT_MS} ms`)), HELPER_TIMEOUT_MS);
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (e) => finish(e));
    child.on('exit', (code) => finish(new Error(`embedded DNS: namespace helper exited with ${code}: ${stderr.trim()}`)));
    child.on('message', (m: { kind?: string; error?: string }, handle: unknown) => {
      if (m.error) return finish(new Error(`embedded DNS: cannot open 127.0.0.11 in the container namespace: ${m.error}`));
      if (m.kind === 'udp') udp = handle as Socket;
      if (m.kind === 'tcp') tcp = handle as Server;
      if (udp && tcp) finish();
    });
  });
}

/**
 * Inside the container's namespace, 127.0.0.11:53 is sent to the resolver's own port on the same
 * address, as Docker does, so a process in the container may still bind port 53 for itself.
 */
export function sandboxRedirectRules(port: number): string {
  return dnsRedirectTable(`127.0.0.11:${port}`);
}

export async function programSandboxRedirect(netnsPath: string, port: number): Promise<void> {
  await nftApply(sandboxRedirectRules(port), { netns: netnsPath });
}
