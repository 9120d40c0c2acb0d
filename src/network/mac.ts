/** Docker's MAC scheme: 02:42 followed by the IPv4 address. */
export function macFor(ip: string, prefix = '02:42'): string {
  return [prefix, ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

/**
 * The MAC a host itself has on the ingress network (its bridge's): 02:62 followed by its
 * data-path address. Unique in the cluster as that address is, never a container's (02:42), and
 * the same across restarts of berthd, so the containers' ARP entries for the gateway stay right.
 */
export function hostMacFor(vtep: string): string {
  return macFor(vtep, '02:62');
}
