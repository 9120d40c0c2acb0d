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
  it('-f names another Dockerfile, --target stops at a stage, --no-cache runs every step again, FROM scratch', async () => {
    const dir = join(host.dir, 'targets');
    await fs.mkdir(join(dir, 'build'), { recursive: true });
    await fs.writeFile(join(dir, 'note.txt'), 'note\n');
    await fs.writeFile(join(dir, 'build', 'Other.dockerfile'), [
      'FROM busybox AS first', 'RUN echo first > /stage', '',
      'FROM first AS second', 'RUN echo second > /stage', '',
      'FROM scratch', 'COPY --from=second /bin/busybox /busybox', 'COPY note.txt /', 'CMD ["/busybox", "cat", "/note.txt"]', '',
    ].join('\n'));
    const file = join(dir, 'build', 'Other.dockerfile');
    // -f: the file need not be called Dockerfile nor sit at the context's root (there is none there).
    await ok(['build', '-f', file, '-t', 'final:1', dir]);
    assert.equal(await ok(['run', '--rm', 'final:1']), 'note\n');
    const layers = JSON.parse(await ok(['image', 'inspect', '-f', '{{json .RootFS.Layers}}', 'final:1']));
    assert.equal(layers.length, 2, 'FROM scratch: only the two COPY layers');
    const missing = await host.berth(['build', '-t', 'x', dir]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /Dockerfile/);
    // --target: the stage's own image, no later steps.
    const out = await ok(['build', '-f', file, '--target', 'second', '-t', 'second:1', dir]);
    assert.doesNotMatch(out, /COPY note\.txt/);
    assert.equal(await ok(['run', '--rm', 'second:1', 'cat', '/stage']), 'second\n');
    const bad = await host.berth(['build', '-f', file, '--target', 'nosuch', dir]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /failed to reach build target nosuch in Dockerfile/);
    // The cache answers the same build; --no-cache runs RUN again and makes new images.
    const cached = await ok(['build', '-f', file, '--target', 'second', dir]);
    assert.match(cached, /Using cache/);
    assert.doesNotMatch(cached, /Running in/);
    const fresh = await ok(['build', '--no-cache', '-f', file, '--target', 'second', '-t', 'second:2', dir]);
    assert.doesNotMatch(fresh, /Using cache/);
    assert.equal(fresh.match(/Running in/g)?.length, 2);
    const idOf = async (ref: string) => (await ok(['image', 'inspect', '-f', '{{.Id}}', ref])).trim();
    assert.notEqual(await idOf('second:2'), await idOf('second:1'));
  });

  it('rmi: Docker\'s conflicts (a container, child images, several tags), -f, tag against id, and the untagged parents that go with an image', async () => {
    const dir = join(host.dir, 'rmictx');
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(join(dir, 'Dockerfile'), 'FROM busybox\nRUN echo a > /a\nRUN echo b > /b\n');
    await ok(['build', '-t', 'rmi-me:1', dir]);
    const api = (m: string, p: string) => host.api(m, p);
    const id = (await api('GET', '/images/rmi-me:1/json')).json.Id as string;
    const short = id.slice(7, 19);
    const parent = (await api('GET', '/images/rmi-me:1/json')).json.Parent as string;
    assert.match(parent, /^sha256:/, 'a built image records its parent');
    // A tag that is the image's last, while a stopped container uses it.
    const c = (await host.api('POST', '/containers/create?name=rmi-user', { Image: 'rmi-me:1', Cmd: ['sleep', '300'] })).json.Id as string;
    let r = await api('DELETE', '/images/rmi-me:1');
    assert.equal(r.status, 409);
    assert.equal(r.json.message, `conflict: unable to remove repository reference "rmi-me:1" (must force) - container ${c.slice(0, 12)} is using its referenced image ${short}`);
    // By id: the stopped container is a conflict -f overrides ...
    r = await api('DELETE', `/images/${short}`);
    assert.equal(r.status, 409);
    assert.equal(r.json.message, `conflict: unable to delete ${short} (must be forced) - image is being used by stopped container ${c.slice(0, 12)}`);
    // ... a running one is not.
    assert.equal((await api('POST', `/containers/${c}/start`)).status, 204);
    r = await api('DELETE', `/images/${short}?force=1`);
    assert.equal(r.status, 409);
    assert.equal(r.json.message, `conflict: unable to delete ${short} (cannot be forced) - image is being used by running container ${c.slice(0, 12)}`);
    // Two tags: by id that needs -f; by tag only that tag goes.
    assert.equal((await api('POST', '/images/rmi-me:1/tag?repo=rmi-too&tag=2')).status, 201);
    assert.equal((await api('DELETE', `/containers/${c}?force=1`)).status, 204);
    r = await api('DELETE', `/images/${short}`);
    assert.equal(r.status, 409);
    assert.equal(r.json.message, `conflict: unable to delete ${short} (must be forced) - image is referenced in multiple repositories`);
    r = await api('DELETE', '/images/rmi-too:2');
    assert.deepEqual(r.json, [{ Untagged: 'rmi-too:2' }]);
    // A parent with children cannot go by id, even with -f.
    r = await api('DELETE', `/images/${parent}?force=1`);
    assert.equal(r.status, 409);
    assert.equal(r.json.message, `conflict: unable to delete ${parent.slice(7, 19)} (cannot be forced) - image has dependent child images`);
    // The last tag of an unused image: the image goes, and so do its untagged parents, but not busybox
    // (tagged) nor its layers.
    r = await api('DELETE', '/images/rmi-me:1');
    assert.equal(r.status, 200, r.body);
    const deleted = (r.json as Array<{ Untagged?: string; Deleted?: string }>).filter((x) => x.Deleted?.startsWith('sha256:')).map((x) => x.Deleted);
    assert.deepEqual(r.json[0], { Untagged: 'rmi-me:1' });
    assert.ok(deleted.includes(id) && deleted.includes(parent), r.body);
    assert.equal((await api('GET', `/images/${parent}/json`)).status, 404, 'the untagged parent went with it');
    assert.equal((await api('GET', '/images/busybox/json')).status, 200);
    // --no-prune keeps the parents.
    await ok(['build', '--no-cache', '-t', 'rmi-me:2', dir]);
    const parent2 = (await api('GET', '/images/rmi-me:2/json')).json.Parent as string;
    r = await api('DELETE', '/images/rmi-me:2?noprune=1');
    assert.equal(r.status, 200);
    assert.equal((await api('GET', `/images/${parent2}/json`)).status, 200, '--no-prune keeps the parent');
    // A tagged base with children: rmi by tag only untags it (the image stays for its children).
    await ok(['build', '-t', 'rmi-child:1', dir]);
    assert.equal((await api('POST', '/images/busybox/tag?repo=rmi-base&tag=1')).status, 201);
    await fs.writeFile(join(dir, 'Dockerfile'), 'FROM rmi-base:1\nRUN echo c > /c\n');
    await ok(['build', '-t', 'rmi-child:2', dir]);
    const base = (await api('GET', '/images/rmi-base:1/json')).json.Id as string;
    assert.equal((await api('DELETE', '/images/busybox:latest')).status, 200);
    r = await api('DELETE', '/images/rmi-base:1');
    assert.deepEqual(r.json, [{ Untagged: 'rmi-base:1' }]);
    assert.equal((await api('GET', `/images/${base}/json`)).status, 200, 'kept for its children');
    assert.equal((await api('POST', `/images/${base}/tag?repo=busybox&tag=latest`)).status, 201);
    for (const t of ['rmi-child:1', 'rmi-child:2', parent2]) await api('DELETE', `/images/${t}?force=1`);
  });
});
