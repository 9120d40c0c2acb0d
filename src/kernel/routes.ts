import { promises as fs } from 'node:fs';
import { ipJson } from './netns.js';

/** What berthd's namespace routes: its uplink's MTU, the subnets new networks must not overlap. */

/** MTU of the interface that carries the default route, or 1500 without one. */
export async function uplinkMtu(): Promise<number> {
  try {
    const routes = await ipJson<Array<{ dst: string; dev?: string }>>(undefined, ['route', 'show', 'default']);
    const dev = routes[0]?.dev;
    if (!dev) return 1500;
    const links = await ipJson<Array<{ mtu: number }>>(undefined, ['link', 'show', 'dev', dev]);
    return links[0]?.mtu ?? 1500;
  } catch {
    return 1500;
  }
}

/**
 * Subnets of the main routing table of berthd's namespace (as Docker reads it), so new networks do
 * not overlap them. /proc/net/route costs no process spawn: `network create` reads it every time.
 */
export async function routedSubnets(): Promise<string[]> {
  const text = await fs.readFile('/proc/net/route', 'utf8').catch(() => '');
  const out: string[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const dst = parseInt(f[1]!, 16);
    const mask = parseInt(f[7]!, 16);
    const prefix = bitCount(mask);
    // Not the default route, not host routes, not loopback: the old `ip route` view kept only subnets.
    if (prefix === 0 || prefix === 32) continue;
    // The kernel prints addresses in host byte order: little-endian here.
    const ip = [dst & 255, (dst >>> 8) & 255, (dst >>> 16) & 255, dst >>> 24].join('.');
    if (!ip.startsWith('127.')) out.push(`${ip}/${prefix}`);
  }
  return out;
}

function bitCount(n: number): number {
  let c = 0;
  for (let v = n >>> 0; v; v >>>= 1) c += v & 1;
  return c;
}
