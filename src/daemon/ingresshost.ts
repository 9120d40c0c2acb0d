import { promises as fs } from 'node:fs';
import { INGRESS_ENDPOINT, INGRESS_SBOX, type IngressHost } from '../cluster/ingress.js';
import type { Engine } from '../engine/engine.js';
import type { NetworkController } from '../network/controller.js';
import { meshKind } from '../network/lbkinds.js';
import type { EndpointRecord } from '../network/overlay.js';
import type { OverlayDriver } from '../network/overlaydriver.js';
import { ServiceBalancers } from '../network/servicelb.js';
import type { NetworkRecord } from '../network/types.js';
import { nftApply } from '../kernel/nft.js';
import { readJson, writeJsonAtomic } from '../store/atomic.js';
import { newId } from '../util/ids.js';

/** This host's ingress endpoint as berthd keeps it on disk. */
export interface KeptIngressEndpoint { network: string; endpointId: string; ip: string }

/**
 * This host's ingress endpoint, noted in a file before it is claimed, so that a berthd killed and
 * started again takes up the same endpoint: its address stays on the ingress bridge and its
 * record in the store, and the connections the routing mesh SNATed to that address go on
 * through the restart (their NAT is in the kernel's conntrack, which a restart does not touch).
 */
export class IngressEndpointFile {
  current?: KeptIngressEndpoint;
  constructor(private readonly path: string) {}

  async load(): Promise<KeptIngressEndpoint | undefined> {
    this.current = await readJson<KeptIngressEndpoint>(this.path);
    return this.current;
  }

  async write(k: KeptIngressEndpoint): Promise<void> {
    await writeJsonAtomic(this.path, k);
    this.current = k;
  }

  async remove(): Promise<void> {
    await fs.rm(this.path, { force: true });
    this.current = undefined;
  }

  /** The endpoint as the store's record has it, for the endpoints this host holds (a relist keeps it). */
  record(mac: string | undefined): Omit<EndpointRecord, 'Node' | 'Vtep'> | undefined {
    const k = this.current;
    return k && mac ? { Network: k.network, EndpointID: k.endpointId, ContainerID: INGRESS_SBOX, Name: INGRESS_ENDPOINT, Aliases: [], IP: k.ip, Mac: mac } : undefined;
  }
}

/**
 * What the routing mesh needs of this host: its ingress endpoint (an address leased from the
 * ingress network's IPAM, held by the host itself on the network's bridge: OverlayDriver.joinHost),
 * taken up again from `kept` after a restart; and its balancer in berthd's namespace.
 */
export function ingressHost(o: { network: NetworkController; engine: Engine; overlay: OverlayDriver; kept: IngressEndpointFile; endpointsOf: (id: string) => EndpointRecord[] }): IngressHost {
  const { network, engine, overlay, kept } = o;
  /** The network `kept.current` is joined on, once it is (the endpoint itself is the file's). */
  let joined: NetworkRecord | undefined;
  return {
    network: (id) => network.registry.networks.get(id),
    ensureEndpoint: async (n: NetworkRecord) => {
      const k = kept.current;
      if (joined?.Id === n.Id && k) return { ip: k.ip };
      const ipam = network.registry.ipamOf(n);
      let ep: { endpointId: string; ip: string };
      if (k?.network === n.Id) {
        ep = k;
      } else {
        // One of a network gone: its record went with the network.
        if (k) await kept.remove();
        const endpointId = newId();
        ep = { endpointId, ip: (await ipam.requestAddress(n, endpointId, {})).ip };
      }
      try {
        if (ep !== k) await kept.write({ network: n.Id, ...ep });
        await overlay.joinHost(n, { ...ep, containerId: INGRESS_SBOX, name: INGRESS_ENDPOINT });
      } catch (e) {
        // The next try starts afresh (an address another endpoint holds now, say).
        await overlay.leaveHost(n, ep.endpointId).catch(() => undefined);
        await Promise.resolve(ipam.releaseAddress(n, { ip: ep.ip }, ep.endpointId)).catch(() => undefined);
        await kept.remove().catch(() => undefined);
        throw e;
      }
      joined = n;
      return { ip: ep.ip };
    },
    removeEndpoint: async () => {
      const k = kept.current;
      const n = joined ?? (k && network.registry.networks.get(k.network));
      joined = undefined;
      if (k && n) {
        await overlay.leaveHost(n, k.endpointId);
        await network.registry.ipamOf(n).releaseAddress(n, { ip: k.ip }, k.endpointId);
      }
      await kept.remove();
    },
    endpointsOf: o.endpointsOf,
    attached: (id, net) => { const c = engine.containers.get(id); return !c || !c.State.Running || !!c.Endpoints?.[net]; },
    attach: (id, net) => engine.connect(id, net, {}, { swarmTask: true }),
    balancer: (ip) => new ServiceBalancers((m) => console.error(`berthd: ingress: ${m}`), meshKind(ip)),
    nft: (script) => nftApply(script, {}),
  };
}
