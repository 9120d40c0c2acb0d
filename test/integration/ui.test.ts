import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { buildTopology, type ApiContainer, type ApiNetwork, type RawState } from '../../src/ui/model.js';
import { parseUiAddr } from '../../src/ui/server.js';
import { BERTH_CLI, fetchIn, PACKAGE_ROOT, TestHost, waitFor } from './harness.js';
import { Lab, type LabHost } from './lab.js';

/**
 * `berth ui` in a real browser: Debian's chromium, headless, driven by playwright-core. Both the
 * page's server (`berth ui`, a client of the test host's berthd) and the browser run inside the
 * test host's namespace, so the page is served on that namespace's loopback and nothing the page
 * asks for could leave it. The host is the first of a lab of two (with the lab's own etcd), which
 * form a swarm only for the last test, so the single-host tests see no swarm and nothing polled:
 * what changes on the page there came through the event stream. Assertions are on the DOM, against what the API says. Screenshots go
 * to the test host's directory; BERTH_UI_SHOTS=DIR keeps copies (docs/ui.png comes from there).
 */
const CHROMIUM = '/usr/bin/chromium';
const KEEP = { Cmd: ['sleep', '600'] };

describe('berth ui: the live topology page', () => {
  let lab: Lab;
  let host: TestHost;
  let ui: ChildProcess | undefined;
  let uiLog = '';
  let url = '';
  let origin = '';
  let browser: Browser | undefined;
  let page: Page;
  const requests: string[] = [];

  /** The browser, inside the test host's namespace (playwright talks to it over a pipe, not the network). */
  async function launch(): Promise<Browser> {
    const wrapper = join(host.dir, 'chromium-in-netns');
    await fs.writeFile(wrapper, `#!/bin/sh\nexec nsenter --net=${host.netnsPath} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
    return chromium.launch({ executablePath: wrapper, args: ['--no-sandbox'] });
  }

  const ipOf = async (name: string, network: string) =>
    (await host.api('GET', `/containers/${name}/json`)).json.NetworkSettings.Networks[network].IPAddress as string;
  const lane = (network: string) => page.locator(`section.lane[data-network-name="${network}"]`);
  const chipIn = (network: string, name: string) => lane(network).locator(`.chip[data-container-name="${name}"]`);

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium`);
    lab = await Lab.create(2, { leaseTtlSec: 3, externalStore: true, seedBusybox: true });
    host = lab.hosts[0]!.host;
    const net = async (body: object) => assert.equal((await host.api('POST', '/networks/create', body)).status, 201);
    await net({ Name: 'front', IPAM: { Config: [{ Subnet: '10.77.1.0/24' }] } });
    await net({ Name: 'back', Internal: true, IPAM: { Config: [{ Subnet: '10.77.2.0/24' }] }, Labels: { 'berth.policy.isolate': 'ingress', 'berth.policy.ingress.app': 'labels:tier=app ports:5432' } });
    await host.runDetached({ ...KEEP, ExposedPorts: { '80/tcp': {} }, HostConfig: { NetworkMode: 'front', PortBindings: { '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '8080' }] } }, NetworkingConfig: { EndpointsConfig: { front: { Aliases: ['www'] } } } }, 'web');
    await host.runDetached({ ...KEEP, Labels: { tier: 'app' }, HostConfig: { NetworkMode: 'front' } }, 'api');
    assert.equal((await host.api('POST', '/networks/back/connect', { Container: 'api' })).status, 200);
    await host.runDetached({ ...KEEP, HostConfig: { NetworkMode: 'back' } }, 'db');
    await host.runDetached(KEEP, 'plain');

    ui = spawn('nsenter', [`--net=${host.netnsPath}`, process.execPath, BERTH_CLI, '-H', `unix://${host.socket}`, 'ui', '--addr', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    ui.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    ui.stderr!.on('data', (d: Buffer) => { uiLog += d.toString(); });
    url = (await waitFor(async () => {
      if (ui!.exitCode !== null) throw new Error(`berth ui exited ${ui!.exitCode}: ${uiLog}`);
      return /^(http:\/\/127\.0\.0\.1:\d+\/\?token=[\w-]{32})$/m.exec(out)?.[1];
    }, 'berth ui to print its URL', 20_000));
    origin = new URL(url).origin;
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(url);
    await page.locator('#status[data-state="live"]').waitFor({ timeout: 15_000 });
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    if (ui && ui.exitCode === null) {
      const exited = new Promise((r) => ui!.once('exit', r));
      ui.kill('SIGTERM');
      await exited;
    }
    const leaks = await lab.destroy();
    assert.deepEqual(leaks, []);
  });

  it('answers 403 without the token or with a wrong one, and refuses a non-loopback address', async () => {
    const token = new URL(url).searchParams.get('token')!;
    // Its last character changed: a fixed 'x' was the token itself whenever the token ended in 'x'
    // (1 run in 64: a full run's "wrong" tokens got 200).
    const wrong = `${token.slice(0, -1)}${token.endsWith('x') ? 'y' : 'x'}`;
    // All probes from one process in the test host's namespace: path, how it is asked, the status.
    const probes: Array<[string, string, string]> = [];
    for (const path of ['/', '/api/topology', '/api/events', '/static/app.js', '/api/containers/web']) {
      probes.push([path, 'GET', ''], [`${path}?token=${wrong}`, 'GET', ''], [`${path}?token=`, 'GET', '']);
    }
    probes.push(['/api/topology', 'GET', `token ${token}`], ['/api/topology', 'GET', 'token nope'], ['/api/topology', 'POST', `token ${token}`], [`/api/topology?token=${token}`, 'DELETE', '']);
    const r = await host.inNetns(process.execPath, ['-e', `
      const http = require('http');
      const ask = ([path, method, auth]) => new Promise((ok) => http.request('${origin}' + path, { method, headers: auth ? { Authorization: auth } : {} }, (r) => { r.destroy(); ok(r.statusCode); }).on('error', (e) => ok(e.message)).end());
      (async () => { const out = []; for (const p of ${JSON.stringify(probes)}) out.push(await ask(p)); console.log(out.join(' ')); })();`]);
    assert.deepEqual(r.stdout.trim().split(' '), [...Array(15).fill('403'), '200', '403', '405', '405'],
      `without a token, a wrong one, an empty one; the header's token, a wrong one, writes: ${r.stderr}`);
    const ok = await fetchIn(host.netnsPath, `${origin}/api/topology?token=${token}`);
    assert.equal(ok.status, 200, 'the probe itself reaches the server');
    assert.ok(JSON.parse(ok.body!).topology.containers.some((c: { name: string }) => c.name === 'web'));
    for (const addr of ['0.0.0.0:0', '10.77.1.1:9000', '[::]:0']) {
      const r = await host.berth(['ui', '--addr', addr]);
      assert.equal(r.code, 125, `--addr ${addr}: ${r.stderr}`);
      assert.match(r.stderr, /refusing to serve on .*the page is for this machine only/);
    }
  });

  it('shows hosts, networks with driver, subnet, scope and internal, and containers with addresses, aliases and ports', async () => {
    await assert.doesNotReject(page.locator('#hosts .host.self').waitFor());
    assert.match(await page.locator('#hostline').textContent() ?? '', /4 containers \(4 running\)/);
    const front = lane('front');
    assert.match(await front.locator('.lane-head').innerText(), /front[\s\S]*bridge[\s\S]*local[\s\S]*10\.77\.1\.0\/24 gw 10\.77\.1\.1/);
    const back = await lane('back').locator('.lane-head').innerText();
    assert.match(back, /internal/);
    assert.match(back, /10\.77\.2\.0\/24/);
    assert.match(back, /isolate=ingress/);
    assert.match(back, /ingress\.app=labels:tier=app ports:5432/);
    assert.doesNotMatch(await front.locator('.lane-head').innerText(), /internal/);

    const web = chipIn('front', 'web');
    assert.equal(await web.locator('.ip').first().innerText(), `${await ipOf('web', 'front')}/24`);
    assert.match(await web.innerText(), /aka www/);
    assert.match(await web.innerText(), /127\.0\.0\.1:8080→80\/tcp/);
    assert.equal(await chipIn('back', 'db').locator('.ip').first().innerText(), `${await ipOf('db', 'back')}/24`);
    assert.equal(await chipIn('bridge', 'plain').locator('.ip').first().innerText(), `${await ipOf('plain', 'bridge')}/16`);
    assert.match(await chipIn('back', 'db').innerText(), /policy: ingress/, 'db is isolated by the network\'s label');
    assert.doesNotMatch(await web.innerText(), /policy:/);

    // api is on both networks: a card in each lane, marked, joined by a line.
    assert.equal(await chipIn('front', 'api').locator('.ip').first().innerText(), `${await ipOf('api', 'front')}/24`);
    assert.equal(await chipIn('back', 'api').locator('.ip').first().innerText(), `${await ipOf('api', 'back')}/24`);
    assert.match(await chipIn('back', 'api').innerText(), /⇄ 2 networks/);
    const apiId = (await host.api('GET', '/containers/api/json')).json.Id as string;
    assert.equal(await page.locator(`#links path[data-container-id="${apiId}"]`).count(), 1);
    assert.equal(await page.locator('#links path').count(), 1, 'only api bridges two networks');
    const height = await page.evaluate(() => Math.ceil(document.getElementById('lanes')!.getBoundingClientRect().bottom) + 12);
    await page.screenshot({ path: join(host.dir, 'ui.png'), clip: { x: 0, y: 0, width: 1280, height } });
    // The filter dims what does not match (by name, address, alias or image) and keeps the rest.
    const dimmed = async () => (await page.locator('.chip.dim').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.containerName))).sort();
    await page.fill('#filter', 'www');
    assert.deepEqual(await dimmed(), ['api', 'api', 'db', 'plain']);
    await page.fill('#filter', '10.77.2.');
    assert.deepEqual(await dimmed(), ['api', 'plain', 'web']);
    await page.fill('#filter', '');
    assert.deepEqual(await dimmed(), []);
    if (process.env.BERTH_UI_SHOTS) await fs.copyFile(join(host.dir, 'ui.png'), join(process.env.BERTH_UI_SHOTS, 'ui.png'));
  });

  it('shows a container started after the page loaded, and drops a removed one, without a reload', async () => {
    await page.evaluate(() => { (window as unknown as { sameDocument: boolean }).sameDocument = true; });
    assert.equal(await chipIn('front', 'late').count(), 0);
    await host.runDetached({ ...KEEP, HostConfig: { NetworkMode: 'front' } }, 'late');
    // Created, then started: the card is there at once and shows the address once it runs.
    const lateIp = `${await ipOf('late', 'front')}/24`;
    await chipIn('front', 'late').waitFor({ timeout: 10_000 });
    await waitFor(async () => (await chipIn('front', 'late').locator('.ip').first().innerText()) === lateIp, `late's card to show ${lateIp}`);
    assert.equal((await host.api('DELETE', '/containers/late?force=1')).status, 204);
    await chipIn('front', 'late').waitFor({ state: 'detached', timeout: 10_000 });
    assert.equal(await chipIn('front', 'web').count(), 1, 'the rest is still drawn');
    // A network made and removed shows and goes the same way.
    assert.equal((await host.api('POST', '/networks/create', { Name: 'extra', IPAM: { Config: [{ Subnet: '10.77.3.0/24' }] } })).status, 201);
    await lane('extra').waitFor({ timeout: 10_000 });
    assert.equal((await host.api('DELETE', '/networks/extra')).status, 204);
    await lane('extra').waitFor({ state: 'detached', timeout: 10_000 });
    assert.equal(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument), true, 'the page was not reloaded');
  });

  it('says when berthd is gone, and follows it again once it is back', async () => {
    const status = page.locator('#status');
    await host.stopDaemon();
    await page.locator('#status[data-state="lost"]').waitFor({ timeout: 10_000 });
    assert.match(await status.innerText(), /daemon unreachable/);
    await host.startDaemon();
    await page.locator('#status[data-state="live"]').waitFor({ timeout: 20_000 });
    await host.runDetached({ ...KEEP, HostConfig: { NetworkMode: 'front' } }, 'after');
    await waitFor(async () => (await chipIn('front', 'after').count()) === 1, 'a container made after the restart to show');
    assert.equal((await host.api('DELETE', '/containers/after?force=1')).status, 204);
    await chipIn('front', 'after').waitFor({ state: 'detached', timeout: 10_000 });
  });

  it('shows a container\'s inspect summary when it is clicked', async () => {
    const insp = (await host.api('GET', '/containers/api/json')).json;
    await chipIn('front', 'api').click();
    const drawer = page.locator('#drawer');
    await drawer.locator('[data-field="id"]').waitFor();
    assert.equal(await drawer.locator('[data-field="name"]').innerText(), 'api');
    assert.equal(await drawer.locator('[data-field="id"]').innerText(), insp.Id);
    assert.equal(await drawer.locator('[data-field="image"]').innerText(), 'busybox');
    assert.equal(await drawer.locator('[data-field="state"]').innerText(), 'running');
    assert.equal(await drawer.locator('[data-field="pid"]').innerText(), String(insp.State.Pid));
    assert.equal(await drawer.locator('[data-field="command"]').innerText(), 'sleep 600');
    for (const network of ['front', 'back']) {
      const ep = drawer.locator(`.ep:not(.pol)[data-network="${network}"]`);
      const s = insp.NetworkSettings.Networks[network];
      assert.equal(await ep.locator('[data-field="ip"]').innerText(), `${s.IPAddress}/${s.IPPrefixLen}`);
      assert.equal(await ep.locator('[data-field="mac"]').innerText(), s.MacAddress);
      // An internal network has no gateway: the panel leaves the line out.
      if (s.Gateway) assert.equal(await ep.locator('[data-field="gateway"]').innerText(), s.Gateway);
      else assert.equal(await ep.locator('[data-field="gateway"]').count(), 0);
    }
    assert.match(await drawer.locator('.pol[data-network="back"] [data-field="policy-ingress"]').innerText(), /^isolated by network back: berth\.policy\.isolate/);
    assert.equal(await drawer.locator('.pol[data-network="front"] [data-field="policy-ingress"]').innerText(), 'open');
    await page.screenshot({ path: join(host.dir, 'ui-inspect.png') });
    if (process.env.BERTH_UI_SHOTS) await fs.copyFile(join(host.dir, 'ui-inspect.png'), join(process.env.BERTH_UI_SHOTS, 'ui-inspect.png'));
    await page.keyboard.press('Escape');
    assert.equal(await drawer.isHidden(), true);
  });

  it('in a swarm: shows the nodes, and an overlay network with the hosts it spans', async () => {
    const [h0, h1] = lab.hosts as [LabHost, LabHost];
    await lab.formSwarm(0);
    const mesh = await h0.host.api('POST', '/networks/create', { Name: 'mesh', Driver: 'overlay', Attachable: true, IPAM: { Config: [{ Subnet: '10.77.9.0/24' }] } });
    assert.equal(mesh.status, 201, mesh.body);
    await h0.host.runDetached({ ...KEEP, HostConfig: { NetworkMode: 'mesh' } }, 'left');
    await h1.host.runDetached({ ...KEEP, HostConfig: { NetworkMode: 'mesh' } }, 'right');
    const hosts = async () => (await page.locator('#hosts .host').allInnerTexts()).map((t) => t.replace(/\s+/g, ' ').trim());
    await waitFor(async () => (await hosts()).length === 2, 'both nodes on the page', 20_000).catch(async () => assert.fail(`hosts: ${JSON.stringify(await hosts())}`));
    // On the lab's external etcd the leader is the manager whose orchestrator holds the lock.
    await waitFor(async () => (await hosts())[0]?.includes('★'), 'the leader mark', 15_000).catch(async () => assert.fail(`hosts: ${JSON.stringify(await hosts())}`));
    const [self, other] = await hosts();
    assert.equal(self, 'lab0 (this host) manager ★ leader · 10.99.0.1');
    assert.equal(other, 'lab1 worker · 10.99.0.2');
    const head = () => lane('mesh').locator('.lane-head').innerText();
    await waitFor(async () => /spans 2 hosts/.test(await head()), 'mesh to span both hosts', 20_000).catch(async () => assert.fail(`mesh: ${await head()}`));
    assert.match(await head(), /overlay[\s\S]*swarm[\s\S]*attachable[\s\S]*10\.77\.9\.0\/24[\s\S]*spans 2 hosts: lab0\s*lab1/);
    assert.equal(await chipIn('mesh', 'left').locator('.ip').first().innerText(), `${await ipOf('left', 'mesh')}/24`);
    // The header names the host as its node does (berthd --node-hostname: /info's Name, as Docker's is its node's).
    assert.match(await page.locator('#hostline').innerText(), /^lab0 · berth .* · swarm of 2 hosts$/);
    // A service: in the lane of its network with its VIP and running tasks, in ingress by its port,
    // and its task containers tagged with their slot.
    const svc = await h0.host.docker(['service', 'create', '--detach', '--name', 'websvc', '--replicas', '2', '--network', 'mesh', '-p', '8088:80', 'busybox', 'sleep', '3600']);
    assert.equal(svc.code, 0, svc.stderr);
    const vip = JSON.parse((await h0.host.docker(['service', 'inspect', 'websvc'])).stdout)[0].Endpoint.VirtualIPs.find((v: { NetworkID: string }) => v.NetworkID === mesh.json.Id).Addr.split('/')[0];
    const svcLine = (net: string) => lane(net).locator('.svc[data-service="websvc"]').innerText().catch(() => '');
    await waitFor(async () => (await svcLine('mesh')).includes('2/2 running'), 'websvc running in the mesh lane', 40_000).catch(async () => assert.fail(`mesh: ${await svcLine('mesh')}`));
    assert.equal((await svcLine('mesh')).replace(/\s+/g, ' ').trim(), `⚙ websvc VIP ${vip} · 2/2 running`);
    assert.equal((await svcLine('ingress')).replace(/\s+/g, ' ').trim(), '⚙ websvc 2/2 running · 8088→80/tcp (ingress)');
    await waitFor(async () => (await lane('mesh').locator('.tag.task').allInnerTexts()).some((t) => /^task websvc\.[12]$/.test(t)), 'a task tag on a chip of this host', 15_000);
    const height = await page.evaluate(() => Math.ceil(document.getElementById('lanes')!.getBoundingClientRect().bottom) + 12);
    await page.screenshot({ path: join(host.dir, 'ui-swarm.png'), clip: { x: 0, y: 0, width: 1280, height } });
    if (process.env.BERTH_UI_SHOTS) await fs.copyFile(join(host.dir, 'ui-swarm.png'), join(process.env.BERTH_UI_SHOTS, 'ui-swarm.png'));
  });

  it('loaded nothing but its own origin', () => {
    assert.ok(requests.length >= 4, `requests were recorded: ${requests.join(' ')}`);
    const foreign = requests.filter((r) => !r.startsWith(`${origin}/`) && !r.startsWith('data:'));
    assert.deepEqual(foreign, []);
  });

  it('stays readable at 100 containers: no two cards or lanes overlap, names are not cut', async () => {
    // The page alone, fed a synthetic model of 100 containers through the browser's request
    // interception: no server and no daemon, only the page's layout is under test here.
    const ctx = await browser!.newContext({ viewport: { width: 1280, height: 900 } });
    const p = await ctx.newPage();
    const raw = syntheticState(100);
    const doc = JSON.stringify({ topology: buildTopology(raw), status: { connected: true } });
    const staticDir = join(PACKAGE_ROOT, 'src', 'ui', 'static');
    const fake = 'http://ui.invalid';
    const seen: string[] = [];
    await p.route('**/*', async (route) => {
      const u = new URL(route.request().url());
      seen.push(u.href);
      if (u.origin !== fake) return route.abort();
      if (u.pathname === '/') return route.fulfill({ contentType: 'text/html', body: (await fs.readFile(join(staticDir, 'index.html'), 'utf8')).replaceAll('{{TOKEN}}', 't') });
      if (u.pathname.startsWith('/static/')) return route.fulfill({ contentType: u.pathname.endsWith('.css') ? 'text/css' : 'text/javascript', body: await fs.readFile(join(staticDir, u.pathname.slice(8))) });
      if (u.pathname === '/api/events') return route.fulfill({ contentType: 'text/event-stream', body: `retry: 600000\nevent: topology\ndata: ${doc}\n\n` });
      return route.fulfill({ status: 404, body: '' });
    });
    await p.goto(`${fake}/?token=t`);
    await p.locator('.chip').nth(99).waitFor();
    const boxes = await p.evaluate(() => {
      const rect = (el: Element) => { const r = el.getBoundingClientRect(); return { x: r.x, y: r.y, w: r.width, h: r.height }; };
      return {
        chips: [...document.querySelectorAll('.chip')].map((el) => ({ id: `${(el as HTMLElement).dataset.containerName}@${(el as HTMLElement).dataset.network}`, ...rect(el) })),
        lanes: [...document.querySelectorAll('.lane')].map((el) => ({ id: (el as HTMLElement).dataset.networkName!, ...rect(el) })),
        heads: [...document.querySelectorAll('.lane-head')].map((el, i) => ({ id: `head${i}`, ...rect(el) })),
        cut: [...document.querySelectorAll('.chip .name, .chip .ip')].filter((el) => el.scrollWidth > el.clientWidth + 1).map((el) => el.textContent),
      };
    });
    await p.screenshot({ path: join(host.dir, 'ui-100.png'), fullPage: true });
    if (process.env.BERTH_UI_SHOTS) await fs.copyFile(join(host.dir, 'ui-100.png'), join(process.env.BERTH_UI_SHOTS, 'ui-100.png'));
    await ctx.close();
    const multi = raw.containers.filter((c) => Object.keys(c.NetworkSettings!.Networks!).length > 1).length;
    assert.equal(boxes.chips.length, 100 + multi, 'a card per endpoint');
    assert.deepEqual(seen.filter((u) => !u.startsWith(`${fake}/`) && !u.startsWith('data:')), []);
    const overlaps = (list: Array<{ id: string; x: number; y: number; w: number; h: number }>) => {
      const out: string[] = [];
      for (let i = 0; i < list.length; i++) {
        for (let j = i + 1; j < list.length; j++) {
          const a = list[i]!, b = list[j]!;
          if (a.x < b.x + b.w - 0.5 && b.x < a.x + a.w - 0.5 && a.y < b.y + b.h - 0.5 && b.y < a.y + a.h - 0.5) out.push(`${a.id} overlaps ${b.id}`);
        }
      }
      return out;
    };
    assert.ok(boxes.chips.every((c) => c.w >= 150 && c.h >= 40), 'cards have room for their text');
    assert.deepEqual(overlaps(boxes.chips), []);
    assert.deepEqual(overlaps(boxes.lanes), []);
    assert.deepEqual(overlaps([...boxes.heads, ...boxes.chips]), []);
    assert.deepEqual(boxes.cut, [], 'names and addresses fit their cards');
  });
});

describe('berth ui: address and model', () => {
  it('accepts loopback addresses only', () => {
    assert.deepEqual(parseUiAddr('127.0.0.1:0'), { host: '127.0.0.1', port: 0 });
    assert.deepEqual(parseUiAddr('127.8.9.10:8080'), { host: '127.8.9.10', port: 8080 });
    assert.deepEqual(parseUiAddr('localhost:9000'), { host: '127.0.0.1', port: 9000 });
    assert.deepEqual(parseUiAddr('[::1]:7'), { host: '::1', port: 7 });
    assert.deepEqual(parseUiAddr('[0:0:0:0:0:0:0:1]:7'), { host: '0:0:0:0:0:0:0:1', port: 7 });
    for (const bad of ['0.0.0.0:80', '[::]:80', '10.0.0.1:80', '[::2]:80', 'example.com:80', '128.0.0.1:80']) {
      assert.throws(() => parseUiAddr(bad), /refusing to serve on/, bad);
    }
    for (const bad of ['127.0.0.1', '127.0.0.1:70000', ':80', '']) assert.throws(() => parseUiAddr(bad), /expected HOST:PORT/, bad);
  });

  it('builds the page\'s model from the API\'s answers', () => {
    const id = (c: string) => c.repeat(64);
    const t = buildTopology({
      info: { Name: 'h1', ServerVersion: '0.1.0', Swarm: { LocalNodeState: 'active', NodeID: 'n2', ControlAvailable: true } },
      networks: [
        { Id: id('e'), Name: 'none', Driver: 'null', Scope: 'local' },
        { Id: id('d'), Name: 'zeta', Driver: 'overlay', Scope: 'swarm', Labels: { 'berth.policy.isolate': 'ingress', other: 'x' }, Peers: [{ Name: 'h2', IP: '192.168.9.2' }, { Name: 'h1', IP: '192.168.9.1' }] },
        { Id: id('b'), Name: 'bridge', Driver: 'bridge', Scope: 'local', IPAM: { Config: [{ Subnet: '172.17.0.0/16', Gateway: '172.17.0.1' }] } },
        { Id: id('c'), Name: 'alpha', Driver: 'bridge', Scope: 'local', Internal: true, IPAM: { Config: [{ Subnet: '10.1.0.0/24' }] } },
      ],
      containers: [
        { Id: id('1'), Names: ['/web'], Image: 'busybox', State: 'running', Ports: [{ IP: '::', PrivatePort: 80, PublicPort: 8080, Type: 'tcp' }, { PrivatePort: 53, Type: 'udp' }],
          Labels: { 'berth.policy.egress.dns': 'any', tier: 'web' }, HostConfig: { NetworkMode: 'zeta' },
          NetworkSettings: { Networks: { zeta: { NetworkID: id('d'), IPAddress: '10.0.9.5', IPPrefixLen: 24, Aliases: ['111111111111', 'www'] }, alpha: { NetworkID: id('c'), IPAddress: '10.1.0.2', IPPrefixLen: 24 } } } },
        { Id: id('2'), Names: ['/side'], State: 'running', HostConfig: { NetworkMode: `container:${id('1').slice(0, 12)}` }, NetworkSettings: { Networks: {} } },
      ],
      nodes: [
        { ID: 'n1', Description: { Hostname: 'h0' }, Spec: { Role: 'manager' }, Status: { State: 'ready', Addr: '192.168.9.9' }, ManagerStatus: { Leader: true } },
        { ID: 'n2', Description: { Hostname: 'h1' }, Spec: { Role: 'worker' }, Status: { State: 'down', Addr: '192.168.9.1' } },
      ],
      policy: [{ Id: id('1'), Name: 'web', Endpoints: [{ Network: 'zeta', NetworkID: id('d'),
        Ingress: { Isolated: true, IsolatedBy: ['network zeta: berth.policy.isolate'], Denied: 3, Rules: [] }, Egress: { Isolated: false, IsolatedBy: [], Denied: 1, Rules: [] } }] }],
    });
    assert.deepEqual(t.networks.map((n) => n.name), ['bridge', 'alpha', 'zeta', 'none'], 'the default bridge, user networks by name, then host and none');
    assert.deepEqual(t.networks[1]!.subnets, [{ subnet: '10.1.0.0/24', gateway: '' }]);
    assert.equal(t.networks[1]!.internal, true);
    assert.deepEqual(t.networks[2]!.policyLabels, { 'berth.policy.isolate': 'ingress' });
    assert.deepEqual(t.networks[2]!.peers.map((p) => p.name), ['h1', 'h2']);
    const [side, web] = t.containers;
    assert.equal(web!.name, 'web');
    assert.deepEqual(web!.ports, ['53/udp', '[::]:8080→80/tcp']);
    assert.deepEqual(web!.policyLabels, { 'berth.policy.egress.dns': 'any' });
    assert.deepEqual(web!.endpoints.map((e) => [e.network, e.ip, e.aliases, e.isolated, e.denied]), [
      ['alpha', '10.1.0.2', [], [], 0],
      ['zeta', '10.0.9.5', ['www'], ['ingress'], 4],
    ]);
    assert.equal(side!.sharesWith, 'web');
    assert.deepEqual(side!.endpoints, []);
    assert.deepEqual(t.hosts.map((h) => [h.hostname, h.role, h.state, h.leader, h.self]), [['h1', 'worker', 'down', false, true], ['h0', 'manager', 'ready', true, false]]);
    assert.equal(t.host.swarm, 'active');
  });
});

/** 100 containers on six networks as the Engine API would list them; every fifth also on a second network. */
function syntheticState(count: number): RawState {
  const nets: ApiNetwork[] = [
    { Id: 'n0'.padEnd(64, '0'), Name: 'bridge', Driver: 'bridge', Scope: 'local', IPAM: { Config: [{ Subnet: '172.17.0.0/16', Gateway: '172.17.0.1' }] } },
    ...['frontend', 'backend', 'payments-internal', 'monitoring'].map((name, i) => ({
      Id: `n${i + 1}`.padEnd(64, '0'), Name: name, Driver: 'bridge', Scope: 'local', Internal: name.endsWith('internal'),
      IPAM: { Config: [{ Subnet: `10.${i + 1}.0.0/24`, Gateway: `10.${i + 1}.0.1` }] },
    })),
    { Id: 'n5'.padEnd(64, '0'), Name: 'mesh', Driver: 'overlay', Scope: 'swarm', Attachable: true, IPAM: { Config: [{ Subnet: '10.0.9.0/24', Gateway: '10.0.9.1' }] }, Peers: [{ Name: 'node-a', IP: '192.168.50.2' }, { Name: 'node-b', IP: '192.168.50.3' }] },
    { Id: 'n6'.padEnd(64, '0'), Name: 'host', Driver: 'host', Scope: 'local' },
    { Id: 'n7'.padEnd(64, '0'), Name: 'none', Driver: 'null', Scope: 'local' },
  ];
  const roles = ['web', 'api', 'worker', 'cache', 'db', 'exporter'];
  const containers: ApiContainer[] = [];
  for (let i = 0; i < count; i++) {
    const n = nets[i % 6]!;
    const k = i % 6;
    const ip = (net: ApiNetwork, host: number) => net.IPAM!.Config![0]!.Subnet!.replace(/\.0\/\d+$/, `.${host}`).replace('172.17.0.', '172.17.1.');
    const networks: Record<string, object> = { [n.Name]: { NetworkID: n.Id, IPAddress: ip(n, 10 + i), IPPrefixLen: 24, Aliases: k === 2 ? [roles[i % roles.length]!] : null } };
    if (i % 5 === 0) {
      const second = nets[(i / 5) % 6 === k ? (k + 1) % 6 : (i / 5) % 6]!;
      networks[second.Name] = { NetworkID: second.Id, IPAddress: ip(second, 150 + (i % 100)), IPPrefixLen: 24, Aliases: null };
    }
    containers.push({
      Id: i.toString(16).padStart(4, '0').padEnd(64, 'a'), Names: [`/${roles[i % roles.length]}-${String(i).padStart(3, '0')}`], Image: i % 3 ? 'busybox' : 'registry.local/app:1.4',
      State: i % 17 === 0 ? 'exited' : 'running', Status: 'Up 3 minutes', Labels: {},
      Ports: i % 7 === 0 ? [{ IP: '0.0.0.0', PrivatePort: 80, PublicPort: 8000 + i, Type: 'tcp' }] : [],
      HostConfig: { NetworkMode: n.Name }, NetworkSettings: { Networks: networks },
    });
  }
  return { info: { Name: 'berth-host', ServerVersion: '0.1.0', Swarm: { LocalNodeState: 'inactive' } }, networks: nets, containers };
}
