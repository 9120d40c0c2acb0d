import { BadRequestError } from '../../util/errors.js';
import { checkGoJson } from './gojson.js';
import { CONTAINER_CREATE, CONTAINER_UPDATE, EXEC_CREATE, NETWORK_CONNECT, NETWORK_DISCONNECT, VOLUME_CREATE } from './schemas.js';

export { validateNetworkCreate } from './network.js';

/**
 * Request bodies checked at the API edge, before the engine or the network controller sees them:
 * first the Go types Docker decodes them into, then the rules Docker applies before it acts.
 */

/** nat.ParsePort: empty, a port, or a range "low-high", each 0..65535. */
function validPort(p: string): boolean {
  if (p === '') return true;
  const m = /^(\d+)(?:-(\d+))?$/.exec(p);
  if (!m) return false;
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  return lo <= 65535 && hi <= 65535 && lo <= hi;
}

const portOf = (spec: string) => spec.split('/')[0]!;

export function validateContainerCreate(body: Record<string, unknown>): void {
  checkGoJson(body, CONTAINER_CREATE);
  const hc = (body.HostConfig ?? {}) as { PortBindings?: Record<string, Array<{ HostPort?: string }> | null> | null; RestartPolicy?: unknown };
  checkRestartPolicy(hc.RestartPolicy);
  // daemon.verifyContainerSettings, with Docker's words (it answers these with 400).
  for (const [port, bindings] of Object.entries(hc.PortBindings ?? {})) {
    if (!validPort(portOf(port)) || portOf(port) === '') throw new BadRequestError(`invalid port specification: "${portOf(port)}"`);
    for (const b of bindings ?? []) {
      const host = portOf(b?.HostPort ?? '');
      if (!validPort(host)) throw new BadRequestError(`invalid port specification: "${b?.HostPort ?? ''}"`);
    }
  }
}

export function validateContainerUpdate(body: Record<string, unknown>): void {
  checkGoJson(body, CONTAINER_UPDATE);
  checkRestartPolicy(body.RestartPolicy);
}

/** runconfig's validateRestartPolicy, with its words. */
function checkRestartPolicy(v: unknown): void {
  const p = (v ?? {}) as { Name?: string; MaximumRetryCount?: number };
  const name = p.Name ?? '';
  const count = p.MaximumRetryCount ?? 0;
  switch (name) {
    case 'always': case 'unless-stopped': case 'no':
      if (count !== 0) throw new BadRequestError(`maximum retry count cannot be used with restart policy '${name}'`);
      return;
    case 'on-failure':
      if (count < 0) throw new BadRequestError('maximum retry count cannot be negative');
      return;
    case '':
      return;
    default:
      throw new BadRequestError(`invalid restart policy '${name}'`);
  }
}

export function validateExecCreate(body: Record<string, unknown>): void {
  checkGoJson(body, EXEC_CREATE);
}

export function validateVolumeCreate(body: Record<string, unknown>): void {
  checkGoJson(body, VOLUME_CREATE);
}

export function validateNetworkConnect(body: Record<string, unknown>): void {
  checkGoJson(body, NETWORK_CONNECT);
}

export function validateNetworkDisconnect(body: Record<string, unknown>): void {
  checkGoJson(body, NETWORK_DISCONNECT);
}
