/**
 * The routing mesh's plain data: a published ingress port as the mesh balances it, and the key a
 * port has in its table. The table itself is a balancer of lbkinds.ts's `meshKind`, in berthd's
 * namespace, kept as a container's VIPs are (lbtable.ts): a backend change is map elements that
 * berth-nftset writes without `nft`, whatever the number of other services.
 */

export type Proto = 'tcp' | 'udp';

/** One published port as a balancer sees it: its backends' addresses (tasks) and the port they listen on. */
export interface MeshPort { service: string; proto: Proto; published: number; target: number; backends: string[] }

/** The mesh's table (lbkinds.ts `meshKind`), in berthd's namespace. */
export const MESH_TABLE = 'berth_mesh';

export const portKey = (p: { proto: Proto; published: number }): string => `${p.proto} . ${p.published}`;

/** The script that replaces a table by `text`, or removes it when `text` is empty; idempotent. */
export function replaceScript(table: string, text: string): string {
  return `table ip ${table}\ndelete table ip ${table}\n${text}`;
}
