/** A TCP echo server, started inside a container's namespace by the bench: node echo.js PORT */
import { createServer } from 'node:net';

const port = Number(process.argv[2] ?? 7000);
createServer((s) => { s.on('error', () => undefined); s.pipe(s); }).listen(port, '0.0.0.0', () => process.stdout.write('ready\n'));
