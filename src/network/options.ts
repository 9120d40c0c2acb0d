import { BadRequestError } from '../util/errors.js';

/** Driver options by Docker's names, and their parsing, shared by every driver and the controller. */

export const OPT_MTU = 'com.docker.network.driver.mtu';
export const OPT_BRIDGE_NAME = 'com.docker.network.bridge.name';
export const OPT_ICC = 'com.docker.network.bridge.enable_icc';
export const OPT_MASQ = 'com.docker.network.bridge.enable_ip_masquerade';
export const OPT_HOST_BINDING = 'com.docker.network.bridge.host_binding_ipv4';
export const OPT_DEFAULT_BRIDGE = 'com.docker.network.bridge.default_bridge';

export function optBool(v: string | undefined, def: boolean): boolean {
  if (v === undefined) return def;
  if (['true', '1'].includes(v)) return true;
  if (['false', '0'].includes(v)) return false;
  throw new BadRequestError(`invalid boolean value ${v}`);
}

export function parseMtu(v: string | undefined, def: number): number {
  const mtu = v ? Number(v) : def;
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new BadRequestError(`invalid MTU ${v}`);
  return mtu;
}

/**
 * The kernel's own rule for interface names (dev_valid_name): 1 to 15 bytes, not `.` or `..`, no
 * `/`, `:` or whitespace. Checked before anything else, so a bad name is a 400 and never reaches
 * `ip`, whose batch syntax a space would also split.
 */
export function checkIfname(name: string, what = 'bridge name'): void {
  const bytes = Buffer.byteLength(name);
  if (bytes === 0 || bytes > 15 || name === '.' || name === '..' || /[\/:\s\x00-\x1f\x7f"'\\]/.test(name)) {
    throw new BadRequestError(`invalid ${what} ${JSON.stringify(name)}: an interface name is 1 to 15 characters without spaces, quotes, '/', ':' or '\\', and not '.' or '..'`);
  }
}
