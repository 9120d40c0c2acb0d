import { randomBytes } from 'node:crypto';
import { run } from '../util/exec.js';

/**
 * Whether this kernel can hold an IPsec ESP security association of the kind Docker's encrypted
 * overlay uses (transport mode, rfc4106(gcm(aes)), 128-bit ICV): one is added between two
 * loopback addresses under a random SPI and removed at once. Returns why not, or undefined if it can.
 */
export async function probeEsp(): Promise<string | undefined> {
  const spi = `0x${randomBytes(4).toString('hex')}`;
  const sa = ['src', '127.0.0.1', 'dst', '127.0.0.2', 'proto', 'esp', 'spi', spi];
  const add = await run('ip', ['xfrm', 'state', 'add', ...sa, 'mode', 'transport', 'aead', 'rfc4106(gcm(aes))', `0x${randomBytes(20).toString('hex')}`, '128']);
  if (add.code !== 0) return `ip xfrm state add: ${add.stderr.trim() || `exit ${add.code}`}`;
  await run('ip', ['xfrm', 'state', 'delete', ...sa]);
  return undefined;
}
