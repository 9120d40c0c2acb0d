import { ROOT } from './keys.js';
import type { PortConfig, Protocol } from './publish.js';
import type { Cmp, Versioned } from './store.js';

/**
 * Which service holds each published ingress port, in the store, so that two services cannot
 * take one port even when their creates race: the claims move in the same transaction as the
 * service's record. The ports are kept in blocks of 4,096 per protocol, one key each
 * (`portclaims/tcp/4` holds ports 16384-20479, as a map port → service id), and a transaction
 * compares every block it writes (absent, or unchanged since it was read). A key per port made a
 * service's create one operation per port, and etcd refuses a transaction of more than 128
 * (`--max-txn-ops`, also an external store's default): a service of more than about 125 ingress
 * ports failed ("too many operations in txn request"). Blocks keep it to 32 keys at most,
 * whatever the ports; a full block is about 150 KB, far below etcd's request limit (1.5 MiB).
 */

export const CLAIM_BLOCK = 4096;
const PREFIX = `${ROOT}portclaims/`;

/** A block's value: port (as text) → the service holding it. */
export type ClaimBlock = Record<string, string>;

export const blockKey = (proto: Protocol, port: number): string => `${PREFIX}${proto}/${Math.floor(port / CLAIM_BLOCK)}`;

const ingressOnly = (ports: PortConfig[]) => ports.filter((p) => p.PublishMode === 'ingress' && p.PublishedPort);

/** The block keys that a service's ingress ports before and after a change touch. */
export function touchedBlocks(had: PortConfig[], want: PortConfig[]): string[] {
  return [...new Set([...ingressOnly(had), ...ingressOnly(want)].map((p) => blockKey(p.Protocol, p.PublishedPort)))].sort();
}

/** What a transaction adds to move a service's claims: its compares, puts and deletes. */
export interface ClaimOps { cmp: Cmp[]; puts: Array<{ key: string; value: ClaimBlock }>; deletes: string[] }

/**
 * The claims of `service` taken from `had` to `want` (its ingress ports), given the blocks as read
 * (`read`: block key → its value and revision, undefined when absent; every block of
 * `touchedBlocks`). Only the blocks that change are written, each compared with what was read.
 * A wanted port that another service holds is returned as `taken` instead.
 */
export function claimChanges(read: Map<string, Versioned<ClaimBlock> | undefined>, service: string, had: PortConfig[], want: PortConfig[]): ClaimOps | { taken: { port: number; holder: string } } {
  const blocks = new Map<string, ClaimBlock>();
  const blockOf = (key: string) => {
    let b = blocks.get(key);
    if (!b) blocks.set(key, (b = { ...(read.get(key)?.value ?? {}) }));
    return b;
  };
  for (const p of ingressOnly(had)) {
    const b = blockOf(blockKey(p.Protocol, p.PublishedPort));
    if (b[p.PublishedPort] === service) delete b[p.PublishedPort];
  }
  for (const p of ingressOnly(want)) {
    const b = blockOf(blockKey(p.Protocol, p.PublishedPort));
    const holder = b[p.PublishedPort];
    if (holder !== undefined && holder !== service) return { taken: { port: p.PublishedPort, holder } };
    b[p.PublishedPort] = service;
  }
  const out: ClaimOps = { cmp: [], puts: [], deletes: [] };
  for (const [key, b] of blocks) {
    const was = read.get(key);
    if (sameBlock(was?.value ?? {}, b)) continue;
    out.cmp.push(was ? { key, target: 'Mod', value: was.modRevision } : { key, target: 'Create', value: 0 });
    if (Object.keys(b).length) out.puts.push({ key, value: b });
    else out.deletes.push(key);
  }
  return out;
}

function sameBlock(a: ClaimBlock, b: ClaimBlock): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => b[k] === a[k]);
}

/** The store's reading of blocks: keys read together, each found or undefined (Store.readAt). */
export type BlockReader = (keys: string[]) => Promise<{ found: Array<Versioned<unknown> | undefined> }>;

/** Reads the blocks a change touches and works out its claim operations (see `claimChanges`). */
export async function readClaims(readAt: BlockReader, service: string, had: PortConfig[], want: PortConfig[]): Promise<ReturnType<typeof claimChanges>> {
  const keys = touchedBlocks(had, want);
  const read = new Map<string, Versioned<ClaimBlock> | undefined>();
  if (keys.length) {
    const { found } = await readAt(keys);
    keys.forEach((k, i) => read.set(k, found[i] as Versioned<ClaimBlock> | undefined));
  }
  return claimChanges(read, service, had, want);
}
