import { formatCidr, parseCidr, parseIPv4, type Subnet } from '../ipam.js';
import { contains6, formatCidr6, parseCidr6, parseIPv6, type Subnet6 } from '../ipam6.js';
import { BadRequestError } from '../../util/errors.js';

/**
 * The policy label grammar (README, "Network policies"): pure parsing, no state. Kubernetes'
 * NetworkPolicy carried in labels, so `docker run --label`, `docker network create --label` and
 * compose files carry it unchanged and Docker simply ignores it.
 *
 *   berth.policy.isolate=ingress|egress|ingress,egress     default-deny in those directions
 *   berth.policy.ingress[.NAME]=RULE                       accept traffic from RULE's peer
 *   berth.policy.egress[.NAME]=RULE                        may send to RULE's peer
 *
 *   RULE := TERM (' ' TERM)*
 *   TERM := any | labels:SEL | network:NAME | cidr:CIDR | except:CIDR[,CIDR…] | ports:PORT[,PORT…]
 *   SEL  := REQ[,REQ…]   REQ := key=value | key!=value | key | !key
 *   PORT := N[-M][/tcp|/udp|/sctp] | tcp | udp | sctp | icmp
 *
 * One rule names one peer (labels and network together mean both), like one entry of a
 * Kubernetes `from`/`to` list; several rules are several labels, and rules only ever add.
 * Anything under `berth.policy.` that does not parse is refused with a 400 at create: a typo
 * must never leave a path silently open or silently closed.
 */

export const PREFIX = 'berth.policy.';

export type Direction = 'ingress' | 'egress';
export const DIRECTIONS: Direction[] = ['ingress', 'egress'];

export type Proto = 'tcp' | 'udp' | 'sctp' | 'icmp';

/** A protocol with an optional port range (absent: every port of it; icmp has none). */
export interface PortRange { proto: Proto; from?: number; to?: number }

export interface LabelReq { key: string; op: 'eq' | 'ne' | 'exists' | 'absent'; value?: string }

export type Peer =
  | { kind: 'any' }
  /** Containers whose labels meet every requirement, on `network` if given (both: AND). */
  | { kind: 'select'; labels: LabelReq[]; network?: string }
  | { kind: 'cidr'; family: 4 | 6; cidr: string; except: string[] };

export interface PolicyRule {
  /** The label that wrote it: what `policy inspect` names as the grant. */
  label: string;
  direction: Direction;
  peer: Peer;
  /** Empty: every protocol and port. */
  ports: PortRange[];
}

export interface PolicySpec { isolate: Direction[]; rules: PolicyRule[] }

export const EMPTY_SPEC: PolicySpec = { isolate: [], rules: [] };

function bad(label: string, why: string): never {
  throw new BadRequestError(`invalid label ${label}: ${why}`);
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Every policy label of a container or a network; throws a 400 naming the first bad one. */
export function parsePolicyLabels(labels: Record<string, string> | null | undefined): PolicySpec {
  const isolate = new Set<Direction>();
  const rules: PolicyRule[] = [];
  for (const [key, value] of Object.entries(labels ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
    if (!key.startsWith(PREFIX) && key !== PREFIX.slice(0, -1)) continue;
    const rest = key.slice(PREFIX.length);
    if (rest === 'isolate') {
      for (const d of parseIsolate(key, value)) isolate.add(d);
      continue;
    }
    const m = /^(ingress|egress)(?:\.(.*))?$/.exec(rest);
    if (!m) bad(key, `unknown policy key (berth.policy.isolate, berth.policy.ingress[.NAME] and berth.policy.egress[.NAME] are known)`);
    if (m[2] !== undefined && !NAME_RE.test(m[2])) bad(key, `rule name "${m[2]}" must match [A-Za-z0-9][A-Za-z0-9_.-]*`);
    rules.push(parseRule(key, m[1] as Direction, value));
  }
  return { isolate: DIRECTIONS.filter((d) => isolate.has(d)), rules };
}

function parseIsolate(label: string, value: string): Direction[] {
  const parts = value.split(',').map((s) => s.trim());
  if (!value.trim() || parts.some((p) => p !== 'ingress' && p !== 'egress')) bad(label, `"${value}" is not ingress, egress or ingress,egress`);
  return parts as Direction[];
}

/** One rule's text; exported for the unit tests and the CLI's own checks. */
export function parseRule(label: string, direction: Direction, value: string): PolicyRule {
  const terms = value.trim().split(/\s+/).filter(Boolean);
  if (!terms.length) bad(label, 'empty rule (write "any" to allow every peer)');
  const seen = new Set<string>();
  let any = false;
  let labels: LabelReq[] | undefined;
  let network: string | undefined;
  let cidr: { family: 4 | 6; text: string; net: Subnet | Subnet6 } | undefined;
  let except: string[] = [];
  let ports: PortRange[] = [];
  for (const term of terms) {
    const i = term.indexOf(':');
    const kind = i < 0 ? term : term.slice(0, i);
    const arg = i < 0 ? '' : term.slice(i + 1);
    if (seen.has(kind)) bad(label, `"${kind}" given twice in one rule (write another label for another peer)`);
    seen.add(kind);
    switch (kind) {
      case 'any':
        if (i >= 0) bad(label, '"any" takes no value');
        any = true;
        break;
      case 'labels':
        labels = parseSelector(label, arg);
        break;
      case 'network':
        if (!arg || !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(arg)) bad(label, `"${arg}" is not a network name`);
        network = arg;
        break;
      case 'cidr':
        cidr = parseCidrArg(label, arg);
        break;
      case 'except':
        except = arg.split(',').map((c) => c.trim());
        break;
      case 'ports':
        ports = parsePorts(label, arg);
        break;
      default:
        bad(label, `unknown term "${term}" (any, labels:, network:, cidr:, except:, ports: are known)`);
    }
  }
  if (any && (labels || network || cidr)) bad(label, '"any" cannot be combined with labels:, network: or cidr:');
  if (cidr && (labels || network)) bad(label, 'cidr: cannot be combined with labels: or network: (write two labels)');
  if (except.length && !cidr) bad(label, 'except: needs a cidr: in the same rule');
  if (!any && !labels && !network && !cidr) bad(label, 'no peer: give any, labels:, network: or cidr:');
  let peer: Peer;
  if (cidr) {
    const outer = cidr;
    peer = { kind: 'cidr', family: outer.family, cidr: outer.text, except: except.map((e) => exceptWithin(label, outer, e)) };
  } else if (any) {
    peer = { kind: 'any' };
  } else {
    peer = { kind: 'select', labels: labels ?? [], ...(network ? { network } : {}) };
  }
  return { label, direction, peer, ports };
}

function parseSelector(label: string, arg: string): LabelReq[] {
  if (!arg) bad(label, 'labels: needs at least one requirement (key=value, key!=value, key or !key)');
  return arg.split(',').map((req) => {
    let m: RegExpExecArray | null;
    if ((m = /^([^=!,\s]+)!=([^,\s]*)$/.exec(req))) return { key: m[1]!, op: 'ne' as const, value: m[2]! };
    if ((m = /^([^=!,\s]+)=([^,\s]*)$/.exec(req))) return { key: m[1]!, op: 'eq' as const, value: m[2]! };
    if ((m = /^!([^=!,\s]+)$/.exec(req))) return { key: m[1]!, op: 'absent' as const };
    if ((m = /^([^=!,\s]+)$/.exec(req))) return { key: m[1]!, op: 'exists' as const };
    return bad(label, `"${req}" is not a label requirement (key=value, key!=value, key or !key)`);
  });
}

function parseCidrArg(label: string, arg: string): { family: 4 | 6; text: string; net: Subnet | Subnet6 } {
  try {
    if (arg.includes(':')) {
      const net = parseCidr6(arg);
      if (parseIPv6(arg.split('/')[0]!) !== net.base) bad(label, `${arg} has host bits set (the network is ${formatCidr6(net)})`);
      return { family: 6, text: formatCidr6(net), net };
    }
    const net = parseCidr(arg);
    if (parseIPv4(arg.split('/')[0]!) !== net.base) bad(label, `${arg} has host bits set (the network is ${formatCidr(net)})`);
    return { family: 4, text: formatCidr(net), net };
  } catch (e) {
    if ((e as Error).message.startsWith('invalid label')) throw e;
    return bad(label, `"${arg}" is not a CIDR`);
  }
}

function exceptWithin(label: string, outer: { family: 4 | 6; text: string; net: Subnet | Subnet6 }, text: string): string {
  const inner = parseCidrArg(label, text);
  if (inner.family !== outer.family) bad(label, `except ${text} is not of the same family as ${outer.text}`);
  const within = inner.family === 4
    ? (() => { const a = inner.net as Subnet, b = outer.net as Subnet; return a.prefix >= b.prefix && Math.floor(a.base / 2 ** (32 - b.prefix)) === Math.floor(b.base / 2 ** (32 - b.prefix)); })()
    : (() => { const a = inner.net as Subnet6, b = outer.net as Subnet6; return a.prefix >= b.prefix && contains6(b, a.base); })();
  if (!within) bad(label, `except ${text} is not inside ${outer.text}`);
  return inner.text;
}

function parsePorts(label: string, arg: string): PortRange[] {
  if (!arg) bad(label, 'ports: needs at least one port');
  return arg.split(',').map((p) => {
    if (/^(tcp|udp|sctp|icmp)$/.test(p)) return { proto: p as Proto };
    const m = /^(\d{1,5})(?:-(\d{1,5}))?(?:\/(tcp|udp|sctp))?$/.exec(p);
    if (!m) return bad(label, `"${p}" is not a port, a port range or a protocol (80, 8000-8100/tcp, 53/udp, icmp)`);
    const from = Number(m[1]);
    const to = m[2] ? Number(m[2]) : from;
    if (from < 1 || to > 65535 || from > 65535) bad(label, `port ${p} is outside 1-65535`);
    if (to < from) bad(label, `port range ${p} ends before it starts`);
    return { proto: (m[3] ?? 'tcp') as Proto, from, to };
  });
}

/** Whether a container's labels meet a selector's requirements. */
export function labelsMeet(reqs: LabelReq[], labels: Record<string, string>): boolean {
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    switch (r.op) {
      case 'eq': return has && labels[r.key] === r.value;
      case 'ne': return !has || labels[r.key] !== r.value;
      case 'exists': return has;
      case 'absent': return !has;
    }
  });
}

/** A rule's peer as the user wrote it, for `policy inspect`. */
export function describePeer(p: Peer): string {
  if (p.kind === 'any') return 'any';
  if (p.kind === 'cidr') return `cidr:${p.cidr}${p.except.length ? ` except:${p.except.join(',')}` : ''}`;
  const sel = p.labels.map((r) => (r.op === 'eq' ? `${r.key}=${r.value}` : r.op === 'ne' ? `${r.key}!=${r.value}` : r.op === 'exists' ? r.key : `!${r.key}`)).join(',');
  return [sel ? `labels:${sel}` : '', p.network ? `network:${p.network}` : ''].filter(Boolean).join(' ');
}

export function describePorts(ports: PortRange[]): string {
  if (!ports.length) return 'all';
  return ports.map((p) => (p.from === undefined ? p.proto : `${p.from}${p.to !== p.from ? `-${p.to}` : ''}/${p.proto}`)).join(',');
}
