import { promises as fs } from 'node:fs';

/**
 * Sets a sysctl of berthd's own network namespace by writing /proc/sys directly: /proc/sys/net
 * shows the namespace of the process that opens it, and a write costs no process spawn, which
 * matters on paths such as `network create`. Names use dots, as `sysctl` takes them; interface
 * names may not contain dots here (berth's never do).
 */
export async function setSysctl(name: string, value: string | number): Promise<void> {
  await fs.writeFile(`/proc/sys/${name.replace(/\./g, '/')}`, String(value));
}
