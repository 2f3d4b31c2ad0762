import { describe, expect, it } from 'vitest';
import { asAsyncPieces, concatPieces } from './pieces.ts';
import { ThroughputService } from './throughput.ts';

function op(seq: number) {
  return { clientId: 'c', seq, operation: new Uint8Array(0) };
}

/** Cut bytes into pieces of a given size, as checkpoint chunks may. */
function cut(bytes: Uint8Array, pieceBytes: number): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  for (let offset = 0; offset < bytes.length; offset += pieceBytes) pieces.push(bytes.subarray(offset, offset + pieceBytes));
  return pieces;
}

describe('the throughput service', () => {
  it('answers every operation with a reply of the configured size', () => {
    const service = new ThroughputService(100);
    const results = service.executeOrdered([op(1), op(2)]);
    expect(results.map((r) => r.length)).toEqual([100, 100]);
  });

  it('streams a synthetic state of stateBytes that another replica installs across any cut', async () => {
    const stateBytes = 3 * 1024 * 1024 + 5;
    const source = new ThroughputService(0, stateBytes);
    source.executeOrdered([op(1), op(2), op(3)]);
    const snapshot = concatPieces(source.snapshot());
    expect(snapshot.length).toBe(8 + stateBytes);
    for (const pieceBytes of [1 << 20, 65_537, 7]) {
      const target = new ThroughputService(0, stateBytes);
      await target.installSnapshot(asAsyncPieces(cut(snapshot, pieceBytes)));
      expect(target.executed).toBe(3);
      expect(concatPieces(target.snapshot())).toEqual(snapshot);
    }
  });

  it('snapshots the count at the call: operations executed while it is read do not change it', () => {
    const source = new ThroughputService(0, 1000);
    source.executeOrdered([op(1)]);
    const expected = concatPieces(source.snapshot());
    const pieces = source.snapshot();
    source.executeOrdered([op(2), op(3)]);
    expect(concatPieces(pieces)).toEqual(expected);
  });

  it('the state depends on the count: a state of another count is refused, and nothing changes', async () => {
    const stateBytes = 100_000;
    const source = new ThroughputService(0, stateBytes);
    source.executeOrdered([op(1)]);
    const snapshot = concatPieces(source.snapshot());
    const flipped = snapshot.slice();
    flipped[50_000] = (flipped[50_000] ?? 0) ^ 1;
    const target = new ThroughputService(0, stateBytes);
    target.executeOrdered([op(1), op(2)]);
    await expect(target.installSnapshot(asAsyncPieces([flipped]))).rejects.toMatchObject({ code: 'BFT_ERR_SNAPSHOT_INVALID' });
    await expect(target.installSnapshot(asAsyncPieces([snapshot.subarray(0, 1000)]))).rejects.toMatchObject({ code: 'BFT_ERR_SNAPSHOT_INVALID' });
    await expect(target.installSnapshot(asAsyncPieces([snapshot, new Uint8Array(1)]))).rejects.toMatchObject({ code: 'BFT_ERR_SNAPSHOT_INVALID' });
    expect(target.executed).toBe(2);
  });
});
