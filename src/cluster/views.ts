import { tlsInfo } from './pki.js';
import type { ClusterRecord, NodeRecord, Spec, TokensRecord } from './keys.js';
import type { Versioned } from './store.js';

/** Docker's JSON shapes for /swarm, /nodes and /info's Swarm section, built from store records. */

/** A section of a given spec without its zero values: swarmkit takes 0 and null as "the default". */
function set(section: unknown): Record<string, unknown> {
  return Object.fromEntries(Object.entries((section ?? {}) as Record<string, unknown>).filter(([, v]) => v !== 0 && v !== null && v !== undefined));
}

/** What swarmkit fills in when a spec leaves a field out (swarmkit api defaults, Docker 20.10). */
export function defaultSpec(given: Spec = {}): Spec {
  const g = given as Record<string, unknown>;
  return {
    Name: 'default',
    Labels: (given.Labels as Record<string, string> | undefined) ?? {},
    Orchestration: { TaskHistoryRetentionLimit: 5, ...set(g.Orchestration) },
    Raft: { SnapshotInterval: 10000, KeepOldSnapshots: 0, LogEntriesForSlowFollowers: 500, ElectionTick: 10, HeartbeatTick: 1, ...set(g.Raft) },
    Dispatcher: { HeartbeatPeriod: 5_000_000_000, ...set(g.Dispatcher) },
    CAConfig: { NodeCertExpiry: 7_776_000_000_000_000, ...set(g.CAConfig) },
    TaskDefaults: { ...set(g.TaskDefaults) },
    EncryptionConfig: { AutoLockManagers: false, ...set(g.EncryptionConfig) },
  };
}

export function clusterInfo(c: Versioned<ClusterRecord>): Record<string, unknown> {
  const r = c.value;
  return {
    ID: r.ID, Version: { Index: c.modRevision }, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt, Spec: r.Spec,
    TLSInfo: tlsInfo(r.CaCert), RootRotationInProgress: Boolean(r.Rotation), DataPathPort: r.DataPathPort,
    DefaultAddrPool: r.DefaultAddrPool, SubnetSize: r.SubnetSize,
  };
}

export function swarmView(c: Versioned<ClusterRecord>, tokens: TokensRecord): Record<string, unknown> {
  return { ...clusterInfo(c), JoinTokens: { Worker: tokens.Worker, Manager: tokens.Manager } };
}

/** `external`: the store is not run by managers (--cluster-store), so no manager has a member. */
export interface Liveness {
  alive: Set<string>; leaderMember?: string; caCert: string; external: boolean;
  /**
   * With an external store no manager runs a member, so no raft leader of berth's is there to
   * mark: the manager whose orchestrator holds the leader lock is the one that acts, as swarmkit's
   * raft leader is the one whose orchestrator runs.
   */
  leaderNode?: string;
  /** Read without a leader: presence could not be checked, so only this node is known to be up. */
  unknown?: string;
}

/** What the node said of its TLS (the CLI's `swarm ca --rotate` progress reads it); the root's before it did. */
function nodeTls(r: NodeRecord, caCert: string): ReturnType<typeof tlsInfo> {
  if (!r.Tls) return tlsInfo(caCert);
  return { ...tlsInfo(r.Tls.Issuer), TrustRoot: r.Tls.Trust.join('') };
}

export function nodeView(n: Versioned<NodeRecord>, live: Liveness): Record<string, unknown> {
  const r = n.value;
  const up = live.unknown ? r.ID === live.unknown : live.alive.has(r.ID);
  const down = live.unknown ? 'unknown' : 'down';
  const v: Record<string, unknown> = {
    ID: r.ID, Version: { Index: n.modRevision }, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
    Spec: { ...(r.Spec.Name ? { Name: r.Spec.Name } : {}), Labels: r.Spec.Labels, Role: r.Spec.Role, Availability: r.Spec.Availability },
    Description: { ...r.Description, TLSInfo: nodeTls(r, live.caCert) },
    Status: { State: up ? 'ready' : down, ...(up ? {} : { Message: live.unknown ? 'the swarm has no leader' : 'heartbeat failure' }), Addr: r.Addr },
  };
  if (r.Spec.Role === 'manager' && (r.MemberId || live.external)) {
    const leads = live.external ? r.ID === live.leaderNode : Boolean(r.MemberId) && r.MemberId === live.leaderMember;
    v.ManagerStatus = { ...(leads ? { Leader: true } : {}), Reachability: up ? 'reachable' : live.unknown ? 'unknown' : 'unreachable', Addr: `${r.Addr}:${r.Port}` };
  }
  return v;
}
