import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ociSeccomp, parseSecurityOpt } from '../../src/runtime/seccomp.js';
import { boundingCapabilities, capabilitySet, DEFAULT_CAPS } from '../../src/runtime/spec.js';

type Rule = { names: string[]; action: string; errnoRet?: number; args?: unknown[] };
const denied = (f: object | undefined) => new Set(((f as { syscalls: Rule[] }).syscalls).filter((r) => !r.args).flatMap((r) => r.names));

describe('security options and seccomp', () => {
  it('parses --security-opt as Docker does', () => {
    assert.deepEqual(parseSecurityOpt(undefined), { seccomp: { kind: 'default' }, noNewPrivileges: false });
    assert.deepEqual(parseSecurityOpt(['no-new-privileges', 'seccomp=unconfined', 'apparmor=unconfined', 'label=disable']), { seccomp: { kind: 'unconfined' }, noNewPrivileges: true });
    assert.equal(parseSecurityOpt(['no-new-privileges=false']).noNewPrivileges, false);
    assert.equal(parseSecurityOpt(['seccomp:unconfined']).seccomp.kind, 'unconfined');
    assert.throws(() => parseSecurityOpt(['nope']), /invalid --security-opt 1: "nope"/);
    assert.throws(() => parseSecurityOpt(['no-new-privileges=maybe']), /invalid --security-opt 2: "no-new-privileges=maybe"/);
    assert.throws(() => parseSecurityOpt(['seccomp=default']), /Decoding seccomp profile failed/);
  });

  it('the default filter refuses what Docker\'s does, unless the capability it is tied to is held', () => {
    const plain = ociSeccomp({ kind: 'default' }, DEFAULT_CAPS, false) as { defaultAction: string; syscalls: Rule[] };
    assert.equal(plain.defaultAction, 'SCMP_ACT_ALLOW');
    for (const name of ['unshare', 'setns', 'mount', 'keyctl', 'add_key', 'bpf', 'reboot', 'init_module', 'userfaultfd', 'acct', 'settimeofday']) assert.ok(denied(plain).has(name), name);
    for (const name of ['read', 'clone', 'ptrace', 'personality']) assert.ok(!denied(plain).has(name), name);
    // clone is refused only with namespace flags (one masked rule per flag), clone3 with ENOSYS.
    const cloneRules = plain.syscalls.filter((r) => r.names.includes('clone'));
    assert.equal(cloneRules.length, 7);
    assert.ok(cloneRules.every((r) => r.args?.length === 1));
    assert.equal(plain.syscalls.find((r) => r.names.includes('clone3'))?.errnoRet, 38);
    const admin = ociSeccomp({ kind: 'default' }, [...DEFAULT_CAPS, 'CAP_SYS_ADMIN'], false) as { syscalls: Rule[] };
    assert.ok(!denied(admin).has('mount') && !denied(admin).has('unshare'));
    assert.ok(denied(admin).has('keyctl') && denied(admin).has('reboot'));
    assert.ok(!admin.syscalls.some((r) => r.names.includes('clone') || r.names.includes('clone3')));
    assert.equal(ociSeccomp({ kind: 'default' }, DEFAULT_CAPS, true), undefined);
    assert.equal(ociSeccomp({ kind: 'unconfined' }, DEFAULT_CAPS, false), undefined);
  });

  it('converts a Docker-format profile, keeping entries by capability', () => {
    const profile = {
      defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 1,
      syscalls: [
        { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW' },
        { names: ['mount'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_ADMIN'] } },
        { names: ['ptrace'], action: 'SCMP_ACT_ALLOW', excludes: { caps: ['CAP_SYS_ADMIN'] } },
      ],
    };
    const f = ociSeccomp(parseSecurityOpt([`seccomp=${JSON.stringify(profile)}`]).seccomp, DEFAULT_CAPS, false) as { defaultErrnoRet: number; syscalls: Rule[] };
    assert.equal(f.defaultErrnoRet, 1);
    assert.deepEqual(f.syscalls.map((r) => r.names), [['read', 'write'], ['ptrace']]);
  });

  it('--privileged and --cap-add ALL get berthd\'s bounding set, not capabilities it lacks', () => {
    const all = boundingCapabilities('CapBnd:\t000001ffffffffff\n');
    assert.equal(all.length, 41);
    const noResource = boundingCapabilities('CapBnd:\t000001fffeffffff\n');
    assert.ok(!noResource.includes('CAP_SYS_RESOURCE') && noResource.includes('CAP_SYS_TIME'));
    assert.deepEqual(capabilitySet(true, [], [], noResource), noResource);
    assert.deepEqual(capabilitySet(false, ['ALL'], ['NET_ADMIN'], noResource), noResource.filter((c) => c !== 'CAP_NET_ADMIN'));
  });
});
