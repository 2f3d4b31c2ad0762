// Byte equality outside the consensus core, through Buffer (memcmp). The core keeps a loop of its own
// (core/requests.ts): it may not use Node's Buffer (core/purity.test.ts).

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
