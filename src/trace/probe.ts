/**
 * The proof half of `network trace`: a real packet from A's namespace (TCP connect, UDP datagram,
 * ICMP echo, or the DNS query A's libc would send), with nftables tracing in each namespace it
 * crosses (A's, berthd's, the target container's), and the rules it met read back from the trace.
 */
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { applyTraceTable, deleteTraceTable, TraceMonitor, TRACE_TABLE, traceTableScript } from '../kernel/nfttrace.js';
import { writeJsonAtomic } from '../store/atomic.js';
import { errorMessage } from '../util/errors.js';
import { run } from '../util/exec.js';
import { parseTraceLine, type Plan, type ProbeResult, type Proto, type TraceLine } from './model.js';

/** The probe programs run inside A's namespace with the host's node; each prints one JSON line. */
const TCP = `const net = require('net'); const [host, port, ms] = process.argv.slice(1);
const out = (o) => { console.log(JSON.stringify(o)); process.exit(0); };
const s = net.connect({ host, port: Number(port) }, () => out({ result: 'connected' }));
setTimeout(() => out({ result: 'timeout' }), Number(ms));
s.on('error', (e) => out({ result: e.code === 'ECONNREFUSED' ? 'refused' : /UNREACH/.test(e.code) ? 'unreachable' : 'error', output: e.message }));`;

const UDP = `const dgram = require('dgram'); const [host, port] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
s.send(Buffer.from('berth trace\\n'), Number(port), host, (e) => { console.log(JSON.stringify(e ? { result: /UNREACH/.test(e.code) ? 'unreachable' : 'error', output: e.message } : { result: 'sent' })); process.exit(0); });`;

const DNS = `const dgram = require('dgram'); const dns = require(process.argv[1]); const [, server, name, ms] = process.argv.slice(1);
const out = (o) => { console.log(JSON.stringify(o)); process.exit(0); };
const s = dgram.createSocket('udp4');
s.on('message', (m) => { const r = dns.decode(m); const addrs = r.answers.filter((a) => a.type === 'A').map((a) => a.data);
  out(addrs.length ? { result: 'resolved', addresses: addrs } : { result: 'not-resolved', output: (r.rcode || 'NOERROR') + ' from ' + server }); });
s.on('error', (e) => out({ result: 'not-resolved', output: e.message }));
s.send(dns.encode({ type: 'query', id: 4242, flags: dns.RECURSION_DESIRED, questions: [{ type: 'A', name }] }), 53, server);
setTimeout(() => out({ result: 'not-resolved', output: 'no answer from ' + server + ' within ' + ms + ' ms' }), Number(ms));`;

const DNS_PACKET = createRequire(import.meta.url).resolve('dns-packet');

interface Raw { result: string; output?: string; addresses?: string[] }

async function runProbe(netns: string, args: string[]): Promise<Raw> {
  const r = await run(args[0]!, args.slice(1), { netns });
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Raw;
  } catch {
    throw new Error(`the probe did not run (exit ${r.code}): ${(r.stderr || r.stdout).trim()}`);
  }
}

async function ping(netns: string, ip: string): Promise<Raw> {
  const r = await run('busybox', ['ping', '-c', '1', '-W', '2', ip], { netns });
  const output = (r.stdout + r.stderr).trim();
  if (r.code === 0 && /1 packets received/.test(output)) return { result: 'reply', output };
  if (/0 packets received/.test(output)) return { result: 'timeout', output };
  if (/unreachable/i.test(output)) return { result: 'unreachable', output };
  throw new Error(`ping did not run as a probe (exit ${r.code}): ${output}`);
}

/**
 * A name lookup as A's libc makes it: the /etc/hosts berth wrote for A first, then a DNS query to
 * the first nameserver of A's resolv.conf, sent from A's namespace. `etcDir` holds both files.
 */
export async function probeDns(netns: string, etcDir: string, name: string): Promise<ProbeResult> {
  const hosts = await fs.readFile(join(etcDir, 'hosts'), 'utf8').catch(() => '');
  const inHosts = hosts.split('\n').map((l) => l.replace(/#.*/, '').trim().split(/\s+/)).filter(([ip, ...names]) => ip && /^\d+\.\d+\.\d+\.\d+$/.test(ip) && names.some((n) => n.toLowerCase() === name.toLowerCase())).map(([ip]) => ip!);
  if (inHosts.length) return { kind: 'dns', result: 'resolved', output: `${name} is in ${join(etcDir, 'hosts')}: ${inHosts.join(', ')}`, addresses: inHosts, arrived: false, hostInput: false, leftHost: false, lines: [] };
  const resolvConf = join(etcDir, 'resolv.conf');
  const text = await fs.readFile(resolvConf, 'utf8').catch(() => '');
  const server = /^\s*nameserver\s+(\S+)/m.exec(text)?.[1];
  if (!server) return { kind: 'dns', result: 'not-resolved', output: `${resolvConf} names no nameserver`, arrived: false, hostInput: false, leftHost: false, lines: [] };
  const raw = await runProbe(netns, [process.execPath, '-e', DNS, DNS_PACKET, server, name, '2000']);
  return { kind: 'dns', result: raw.result, output: `asked ${server} for ${name}: ${raw.output ?? (raw.addresses ?? []).join(', ')}`, ...(raw.addresses ? { addresses: raw.addresses } : {}), arrived: false, hostInput: false, leftHost: false, lines: [] };
}

function l4(proto: Proto, port: number | undefined): string {
  if (proto === 'icmp') return 'icmp type echo-request';
  return `meta l4proto ${proto} th dport ${port}`;
}

/** Where a trace's tables were put, written before the first one: a berthd killed mid-trace removes them at its next start. */
export function journalPath(root: string): string {
  return join(root, 'trace.json');
}

/** Removes trace tables a killed trace left (berthd's start and --cleanup). */
export async function removeLeftoverTraces(root: string): Promise<string[]> {
  const problems: string[] = [];
  const j = await fs.readFile(journalPath(root), 'utf8').then((t) => JSON.parse(t) as { netns: string[] }, () => ({ netns: [] as string[] }));
  await deleteTraceTable().catch((e) => problems.push(errorMessage(e)));
  for (const ns of j.netns) await deleteTraceTable(ns).catch(() => undefined); // a namespace gone took its table along
  await fs.rm(journalPath(root), { force: true });
  return problems;
}

/** Replaces `unknown rule handle N` (rules the monitor had not cached) with the rule's text from berth's table. */
async function named(lines: TraceLine[]): Promise<TraceLine[]> {
  const cache = new Map<string, Map<string, string>>();
  const out: TraceLine[] = [];
  for (const l of lines) {
    const h = /^unknown rule handle (\d+)$/.exec(l.text);
    if (!h || !l.table.startsWith('berth')) { out.push(l); continue; }
    const key = `${l.netns}\0${l.family}\0${l.table}`;
    let rules = cache.get(key);
    if (!rules) {
      rules = new Map();
      const r = await run('nft', ['-a', 'list', 'table', l.family, l.table], l.netns === 'host' ? {} : { netns: l.netns });
      for (const m of r.stdout.matchAll(/^\s*(.*?) # handle (\d+)$/gm)) rules.set(m[2]!, m[1]!);
      cache.set(key, rules);
    }
    const text = (rules.get(h[1]!) ?? l.text).replace(/counter packets \d+ bytes \d+/g, 'counter');
    const comment = /comment "([^"]*)"/.exec(text)?.[1];
    out.push({ ...l, text, ...(comment !== undefined ? { comment } : {}) });
  }
  return out;
}

/**
 * Sends the probe with tracing on. The tables go into a journal first and are removed whatever
 * happens (the probe failing, a monitor that never reports).
 */
export async function probeWithTrace(root: string, a: { name: string; netnsPath: string }, p: Plan): Promise<ProbeResult> {
  const pr = p.probe!;
  const places: Array<{ label: string; where: string; netns?: string; script: string }> = [
    { label: a.netnsPath, where: a.name, netns: a.netnsPath, script: traceTableScript(`ip daddr ${pr.ip} ${l4(pr.proto, pr.port)}`, ['output']) },
    { label: 'host', where: 'host', script: traceTableScript(`ip saddr ${pr.sourceIp} ip daddr ${pr.ip} ${l4(pr.proto, pr.port)}`, ['prerouting'], ['input', 'forward', 'postrouting']) },
  ];
  const land = pr.landsOn;
  if (land && land.netnsPath !== a.netnsPath) places.push({ label: land.netnsPath, where: land.name, netns: land.netnsPath, script: traceTableScript(`ip daddr ${land.ip} ${l4(pr.proto, land.port ?? pr.port)}`, ['prerouting'], ['input']) });
  await writeJsonAtomic(journalPath(root), { netns: places.filter((x) => x.netns).map((x) => x.netns) });
  const monitors: Array<{ label: string; where: string; m: TraceMonitor }> = [];
  try {
    for (const place of places) {
      const m = new TraceMonitor(place.netns);
      monitors.push({ label: place.label, where: place.where, m });
      // The monitor may not listen yet when the table is first made: the table is made again (the
      // script replaces it) until the monitor reports it, which proves it hears this namespace.
      const deadline = Date.now() + 10_000;
      for (;;) {
        await applyTraceTable(place.script, place.netns);
        try {
          await m.waitFor((l) => l.startsWith(`add table inet ${TRACE_TABLE}`), 500);
          break;
        } catch (e) {
          if (Date.now() > deadline) throw e;
        }
      }
    }
    const raw = pr.proto === 'icmp' ? await ping(a.netnsPath, pr.ip)
      : await runProbe(a.netnsPath, [process.execPath, '-e', pr.proto === 'tcp' ? TCP : UDP, pr.ip, String(pr.port), '2000']);
    // Trace events come a moment after the packet (later on a loaded host): wait until the
    // monitors have been quiet a while and, when an answer came or a datagram went, until the
    // target's namespace has reported it or a bound passes.
    const landMonitor = land ? monitors.find((x) => x.label === land.netnsPath)?.m : undefined;
    const arrivedLine = (l: string) => l.includes(`${TRACE_TABLE} prerouting packet:`);
    const answered = ['connected', 'refused', 'reply', 'sent'].includes(raw.result);
    const until = Date.now() + (answered && landMonitor ? 3000 : 0);
    let count = -1;
    for (let i = 0; i < 40; i++) {
      const now = monitors.reduce((n, x) => n + x.m.lines.length, 0);
      const waiting = landMonitor && Date.now() < until && !landMonitor.lines.some(arrivedLine);
      if (now === count && !waiting) break;
      count = now;
      await new Promise((r) => setTimeout(r, 150));
    }
    const lines: TraceLine[] = [];
    for (const { label, where, m } of monitors) for (const l of await m.stop()) { const t = parseTraceLine(label, l); if (t) lines.push({ ...t, where }); }
    const all = await named(lines);
    const hostPackets = all.filter((l) => l.netns === 'host' && l.table === TRACE_TABLE);
    return {
      kind: pr.proto, result: raw.result, output: raw.output ?? raw.result,
      arrived: !!land && all.some((l) => l.netns === land.netnsPath && l.table === TRACE_TABLE && l.chain === 'prerouting'),
      hostInput: hostPackets.some((l) => l.chain === 'input'),
      leftHost: hostPackets.some((l) => l.chain === 'postrouting' && l.kind === 'packet' && !/oif "(br-|berth|docker)/.test(l.text)),
      lines: all,
    };
  } finally {
    for (const { m } of monitors) await m.stop().catch(() => undefined);
    for (const place of places) await deleteTraceTable(place.netns).catch(() => undefined);
    await fs.rm(journalPath(root), { force: true });
  }
}
