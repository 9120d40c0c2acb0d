import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { linkExists } from '../../src/kernel/netns.js';

// Read-only: looks links up by name in this process's own namespace, touching nothing.
describe('linkExists: a lookup by name in berthd\'s namespace (no ip process, no listing)', () => {
  it('finds lo, not a name no link has, and no name longer than the kernel\'s 15 bytes', async () => {
    assert.equal(await linkExists('lo'), true);
    assert.equal(await linkExists('bnolink7x9q'), false);
    assert.equal(await linkExists('lo'.padEnd(16, 'x')), false);
    assert.equal(await linkExists(''), false);
  });
});
