import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeRegistryAuth, encodeRegistryAuth, parseChallenge } from '../../src/images/registry/auth.js';
import { isInsecure } from '../../src/images/registry/client.js';
import { bar } from '../../src/images/registry/progress.js';
import { endpointHost, joinFromImage, parseRemote } from '../../src/images/registry/reference.js';
import { parsePlatform } from '../../src/images/registry/service.js';

describe('registry references', () => {
  it('normalises names as Docker does', () => {
    assert.deepEqual(parseRemote('nginx'), { domain: 'docker.io', path: 'library/nginx', local: 'nginx', tag: 'latest' });
    assert.deepEqual(parseRemote('docker.io/library/nginx:1.25'), { domain: 'docker.io', path: 'library/nginx', local: 'nginx', tag: '1.25' });
    assert.deepEqual(parseRemote('user/app'), { domain: 'docker.io', path: 'user/app', local: 'user/app', tag: 'latest' });
    assert.deepEqual(parseRemote('localhost:5000/x'), { domain: 'localhost:5000', path: 'x', local: 'localhost:5000/x', tag: 'latest' });
    assert.deepEqual(parseRemote('localhost/x:2'), { domain: 'localhost', path: 'x', local: 'localhost/x', tag: '2' });
    assert.deepEqual(parseRemote('registry.example.com/a/b/c:t'), { domain: 'registry.example.com', path: 'a/b/c', local: 'registry.example.com/a/b/c', tag: 't' });
    const d = `sha256:${'a'.repeat(64)}`;
    assert.deepEqual(parseRemote(`busybox@${d}`), { domain: 'docker.io', path: 'library/busybox', local: 'busybox', digest: d });
    assert.throws(() => parseRemote('UPPER/case'), /invalid reference format/);
    assert.equal(endpointHost('docker.io'), 'registry-1.docker.io');
    assert.equal(endpointHost('127.0.0.1:5000'), '127.0.0.1:5000');
    assert.equal(joinFromImage('busybox', 'v1'), 'busybox:v1');
    assert.equal(joinFromImage('busybox', d), `busybox@${d}`);
    assert.equal(joinFromImage('busybox', null), 'busybox');
  });

  it('allows plain HTTP to loopback and configured registries only', () => {
    const o = { insecure: ['myreg.lan:5000', '10.1.0.0/16', 'other.lan'] };
    for (const d of ['localhost:5000', '127.0.0.1:5000', '127.8.9.1', '[::1]:5000', 'myreg.lan:5000', '10.1.200.3:443', 'other.lan:8080']) assert.ok(isInsecure(d, o), d);
    for (const d of ['docker.io', 'myreg.lan:5001', '10.2.0.1:5000', '128.0.0.1', 'localhost.evil.com']) assert.ok(!isInsecure(d, o), d);
  });
});

describe('registry auth', () => {
  it('parses bearer and basic challenges', () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"'), {
      scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' },
    });
    assert.deepEqual(parseChallenge('Basic realm="basic-realm"'), { scheme: 'basic', params: { realm: 'basic-realm' } });
    assert.equal(parseChallenge('Negotiate'), undefined);
    assert.equal(parseChallenge(null), undefined);
  });

  it('decodes X-Registry-Auth in base64url and standard base64, with the auth field too', () => {
    const enc = encodeRegistryAuth({ username: 'al?ce', password: 'p>w', serveraddress: 'r:5000' });
    assert.deepEqual(decodeRegistryAuth(enc), { username: 'al?ce', password: 'p>w', serveraddress: 'r:5000' });
    const std = Buffer.from(JSON.stringify({ auth: Buffer.from('bob:x:y').toString('base64') })).toString('base64');
    assert.deepEqual(decodeRegistryAuth(std), { auth: Buffer.from('bob:x:y').toString('base64'), username: 'bob', password: 'x:y' });
    assert.equal(decodeRegistryAuth('e30='), undefined, 'an empty {} is no credentials');
    assert.equal(decodeRegistryAuth(undefined), undefined);
    assert.throws(() => decodeRegistryAuth('!!!'), /X-Registry-Auth/);
  });
});

describe('platforms and progress', () => {
  it('parses --platform', () => {
    assert.deepEqual(parsePlatform('linux/arm64/v8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
    assert.deepEqual(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
    assert.equal(parsePlatform(undefined).os, 'linux');
    assert.throws(() => parsePlatform('linux'), /invalid platform/);
  });
  it('draws docker\'s bar', () => {
    assert.equal(bar(0, 100), `[>${' '.repeat(50)}] 0B/100B`);
    assert.equal(bar(50, 100), `[${'='.repeat(25)}>${' '.repeat(25)}] 50B/100B`);
    assert.equal(bar(1_500_000, 3_000_000), `[${'='.repeat(25)}>${' '.repeat(25)}] 1.5MB/3MB`);
    assert.equal(bar(1_234_567, 10_000_000), `[${'='.repeat(6)}>${' '.repeat(44)}] 1.235MB/10MB`);
    assert.equal(bar(100, 100), `[${'='.repeat(50)}>] 100B/100B`);
  });
});
