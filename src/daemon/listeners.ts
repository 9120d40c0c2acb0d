import { readFile } from 'node:fs/promises';

/**
 * The ports a process's network namespace listens on, as `80/tcp` and `53/udp`: TCP sockets in
 * LISTEN and bound UDP sockets, from /proc/PID/net (which shows the sockets of that process's
 * namespace). Sockets bound to loopback alone are left out: a balancer's DNATed connection never
 * reaches them. An unreadable table (the process gone) adds nothing.
 */
export async function listeningPorts(pid: number): Promise<Set<string>> {
  const out = new Set<string>();
  await Promise.all((['tcp', 'tcp6', 'udp', 'udp6'] as const).map(async (table) => {
    let text: string;
    try {
      text = await readFile(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      return;
    }
    const proto = table.startsWith('tcp') ? 'tcp' : 'udp';
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st ...; an address is hex in the kernel's byte order, the port hex.
      const [, local, , state] = line.trim().split(/\s+/);
      if (!local || !state) continue;
      if (proto === 'tcp' && state !== '0A') continue;
      const [addr, port] = local.split(':') as [string, string];
      if (isLoopback(addr)) continue;
      out.add(`${parseInt(port, 16)}/${proto}`);
    }
  }));
  return out;
}

/** 127.0.0.0/8, ::1 and ::ffff:127.x as /proc/net writes them (each 32-bit word in host order, little-endian here). */
function isLoopback(hex: string): boolean {
  const a = hex.toUpperCase();
  if (a.length === 8) return a.slice(6) === '7F';
  if (a === '00000000000000000000000001000000') return true;
  return a.startsWith('0000000000000000FFFF0000') && a.slice(30) === '7F';
}
