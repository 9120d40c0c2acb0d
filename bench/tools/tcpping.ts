/**
 * TCP connect + one-byte echo latency: node tcpping.js HOST PORT COUNT. Prints a JSON array of
 * milliseconds (connect, write, read the echo, close), one per round, sequentially.
 */
import { connect } from 'node:net';

const [host = '127.0.0.1', portS = '7000', countS = '100'] = process.argv.slice(2);
const port = Number(portS);
const count = Number(countS);

function once(): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const s = connect({ host, port, noDelay: true });
    s.setTimeout(5000, () => s.destroy(new Error('timeout')));
    s.on('error', reject);
    s.once('connect', () => s.write('x'));
    s.once('data', () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      s.end();
      s.destroy();
      resolve(ms);
    });
  });
}

const out: number[] = [];
for (let i = 0; i < count + 5; i++) {
  const ms = await once();
  if (i >= 5) out.push(ms); // five warm-up rounds
}
process.stdout.write(JSON.stringify(out) + '\n');
