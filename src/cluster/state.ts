import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { readJson, writeJsonAtomic } from '../store/atomic.js';
import type { TlsFiles } from './store.js';

/**
 * What this node knows of its cluster, under <root>/cluster: enough to come back after a restart
 * or a kill -9 (the records themselves live in the store). Written last on join and init, removed
 * first on leave, so a crash in between leaves either a whole membership or none.
 */
export interface LocalState {
  nodeId: string;
  clusterId: string;
  role: 'manager' | 'worker';
  /** Underlay address (no port) and the control port. */
  addr: string;
  port: number;
  listenAddr: string;
  dataPathAddr: string;
  /** etcd client URLs last known (managers' members, or the external store's). */
  endpoints: string[];
  /** Whether this node runs an etcd member. */
  member: boolean;
  /** The initial-cluster line its member was first started with (etcd reads it only once). */
  initialCluster?: string;
  memberState?: 'new' | 'existing';
}

export class LocalStateFiles {
  constructor(readonly dir: string) {}

  get tlsDir(): string { return join(this.dir, 'tls'); }
  private get file(): string { return join(this.dir, 'state.json'); }

  load(): Promise<LocalState | undefined> { return readJson<LocalState>(this.file); }
  save(s: LocalState): Promise<void> { return writeJsonAtomic(this.file, s); }

  async writeTls(ca: string, cert: string, key: string): Promise<void> {
    await fs.mkdir(this.tlsDir, { recursive: true, mode: 0o700 });
    await Promise.all([
      fs.writeFile(join(this.tlsDir, 'ca.crt'), ca),
      fs.writeFile(join(this.tlsDir, 'node.crt'), cert),
      fs.writeFile(join(this.tlsDir, 'node.key'), key, { mode: 0o600 }),
    ]);
  }

  /**
   * Replaces one TLS file whole (rename): etcd reads them again for each new connection and must
   * never see half a file. Between the two renames of a new key pair a handshake may find the
   * pair mismatched; it fails and the peer dials again, as on any lost connection.
   */
  private async replace(name: string, content: string, mode = 0o644): Promise<void> {
    const tmp = join(this.tlsDir, `.${name}.new`);
    await fs.writeFile(tmp, content, { mode });
    await fs.rename(tmp, join(this.tlsDir, name));
  }

  writeCa(bundle: string): Promise<void> { return this.replace('ca.crt', bundle); }

  async writeCert(cert: string, key: string): Promise<void> {
    await this.replace('node.key', key, 0o600);
    await this.replace('node.crt', cert);
  }

  async readTls(): Promise<TlsFiles> {
    const [ca, cert, key] = await Promise.all(['ca.crt', 'node.crt', 'node.key'].map((f) => fs.readFile(join(this.tlsDir, f))));
    return { ca: ca!, cert: cert!, key: key! };
  }

  /** Forgets the cluster: the state file first, so a crash mid-way is a node with no cluster. */
  async wipe(): Promise<void> {
    await fs.rm(this.file, { force: true });
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}
