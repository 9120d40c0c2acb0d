import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TestHost, DOCKER_CLI } from './harness.js';
import { run } from '../../src/util/exec.js';

const MULTI = `# a multi-stage build
ARG BASE=busybox
FROM \${BASE} AS builder
WORKDIR /work
COPY greeting.txt ./
RUN echo "built by $(cat greeting.txt)" > result.txt \\
 && mkdir -p /out && cp result.txt /out/
ARG FLAVOUR=plain
RUN echo "$FLAVOUR" > /out/flavour

FROM busybox
LABEL org.example.role=test other="two words"
ENV APP_HOME=/app
WORKDIR $APP_HOME
COPY --from=builder /out/ ./
COPY dir/ sub/
COPY --chown=nobody:nogroup greeting.txt /owned/by-name
COPY --chown=7:8 greeting.txt /owned/by-id
RUN mkdir -p /tmp/gone && touch /tmp/gone/a /tmp/kept
RUN rm -r /tmp/gone
EXPOSE 8080
ENTRYPOINT ["cat"]
CMD ["result.txt"]
`;

describe('build (classic builder)', () => {
  let host: TestHost;
  let ctxDir: string;
  before(async () => {
    host = await TestHost.create();
    ctxDir = join(host.dir, 'ctx');
    await fs.mkdir(join(ctxDir, 'dir'), { recursive: true });
    await fs.writeFile(join(ctxDir, 'Dockerfile'), MULTI);
    await fs.writeFile(join(ctxDir, 'greeting.txt'), 'hello');
    await fs.writeFile(join(ctxDir, 'dir', 'kept.txt'), 'kept\n');
    await fs.writeFile(join(ctxDir, 'dir', 'secret.txt'), 'secret\n');
    await fs.writeFile(join(ctxDir, '.dockerignore'), '# not sent\ndir/secret.txt\n');
  });
  after(async () => {
    const leaks = await host.destroy();
    assert.deepEqual(leaks, []);
  });

  async function ok(args: string[]): Promise<string> {
    const r = await host.berth(args);
    assert.equal(r.code, 0, `berth ${args.join(' ')}: ${r.stdout}${r.stderr}`);
    return r.stdout;
  }

  it('a multi-stage Dockerfile: files made by RUN in one stage end up in the final image', async () => {
    const out = await ok(['build', '-t', 'app:1', '--build-arg', 'FLAVOUR=spicy', ctxDir]);
    assert.match(out, /^Step 1\/20 : ARG BASE=busybox\nStep 2\/20 : FROM \$\{BASE\} AS builder\n/);
    assert.match(out, / ---> Running in [0-9a-f]{12}\n/);
    assert.match(out, /Successfully built [0-9a-f]{12}\nSuccessfully tagged app:1\n$/);
    assert.equal(await ok(['run', '--rm', 'app:1']), 'built by hello\n');
    const look = await ok(['run', '--rm', '--entrypoint', 'sh', 'app:1', '-c', 'pwd; cat flavour; ls sub; ls /tmp; echo $APP_HOME; stat -c %u:%g /owned/by-name /owned/by-id']);
    assert.equal(look, '/app\nspicy\nkept.txt\nkept\n/app\n65534:65534\n7:8\n', 'ARG reached RUN, .dockerignore applied, a deletion in a later RUN hides the file, --chown by name and id');
    const cfg = JSON.parse(await ok(['image', 'inspect', '-f', '{{json .Config}}', 'app:1']));
    assert.deepEqual(cfg.Entrypoint, ['cat']);
    assert.deepEqual(cfg.Cmd, ['result.txt']);
    assert.equal(cfg.WorkingDir, '/app');
    assert.deepEqual(cfg.Labels, { 'org.example.role': 'test', other: 'two words' });
    assert.deepEqual(cfg.ExposedPorts, { '8080/tcp': {} });
    assert.ok(cfg.Env.includes('APP_HOME=/app'));
    // intermediate images are hidden from `images`; the builder stage's last image stays dangling, as with Docker's classic builder
    assert.deepEqual((await ok(['images', '--format', '{{.Repository}}:{{.Tag}}'])).trim().split('\n').sort(), ['<none>:<none>', 'app:1', 'busybox:latest']);

    // again: every step from the cache, the same image
    const id = (await ok(['image', 'inspect', '-f', '{{.Id}}', 'app:1'])).trim();
    const again = await ok(['build', '-q', '-t', 'app:2', '--build-arg', 'FLAVOUR=spicy', ctxDir]);
    assert.equal(again.trim(), id);
    const verbose = await ok(['build', '-t', 'app:2', '--build-arg', 'FLAVOUR=spicy', ctxDir]);
    assert.doesNotMatch(verbose, /Running in/);
    assert.equal(verbose.match(/Using cache/g)?.length, 17);
    // a changed build arg reruns from the step that uses it
    const changed = await ok(['build', '-t', 'app:3', '--build-arg', 'FLAVOUR=mild', ctxDir]);
    assert.match(changed, /Step 7\/20 : RUN echo "\$FLAVOUR" > \/out\/flavour\n ---> Running in/);
    assert.equal(await ok(['run', '--rm', 'app:3', 'flavour']), 'mild\n');
  });

  it('the docker CLI (DOCKER_BUILDKIT=0) builds through POST /build', async () => {
    const r = await run(DOCKER_CLI, ['-H', `unix://${host.socket}`, 'build', '-t', 'viadocker', '--build-arg', 'FLAVOUR=spicy', ctxDir], {
      env: { ...process.env, DOCKER_BUILDKIT: '0', DOCKER_CONFIG: join(host.dir, 'docker-config') },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Successfully tagged viadocker:latest/);
    assert.equal(await ok(['run', '--rm', 'viadocker']), 'built by hello\n');
  });

  it('ADD unpacks a local tar archive; SHELL changes the shell form', async () => {
    const dir = join(host.dir, 'addctx');
    await fs.mkdir(join(dir, 'payload', 'x'), { recursive: true });
    await fs.writeFile(join(dir, 'payload', 'x', 'y.txt'), 'inside\n');
    await run('tar', ['-czf', join(dir, 'bundle.tar.gz'), '--owner=1234', '--group=99', '--numeric-owner', '-C', join(dir, 'payload'), '.']);
    await fs.rm(join(dir, 'payload'), { recursive: true });
    await fs.writeFile(join(dir, 'Dockerfile'), 'FROM busybox\nADD bundle.tar.gz /bundle/\nSHELL ["/bin/sh", "-ec"]\nRUN echo "$0 $-" > /shell-was\n');
    await ok(['build', '-t', 'added', dir]);
    assert.match(await ok(['run', '--rm', 'added', 'sh', '-c', 'cat /bundle/x/y.txt; stat -c %u:%g /bundle/x/y.txt; cat /shell-was']), /^inside\n1234:99\n\/bin\/sh \w*e\w*\n$/, 'the RUN shell had -e');

    // ONBUILD triggers run when another build starts FROM the image; HEALTHCHECK is recorded
    await fs.writeFile(join(dir, 'Dockerfile'), 'FROM busybox\nONBUILD RUN echo triggered > /trigger\nHEALTHCHECK --interval=5s --retries=2 CMD ["true"]\n');
    await ok(['build', '-t', 'onbuild-base', dir]);
    const hc = JSON.parse(await ok(['image', 'inspect', '-f', '{{json .Config.Healthcheck}}', 'onbuild-base']));
    assert.deepEqual(hc, { Test: ['CMD', 'true'], Interval: 5e9, Retries: 2 });
    await fs.writeFile(join(dir, 'Dockerfile'), 'FROM onbuild-base\nCMD ["cat", "/trigger"]\n');
    const child = await ok(['build', '-t', 'onbuild-child', dir]);
    assert.match(child, /# Executing 1 build trigger\n/);
    assert.equal(await ok(['run', '--rm', 'onbuild-child']), 'triggered\n');
  });

  it('a failing RUN reports its output and exit code; a syntax error its line', async () => {
    const bad = join(host.dir, 'bad');
    await fs.mkdir(bad, { recursive: true });
    await fs.writeFile(join(bad, 'Dockerfile'), 'FROM busybox\nRUN echo oops && exit 3\n');
    const r = await host.berth(['build', bad]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /oops\n/);
    assert.match(r.stderr, /The command '\/bin\/sh -c echo oops && exit 3' returned a non-zero code: 3/);
    assert.equal((await ok(['ps', '-aq'])), '', 'the step container is removed');
    // a symlink in the context resolves inside the context, never to the host's files
    await fs.symlink('/etc', join(bad, 'hostetc'));
    await fs.writeFile(join(bad, 'Dockerfile'), 'FROM busybox\nCOPY hostetc/passwd /leak\n');
    const escape = await host.berth(['build', bad]);
    assert.equal(escape.code, 1);
    assert.match(escape.stderr, /file not found in build context/);
    await fs.writeFile(join(bad, 'Dockerfile'), 'FROM busybox\n\nFROBNICATE x\n');
    const syntax = await host.berth(['build', bad]);
    assert.equal(syntax.code, 1);
    assert.match(syntax.stderr, /dockerfile parse error line 3: unknown instruction: FROBNICATE/);
  });
});
