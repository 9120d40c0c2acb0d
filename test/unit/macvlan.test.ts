import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sandboxRedirectRules } from '../../src/dns/sandbox.js';
import { internalParentNames } from '../../src/network/macvlan.js';

describe('macvlan pieces', () => {
  it('sends 127.0.0.11:53 to the in-namespace resolver port, UDP and TCP, in its own table', () => {
    const rules = sandboxRedirectRules(40123);
    assert.match(rules, /^table ip berth_dns\ndelete table ip berth_dns\n/);
    assert.match(rules, /ip daddr 127\.0\.0\.11 udp dport 53 dnat to 127\.0\.0\.11:40123/);
    assert.match(rules, /ip daddr 127\.0\.0\.11 tcp dport 53 dnat to 127\.0\.0\.11:40123/);
  });

  it('names an internal network\'s parent pair with berth\'s prefix, within the kernel\'s 15 characters', () => {
    const { parent, peer } = internalParentNames('0123456789abcdef0123');
    assert.equal(parent, 'bmi0123456789a');
    assert.equal(peer, 'bmj0123456789a');
    assert.ok(parent.length <= 15 && peer.length <= 15);
  });
});
