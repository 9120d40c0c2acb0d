/**
 * Docker 20.10 swarm hosts for the cluster metric, laid out as berth's lab
 * (test/integration/lab.ts): every host a namespace with an uplink veth on a private underlay
 * bridge (in a namespace of its own, so nothing touches the machine's network), its own dockerd
 * with its own --data-root, --exec-root, --pidfile and unix socket. Swarm is told to listen and
 * advertise on the host's underlay address only.
 */
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { DockerEngine } from './engines.js';
import { run, runOk } from './util.js';

export const DOCKER_UNDERLAY = '10.98.0.';

export class DockerLabHost extends DockerEngine {
  constructor(dir: string, netns: string, readonly index: number, private readonly underlay: string) {
    super('docker', dir, netns);
  }

  get addr(): string { return `${DOCKER_UNDERLAY}${this.index + 1}`; }

  protected override async makeNetns(): Promise<void> {
    await runOk('ip', ['netns', 'add', this.netns]);
    await runOk('ip', ['-n', this.netns, '-batch', '-'], [
      'link set lo up',
      `link add bbup0 mtu 1400 type veth peer name bbdh${this.index} mtu 1400 netns ${this.underlay}`,
      `addr add ${this.addr}/24 dev bbup0`, 'link set bbup0 up',
    ].join('\n') + '\n');
    await runOk('ip', ['-n', this.underlay, 'link', 'set', `bbdh${this.index}`, 'master', 'bbub0', 'up']);
  }
}

export class DockerLab {
  readonly hosts: DockerLabHost[] = [];
  private constructor(readonly underlay: string) {}

  static async create(n: number, base: string): Promise<DockerLab> {
    const lab = new DockerLab(`bb-du-${process.pid}`);
    try {
      await runOk('ip', ['netns', 'add', lab.underlay]);
      await runOk('ip', ['-n', lab.underlay, '-batch', '-'], 'link set lo up\nlink add bbub0 type bridge\nlink set bbub0 up\n');
      for (let i = 0; i < n; i++) {
        const dir = await fs.mkdtemp(join(base, `swarm-docker${i}-`));
        const h = new DockerLabHost(dir, `bb-dh${i}-${process.pid}`, i, lab.underlay);
        lab.hosts.push(h);
        await h.start();
      }
    } catch (e) {
      await lab.destroy().catch(() => undefined);
      throw e;
    }
    return lab;
  }

  /** Every host and the underlay go; returns what is left over. */
  async destroy(): Promise<string[]> {
    const leaks: string[] = [];
    for (const h of [...this.hosts].reverse()) leaks.push(...(await h.stop().catch((e) => [`${h.netns}: ${e}`])));
    // A host stopped while its siblings still ran sees their containerd shims' sockets under the
    // shared /run/containerd: only what is still there once every host stopped is left over.
    const shared = /^files left under (\/run\/containerd\S*): (.*)$/;
    for (let i = leaks.length - 1; i >= 0; i--) {
      const m = shared.exec(leaks[i]!);
      if (m && m[2]!.split(' ').every((f) => !existsSync(f))) leaks.splice(i, 1);
    }
    await run('ip', ['netns', 'del', this.underlay]);
    if (existsSync(`/run/netns/${this.underlay}`)) leaks.push(`netns ${this.underlay}`);
    return leaks;
  }
}
