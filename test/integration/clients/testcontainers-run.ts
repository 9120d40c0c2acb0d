/**
 * Runs testcontainers for Node against berthd as a user's test suite would, and prints what it saw
 * as one JSON line. The caller starts it inside the test host's network namespace (published ports
 * and container addresses live there) with DOCKER_HOST pointing at the test host's socket and
 * TESTCONTAINERS_RYUK_DISABLED=true: the reaper needs the testcontainers/ryuk image, which cannot be
 * pulled on these machines.
 */
import { GenericContainer, Network, Wait } from 'testcontainers';
import { request } from 'node:http';

function get(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: '/', timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d.toString(); });
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const HTTPD = 'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && httpd -p 80 -h /www && echo "server ready" && exec sleep 3600';

const out: Record<string, unknown> = {};
const web = await new GenericContainer('busybox:latest')
  .withCommand(['sh', '-c', HTTPD])
  .withExposedPorts(80)
  .withLabels({ suite: 'testcontainers' })
  .withWaitStrategy(Wait.forLogMessage('server ready'))
  .start();
try {
  out.host = web.getHost();
  out.port = web.getMappedPort(80);
  out.page = await get(web.getHost(), web.getMappedPort(80));
  out.name = web.getName();
  const ex = await web.exec(['sh', '-c', 'echo exec-out; exit 2']);
  out.exec = { output: ex.output, exitCode: ex.exitCode };
} finally {
  await web.stop({ timeout: 1 });
}

const checked = await new GenericContainer('busybox:latest')
  .withCommand(['sh', '-c', 'sleep 1; touch /tmp/ok; exec sleep 300'])
  .withHealthCheck({ test: ['CMD-SHELL', 'test -f /tmp/ok'], interval: 300, timeout: 1000, retries: 20 })
  .withWaitStrategy(Wait.forHealthCheck())
  .start();
try {
  const inspect = await checked.exec(['true']);
  out.healthWaited = inspect.exitCode === 0;
} finally {
  await checked.stop({ timeout: 1 });
}

const network = await new Network().start();
try {
  const server = await new GenericContainer('busybox:latest')
    .withCommand(['sh', '-c', HTTPD])
    .withNetwork(network)
    .withNetworkAliases('server')
    .withWaitStrategy(Wait.forLogMessage('server ready'))
    .start();
  try {
    const client = await new GenericContainer('busybox:latest')
      .withCommand(['sleep', '300'])
      .withNetwork(network)
      .start();
    try {
      const r = await client.exec(['wget', '-qO-', 'http://server/']);
      out.byAlias = r.output;
      out.serverIp = server.getIpAddress(network.getName());
    } finally {
      await client.stop({ timeout: 1 });
    }
  } finally {
    await server.stop({ timeout: 1 });
  }
} finally {
  await network.stop();
}
process.stdout.write(JSON.stringify(out) + '\n');
