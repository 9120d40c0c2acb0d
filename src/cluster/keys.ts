/**
 * The cluster store's key layout, one place for every writer. Everything under /berth/v1/ is shared
 * cluster state (workers read it); /berth/secret/ is for managers only (CA key, join tokens), kept
 * apart so etcd role-based access can grant workers the first prefix alone.
 * Later pieces put their records beside these: networks/<id>, ipam/<pool>/<addr>,
 * endpoints/<network>/<endpoint> (under the owning node's lease), services/, tasks/.
 */
export const ROOT = '/berth/v1/';
export const SECRET = '/berth/secret/';

export const K = {
  cluster: `${ROOT}cluster`,
  nodes: `${ROOT}nodes/`,
  node: (id: string) => `${ROOT}nodes/${id}`,
  /** A node's presence, written under its lease: gone when the node stops renewing it. */
  alive: `${ROOT}alive/`,
  aliveOf: (id: string) => `${ROOT}alive/${id}`,
  networks: `${ROOT}networks/`,
  ipam: `${ROOT}ipam/`,
  endpoints: `${ROOT}endpoints/`,
  /** A swarm network's endpoints, each under its host's lease (gone with the host). */
  endpointsOf: (net: string) => `${ROOT}endpoints/${net}/`,
  endpoint: (net: string, ep: string) => `${ROOT}endpoints/${net}/${ep}`,
  /** One address of a swarm network, claimed by create-if-absent; not under a lease (see SwarmNetworks). */
  address: (net: string, ip: string) => `${ROOT}ipam/${net}/${ip}`,
  addressesOf: (net: string) => `${ROOT}ipam/${net}/`,
  network: (id: string) => `${ROOT}networks/${id}`,
  /** The subnets and VNIs of every swarm network, one record changed by compare-and-swap. */
  overlayAlloc: `${ROOT}overlay/alloc`,
  /** The store revision each host has applied to its kernel and DNS, under its lease. */
  applied: `${ROOT}applied/`,
  appliedOf: (id: string) => `${ROOT}applied/${id}`,
  ca: `${SECRET}ca`,
  /** The CA a rotation moves to, until it is the root (swarm ca --rotate). */
  caNext: `${SECRET}ca-next`,
  /** Held by a manager while its etcd member restarts, so members restart one at a time. */
  memberRestartLock: `${ROOT}locks/member-restart`,
  tokens: `${SECRET}tokens`,
};

export interface Spec { [k: string]: unknown; Name?: string; Labels?: Record<string, string> }

/** The cluster object, as Docker's ClusterInfo without the computed parts (version, TLSInfo). */
export interface ClusterRecord {
  ID: string;
  CreatedAt: string;
  UpdatedAt: string;
  Spec: Spec;
  DataPathPort: number;
  DefaultAddrPool: string[];
  SubnetSize: number;
  /** PEM of the root CA certificate (the key is under SECRET). */
  CaCert: string;
  /**
   * A CA rotation under way: every node first trusts both CAs (`trust`), then gets a certificate
   * of the new one (`issue`); then the new CA becomes CaCert and this goes (rotation.ts).
   */
  Rotation?: { CaCert: string; Phase: 'trust' | 'issue' };
}

export interface TokensRecord { Worker: string; Manager: string }

export interface NodeRecord {
  ID: string;
  CreatedAt: string;
  UpdatedAt: string;
  Spec: { Name?: string; Labels: Record<string, string>; Role: 'manager' | 'worker'; Availability: 'active' | 'pause' | 'drain' };
  Description: { Hostname: string; Platform: { Architecture: string; OS: string }; Resources: { NanoCPUs: number; MemoryBytes: number }; Engine: { EngineVersion: string; Plugins: Array<{ Type: string; Name: string }> } };
  /** Underlay address other nodes reach it at (no port). */
  Addr: string;
  /** Port of its join/control endpoint. */
  Port: number;
  /** Its etcd member, while it is a manager running one (decimal string, as etcd3 gives it). */
  MemberId?: string;
  /** What the node itself says of its TLS: the CA that issued its certificate, the CAs it trusts (PEMs). */
  Tls?: { Issuer: string; Trust: string[] };
}

export interface AliveRecord { Addr: string; Since: string }
