import { run } from '../util/exec.js';

let missingSaid = false;

/**
 * Deletes the UDP flows a namespace's conntrack table sends to `ip` (their replies come from it).
 * A UDP "connection" has no end the kernel sees: a client that keeps its source port would keep
 * reaching a backend removed from a balancer until its entry times out (30 s, or 120 s once
 * answered both ways), so a balancer that drops a backend drops its flows too, as Docker does.
 * TCP needs none of this: a dead backend's connections reset or time out, and a new connection
 * takes the balancer's current choice. `netns` undefined is berthd's own namespace.
 */
export async function dropUdpFlowsTo(ip: string, netns?: string): Promise<void> {
  let r;
  try {
    r = await run('conntrack', ['-D', '-p', 'udp', '--reply-src', ip], netns ? { netns } : {});
  } catch (e) {
    // No conntrack tool (scripts/setup.sh installs it): flows then end by their timeout.
    if (!missingSaid) console.error(`berthd: conntrack: ${(e as Error).message}: UDP flows to removed backends end only by their timeout`);
    missingSaid = true;
    return;
  }
  // "0 flow entries have been deleted" is an exit status of 1: nothing to drop is fine.
  if (r.code !== 0 && !/0 flow entries have been deleted/.test(r.stderr)) throw new Error(`conntrack -D --reply-src ${ip}: ${r.stderr.trim() || `exit ${r.code}`}`);
}
