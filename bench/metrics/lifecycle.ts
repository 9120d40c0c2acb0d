/**
 * Lifecycle latencies, interleaved engine by engine each repetition: network create/rm, run -d on
 * none and on a user-defined bridge (to running, and to reachable by name from another container),
 * network connect/disconnect, exec round trip, rm -f.
 */
import type { BenchContext } from '../context.js';
import * as op from '../ops.js';
import { log, now } from '../util.js';

export async function lifecycle(ctx: BenchContext): Promise<void> {
  const R = ctx.results;
  const def = (key: string, label: string) => R.define({ key, group: 'Lifecycle (ms, lower is better)', label, unit: 'ms', better: 'lower' });
  def('network_create', '`network create`');
  def('network_rm', '`network rm`');
  def('run_none', '`run -d --network none` (until start returns)');
  def('run_bridge', '`run -d --network NET` (until start returns)');
  def('run_bridge_reachable', '`run -d --network NET` until reachable by name from another container');
  def('connect', '`network connect`');
  def('disconnect', '`network disconnect`');
  def('exec', '`exec c true` round trip');
  def('rm_none', '`rm -f` (none)');
  def('rm_bridge', '`rm -f` (bridge)');

  const reps = ctx.quick ? 3 : 15;
  const probePid = new Map<string, number>();
  for (const e of ctx.engines) {
    await op.networkCreate(e, 'bblife');
    await op.networkCreate(e, 'bblife2');
    await op.runDetached(e, 'probe', { network: 'bblife' });
    probePid.set(e.name, await op.containerPid(e, 'probe'));
  }
  for (let rep = -1; rep < reps; rep++) {
    const record = rep >= 0; // repetition -1 warms up
    for (const e of ctx.order(rep)) {
      const add = (k: string, v: number) => { if (record) R.add(k, e.name, v); };
      const net = `bbn${rep + 1}`;
      add('network_create', await op.networkCreate(e, net));
      add('network_rm', await op.networkRm(e, net));

      const n = await op.runDetached(e, `none${rep + 1}`, { network: 'none' });
      add('run_none', n.ms);
      add('rm_none', await op.rmForce(e, `none${rep + 1}`));

      const name = `br${rep + 1}`;
      const t0 = now();
      const b = await op.runDetached(e, name, { network: 'bblife' });
      add('run_bridge', b.ms);
      if (await op.waitReachable(probePid.get(e.name)!, name)) add('run_bridge_reachable', now() - t0);
      else { R.note('run_bridge_reachable', `${e.name}: ${name} not reachable within 20 s`); log(`${e.name}: ${name} not reachable`); }

      add('connect', await op.connect(e, 'bblife2', name));
      add('disconnect', await op.disconnect(e, 'bblife2', name));
      add('exec', await op.execTrue(e, name));
      add('rm_bridge', await op.rmForce(e, name));
    }
  }
  for (const e of ctx.engines) {
    await op.rmForce(e, 'probe');
    await op.networkRm(e, 'bblife');
    await op.networkRm(e, 'bblife2');
  }
}
