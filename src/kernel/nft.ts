import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { run, runOk } from '../util/exec.js';
import { withScratchDir } from '../util/scratch.js';
import { CommandStream, nftDialect } from './stream.js';

/**
 * A script up to this size goes to `nft` as its argument, which nft parses as one buffer in one
 * transaction, as it does a file; no temp directory, file and removal on every change. The
 * kernel caps one argument at 128 KiB, so a longer script (a whole ruleset with many ports) goes
 * through a file.
 */
const SCRIPT_AS_ARGUMENT = 96 * 1024;

/**
 * Applies an nftables script as one atomic transaction, in berthd's namespace or, with `netns`, in
 * another one (a container's).
 * `nft -f -` cannot read a socketpair stdin (which is what Node gives children), so a long script
 * goes through a private temp file.
 */
export async function nftApply(script: string, opts: { netns?: string } = {}): Promise<void> {
  if (Buffer.byteLength(script) <= SCRIPT_AS_ARGUMENT) {
    await runOk('nft', [script], opts);
    return;
  }
  await withScratchDir('berth-nft', async (dir) => {
    const file = join(dir, 'rules.nft');
    await fs.writeFile(file, script, { mode: 0o600 });
    await runOk('nft', ['-f', file], opts);
  });
}

/**
 * Deletes a table if it exists (in another namespace with `netns`); never touches any other table.
 * Made (when absent) and deleted in one transaction: one `nft` run whether it exists or not.
 */
export async function nftDeleteTable(family: string, name: string, netns?: string): Promise<void> {
  await runOk('nft', [`add table ${family} ${name}; delete table ${family} ${name}`], netns ? { netns } : {});
}

/** One table as `nft -j` has it (counters included), in berthd's namespace or another. */
export async function nftListJson(family: string, name: string, netns?: string): Promise<unknown> {
  return JSON.parse(await runOk('nft', ['-j', 'list', 'table', family, name], netns ? { netns } : {}));
}

/** One set's elements as `nft -j` has them (a name, or the parts of a concatenation); none when the set is absent. */
export async function nftSetElements(family: string, table: string, set: string): Promise<Array<string | string[]>> {
  const r = await run('nft', ['-j', 'list', 'set', family, table, set]);
  if (r.code !== 0) return [];
  return (JSON.parse(r.stdout) as { nftables: Array<{ set?: { elem?: Array<string | { concat?: string[] }> } }> }).nftables
    .flatMap((i) => i.set?.elem ?? []).map((e) => (typeof e === 'string' ? e : e.concat ?? []));
}

/** berthd's own `nft`, kept running for the small transactions that follow every change. */
export const hostNft = new CommandStream(nftDialect);

/**
 * Applies a script of one-line nft commands (element, chain and rule changes; no blocks spanning
 * lines) in berthd's namespace as one transaction, without starting a process.
 */
export async function nftCommands(script: string): Promise<void> {
  const commands = script.split('\n').map((l) => l.trim()).filter(Boolean);
  await hostNft.run(commands);
}
