import type * as Commander from 'commander';
import { requireCjs } from '../util/cjs.js';
import { promises as fs } from 'node:fs';
import { Daemon } from './daemon.js';
import { livePidFileHolder, pidFileText } from './pidfile.js';
import { profileOnSignal } from './profiling.js';
import { join } from 'node:path';
import { DEFAULT_ROOT, DEFAULT_SOCKET, VERSION } from './paths.js';
import { errorMessage } from '../util/errors.js';
import { parseMetricsAddr } from '../api/metricsserver.js';

const { Command } = requireCjs('commander') as typeof Commander;

const program = new Command('berthd')
  .description('berth daemon: serves the Docker Engine API (v1.41) on a unix socket')
  .version(VERSION)
  .option('--root <dir>', 'directory for berth state (images, containers, namespaces)', DEFAULT_ROOT)
  .option('-H, --host <socket>', 'unix socket to listen on (unix:///path or a path)', DEFAULT_SOCKET)
  .option('--attach-helper <path>', 'path of the berth-attach helper binary')
  .option('--no-seed-busybox', 'do not import the busybox image into an empty store')
  .option('--bip <cidr>', 'address and prefix of the default bridge, e.g. 172.17.0.1/16 (only when it is first created)')
  .option('-b, --bridge <name>', 'link of the default bridge network (default berth0); an existing bridge is used and never deleted, any other link is refused (only when it is first created)')
  .option('--insecure-registry <host>', 'registry (host[:port] or CIDR) that may be reached over plain HTTP; loopback ones always may', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--resolv-conf <path>', 'resolver configuration whose nameservers containers and the embedded DNS use upstream', '/etc/resolv.conf')
  .option('--cluster-store <urls>', 'use an existing etcd cluster as the swarm store (etcd://host:port,...) instead of running members on managers')
  .option('--cluster-lease-ttl <seconds>', 'how long a node that stops answering is still shown Ready', (v: string) => Number(v), 5)
  .option('--cluster-min-cert-expiry <seconds>', 'the shortest node certificate lifetime a swarm spec may ask for (Docker\'s: an hour; tests use less)', (v: string) => Number(v), 3600)
  .option('--node-hostname <name>', 'the hostname this node shows in the swarm (default: the system hostname)')
  .option('--metrics-addr <host:port>', 'also serve Prometheus metrics (GET /metrics, no authentication) over TCP, e.g. 127.0.0.1:9323; the API socket serves them always')
  .option('--plugin-dir <dir>', 'where Docker network and IPAM plugins put their sockets (NAME.sock)', '/run/docker/plugins')
  .option('--plugin-spec-dir <dir>', 'where plugin spec files (NAME.spec, NAME.json) are looked for; repeatable (default: /etc/docker/plugins and /usr/lib/docker/plugins)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--plugin-retry <seconds>', 'how long a call keeps trying to reach a plugin that does not accept connections (Docker: 30)', (v: string) => Number(v), 30)
  .option('--plugin-timeout <seconds>', 'how long one plugin call may take before it fails; 0 waits for ever, as Docker does', (v: string) => Number(v), 60)
  .option('--cni-conf-dir <dir>', 'where cni networks look up configuration lists by name; repeatable (default: /etc/cni/net.d)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--cni-plugin-dir <dir>', 'where CNI plugin executables are looked for (CNI_PATH); repeatable (default: /usr/lib/cni and /opt/cni/bin)', (v: string, acc: string[]) => [...acc, v], [] as string[])
  .option('--cni-timeout <seconds>', 'how long one CNI plugin may run before it is killed', (v: string) => Number(v), 60)
  .option('-D, --debug', 'log every API request to stderr')
  .option('--slow-request <seconds>', 'log an API request that has had no answer for this long, with where the work on its container is (again at each multiple); 0 never', (v: string) => Number(v), 30)
  .option('--cleanup', 'stop all containers and remove every kernel object berth made under --root, then exit')
  .addHelpText('after', `
berthd keeps running containers alive across its own restarts (conmon supervises them).
Stop it with SIGTERM or SIGINT; run "berthd --cleanup" afterwards to remove everything it made.
SIGUSR2 starts a CPU profile; the next SIGUSR2 writes it to <root>/profiles ($BERTH_PROFILE_DIR if set).`);

program.parse();
const opts = program.opts<{ root: string; host: string; attachHelper?: string; seedBusybox: boolean; cleanup?: boolean; debug?: boolean; slowRequest: number; bip?: string; bridge?: string; insecureRegistry: string[]; resolvConf: string; clusterStore?: string; clusterLeaseTtl: number; clusterMinCertExpiry: number; nodeHostname?: string; metricsAddr?: string; pluginDir: string; pluginSpecDir: string[]; pluginRetry: number; pluginTimeout: number; cniConfDir: string[]; cniPluginDir: string[]; cniTimeout: number }>();
const socket = opts.host.replace(/^unix:\/\//, '');
if (opts.metricsAddr) {
  try {
    parseMetricsAddr(opts.metricsAddr);
  } catch (e) {
    console.error(`berthd: ${errorMessage(e)}`);
    process.exit(1);
  }
}

if (!Number.isFinite(opts.slowRequest) || opts.slowRequest < 0) {
  console.error(`berthd: --slow-request wants a number of seconds, 0 or more`);
  process.exit(1);
}

if (process.getuid?.() !== 0) {
  console.error('berthd: must run as root');
  process.exit(1);
}

const daemon = new Daemon({ root: opts.root, socket, attachHelper: opts.attachHelper, seedBusybox: opts.seedBusybox, debug: opts.debug, slowRequestSec: opts.slowRequest, bip: opts.bip, bridge: opts.bridge, insecureRegistries: opts.insecureRegistry, resolvConf: opts.resolvConf,
  ...(opts.metricsAddr ? { metricsAddr: opts.metricsAddr } : {}),
  plugins: { socketDir: opts.pluginDir, specDirs: opts.pluginSpecDir, retrySec: opts.pluginRetry, callTimeoutSec: opts.pluginTimeout },
  cni: { confDirs: opts.cniConfDir, pluginDirs: opts.cniPluginDir, timeoutSec: opts.cniTimeout },
  cluster: {
    leaseTtlSec: opts.clusterLeaseTtl,
    minCertExpirySec: opts.clusterMinCertExpiry,
    ...(opts.clusterStore ? { store: storeUrls(opts.clusterStore) } : {}),
    ...(opts.nodeHostname ? { hostname: opts.nodeHostname } : {}),
  },
});

/**
 * etcd://a:2379,b:2379 to the client URLs etcd3 takes. Plain HTTP only: an external store is for
 * a store on loopback or a private network the operator secured (berth's own members use mTLS).
 */
function storeUrls(v: string): string[] {
  const m = /^etcd:\/\/(.+)$/.exec(v);
  if (!m) throw new Error(`--cluster-store: expected etcd://host:port[,host:port...], got ${v}`);
  return m[1]!.split(',').map((h) => `http://${h.replace(/^etcd:\/\//, '')}`);
}

async function main(): Promise<void> {
  const pidFile = `${opts.root}/berthd.pid`;
  if (opts.cleanup) {
    const problems = await daemon.cleanup();
    for (const p of problems) console.error(`berthd: cleanup: ${p}`);
    process.exit(problems.length ? 1 : 0);
  }
  await fs.mkdir(opts.root, { recursive: true, mode: 0o711 });
  const other = await livePidFileHolder(await fs.readFile(pidFile, 'utf8').catch(() => ''));
  if (other !== undefined) throw new Error(`another berthd (pid ${other}) is using ${opts.root}`);
  await fs.writeFile(pidFile, await pidFileText());
  // One broken connection or stream must not take every container's API down with it, nor a
  // stray rejection during the restore end a berthd that is still starting.
  process.on('uncaughtException', (e) => console.error(`berthd: uncaught: ${e.stack ?? e}`));
  process.on('unhandledRejection', (e) => console.error(`berthd: unhandled rejection: ${(e as Error)?.stack ?? e}`));
  await daemon.start();
  // BERTH_PROFILE_DIR: somewhere that outlives the root (a lab's hosts are removed with theirs).
  profileOnSignal(process.env.BERTH_PROFILE_DIR ?? join(opts.root, 'profiles'), (m) => console.error(`berthd: ${m}`));
  console.error(`berthd ${VERSION}: API listening on unix://${socket}, root ${opts.root}`);
  const shutdown = async () => {
    // Bounded: a client holding a hijacked stream open must not keep berthd from exiting (its
    // containers keep running under conmon either way).
    await Promise.race([daemon.stop().catch(() => undefined), new Promise((r) => setTimeout(r, 5000).unref())]);
    await fs.rm(pidFile, { force: true });
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown());
  process.on('SIGINT', () => void shutdown());
}

main().catch((e) => {
  console.error(`berthd: ${errorMessage(e)}`);
  process.exit(1);
});
