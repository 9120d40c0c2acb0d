import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sandboxRedirectRules } from '../../src/network/resolver.js';
import { internalParentNames } from '../../src/network/macvlan.js';

describe('macvlan pieces', () => {
  it('sends 127.0.0.11:53 to the in-namespace resolver port and back, UDP and TCP, untracked, in its own table', () => {
    const rules = sandboxRedirectRules(40123);
    assert.match(rules, /^table ip berth_dns\ndelete table ip berth_dns\n/);
    assert.match(rules, /type filter hook output priority raw;/);
    for (const proto of ['udp', 'tcp']) {
      assert.match(rules, new RegExp(`ip daddr 127\\.0\\.0\\.11 ${proto} dport 53 notrack ${proto} dport set 40123\n`));
      assert.match(rules, new RegExp(`ip saddr 127\\.0\\.0\\.11 ${proto} sport 40123 notrack ${proto} sport set 53\n`));
    }
    // No NAT: a nat chain would make the namespace track every query.
    assert.doesNotMatch(rules, /nat|dnat|snat/);
    // A namespace made moments ago has no table to replace: the costly delete is left out.
    const fresh = sandboxRedirectRules(40123, true);
    assert.match(fresh, /^table ip berth_dns \{\n/);
    assert.doesNotMatch(fresh, /delete/);
    assert.equal(fresh, rules.replace('table ip berth_dns\ndelete table ip berth_dns\n', ''));
  });

  it('names an internal network\'s parent pair with berth\'s prefix, within the kernel\'s 15 characters', () => {
    const { parent, peer } = internalParentNames('0123456789abcdef0123');
    assert.equal(parent, 'bmi0123456789a');
    assert.equal(peer, 'bmj0123456789a');
    assert.ok(parent.length <= 15 && peer.length <= 15);
  });
});
