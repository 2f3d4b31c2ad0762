// The simulator's only source of randomness. A run is reproducible from its seed alone, so nothing
// here may read the clock, Math.random or any other ambient state.
//
// Generator: sfc32 (Chris Doty-Humphrey's Small Fast Counting generator, from PractRand), which
// passes PractRand and BigCrush and is cheap in 32-bit JavaScript arithmetic. Its 128-bit state
// is filled from the seed with splitmix32 so that nearby seeds (1, 2, 3…) start far apart.

const uint32Range = 0x1_0000_0000;
const golden = 0x9e3779b9;

/** splitmix32's finaliser (the murmur3 fmix32 constants): an invertible mix of all 32 bits. */
function mix32(value: number): number {
  let z = value >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** murmur3 x86_32 of the label's UTF-8 bytes; several seeds give several independent 32-bit hashes. */
function murmur3(bytes: Uint8Array, seed: number): number {
  let h = seed >>> 0;
  const blockEnd = bytes.length - (bytes.length % 4);
  for (let i = 0; i < blockEnd; i += 4) {
    let k = (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24)) >>> 0;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tailLength = bytes.length - blockEnd;
  if (tailLength > 0) {
    let tail = bytes[blockEnd]!;
    if (tailLength > 1) tail |= bytes[blockEnd + 1]! << 8;
    if (tailLength > 2) tail |= bytes[blockEnd + 2]! << 16;
    tail = Math.imul(tail, 0xcc9e2d51);
    tail = (tail << 15) | (tail >>> 17);
    tail = Math.imul(tail, 0x1b873593);
    h ^= tail;
  }
  h ^= bytes.length;
  return mix32(h);
}

const textEncoder = new TextEncoder();

type Key = readonly [number, number, number, number];

function keyFromSeed(seed: number): Key {
  let state = seed;
  const next = (): number => {
    state = (state + golden) >>> 0;
    return mix32(state);
  };
  return [next(), next(), next(), next()];
}

// fork() hands its derived key to the constructor through here, so that the public constructor keeps
// the one-argument signature; JavaScript is single-threaded and the constructor clears it at once.
let forkedKeyPending: Key | null = null;

export class Rng {
  /** The root seed of this stream (a fork keeps its root's seed); print it to reproduce a run. */
  readonly seed: number;
  // A fork is a function of the key, never of the parent's position in its stream, so how much one
  // component draws cannot change what another component sees.
  readonly #key: Key;
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    const forkedKey = forkedKeyPending;
    forkedKeyPending = null;
    if (!Number.isInteger(seed) || seed < 0 || seed >= uint32Range) {
      throw new RangeError(`Rng seed must be an integer in [0, 2^32 - 1], got ${seed}`);
    }
    this.seed = seed;
    this.#key = forkedKey ?? keyFromSeed(seed);
    [this.#a, this.#b, this.#c, this.#d] = this.#key;
    // sfc32's author discards the first outputs so that a weak initial state is mixed away.
    for (let i = 0; i < 12; i++) this.uint32();
  }

  /** A uniformly distributed integer in [0, 2^32 - 1]. */
  uint32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** A number in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.uint32() / uint32Range;
  }

  /** An integer in [minInclusive, maxInclusive], exactly uniform (rejection sampling, no modulo bias). */
  int(minInclusive: number, maxInclusive: number): number {
    if (!Number.isSafeInteger(minInclusive) || !Number.isSafeInteger(maxInclusive)) {
      throw new RangeError(`Rng.int bounds must be safe integers, got [${minInclusive}, ${maxInclusive}]`);
    }
    if (minInclusive > maxInclusive) {
      throw new RangeError(`Rng.int needs min <= max, got [${minInclusive}, ${maxInclusive}]`);
    }
    const range = maxInclusive - minInclusive + 1;
    if (range > uint32Range) {
      throw new RangeError(`Rng.int range must not exceed 2^32 values, got ${range}`);
    }
    if (range === uint32Range) return minInclusive + this.uint32();
    const limit = uint32Range - (uint32Range % range);
    let draw = this.uint32();
    while (draw >= limit) draw = this.uint32();
    return minInclusive + (draw % range);
  }

  /**
   * True with the given probability. Always consumes one draw, even for 0 and 1, so that tuning a
   * probability does not shift every later draw of the stream.
   */
  chance(probability: number): boolean {
    if (!(probability >= 0 && probability <= 1)) {
      throw new RangeError(`Rng.chance probability must be in [0, 1], got ${probability}`);
    }
    return this.next() < probability;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('Rng.pick needs at least one item');
    return items[this.int(0, items.length - 1)]!;
  }

  /** Fisher–Yates, in place; returns the same array for chaining. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      const held = items[i]!;
      items[i] = items[j]!;
      items[j] = held;
    }
    return items;
  }

  /**
   * An independent stream named by `label`, derived from this stream's seed material and the label
   * only: it does not depend on, nor advance, this stream's position. Forking the same label twice
   * gives the same stream, so use distinct labels per component (`network`, `replica-3/clock`…).
   */
  fork(label: string): Rng {
    const key = this.#key;
    const labelBytes = textEncoder.encode(label);
    const childKey: Key = [
      murmur3(labelBytes, mix32(key[0] ^ golden)),
      murmur3(labelBytes, mix32(key[1] ^ Math.imul(2, golden))),
      murmur3(labelBytes, mix32(key[2] ^ Math.imul(3, golden))),
      murmur3(labelBytes, mix32(key[3] ^ Math.imul(4, golden))),
    ];
    forkedKeyPending = childKey;
    return new Rng(this.seed);
  }

  bytes(length: number): Uint8Array {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`Rng.bytes length must be a non-negative integer, got ${length}`);
    }
    const out = new Uint8Array(length);
    let i = 0;
    for (; i + 4 <= length; i += 4) {
      const word = this.uint32();
      out[i] = word & 0xff;
      out[i + 1] = (word >>> 8) & 0xff;
      out[i + 2] = (word >>> 16) & 0xff;
      out[i + 3] = word >>> 24;
    }
    if (i < length) {
      let word = this.uint32();
      for (; i < length; i++) {
        out[i] = word & 0xff;
        word >>>= 8;
      }
    }
    return out;
  }
}
