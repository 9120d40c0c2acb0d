import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerignore, scopedPath } from '../../src/builder/builder.js';
import { expand, parseDockerfile, parsePairs } from '../../src/builder/dockerfile.js';

describe('Dockerfile parsing', () => {
  it('joins continuations, drops comments, reads flags and exec form, keeps line numbers', () => {
    const ins = parseDockerfile('# syntax comment\nFROM busybox AS b\n\nRUN echo a \\\n# inside\n  && echo b\nCOPY --from=b --chown=1:2 /x /y\nCMD ["sh", "-c", "echo hi"]\nENTRYPOINT\n');
    assert.deepEqual(ins.map((i) => [i.cmd, i.line]), [['FROM', 2], ['RUN', 4], ['COPY', 7], ['CMD', 8], ['ENTRYPOINT', 9]]);
    assert.equal(ins[1]!.rest, 'echo a   && echo b');
    assert.deepEqual(ins[2]!.flags, { from: 'b', chown: '1:2' });
    assert.equal(ins[2]!.rest, '/x /y');
    assert.deepEqual(ins[3]!.json, ['sh', '-c', 'echo hi']);
  });
  it('reports unknown instructions and a missing FROM with Docker\'s words', () => {
    assert.throws(() => parseDockerfile('FROM a\nFROBNICATE x'), /dockerfile parse error line 2: unknown instruction: FROBNICATE/);
    assert.throws(() => parseDockerfile('RUN x'), /no FROM/);
    assert.throws(() => parseDockerfile('FROM a\nRUN'), /line 2: RUN requires at least one argument/);
  });
  it('expands variables as the builder does', () => {
    const v = { A: 'x', E: '' };
    assert.equal(expand('$A ${A} ${B:-def} ${A:-no} ${A:+alt} ${B:+alt} \\$A', v), 'x x def x alt  $A');
    assert.equal(expand("'$A' \"$A\"", v), "'$A' \"x\"");
    assert.equal(expand('${E:-empty}', v), 'empty');
  });
  it('reads KEY=VALUE pairs with quotes, and the legacy KEY VALUE form', () => {
    assert.deepEqual(parsePairs('a=1 b="two words" c=x\\ y', 1, 'ENV'), [['a', '1'], ['b', 'two words'], ['c', 'x y']]);
    assert.deepEqual(parsePairs('PATH /a b', 1, 'ENV'), [['PATH', '/a b']]);
  });
  it('.dockerignore patterns with exceptions', () => {
    const ig = dockerignore('# c\n*.log\nbuild\n!build/keep\nsecret/**/key\n');
    assert.ok(ig('x.log'));
    assert.ok(!ig('dir/x.log'), '* does not cross directories');
    assert.ok(ig('build') && ig('build/out.o'));
    assert.ok(!ig('build/keep'));
    assert.ok(ig('secret/a/b/key'));
    assert.ok(!ig('src/main.ts'));
  });
  it('resolves symlinks inside the root only', async () => {
    const root = await fs.mkdtemp(join(tmpdir(), 'berth-scoped-'));
    try {
      await fs.mkdir(join(root, 'run'));
      await fs.mkdir(join(root, 'var'));
      await fs.symlink('/run', join(root, 'var', 'run'));
      await fs.symlink('../../..', join(root, 'up'));
      await fs.symlink('/etc/passwd', join(root, 'pw'));
      assert.equal(await scopedPath(root, '/var/run/x'), join(root, 'run', 'x'));
      assert.equal(await scopedPath(root, 'up/etc/passwd'), join(root, 'etc', 'passwd'));
      assert.equal(await scopedPath(root, 'pw'), join(root, 'pw'), 'the last component is not followed');
      assert.equal(await scopedPath(root, '../../x'), join(root, 'x'));
      assert.equal(await scopedPath(root, 'pw', true), join(root, 'etc', 'passwd'), 'followed when asked, still inside');
    } finally {
      await fs.rm(root, { recursive: true, force: true });
    }
  });
});
