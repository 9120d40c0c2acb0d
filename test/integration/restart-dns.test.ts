import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { lookup, TestHost, waitFor } from './harness.js';

/**
 * Found by the chaos run (seed 7, cycle 5): a container restarted by its restart policy, or by
 * `docker restart`, no longer answered by name or alias. Its endpoints are recorded before it is
 * marked running, and the DNS view skipped containers that were 'exited' at that moment.
 */
describe('a restarted container answers by name again', () => {
  let host: TestHost;
  let asker: string;

  before(async () => {
    host = await TestHost.create({ outside: true });
    assert.equal((await host.api('POST', '/networks/create', { Name: 'rd', IPAM: { Config: [{ Subnet: '10.86.0.0/24' }] } })).status, 201);
    asker = await host.runDetached({ Cmd: ['sleep', '600'], HostConfig: { NetworkMode: 'rd' } }, 'asker');
  });
  after(async () => {
    assert.deepEqual(await host.destroy(), []);
  });

  async function answers(name: string, id: string): Promise<void> {
    const ip = (await host.api('GET', `/containers/${id}/json`)).json.NetworkSettings.Networks.rd.IPAddress as string;
    const r = await lookup(host, asker, name);
    assert.equal(r.rcode, 'NOERROR', r.out);
    assert.deepEqual(r.addrs, [ip]);
  }

  it('after its restart policy restarted it (process killed)', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '600'], HostConfig: { NetworkMode: 'rd', RestartPolicy: { Name: 'always' } }, NetworkingConfig: { EndpointsConfig: { rd: { Aliases: ['pol-alias'] } } } }, 'pol');
    await answers('pol', id);
    const pid = (await host.api('GET', `/containers/${id}/json`)).json.State.Pid as number;
    process.kill(pid, 'SIGKILL');
    // As Docker, the back-off shows Running and Restarting both true with Pid 0: the restart is
    // done only when a new process runs.
    await waitFor(async () => { const s = (await host.api('GET', `/containers/${id}/json`)).json.State; return s.Running && !s.Restarting && s.Pid > 0 && s.Pid !== pid; }, 'the policy restart');
    await answers('pol', id);
    await answers('pol-alias', id);
  });

  it('after POST /containers/ID/restart and after stop and start', async () => {
    const id = await host.runDetached({ Cmd: ['sleep', '600'], HostConfig: { NetworkMode: 'rd' } }, 'rs');
    assert.equal((await host.api('POST', `/containers/${id}/restart?t=0`)).status, 204);
    await answers('rs', id);
    assert.equal((await host.api('POST', `/containers/${id}/stop?t=0`)).status, 204);
    assert.equal((await host.api('POST', `/containers/${id}/start`)).status, 204);
    await answers('rs', id);
  });
});
