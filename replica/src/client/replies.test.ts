import { hash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ReplyTally } from './replies.ts';

const bytes = (text: string): Uint8Array => new TextEncoder().encode(text);
const digestOf = (result: Uint8Array): Uint8Array => hash('sha256', result, 'buffer');

describe('ReplyTally', () => {
  it('decides on f+1 matching full results and counts only the first reply of a replica', () => {
    const tally = new ReplyTally();
    expect(tally.add(0, bytes('a'))).toBe(true);
    expect(tally.add(0, bytes('a'))).toBe(false);
    expect(tally.decided(2)).toBeNull();
    expect(tally.add(1, bytes('b'))).toBe(true);
    expect(tally.decided(2)).toBeNull();
    expect(tally.add(2, bytes('a'))).toBe(true);
    expect(tally.decided(2)).toEqual(bytes('a'));
  });

  it('counts digests toward the quorum of the result they hash, whichever arrives first', () => {
    const digestFirst = new ReplyTally();
    expect(digestFirst.addDigest(1, digestOf(bytes('ok')))).toBe(true);
    expect(digestFirst.addDigest(2, digestOf(bytes('ok')))).toBe(true);
    expect(digestFirst.decided(2)).toBeNull();
    expect(digestFirst.add(0, bytes('ok'))).toBe(true);
    expect(digestFirst.decided(3)).toEqual(bytes('ok'));

    const resultFirst = new ReplyTally();
    resultFirst.add(0, bytes('ok'));
    resultFirst.addDigest(3, digestOf(bytes('ok')));
    expect(resultFirst.decided(2)).toEqual(bytes('ok'));
  });

  it('never decides on digests alone, and names the replicas that vouched for the missing bytes', () => {
    const tally = new ReplyTally();
    tally.add(0, bytes('forged'));
    tally.addDigest(1, digestOf(bytes('true')));
    tally.addDigest(2, digestOf(bytes('true')));
    expect(tally.decided(2)).toBeNull();
    expect(tally.digestOnlyQuorum(2).sort()).toEqual([1, 2]);
    expect(tally.digestOnlyQuorum(3)).toEqual([]);
  });

  it('takes a full result from a replica that sent its digest, without a second vote', () => {
    const tally = new ReplyTally();
    tally.addDigest(1, digestOf(bytes('true')));
    tally.addDigest(2, digestOf(bytes('true')));
    expect(tally.add(1, bytes('true'))).toBe(true);
    expect(tally.hasFullReply(1)).toBe(true);
    expect(tally.decided(2)).toEqual(bytes('true'));
    expect(tally.decidedResultFrom(2)).toBe(1);
    expect(tally.decided(3)).toBeNull();
    expect(tally.decidedResultFrom(3)).toBeNull();
    expect(tally.replied).toBe(2);
  });

  it('refuses a full result that does not match what the replica vouched for by digest', () => {
    const tally = new ReplyTally();
    tally.addDigest(1, digestOf(bytes('true')));
    tally.addDigest(2, digestOf(bytes('true')));
    expect(tally.add(1, bytes('forged'))).toBe(false);
    expect(tally.hasFullReply(1)).toBe(false);
    expect(tally.decided(2)).toBeNull();
    expect(tally.addDigest(1, digestOf(bytes('forged')))).toBe(false);
  });

  it('keeps digests and results across a move to a new view, only for its members', () => {
    const tally = new ReplyTally();
    tally.add(0, bytes('r'));
    tally.addDigest(1, digestOf(bytes('r')));
    tally.addDigest(2, digestOf(bytes('r')));
    const restricted = tally.restrictedTo(new Set([1, 2]));
    expect(restricted.replied).toBe(2);
    expect(restricted.decided(2)).toBeNull();
    expect(restricted.digestOnlyQuorum(2).sort()).toEqual([1, 2]);
    expect(restricted.add(2, bytes('r'))).toBe(true);
    expect(restricted.decided(2)).toEqual(bytes('r'));
  });

  it('knows when matching replies can no longer reach the quorum', () => {
    const tally = new ReplyTally();
    tally.add(0, bytes('a'));
    tally.addDigest(1, digestOf(bytes('b')));
    expect(tally.canStillReach(3, 4)).toBe(true);
    tally.add(2, bytes('c'));
    expect(tally.canStillReach(3, 4)).toBe(false);
  });
});
