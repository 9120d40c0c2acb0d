import { ApiError, BadRequestError, NotFoundError } from '../util/errors.js';

/**
 * Docker 20.10's words and statuses for cluster errors (daemon/cluster/errors.go, swarmkit's
 * controlapi). gRPC errors from swarmkit reach clients as "rpc error: code = X desc = …" with the
 * status api/server/httpstatus gives that code; berth has no gRPC but keeps the text clients match.
 */

export class UnavailableError extends ApiError {
  constructor(message: string) { super(503, message); }
}

export const NO_SWARM = 'This node is not part of a swarm';
export const NO_MANAGER = 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.';
export const NOT_MANAGER = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager.";
export const SWARM_EXISTS = 'This node is already part of a swarm. Use "docker swarm leave" to leave this swarm and join another one.';
export const NO_LEADER = "The swarm does not have a leader. It's possible that too few managers are online. Make sure more than half of the managers are online.";
const LEAVE_MANAGER = 'You are attempting to leave the swarm on a node that is participating as a manager. ';
const RESTORE = 'The only way to restore a swarm that has lost consensus is to reinitialize it with `--force-new-cluster`. Use `--force` to suppress this message.';

/** swarm.go Leave: a manager never leaves without --force; the text says what it would cost. */
export function leaveManagerError(reachable: number, unreachable: number): UnavailableError {
  let msg = LEAVE_MANAGER;
  if (reachable - 2 <= unreachable) {
    if (reachable === 1 && unreachable === 0) {
      return new UnavailableError(`${msg}Removing the last manager erases all current state of the swarm. Use \`--force\` to ignore this message. `);
    }
    msg += `Removing this node leaves ${reachable - 1} managers out of ${reachable + unreachable}. Without a Raft quorum your swarm will be inaccessible. `;
  }
  return new UnavailableError(msg + RESTORE);
}

export function rpcError(code: 'InvalidArgument' | 'FailedPrecondition' | 'Unavailable' | 'Unknown' | 'NotFound', desc: string): ApiError {
  const status = { InvalidArgument: 400, FailedPrecondition: 400, Unavailable: 503, Unknown: 500, NotFound: 404 }[code];
  return new ApiError(status, `rpc error: code = ${code} desc = ${desc}`);
}

export const badToken = (): ApiError => rpcError('InvalidArgument', 'A valid join token is necessary to join this cluster');
export const outOfSequence = (): ApiError => rpcError('Unknown', 'update out of sequence');
export const nodeNotFound = (id: string): ApiError => new NotFoundError(`node ${id} not found`);
export const invalid = (msg: string): ApiError => new BadRequestError(msg);
