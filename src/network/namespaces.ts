import { createNetns, deleteNetns, netnsExists } from '../kernel/netns.js';
import { programSandboxRedirect } from './resolver.js';

/** The kernel calls a sandbox makes of its own (the drivers make the rest); replaced by fakes in unit tests. */
export interface NamespaceOps {
  create(path: string): Promise<void>;
  remove(path: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  /** Sends the namespace's 127.0.0.11:53 to the resolver's port. */
  redirectResolver(path: string, port: number, freshNamespace: boolean): Promise<void>;
}

export const kernelNamespaces: NamespaceOps = {
  create: createNetns, remove: deleteNetns, exists: netnsExists, redirectResolver: programSandboxRedirect,
};
