import { describe, expect, it } from 'vitest';
import { type Member, type Membership, type Reconfiguration, type ReconfigurationOperation, applyReconfiguration } from './reconfiguration.ts';
import type { FaultMode } from './quorum.ts';

const key = (id: number): Uint8Array => new Uint8Array(32).fill(id);

function member(id: number): Member {
  return { id, host: `replica-${id}.demo.svc`, port: 7000, adminPort: 8000, publicKey: key(id) };
}

function membership(ids: number[], f: number, mode: FaultMode = 'bft', viewNumber = 0): Membership {
  return {
    view: { number: viewNumber, mode, f, members: ids },
    members: new Map(ids.map((id) => [id, member(id)])),
    highestIdEver: Math.max(...ids),
  };
}

function request(fromView: number, ...operations: ReconfigurationOperation[]): Reconfiguration {
  return { fromView, operations, epoch: 1, nonce: Uint8Array.of(7) };
}

const add = (id: number): ReconfigurationOperation => ({ kind: 'add', ...member(id) });
const remove = (id: number): ReconfigurationOperation => ({ kind: 'remove', id });
const setF = (f: number): ReconfigurationOperation => ({ kind: 'set-f', f });

function applied(current: Membership, reconfiguration: Reconfiguration): Membership {
  const verdict = applyReconfiguration(current, reconfiguration);
  if (!verdict.ok) throw new Error(`refused: ${verdict.reason}`);
  return verdict.membership;
}

function reasonOf(current: Membership, reconfiguration: Reconfiguration): string {
  const verdict = applyReconfiguration(current, reconfiguration);
  if (verdict.ok) throw new Error('accepted');
  return verdict.reason;
}

describe('applyReconfiguration', () => {
  it('grows 4 → 5 → 7 replicas with f 1 → 2, then shrinks 7 → 4, each step one view later', () => {
    const four = membership([0, 1, 2, 3], 1);
    const five = applied(four, request(0, add(4)));
    expect(five.view).toMatchObject({ number: 1, f: 1 });
    expect([...five.view.members].sort()).toEqual([0, 1, 2, 3, 4]);
    expect(five.members.get(4)).toEqual(member(4));
    const seven = applied(five, request(1, add(5), add(6), setF(2)));
    expect(seven.view).toMatchObject({ number: 2, f: 2 });
    expect(seven.highestIdEver).toBe(6);
    const back = applied(seven, request(2, remove(0), remove(1), remove(2), setF(1)));
    expect(back.view).toMatchObject({ number: 3, f: 1 });
    expect([...back.view.members].sort()).toEqual([3, 4, 5, 6]);
    expect([...back.members.keys()].sort()).toEqual([3, 4, 5, 6]);
    expect(back.highestIdEver).toBe(6);
  });

  it('refuses a stale fromView, saying which view is current', () => {
    expect(reasonOf(membership([0, 1, 2, 3], 1, 'bft', 5), request(4, add(4)))).toMatch(/stale.*view 4.*current view is 5/);
  });

  it('never reuses an id, not even one removed long ago', () => {
    const removed = applied(membership([0, 1, 2, 3, 4], 1), request(0, remove(4)));
    expect(reasonOf(removed, request(1, add(4)))).toMatch(/never reused/);
    expect(reasonOf(removed, request(1, add(2)))).toMatch(/never reused/);
    expect(applied(removed, request(1, add(5))).highestIdEver).toBe(5);
  });

  it('refuses a view that cannot tolerate its f, in both fault models, and points to set-f', () => {
    expect(reasonOf(membership([0, 1, 2, 3], 1), request(0, remove(3)))).toMatch(/3 replicas cannot tolerate f=1 in bft mode.*set-f/);
    expect(reasonOf(membership([0, 1, 2, 3], 1), request(0, add(4), setF(2)))).toMatch(/5 replicas cannot tolerate f=2/);
    expect(reasonOf(membership([0, 1, 2], 1, 'crash'), request(0, remove(2)))).toMatch(/2 replicas cannot tolerate f=1 in crash mode/);
    expect(applied(membership([0, 1, 2], 1, 'crash'), request(0, remove(2), setF(0))).view).toMatchObject({ f: 0, members: expect.any(Array) });
  });

  it('refuses removing a non-member, bad hosts, ports and keys, f set twice, and empty requests', () => {
    const four = membership([0, 1, 2, 3], 1);
    expect(reasonOf(four, request(0, remove(9)))).toMatch(/not a member/);
    expect(reasonOf(four, request(0, { ...add(4), host: 'http://evil/' } as ReconfigurationOperation))).toMatch(/not a DNS name/);
    expect(reasonOf(four, request(0, { ...add(4), port: 0 } as ReconfigurationOperation))).toMatch(/ports/);
    expect(reasonOf(four, request(0, { ...add(4), publicKey: new Uint8Array(31) } as ReconfigurationOperation))).toMatch(/32 bytes/);
    expect(reasonOf(four, request(0, setF(1), setF(1)))).toMatch(/sets f twice/);
    expect(reasonOf(four, request(0))).toMatch(/no operations/);
    expect(reasonOf(four, request(0, remove(0), remove(1), remove(2), remove(3)))).toMatch(/every member/);
  });

  it('keeps the remaining members in their rotation order and puts added ones last, to lead last', () => {
    const five = membership([3, 1, 4, 0, 2], 1);
    expect(applied(five, request(0, add(7), remove(4), add(8))).view.members).toEqual([3, 1, 0, 2, 7, 8]);
    expect(applied(five, request(0, add(7), remove(7))).view.members).toEqual([3, 1, 4, 0, 2]);
  });

  it('is deterministic: the same request on the same membership gives the same view', () => {
    const four = membership([0, 1, 2, 3], 1);
    const a = applied(four, request(0, add(9), remove(1)));
    const b = applied(four, request(0, add(9), remove(1)));
    expect(a).toEqual(b);
  });
});
