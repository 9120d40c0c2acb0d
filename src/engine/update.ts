import { BadRequestError, ConflictError } from '../util/errors.js';
import { RESOURCE_FIELDS, validateResources, type Resources } from './resources.js';
import type { ContainerRecord, RestartPolicy } from './types.js';

/**
 * POST /containers/{id}/update, checked: the resource limits berth applies and the restart policy.
 * As in Docker, a zero or empty field means "leave as it is"; fields berth cannot apply are refused
 * rather than ignored.
 */
export function parseUpdate(c: ContainerRecord, body: Record<string, unknown>): { limits: Resources; merged: Resources; policy?: RestartPolicy } {
  const given = Object.entries(body).filter(([, v]) => v !== null && v !== undefined && v !== 0 && v !== '' && !(Array.isArray(v) && v.length === 0));
  const unsupported = given.filter(([k]) => k !== 'RestartPolicy' && !(RESOURCE_FIELDS as readonly string[]).includes(k));
  if (unsupported.length) throw new BadRequestError(`berth does not support updating ${unsupported.map(([k]) => k).join(', ')}`);
  const limits = Object.fromEntries(given.filter(([k]) => k !== 'RestartPolicy')) as Resources;
  const merged = { ...(c.HostConfig as Resources), ...limits };
  validateResources(merged);
  const rp = body.RestartPolicy as Record<string, unknown> | undefined;
  if (rp === undefined || rp === null || !(rp.Name || rp.MaximumRetryCount)) return { limits, merged };
  if (typeof rp !== 'object' || (rp.Name !== undefined && typeof rp.Name !== 'string') || (rp.MaximumRetryCount !== undefined && typeof rp.MaximumRetryCount !== 'number')) {
    throw new BadRequestError('invalid type for field RestartPolicy');
  }
  const name = (rp.Name as string | undefined) || 'no';
  if (!['no', 'always', 'unless-stopped', 'on-failure'].includes(name)) throw new BadRequestError(`invalid restart policy '${name}'`);
  const max = (rp.MaximumRetryCount as number | undefined) ?? 0;
  if (name !== 'on-failure' && max !== 0) throw new BadRequestError(`maximum retry count cannot be used with restart policy '${name}'`);
  if (c.HostConfig.AutoRemove && name !== 'no') {
    throw new ConflictError('Restart policy cannot be updated because AutoRemove is enabled for the container');
  }
  return { limits, merged, policy: { Name: name, MaximumRetryCount: max } };
}
