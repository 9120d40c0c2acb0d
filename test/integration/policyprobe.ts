import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';

let seq = 0;

/**
 * Many TCP and UDP probes at once, each from inside a container's network namespace, for the
 * policy truth table. Busybox's nc (Debian's busybox-static 1.35) has no UDP, so the probe is a
 * small Python program: it enters each namespace with setns(2) only to open a socket there (a
 * socket stays in the namespace it was made in), so one process serves every listener and sends
 * every probe of a case concurrently, and a denied probe costs one timeout for the whole case.
 *
 * Each result is `ok` (TCP handshake done / UDP answer received), `refused` (RST or ICMP port
 * unreachable), `timeout` (dropped on the way) or `blocked` (dropped in the sender's own namespace
 * as it was sent: the kernel answers the send with EPERM, as macvlan's in-namespace rules do). Listeners answer every port asked; a probe that reports
 * anything but ok or timeout means the probe is broken, not the policy.
 */

const PROGRAM = String.raw`
import ctypes, json, os, select, socket, sys, time, errno
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
home = os.open('/proc/self/ns/net', os.O_RDONLY)
def inns(path, make):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0: raise OSError(ctypes.get_errno(), 'setns ' + path)
        return make()
    finally:
        libc.setns(home, CLONE_NEWNET)
        os.close(fd)
req = json.load(sys.stdin)
listeners = []
for l in req['listen']:
    for proto, port in l['ports']:
        def mk(proto=proto, port=port):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == 'tcp' else socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('0.0.0.0', port))
            if proto == 'tcp': s.listen(128)
            s.setblocking(False)
            return s
        listeners.append((proto, inns(l['netns'], mk)))
probes = {}
result = {}
for p in req['probes']:
    def mk(p=p):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if p['proto'] == 'tcp' else socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            if p['proto'] == 'tcp':
                e = s.connect_ex((p['ip'], p['port']))
                if e == errno.EPERM: return s, 'blocked'
                if e not in (0, errno.EINPROGRESS): return s, 'error connect %d' % e
            else:
                s.connect((p['ip'], p['port']))
                s.send(b'probe')
        except PermissionError:
            return s, 'blocked'
        return s, None
    s, early = inns(p['netns'], mk)
    probes[p['id']] = (p['proto'], s)
    if early: result[p['id']] = early
deadline = time.time() + req['timeout']
while len(result) < len(probes) and time.time() < deadline:
    want_r = [s for _, s in listeners]
    want_w = []
    for pid, (proto, s) in probes.items():
        if pid in result: continue
        (want_w if proto == 'tcp' else want_r).append(s)
    r, w, _ = select.select(want_r, want_w, [], max(0, min(0.05, deadline - time.time())))
    for proto, s in listeners:
        if s not in r: continue
        try:
            if proto == 'tcp':
                c, _ = s.accept(); c.close()
            else:
                data, addr = s.recvfrom(100); s.sendto(b'ok', addr)
        except OSError:
            pass
    for pid, (proto, s) in probes.items():
        if pid in result: continue
        if proto == 'tcp' and s in w:
            e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            result[pid] = 'ok' if e == 0 else 'refused' if e == errno.ECONNREFUSED else 'error %d' % e
        elif proto == 'udp' and s in r:
            try:
                s.recv(100); result[pid] = 'ok'
            except ConnectionRefusedError:
                result[pid] = 'refused'
            except OSError as e:
                result[pid] = 'error %s' % e
for pid in probes:
    result.setdefault(pid, 'timeout')
with open(sys.argv[1] + '.tmp', 'w') as f: json.dump(result, f)
os.rename(sys.argv[1] + '.tmp', sys.argv[1])
`;

export interface Probe { id: string; netns: string; proto: 'tcp' | 'udp'; ip: string; port: number }
export type ProbeResult = 'ok' | 'refused' | 'timeout' | string;

export async function probeAll(dir: string, listen: Array<{ netns: string; ports: Array<['tcp' | 'udp', number]> }>, probes: Probe[], timeoutSec = 1.5): Promise<Record<string, ProbeResult>> {
  // Files of this call's own: cases probe concurrently, and a program file rewritten while
  // another python reads it was once read half-written.
  const n = seq++;
  const file = join(dir, `policyprobe-${n}.py`);
  const answer = join(dir, `policyprobe-${n}.json`);
  await fs.writeFile(file, PROGRAM);
  const r = await run(existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3', [file, answer], { input: JSON.stringify({ listen, probes, timeout: timeoutSec }) });
  const text = await fs.readFile(answer, 'utf8').catch(() => '');
  await Promise.all([fs.rm(answer, { force: true }), fs.rm(file, { force: true })]);
  if (r.code !== 0 || !text) throw new Error(`the probe program failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim() || 'no answer'}`);
  return JSON.parse(text) as Record<string, ProbeResult>;
}
