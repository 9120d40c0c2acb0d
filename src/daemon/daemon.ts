import { createReadStream, existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { ApiServer } from '../api/server.js';
import { Cluster } from '../cluster/cluster.js';
import type { ApiContext } from '../api/context.js';
import { Engine } from '../engine/engine.js';
import { EventBus } from '../engine/events.js';
import { ExecManager } from '../engine/exec.js';
import { LocalImageStore } from '../images/store.js';
import { RegistryService } from '../images/registry/service.js';
import { ensurePrivateBind, mountPointsUnder, releasePrivateBind } from '../kernel/mount.js';
import { deleteNetns, hostIp, hostIpDeletions } from '../kernel/netns.js';
import { hostNft, removeStaleNftFiles } from '../kernel/nft.js';
import { NetworkController } from '../network/controller.js';
import { BridgeDriver } from '../network/bridgedriver.js';
import { DefaultIpam } from '../network/ipamdriver.js';
import { VlanDriver } from '../network/macvlan.js';
import { NftFirewall } from '../network/nftfirewall.js';
import { LocalRecordStore, NetworkRegistry } from '../network/registry.js';
import { ContainerDirectory } from './dnsdirectory.js';
import { DnsServer } from '../dns/server.js';
import { ConmonRuntime } from '../runtime/conmon.js';
import { readJson, writeJsonAtomic } from '../store/atomic.js';
import { errorMessage } from '../util/errors.js';
import { newId } from '../util/ids.js';
import { run } from '../util/exec.js';
import { ATTACH_HELPER, BUSYBOX_TARBALL, RUNC_SHIM, VERSION } from './paths.js';

export interface DaemonOptions {
  /** Swarm membership: lease TTL of this node's presence, an external store, the name it shows. */
  cluster?: { leaseTtlSec?: number; minCertExpirySec?: number; store?: string[]; hostname?: string };
  root: string; socket: string; attachHelper?: string; seedBusybox?: boolean; debug?: boolean; bip?: string; bridge?: string; insecureRegistries?: string[]; resolvConf?: string }

interface DaemonIdentity { id: string }

/** Wires the layers together: store and drivers below, engine in the middle, API on top. */
export class Daemon {
  private server?: ApiServer;
  private runtime?: ConmonRuntime;
  private cluster?: Cluster;
  engine?: Engine;

  constructor(private readonly o: DaemonOptions) {}

  private async identity(): Promise<DaemonIdentity> {
    const path = join(this.o.root, 'daemon.json');
    const existing = await readJson<DaemonIdentity>(path);
    if (existing) return existing;
    const id: DaemonIdentity = { id: newId().slice(0, 36).toUpperCase() };
    await writeJsonAtomic(path, id);
    return id;
  }

  /** The network layer with every driver and IPAM registered: the one place that names them. */
  private networkLayer(): NetworkController {
    const registry = new NetworkRegistry({ local: new LocalRecordStore(join(this.o.root, 'networks')) });
    const mtu = () => network.mtu;
    registry.registerDriver(new BridgeDriver(mtu));
    registry.registerDriver(new VlanDriver('macvlan', mtu));
    registry.registerDriver(new VlanDriver('ipvlan', mtu));
    registry.registerIpam(new DefaultIpam());
    const network: NetworkController = new NetworkController({
      root: this.o.root, registry, firewall: new NftFirewall(), bip: this.o.bip, ...(this.o.bridge ? { defaultBridgeName: this.o.bridge } : {}), ...(this.o.resolvConf ? { hostResolvConf: this.o.resolvConf } : {}),
    });
    return network;
  }

  private async build(): Promise<{ engine: Engine; images: LocalImageStore; runtime: ConmonRuntime; network: NetworkController; identity: DaemonIdentity }> {
    await fs.mkdir(this.o.root, { recursive: true, mode: 0o711 });
    // runc refuses a rootfs path through a symlink, and the mount table names resolved paths.
    this.o.root = await fs.realpath(this.o.root);
    const identity = await this.identity();
    const ownMount = await ensurePrivateBind(this.o.root);
    const runtime = new ConmonRuntime({
      runcRoot: join(this.o.root, 'runc'), exitDir: join(this.o.root, 'exits'),
      attachHelper: this.o.attachHelper ?? ATTACH_HELPER,
      ...(existsSync(RUNC_SHIM) ? { runcShim: RUNC_SHIM, ...(ownMount ? { mountRoot: this.o.root } : {}) } : {}),
    });
    await runtime.init();
    const images = new LocalImageStore(join(this.o.root, 'image'));
    await images.init();
    const network = this.networkLayer();
    await network.init();
    const engine = new Engine({ root: this.o.root, images, runtime, network, events: new EventBus() });
    await engine.restore();
    await engine.applyEndpointFixes(await network.adopt(engine.runningSandboxes()));
    const registry = network.registry;
    await network.attachResolver(new DnsServer(new ContainerDirectory(() => engine.containers.values(), () => registry.networks, () => registry.generation), this.o.resolvConf));
    return { engine, images, runtime, network, identity };
  }

  async start(): Promise<void> {
    if (!existsSync(this.o.attachHelper ?? ATTACH_HELPER)) {
      throw new Error(`attach helper ${this.o.attachHelper ?? ATTACH_HELPER} is missing: run npm run build`);
    }
    const { engine, images, runtime, network, identity } = await this.build();
    // A berthd killed while it applied a ruleset left its script file behind.
    void removeStaleNftFiles().catch(() => undefined);
    this.engine = engine;
    this.runtime = runtime;
    if (this.o.seedBusybox !== false) await this.seedBusybox(engine);
    // As Docker's daemon does before it serves the API (not in build(): `--cleanup` starts nothing).
    await engine.applyRestartPolicies();
    this.cluster = this.makeCluster();
    await this.cluster.restore();
    const api: ApiContext = {
      engine, network, runtime, execs: new ExecManager(engine, runtime), cluster: this.cluster,
      registry: new RegistryService(images, { insecure: this.o.insecureRegistries ?? [] }),
      info: { id: identity.id, root: this.o.root, socket: this.o.socket, version: VERSION, startedAt: new Date() },
    };
    await fs.mkdir(join(this.o.socket, '..'), { recursive: true, mode: 0o755 });
    this.server = new ApiServer(api, this.o.debug);
    await this.server.listen(this.o.socket);
  }

  private makeCluster(): Cluster {
    const c = this.o.cluster ?? {};
    return new Cluster({
      root: this.o.root, hostname: c.hostname ?? hostname(), engineVersion: VERSION, leaseTtlSec: c.leaseTtlSec ?? 5,
      ...(c.minCertExpirySec ? { minCertExpirySec: c.minCertExpirySec } : {}),
      ...(c.store?.length ? { external: c.store } : {}),
    });
  }

  /** A fresh store gets the busybox image that setup built from Debian's busybox-static. */
  private async seedBusybox(engine: Engine): Promise<void> {
    if (engine.images.list().length > 0 || !existsSync(BUSYBOX_TARBALL)) return;
    try {
      await engine.images.importRootfs(createReadStream(BUSYBOX_TARBALL), { repoTag: 'busybox:latest', changes: ['CMD ["sh"]'] });
    } catch (e) {
      console.error(`berthd: could not import busybox from ${BUSYBOX_TARBALL}: ${errorMessage(e)}`);
    }
  }

  async stop(): Promise<void> {
    await this.server?.close();
    await this.cluster?.close().catch(() => undefined);
    hostIp.close();
    hostIpDeletions.close();
    hostNft.close();
    this.runtime?.close();
  }

  /**
   * `berthd --cleanup`: stop every container and remove every kernel object berth made under this
   * root (namespaces, mounts), leaving the stored state so containers show as exited.
   */
  async cleanup(): Promise<string[]> {
    const problems: string[] = [];
    const { engine, runtime, network } = await this.build();
    await removeStaleNftFiles().catch(() => undefined);
    await engine.stopAllAndRelease();
    const runcRoot = join(this.o.root, 'runc');
    const list = await run('runc', ['--root', runcRoot, 'list', '-q']);
    for (const id of list.stdout.split('\n').filter(Boolean)) {
      await runtime.kill(id, 'KILL').catch(() => undefined);
      const r = await run('runc', ['--root', runcRoot, 'delete', '--force', id]);
      if (r.code !== 0) problems.push(`runc delete ${id}: ${r.stderr.trim()}`);
    }
    problems.push(...(await network.removeKernelObjects()));
    // The etcd member outlives berthd on purpose; a cleanup ends it (the membership stays on disk).
    await this.makeCluster().stopMember().catch((e) => problems.push(`etcd member: ${errorMessage(e)}`));
    for (const p of await mountPointsUnder(join(this.o.root, 'netns'))) {
      await deleteNetns(p).catch((e) => problems.push(errorMessage(e)));
    }
    // Below the root everything mounted is berth's; at the root itself only berth's own bind is,
    // not a filesystem the administrator mounted there.
    for (const p of (await mountPointsUnder(this.o.root)).filter((p) => p !== this.o.root)) {
      const r = await run('umount', ['--lazy', p]);
      if (r.code !== 0) problems.push(`umount ${p}: ${r.stderr.trim()}`);
    }
    await releasePrivateBind(this.o.root).catch((e) => problems.push(errorMessage(e)));
    runtime.close();
    return problems;
  }
}
