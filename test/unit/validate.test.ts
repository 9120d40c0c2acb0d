import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkGoJson, int, slice, str, struct } from '../../src/api/validate/gojson.js';
import { checkLinkName, validateNetworkCreate } from '../../src/api/validate/network.js';
import { validateContainerCreate } from '../../src/api/validate/index.js';

describe('request validation at the API edge', () => {
  it('reports type mismatches as Go\'s encoding/json does (struct, field path, Go type)', () => {
    const T = struct('Outer', 'Outer', { A: int('uint16'), In: struct('Inner', '*Inner', { L: slice(str, '[]string') }) });
    assert.throws(() => checkGoJson({ a: 70000 }, T), { message: 'json: cannot unmarshal number 70000 into Go struct field Outer.A of type uint16' });
    assert.throws(() => checkGoJson({ In: { L: 'x' } }, T), { message: 'json: cannot unmarshal string into Go struct field Inner.In.L of type []string' });
    assert.throws(() => checkGoJson({ In: [] }, T), { message: 'json: cannot unmarshal array into Go struct field Outer.In of type *Inner' });
    assert.throws(() => checkGoJson({ A: 1.5 }, T), { message: 'json: cannot unmarshal number 1.5 into Go struct field Outer.A of type uint16' });
    // null fits anything, unknown keys are ignored, keys match without regard to case.
    assert.doesNotThrow(() => checkGoJson({ A: null, In: { l: ['a'] }, Other: { x: 1 } }, T));
  });

  it('checks network bodies in Docker\'s order with its words', () => {
    assert.throws(() => validateNetworkCreate({ Name: 'n', IPAM: { Config: [{ Subnet: '10.1.0.0/33' }] } }), { message: /^Invalid subnet 10.1.0.0\/33 : invalid CIDR address/ });
    assert.throws(() => validateNetworkCreate({ Name: 'n', IPAM: { Config: [{ Subnet: '10.1.0.0/24', Gateway: '10.1.0.255' }] } }), { message: 'failed to allocate gateway (10.1.0.255): Address already in use' });
    assert.throws(() => validateNetworkCreate({ Name: 'n', IPAM: { Config: [{ Subnet: 'fd00::/64', Gateway: 'fd00::' }] } }), { message: 'failed to allocate gateway (fd00::): Address already in use' });
    // IPv6 pools keep no broadcast address: the last one is a valid gateway.
    assert.doesNotThrow(() => validateNetworkCreate({ Name: 'n', IPAM: { Config: [{ Subnet: 'fd00::/120', Gateway: 'fd00::ff' }] } }));
    assert.throws(() => validateNetworkCreate({ Name: 'n', IPAM: { Config: [{ Subnet: '0.0.0.0/0' }] } }), /unspecified/);
    assert.throws(() => validateNetworkCreate({ Name: 'n', IPAM: { Config: [{ Subnet: 'ff02::/16' }] } }), /multicast/);
    assert.doesNotThrow(() => validateNetworkCreate({ Name: 'with space', IPAM: { Config: [{ Subnet: '10.1.0.5/24', Gateway: '10.1.0.1' }] } }));
  });

  it('takes a bridge name the kernel would take, nothing else', () => {
    for (const ok of ['br0', 'br-x.1_a', 'a'.repeat(15)]) assert.doesNotThrow(() => checkLinkName(ok));
    for (const bad of ['', '.', '..', 'a/b', 'a:b', 'a b', 'a\tb', 'a'.repeat(16), 'ééééééééé']) assert.throws(() => checkLinkName(bad), /invalid bridge name/);
  });

  it('checks port specifications as nat.ParsePort does', () => {
    const pb = (bindings: unknown) => ({ Image: 'x', HostConfig: { PortBindings: bindings } });
    assert.doesNotThrow(() => validateContainerCreate(pb({ '80/tcp': [{ HostPort: '8000-8010' }, { HostPort: '' }], '53/udp': null })));
    assert.throws(() => validateContainerCreate(pb({ '80/tcp': [{ HostPort: '9-1' }] })), { message: 'invalid port specification: "9-1"' });
    assert.throws(() => validateContainerCreate(pb({ 'x/tcp': [] })), { message: 'invalid port specification: "x"' });
  });
});
