import type { LabHost } from '../test/integration/lab.js';
import { run } from './util.js';

/** Helpers of the benches that run on berth's test lab (test/integration/lab.ts). */

/** The docker CLI on a lab host: its output, or an error naming the host and the command. */
export async function docker(h: LabHost, args: string[]): Promise<string> {
  const r = await h.host.docker(args);
  if (r.code !== 0) throw new Error(`${h.name}: docker ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

/**
 * TCP connect + 1-byte echo, `n` times, from `clientNs` to `target` (several: each connection to the
 * next in turn, as a VIP's round robin takes its tasks), with an echo server in each of
 * `serverNss`; each round trip in ms.
 */
export async function echo(serverNss: string[], clientNs: string, target: string | string[], n: number): Promise<number[]> {
  // A target is an address (port 7007, where the servers listen) or address:port.
  const targets = (Array.isArray(target) ? target : [target]).map((t) => (t.includes(':') ? t.split(':') as [string, string] : [t, '7007']));
  const server = `require('net').createServer((s)=>s.pipe(s)).listen(7007);setTimeout(()=>process.exit(0),${n * 100 + 20000})`;
  const servers = serverNss.map((ns) => run('nsenter', [`--net=${ns}`, process.execPath, '-e', server]));
  await new Promise((r) => setTimeout(r, 800));
  const client = `const net=require('net');const to=${JSON.stringify(targets)};(async()=>{const out=[];for(let i=0;i<${n};i++){const [addr,port]=to[i%to.length];const t=process.hrtime.bigint();await new Promise((res,rej)=>{const s=net.connect(Number(port),addr,()=>s.write('x'));s.on('data',()=>{s.destroy();res();});s.on('error',rej);});out.push(Number(process.hrtime.bigint()-t)/1e6);}console.log(JSON.stringify(out));process.exit(0)})()`;
  const c = await run('nsenter', [`--net=${clientNs}`, process.execPath, '-e', client]);
  await run('pkill', ['-f', 'listen\\(7007\\)']);
  await Promise.all(servers);
  if (c.code !== 0) throw new Error(`echo: ${c.stderr}`);
  return JSON.parse(c.stdout) as number[];
}
