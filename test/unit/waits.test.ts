import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ContainerWaits } from '../../src/engine/waits.js';

describe('exits being recorded', () => {
  it('allRecorded waits for every exit being recorded, one begun meanwhile too, and a failed one does not stop it', async () => {
    const waits = new ContainerWaits();
    const done: string[] = [];
    const later = (name: string, ms: number, fail = false) => new Promise<void>((resolve, reject) => setTimeout(() => {
      done.push(name);
      if (fail) reject(new Error(name)); else resolve();
    }, ms));
    void waits.recordingExit(later('first', 20)).catch(() => {});
    void waits.recordingExit(later('failing', 5, true)).catch(() => {});
    // Begun while the daemon's start already waits (an exit the watch noticed a moment later).
    setTimeout(() => { void waits.recordingExit(later('meanwhile', 30)); }, 10);
    await waits.allRecorded();
    assert.deepEqual(done.sort(), ['failing', 'first', 'meanwhile']);
    // Nothing in flight: answers at once.
    await waits.allRecorded();
  });
});
