// berth ui: draws the topology `berth ui` streams (one whole document per change) as network lanes
// with container cards, and a side panel with a container's inspect digest. Plain DOM, no framework;
// every text goes in through textContent, never as HTML.
'use strict';

const token = new URLSearchParams(location.search).get('token') || '';
const withToken = (path) => `${path}?token=${encodeURIComponent(token)}`;

let topo = null;
let daemon = { connected: false };
let streamUp = false;
let selected = null;
let filter = '';
let hovered = null;

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'style') el.style.cssText = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

/** A stable colour per container, for its cards and the lines joining them across networks. */
function accent(id) {
  let x = 0;
  for (const ch of id.slice(0, 12)) x = (x * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${x % 360} 70% 42%)`;
}

function plural(n, word) { return `${n} ${word}${n === 1 ? '' : 's'}`; }

// ---- live feed -------------------------------------------------------------------------------
const events = new EventSource(withToken('/api/events'));
events.addEventListener('topology', (e) => {
  const m = JSON.parse(e.data);
  daemon = m.status || { connected: false };
  if (m.topology) topo = m.topology;
  render();
});
events.onopen = () => { streamUp = true; renderStatus(); };
events.onerror = () => { streamUp = false; renderStatus(); };

function renderStatus() {
  const s = document.getElementById('status');
  let state = 'live';
  let text = 'live';
  if (!streamUp) { state = 'lost'; text = 'reconnecting to berth ui…'; }
  else if (!daemon.connected) { state = 'lost'; text = `daemon unreachable${daemon.error ? `: ${daemon.error}` : ''}`; }
  s.dataset.state = state;
  s.textContent = text;
  s.title = text;
}

// ---- rendering -------------------------------------------------------------------------------
function render() {
  renderStatus();
  if (!topo) return;
  const running = topo.containers.filter((c) => c.state === 'running').length;
  document.getElementById('hostline').textContent =
    `${topo.host.name} · berth ${topo.host.version} · ${plural(topo.containers.length, 'container')} (${running} running) · ${plural(topo.networks.length, 'network')}` +
    (topo.host.swarm === 'active' ? ` · swarm of ${plural(topo.hosts.length, 'host')}` : '');
  renderHosts();
  renderLanes();
  applyFilter();
  drawLinks();
  // The cards were replaced under the pointer: the one it was over stays highlighted.
  if (hovered && document.querySelector(`.chip[data-container-id="${CSS.escape(hovered)}"]`)) highlight(hovered, true);
  else highlight('', false);
  if (selected) refreshDetails();
}

function renderHosts() {
  const box = document.getElementById('hosts');
  box.replaceChildren(...topo.hosts.map((n) => h('div', { class: `host${n.self ? ' self' : ''}`, data: { hostId: n.id, hostname: n.hostname } },
    h('div', { class: 'hn' }, n.hostname || '(this host)', n.self ? ' (this host)' : ''),
    h('div', { class: 'hm' },
      [n.role && `${n.role}${n.leader ? ' ★ leader' : ''}`, n.addr, n.availability && n.availability !== 'active' ? n.availability : ''].filter(Boolean).join(' · ') || 'standalone'),
    n.state && n.state !== 'ready' ? h('div', { class: 'hm down' }, n.state) : null)));
}

function chip(c, ep) {
  const multi = c.endpoints.length > 1;
  const isolated = ep ? ep.isolated : [];
  const title = multi ? `on ${c.endpoints.map((e) => e.network).join(', ')}` : '';
  return h('div', {
    class: `chip ${c.state}${multi ? ' multi' : ''}${selected === c.id ? ' selected' : ''}`,
    style: `--accent:${accent(c.id)}`,
    data: { containerId: c.id, containerName: c.name, network: ep ? ep.network : '' },
    tabindex: '0', role: 'button', title: `${c.name} · ${c.image} · ${c.status}`,
    onclick: () => select(c.id), onkeydown: (e) => { if (e.key === 'Enter') select(c.id); },
    onmouseenter: () => highlight(c.id, true), onmouseleave: () => highlight(c.id, false),
  },
  h('div', { class: 'name' }, c.name),
  h('div', { class: 'ip' }, ep && ep.ip ? `${ep.ip}/${ep.prefix}` : ep && ep.network === 'host' ? 'host network' : c.sharesWith ? `shares ${c.sharesWith}` : c.state === 'running' ? 'no address' : c.state),
  ep && ep.ip6 ? h('div', { class: 'ip' }, ep.ip6) : null,
  ep && ep.aliases.length ? h('div', { class: 'sub aliases' }, `aka ${ep.aliases.join(', ')}`) : null,
  h('div', { class: 'sub image' }, c.image),
  h('div', { class: 'tags' },
    multi ? h('span', { class: 'tag bridging', title }, `⇄ ${c.endpoints.length} networks`) : null,
    c.task ? h('span', { class: 'tag task', title: `a task of service ${c.task.service}` }, `task ${c.task.name}`) : null,
    isolated.length ? h('span', { class: 'tag shield', title: `default-deny ${isolated.join(' and ')} (berth.policy labels)` }, `policy: ${isolated.join('+')}`) : null,
    c.ports.map((p) => h('span', { class: 'tag port' }, p))));
}

function renderLanes() {
  const lanes = topo.networks.map((n) => {
    const members = topo.containers.flatMap((c) => c.endpoints.filter((e) => e.networkId === n.id).map((e) => ({ c, e })));
    return h('section', {
      class: `lane d-${n.driver} n-${n.name.replace(/[^\w-]/g, '_')}${n.builtin ? ' builtin' : ''}${n.internal ? ' internal' : ''}${n.builtin && !n.subnets.length && !members.length ? ' compact' : ''}`,
      data: { networkId: n.id, networkName: n.name },
    },
    h('div', { class: 'lane-head' },
      h('h2', {}, n.name),
      h('div', { class: 'badges' },
        h('span', { class: 'badge driver' }, n.driver),
        h('span', { class: 'badge scope' }, n.scope),
        n.internal ? h('span', { class: 'badge internal', title: 'no traffic in or out of this network' }, 'internal') : null,
        n.attachable ? h('span', { class: 'badge' }, 'attachable') : null,
        n.ingress ? h('span', { class: 'badge' }, 'ingress') : null,
        n.ipv6 ? h('span', { class: 'badge' }, 'IPv6') : null,
        Object.keys(n.policyLabels).length ? h('span', { class: 'badge policy' }, 'policy') : null,
        h('span', { class: 'badge count' }, plural(members.length, 'container'))),
      n.subnets.map((s) => h('div', { class: 'subnet' }, s.subnet, s.gateway ? h('span', { class: 'gw' }, ` gw ${s.gateway}`) : null)),
      Object.entries(n.policyLabels).map(([k, v]) => h('div', { class: 'plabel' }, `${k.replace(/^berth\.policy\./, '')}=${v}`)),
      n.peers.length ? h('div', { class: 'peers' }, `spans ${plural(n.peers.length, 'host')}: `, n.peers.map((p) => h('span', { title: p.ip }, p.name))) : null,
      (topo.services || []).filter((s) => s.networks.some((x) => x.networkId === n.id) || (n.ingress && s.ports.some((p) => p.endsWith('(ingress)')))).map((s) => {
        const vip = (s.networks.find((x) => x.networkId === n.id) || {}).vip;
        return h('div', { class: 'svc', data: { service: s.name }, title: `service ${s.name} (${s.mode})` },
          h('span', { class: 'svc-name' }, `⚙ ${s.name}`), ' ',
          [vip && `VIP ${vip}`, `${s.running}/${s.mode === 'global' ? s.running : s.replicas} running`, ...(n.ingress || !vip ? s.ports : [])].filter(Boolean).join(' · '));
      })),
    h('div', { class: 'lane-body' },
      members.length ? members.map(({ c, e }) => chip(c, e)) : h('div', { class: 'empty' }, 'no containers')));
  });
  const loose = topo.containers.filter((c) => c.endpoints.length === 0);
  if (loose.length) {
    lanes.push(h('section', { class: 'lane builtin d-none', data: { networkName: '' } },
      h('div', { class: 'lane-head' }, h('h2', {}, 'shared namespaces'), h('div', { class: 'subnet' }, 'containers in another container\'s network namespace, or not attached')),
      h('div', { class: 'lane-body' }, loose.map((c) => chip(c, null)))));
  }
  document.getElementById('lanes').replaceChildren(...lanes);
}

/** Cards of one container in several networks are joined by a line: the container bridges them. */
function drawLinks() {
  const svg = document.getElementById('links');
  const stage = document.getElementById('stage').getBoundingClientRect();
  const NS = 'http://www.w3.org/2000/svg';
  const paths = [];
  const groups = new Map();
  for (const el of document.querySelectorAll('.chip.multi')) {
    const id = el.dataset.containerId;
    if (!groups.has(id)) groups.set(id, []);
    groups.get(id).push(el);
  }
  for (const [id, els] of groups) {
    for (let i = 1; i < els.length; i++) {
      const a = els[i - 1].getBoundingClientRect();
      const b = els[i].getBoundingClientRect();
      const x1 = a.left + a.width / 2 - stage.left;
      const y1 = a.bottom - stage.top;
      const x2 = b.left + b.width / 2 - stage.left;
      const y2 = b.top - stage.top;
      const bend = Math.max(30, Math.abs(y2 - y1) / 2);
      const p = document.createElementNS(NS, 'path');
      p.setAttribute('d', `M${x1},${y1} C${x1},${y1 + bend} ${x2},${y2 - bend} ${x2},${y2}`);
      p.setAttribute('stroke', accent(id));
      p.dataset.containerId = id;
      paths.push(p);
    }
  }
  svg.replaceChildren(...paths);
}

function highlight(id, on) {
  hovered = on ? id : null;
  document.body.classList.toggle('hovering', on);
  for (const el of document.querySelectorAll(`[data-container-id="${CSS.escape(id)}"]`)) el.classList.toggle('hl', on);
}

function applyFilter() {
  const f = filter.trim().toLowerCase();
  for (const el of document.querySelectorAll('.chip')) {
    el.classList.toggle('dim', !!f && !el.textContent.toLowerCase().includes(f));
  }
}

// ---- details panel ---------------------------------------------------------------------------
let detailsSeq = 0;

function select(id) {
  selected = id;
  for (const el of document.querySelectorAll('.chip')) el.classList.toggle('selected', el.dataset.containerId === id);
  document.getElementById('drawer').hidden = false;
  document.getElementById('details').replaceChildren(h('p', { class: 'loading' }, 'loading…'));
  refreshDetails();
}

function closeDetails() {
  selected = null;
  document.getElementById('drawer').hidden = true;
  for (const el of document.querySelectorAll('.chip.selected')) el.classList.remove('selected');
}

async function refreshDetails() {
  const id = selected;
  const seq = ++detailsSeq;
  let body;
  try {
    const res = await fetch(withToken(`/api/containers/${encodeURIComponent(id)}`));
    body = await res.json();
    if (!res.ok) throw new Error(body.message || `HTTP ${res.status}`);
  } catch (e) {
    if (seq !== detailsSeq || selected !== id) return;
    const d = document.getElementById('details');
    const gone = d.querySelector('h3');
    d.replaceChildren(gone || h('h3', {}, id.slice(0, 12)), h('p', { class: 'gone', data: { field: 'gone' } }, `removed: ${e.message}`));
    return;
  }
  if (seq !== detailsSeq || selected !== id) return;
  document.getElementById('details').replaceChildren(...details(body));
}

function field(key, label, value) {
  if (value === undefined || value === null || value === '') return null;
  return [h('dt', {}, label), h('dd', { data: { field: key } }, String(value))];
}

function when(t) {
  return !t || t.startsWith('0001-') ? '' : new Date(t).toLocaleString();
}

function details(s) {
  const out = [
    h('h3', { data: { field: 'name' } }, s.name),
    h('div', { class: 'sub' }, s.id.slice(0, 12)),
    h('h4', {}, 'Container'),
    h('dl', {},
      field('id', 'ID', s.id),
      field('image', 'Image', s.image),
      field('state', 'State', s.state + (s.state === 'exited' ? ` (${s.exitCode})` : '')),
      field('pid', 'PID', s.running ? s.pid : ''),
      field('started', 'Started', when(s.startedAt)),
      field('finished', 'Finished', s.running ? '' : when(s.finishedAt)),
      field('command', 'Command', s.command),
      field('hostname', 'Hostname', s.hostname),
      field('networkMode', 'Network mode', s.networkMode),
      field('restart', 'Restart', s.restartPolicy)),
    h('h4', {}, 'Networks'),
  ];
  if (!s.endpoints.length) out.push(h('p', { class: 'sub' }, 'no endpoints'));
  for (const e of s.endpoints) {
    out.push(h('div', { class: 'ep', data: { network: e.network } },
      h('div', { class: 'ep-name' }, e.network),
      h('dl', {},
        field('ip', 'IPv4', e.ip ? `${e.ip}/${e.prefix}` : ''),
        field('gateway', 'Gateway', e.gateway),
        field('ip6', 'IPv6', e.ip6),
        field('mac', 'MAC', e.mac),
        field('aliases', 'Aliases', e.aliases.join(', ')),
        field('endpoint', 'Endpoint', e.endpointId.slice(0, 12)))));
  }
  if (s.ports.length) out.push(h('h4', {}, 'Ports'), h('dl', {}, field('ports', 'Published', s.ports.join('\n'))));
  if (s.policy.length) {
    out.push(h('h4', {}, 'Policy'));
    for (const p of s.policy) {
      const dir = (label, d) => field(`policy-${label.toLowerCase()}`, label, d.Isolated
        ? `isolated by ${d.IsolatedBy.join(', ')}; ${d.Denied} denied; ${d.Rules.length ? d.Rules.map((r) => `${r.Peer} on ${r.Ports} (${r.Label})`).join('; ') : 'nothing allowed'}`
        : 'open');
      out.push(h('div', { class: 'ep pol', data: { network: p.Network } }, h('div', { class: 'ep-name' }, p.Network), h('dl', {}, dir('Ingress', p.Ingress), dir('Egress', p.Egress))));
    }
  }
  const labels = Object.entries(s.labels);
  if (labels.length) out.push(h('h4', {}, 'Labels'), h('dl', {}, labels.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
  if (s.mounts.length) out.push(h('h4', {}, 'Mounts'), h('dl', {}, s.mounts.map((m) => [h('dt', {}, m.type), h('dd', {}, `${m.source} → ${m.destination}${m.rw ? '' : ' (ro)'}`)])));
  return out;
}

// ---- wiring ----------------------------------------------------------------------------------
document.getElementById('close').addEventListener('click', closeDetails);
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeDetails(); });
document.getElementById('filter').addEventListener('input', (e) => { filter = e.target.value; applyFilter(); });
let resizeTimer;
window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawLinks, 60); });
