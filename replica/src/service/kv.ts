// The key-value service (DESIGN §3): a replicated sorted map from UTF-8 string keys to byte values,
// with get, put, delete, compare-and-set and range scans. Operations and results are encoded by
// kv-operations.ts.
//
// Keys are ordered by Unicode code point, which is the byte order of their UTF-8 encodings, so that
// clients in any language see the same range order. The map is a B+tree: point operations are
// O(log n) and a range scan descends once and walks on in order, which stays fast at millions of keys.
// It is copy-on-write: freezing it is O(1), and a write clones only the nodes on its path that a frozen
// version still shares. That is what lets a checkpoint stream a snapshot while execution goes on.

import { isUtf8 } from 'node:buffer';
import { limits } from '../constants.ts';
import { BftError, invariant } from '../errors.ts';
import type { Bytes } from '../protocol/messages.ts';
import { PieceReader, PieceWriter, snapshotHashBytes } from './pieces.ts';
import type { ExecutionContext, OrderedOperation, Service } from './service.ts';
import {
  type KvEntry,
  type KvErrorCodeName,
  type KvOperation,
  type KvResult,
  KvErrorCode,
  decodeKvOperation,
  encodeKvResult,
  kvEntryBytes,
  utf8ByteLength,
} from './kv-operations.ts';
import { bytesEqual } from '../bytes.ts';

// --- Key order ---------------------------------------------------------------------------------------

/**
 * Code point order. JavaScript's `<` compares UTF-16 code units, which puts U+E000..U+FFFF after the
 * supplementary planes (surrogates are 0xD800..0xDFFF); shifting the units above 0xD800 restores the
 * code point (and UTF-8 byte) order.
 */
export function compareKeys(a: string, b: string): number {
  if (a === b) return 0;
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      if (x >= 0xd800 && y >= 0xd800) {
        x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
        y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
      }
      return x - y;
    }
  }
  return a.length - b.length;
}

// The tree stores keys remapped so that the native `<` (several times faster than compareKeys) gives
// code point order: units 0xE000..0xFFFF move down to 0xD800..0xF7FF and surrogates up to 0xF800..0xFFFF.
// The remap is a bijection on code units and the identity on keys without units from 0xD800 up, which
// most keys are, so for them it costs one regular expression test.
const unitsToRemap = /[\uD800-\uFFFF]/;

function toSortKey(key: string): string {
  if (!unitsToRemap.test(key)) return key;
  let sortKey = '';
  for (let i = 0; i < key.length; i++) {
    const unit = key.charCodeAt(i);
    sortKey += String.fromCharCode(unit >= 0xe000 ? unit - 0x800 : unit >= 0xd800 ? unit + 0x2000 : unit);
  }
  return sortKey;
}

function fromSortKey(sortKey: string): string {
  if (!unitsToRemap.test(sortKey)) return sortKey;
  let key = '';
  for (let i = 0; i < sortKey.length; i++) {
    const unit = sortKey.charCodeAt(i);
    key += String.fromCharCode(unit >= 0xf800 ? unit - 0x2000 : unit >= 0xd800 ? unit + 0x800 : unit);
  }
  return key;
}

// --- B+tree ------------------------------------------------------------------------------------------

/** Entries per leaf and children per inner node; nodes other than the root hold at least half. */
const nodeCapacity = 64;
const nodeMinimum = nodeCapacity / 2;

interface LeafNode {
  readonly leaf: true;
  /** The tree generation that created the node; only a node of the current generation may change. */
  readonly generation: number;
  /** Sort keys (toSortKey), like every key inside the tree. */
  keys: string[];
  values: Bytes[];
}

interface InnerNode {
  readonly leaf: false;
  readonly generation: number;
  /** keys[i] separates children[i] (all keys below it) from children[i + 1] (all keys at or above it). */
  keys: string[];
  children: TreeNode[];
}

type TreeNode = LeafNode | InnerNode;

function newLeaf(generation: number, keys: string[] = [], values: Bytes[] = []): LeafNode {
  return { leaf: true, generation, keys, values };
}

/** A copy of `node` that belongs to `generation`; the children and values themselves are shared. */
function cloneNode(node: TreeNode, generation: number): TreeNode {
  return node.leaf
    ? { leaf: true, generation, keys: node.keys.slice(), values: node.values.slice() }
    : { leaf: false, generation, keys: node.keys.slice(), children: node.children.slice() };
}

/** A version of the map that no later write changes. */
export interface FrozenSortedMap {
  readonly size: number;
  /** The leaves from first to last (keys in them are sort keys): for snapshots, which read whole leaves. */
  leaves(): Generator<Readonly<LeafNode>, void, undefined>;
}

function* leavesUnder(node: TreeNode): Generator<Readonly<LeafNode>, void, undefined> {
  if (node.leaf) {
    yield node;
    return;
  }
  for (const child of node.children) yield* leavesUnder(child);
}

/**
 * Visits entries of the subtree with startSortKey ≤ key < endSortKey in order; false once `visit`
 * stopped it or the end was passed.
 */
function visitFrom(
  node: TreeNode,
  startSortKey: string,
  endSortKey: string | null,
  visit: (key: string, value: Bytes) => boolean | void,
): boolean {
  if (node.leaf) {
    for (let index = lowerBound(node.keys, startSortKey); index < node.keys.length; index++) {
      const sortKey = node.keys[index] as string;
      if (endSortKey !== null && sortKey >= endSortKey) return false;
      if (visit(fromSortKey(sortKey), node.values[index] as Bytes) === false) return false;
    }
    return true;
  }
  for (let child = upperBound(node.keys, startSortKey); child < node.children.length; child++) {
    if (!visitFrom(node.children[child] as TreeNode, startSortKey, endSortKey, visit)) return false;
  }
  return true;
}

/** First index whose sort key is ≥ sortKey. */
function lowerBound(keys: readonly string[], sortKey: string): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((keys[middle] as string) < sortKey) low = middle + 1;
    else high = middle;
  }
  return low;
}

/** First index whose sort key is > sortKey: the child of an inner node that holds `sortKey`. */
function upperBound(keys: readonly string[], sortKey: string): number {
  let low = 0;
  let high = keys.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if ((keys[middle] as string) <= sortKey) low = middle + 1;
    else high = middle;
  }
  return low;
}

interface Split {
  readonly separator: string;
  readonly right: TreeNode;
}

/** A sorted map from string keys (in code point order) to bytes. */
export class SortedMap {
  /** Bumped by freeze(): nodes of older generations are shared with a frozen version and never change. */
  private generation = 0;
  private root: TreeNode = newLeaf(0);
  private count = 0;

  get size(): number {
    return this.count;
  }

  get(key: string): Bytes | undefined {
    const sortKey = toSortKey(key);
    let node = this.root;
    while (!node.leaf) node = node.children[upperBound(node.keys, sortKey)] as TreeNode;
    const index = lowerBound(node.keys, sortKey);
    return index < node.keys.length && node.keys[index] === sortKey ? node.values[index] : undefined;
  }

  /** Sets a key; returns its previous value. */
  set(key: string, value: Bytes): Bytes | undefined {
    const result: { previous: Bytes | undefined } = { previous: undefined };
    this.root = this.writable(this.root);
    const split = this.insertInto(this.root, toSortKey(key), value, result);
    if (split !== null) {
      this.root = { leaf: false, generation: this.generation, keys: [split.separator], children: [this.root, split.right] };
    }
    if (result.previous === undefined) this.count += 1;
    return result.previous;
  }

  /** Removes a key; returns its value, or undefined if it was absent. */
  delete(key: string): Bytes | undefined {
    const sortKey = toSortKey(key);
    // An absent key changes nothing, so it must not copy the path of a frozen version either.
    if (this.get(key) === undefined) return undefined;
    this.root = this.writable(this.root);
    const removed = this.removeFrom(this.root, sortKey);
    if (removed === undefined) return undefined;
    this.count -= 1;
    if (!this.root.leaf && this.root.children.length === 1) this.root = this.root.children[0] as TreeNode;
    return removed;
  }

  /**
   * Visits entries with startKey ≤ key < endKey (endKey null: no upper bound) in order, until `visit`
   * returns false.
   */
  forEach(startKey: string, endKey: string | null, visit: (key: string, value: Bytes) => boolean | void): void {
    visitFrom(this.root, toSortKey(startKey), endKey === null ? null : toSortKey(endKey), visit);
  }

  /**
   * The map as it is now, unchanged by later writes, in O(1): later writes copy the nodes they touch
   * (about log n nodes per write, once per freeze) instead of changing the shared ones.
   */
  freeze(): FrozenSortedMap {
    const root = this.root;
    const size = this.count;
    this.generation += 1;
    return { size, leaves: () => leavesUnder(root) };
  }

  /** Entries with startKey ≤ key < endKey (endKey null: no upper bound), in order. */
  entries(startKey = '', endKey: string | null = null): KvEntry[] {
    const entries: KvEntry[] = [];
    this.forEach(startKey, endKey, (key, value) => {
      entries.push({ key, value });
    });
    return entries;
  }

  /** A map of entries already sorted by compareKeys without duplicates, built in O(n). */
  static fromSorted(sortedKeys: readonly string[], values: Bytes[]): SortedMap {
    invariant(sortedKeys.length === values.length, 'one value per key');
    const keys = sortedKeys.map(toSortKey);
    const map = new SortedMap();
    if (keys.length === 0) return map;
    let level: TreeNode[] = [];
    let firstKeys: string[] = [];
    for (const [start, end] of evenRuns(keys.length)) {
      level.push(newLeaf(map.generation, keys.slice(start, end), values.slice(start, end)));
      firstKeys.push(keys[start] as string);
    }
    while (level.length > 1) {
      const parents: TreeNode[] = [];
      const parentFirstKeys: string[] = [];
      for (const [start, end] of evenRuns(level.length)) {
        parents.push({ leaf: false, generation: map.generation, keys: firstKeys.slice(start + 1, end), children: level.slice(start, end) });
        parentFirstKeys.push(firstKeys[start] as string);
      }
      level = parents;
      firstKeys = parentFirstKeys;
    }
    map.root = level[0] as TreeNode;
    map.count = keys.length;
    return map;
  }

  /** Checks the tree's own invariants; for tests. */
  checkStructure(): void {
    let leafDepth = -1;
    const visit = (node: TreeNode, low: string | null, high: string | null, depth: number): void => {
      const isRoot = node === this.root;
      if (node.leaf) {
        invariant(leafDepth === -1 || leafDepth === depth, 'leaves at one depth');
        leafDepth = depth;
        invariant(isRoot || node.keys.length >= nodeMinimum, 'leaf at least half full');
      } else {
        invariant(node.children.length === node.keys.length + 1, 'one more child than separators');
        invariant(node.children.length >= (isRoot ? 2 : nodeMinimum), 'inner node at least half full');
      }
      invariant(node.keys.length <= nodeCapacity, 'node within capacity');
      for (let i = 0; i < node.keys.length; i++) {
        const key = fromSortKey(node.keys[i] as string);
        invariant(i === 0 || compareKeys(fromSortKey(node.keys[i - 1] as string), key) < 0, 'keys ascend within a node');
        invariant(low === null || compareKeys(key, fromSortKey(low)) >= 0, 'keys at or above the left separator');
        invariant(high === null || compareKeys(key, fromSortKey(high)) < 0, 'keys below the right separator');
      }
      if (!node.leaf) {
        node.children.forEach((child, i) => {
          visit(child, i === 0 ? low : (node.keys[i - 1] as string), i === node.keys.length ? high : (node.keys[i] as string), depth + 1);
        });
      }
    };
    visit(this.root, null, null, 0);
    let counted = 0;
    this.forEach('', null, () => {
      counted += 1;
    });
    invariant(counted === this.count, 'the tree holds every entry');
  }

  /** `node` if this generation may change it, else a copy that it may. */
  private writable(node: TreeNode): TreeNode {
    return node.generation === this.generation ? node : cloneNode(node, this.generation);
  }

  /** children[index] of a writable `parent`, made writable in place. */
  private writableChild(parent: InnerNode, index: number): TreeNode {
    const child = this.writable(parent.children[index] as TreeNode);
    parent.children[index] = child;
    return child;
  }

  /** `node` is writable; so are the nodes this changes below it. */
  private insertInto(node: TreeNode, key: string, value: Bytes, result: { previous: Bytes | undefined }): Split | null {
    if (node.leaf) {
      const index = lowerBound(node.keys, key);
      if (index < node.keys.length && node.keys[index] === key) {
        result.previous = node.values[index];
        node.values[index] = value;
        return null;
      }
      node.keys.splice(index, 0, key);
      node.values.splice(index, 0, value);
      if (node.keys.length <= nodeCapacity) return null;
      const middle = node.keys.length >>> 1;
      const right = newLeaf(this.generation, node.keys.splice(middle), node.values.splice(middle));
      return { separator: right.keys[0] as string, right };
    }
    const childIndex = upperBound(node.keys, key);
    const split = this.insertInto(this.writableChild(node, childIndex), key, value, result);
    if (split === null) return null;
    node.keys.splice(childIndex, 0, split.separator);
    node.children.splice(childIndex + 1, 0, split.right);
    if (node.children.length <= nodeCapacity) return null;
    const middle = node.children.length >>> 1;
    const rightChildren = node.children.splice(middle);
    const rightKeys = node.keys.splice(middle);
    const separator = node.keys.pop() as string;
    return { separator, right: { leaf: false, generation: this.generation, keys: rightKeys, children: rightChildren } };
  }

  /** `node` is writable and holds `key`. */
  private removeFrom(node: TreeNode, key: string): Bytes | undefined {
    if (node.leaf) {
      const index = lowerBound(node.keys, key);
      if (index >= node.keys.length || node.keys[index] !== key) return undefined;
      node.keys.splice(index, 1);
      return node.values.splice(index, 1)[0];
    }
    const childIndex = upperBound(node.keys, key);
    const child = this.writableChild(node, childIndex);
    const removed = this.removeFrom(child, key);
    if (removed !== undefined && nodeSize(child) < nodeMinimum) this.rebalance(node, childIndex);
    return removed;
  }

  /** children[index] of a writable `parent` (writable too) fell below half: borrow from a sibling, or merge with one. */
  private rebalance(parent: InnerNode, index: number): void {
    const child = parent.children[index] as TreeNode;
    let left = index > 0 ? (parent.children[index - 1] as TreeNode) : null;
    let right = index + 1 < parent.children.length ? (parent.children[index + 1] as TreeNode) : null;
    if (left !== null && nodeSize(left) > nodeMinimum) {
      left = this.writableChild(parent, index - 1);
      if (child.leaf && left.leaf) {
        child.keys.unshift(left.keys.pop() as string);
        child.values.unshift(left.values.pop() as Bytes);
        parent.keys[index - 1] = child.keys[0] as string;
      } else if (!child.leaf && !left.leaf) {
        child.keys.unshift(parent.keys[index - 1] as string);
        child.children.unshift(left.children.pop() as TreeNode);
        parent.keys[index - 1] = left.keys.pop() as string;
      }
      return;
    }
    if (right !== null && nodeSize(right) > nodeMinimum) {
      right = this.writableChild(parent, index + 1);
      if (child.leaf && right.leaf) {
        child.keys.push(right.keys.shift() as string);
        child.values.push(right.values.shift() as Bytes);
        parent.keys[index] = right.keys[0] as string;
      } else if (!child.leaf && !right.leaf) {
        child.keys.push(parent.keys[index] as string);
        child.children.push(right.children.shift() as TreeNode);
        parent.keys[index] = right.keys.shift() as string;
      }
      return;
    }
    this.merge(parent, left !== null ? index - 1 : index);
  }

  /** Moves children[index + 1] of a writable `parent` into children[index]; the node moved from is left as it was. */
  private merge(parent: InnerNode, index: number): void {
    const into = this.writableChild(parent, index);
    const from = parent.children[index + 1] as TreeNode;
    if (into.leaf && from.leaf) {
      into.keys.push(...from.keys);
      into.values.push(...from.values);
    } else if (!into.leaf && !from.leaf) {
      into.keys.push(parent.keys[index] as string, ...from.keys);
      into.children.push(...from.children);
    }
    parent.keys.splice(index, 1);
    parent.children.splice(index + 1, 1);
  }
}

function nodeSize(node: TreeNode): number {
  return node.leaf ? node.keys.length : node.children.length;
}

/** Splits `count` items into runs of at most nodeCapacity and, when there are several, at least half of it. */
function* evenRuns(count: number): Generator<[number, number]> {
  const runs = Math.ceil(count / nodeCapacity);
  const base = Math.floor(count / runs);
  const longer = count % runs;
  let start = 0;
  for (let run = 0; run < runs; run++) {
    const length = base + (run < longer ? 1 : 0);
    yield [start, start + length];
    start += length;
  }
}

// --- Snapshot format ---------------------------------------------------------------------------------
// magic (8 bytes "bftkv\0\0\1") | entry count (u32) | entries | SHA-256 of everything before it (32 bytes)
// entry: key length (u16) | key (UTF-8) | value length (u32) | value
// Entries are in key order with no duplicates, so equal states give equal bytes whatever the order of
// the writes that built them. The format is a flat sequence of self-delimiting entries on purpose: a
// snapshot can be cut into chunks at any byte, sent and hashed chunk by chunk, and read back as a stream
// (entry by entry, hashing as it goes) without holding more than one entry that crosses a chunk edge.

const snapshotMagic = Uint8Array.of(0x62, 0x66, 0x74, 0x6b, 0x76, 0, 0, 1);
const snapshotCountBytes = 4;
const snapshotKeyLengthBytes = 2;
const snapshotValueLengthBytes = 4;

function snapshotInvalid(message: string, cause?: unknown): BftError {
  return new BftError(
    'BFT_ERR_SNAPSHOT_INVALID',
    `${message}; the snapshot was not installed (fetch it again from other replicas)`,
    cause === undefined ? undefined : { cause },
  );
}

// --- The service -------------------------------------------------------------------------------------

export interface KvStatistics {
  readonly keys: number;
  /** Keys and values counted as in kvStateBytesMax. */
  readonly stateBytes: number;
}

export interface KvServiceOptions {
  /** Lower than limits.kvStateBytesMax to bound a small replica; never above it. */
  readonly stateBytesMax?: number;
}

export class KvService implements Service {
  private map = new SortedMap();
  private stateBytes = 0;
  private readonly stateBytesMax: number;

  constructor(options: KvServiceOptions = {}) {
    const stateBytesMax = options.stateBytesMax ?? limits.kvStateBytesMax;
    invariant(
      Number.isSafeInteger(stateBytesMax) && stateBytesMax > 0 && stateBytesMax <= limits.kvStateBytesMax,
      'the state bound is within limits',
    );
    this.stateBytesMax = stateBytesMax;
  }

  statistics(): KvStatistics {
    return { keys: this.map.size, stateBytes: this.stateBytes };
  }

  executeOrdered(operations: readonly OrderedOperation[], _context: ExecutionContext): Bytes[] {
    return operations.map((operation) => encodeKvResult(this.execute(operation.operation, true)));
  }

  executeUnordered(operation: Bytes): Bytes {
    return encodeKvResult(this.execute(operation, false));
  }

  /** Copy-on-write: the snapshot is of the state at this call, whatever executes while it is read. */
  readonly snapshotsAreIsolated = true;

  snapshot(): Generator<Bytes, void, undefined> {
    return snapshotOf(this.map.freeze());
  }

  /**
   * Reads the stream entry by entry, hashing as it goes, and builds the new map beside the old one: a
   * corrupt snapshot (found at any point, the checksum last) leaves the state as it was.
   */
  async installSnapshot(pieces: AsyncIterable<Bytes>): Promise<void> {
    const reader = new PieceReader(pieces);
    try {
      const installed = await this.readSnapshot(reader);
      this.map = installed.map;
      this.stateBytes = installed.stateBytes;
    } catch (error) {
      await reader.cancel();
      if (error instanceof BftError) throw error;
      throw snapshotInvalid('the snapshot stream failed', error);
    }
  }

  private async readSnapshot(reader: PieceReader): Promise<{ map: SortedMap; stateBytes: number }> {
    const headerBytes = snapshotMagic.length + snapshotCountBytes;
    if (reader.buffered < headerBytes && !(await reader.fill(headerBytes))) throw snapshotInvalid(`only ${reader.buffered} bytes`);
    const magic = reader.take(snapshotMagic.length);
    if (!snapshotMagic.every((byte, i) => magic[i] === byte)) throw snapshotInvalid('not a key-value snapshot of this format (bad magic)');
    const count = reader.takeU32();
    const keys: string[] = [];
    const values: Bytes[] = [];
    let stateBytes = 0;
    let previousKey: Uint8Array | null = null;
    for (let i = 0; i < count; i++) {
      if (reader.buffered < snapshotKeyLengthBytes && !(await reader.fill(snapshotKeyLengthBytes))) throw snapshotInvalid(`entry ${i} is truncated`);
      const keyLength = reader.takeU16();
      if (keyLength < 1 || keyLength > limits.kvKeyBytesMax) throw snapshotInvalid(`entry ${i} has a key of ${keyLength} bytes`);
      const fieldsBytes = keyLength + snapshotValueLengthBytes;
      if (reader.buffered < fieldsBytes && !(await reader.fill(fieldsBytes))) throw snapshotInvalid(`entry ${i} is truncated`);
      // Kept as the previous key: a copy, so that it does not pin a piece.
      const keyBytes = reader.takeCopy(keyLength);
      if (!isUtf8(keyBytes)) throw snapshotInvalid(`entry ${i} has a key that is not UTF-8`);
      if (previousKey !== null && Buffer.compare(previousKey, keyBytes) >= 0) {
        throw snapshotInvalid(`entry ${i} is out of key order or repeats a key`);
      }
      previousKey = keyBytes;
      const valueLength = reader.takeU32();
      if (valueLength > limits.kvValueBytesMax) throw snapshotInvalid(`entry ${i} has a value of ${valueLength} bytes`);
      stateBytes += kvEntryBytes(keyLength, valueLength);
      if (stateBytes > this.stateBytesMax) throw snapshotInvalid(`holds more than the state bound of ${this.stateBytesMax} bytes`);
      if (reader.buffered < valueLength && !(await reader.fill(valueLength))) throw snapshotInvalid(`entry ${i} is truncated`);
      keys.push(Buffer.from(keyBytes.buffer, keyBytes.byteOffset, keyBytes.length).toString('utf8'));
      // An array of its own, so that the state does not pin the pieces.
      values.push(reader.takeCopy(valueLength));
    }
    const digest = reader.digestConsumed();
    if (reader.buffered < snapshotHashBytes && !(await reader.fill(snapshotHashBytes))) throw snapshotInvalid('the checksum is truncated');
    if (!digest.equals(reader.take(snapshotHashBytes))) throw snapshotInvalid('checksum mismatch');
    if (!(await reader.atEnd())) throw snapshotInvalid('bytes after the checksum');
    // UTF-8 byte order is code point order, so keys ascending by bytes ascend by compareKeys too.
    return { map: SortedMap.fromSorted(keys, values), stateBytes };
  }

  private execute(bytes: Bytes, ordered: boolean): KvResult {
    const decoded = decodeKvOperation(bytes);
    if (!decoded.ok) return errorResult(KvErrorCode.BAD_OPERATION, decoded.message);
    const operation = decoded.value;
    if (!ordered && operation.type !== 'get' && operation.type !== 'range') {
      return errorResult(KvErrorCode.NOT_READ_ONLY, `${operation.type} changes the state; send it as an ordered request`);
    }
    return this.apply(operation);
  }

  private apply(operation: KvOperation): KvResult {
    switch (operation.type) {
      case 'get':
        return { type: 'value', value: this.map.get(operation.key) ?? null };
      case 'put': {
        const previous = this.map.get(operation.key);
        if (!this.fits(operation.key, previous, operation.value)) return storeFull(this.stateBytesMax);
        this.write(operation.key, previous, operation.value);
        return { type: 'written', existed: previous !== undefined };
      }
      case 'delete': {
        const previous = this.map.delete(operation.key);
        if (previous !== undefined) this.stateBytes -= kvEntryBytes(utf8ByteLength(operation.key), previous.length);
        return { type: 'written', existed: previous !== undefined };
      }
      case 'compareAndSet': {
        const current = this.map.get(operation.key);
        const matches =
          operation.expected === null ? current === undefined : current !== undefined && bytesEqual(current, operation.expected);
        if (!matches) return { type: 'compareAndSet', swapped: false, current: current ?? null };
        if (!this.fits(operation.key, current, operation.value)) return storeFull(this.stateBytesMax);
        this.write(operation.key, current, operation.value);
        return { type: 'compareAndSet', swapped: true, current: null };
      }
      case 'range':
        return this.range(operation.startKey, operation.endKey, operation.limit);
    }
  }

  private range(startKey: string, endKey: string | null, limit: number): KvResult {
    const entries: KvEntry[] = [];
    let resultBytes = 0;
    let next: string | null = null;
    this.map.forEach(startKey, endKey, (key, value) => {
      const entryBytes = kvEntryBytes(utf8ByteLength(key), value.length);
      // At least one entry always fits (kvValueBytesMax and kvKeyBytesMax are far below the bound).
      if (entries.length === limit || resultBytes + entryBytes > limits.kvRangeResultBytesMax) {
        next = key;
        return false;
      }
      entries.push({ key, value });
      resultBytes += entryBytes;
      return true;
    });
    return { type: 'range', entries, next };
  }

  private fits(key: string, previous: Bytes | undefined, value: Bytes): boolean {
    const keyBytes = utf8ByteLength(key);
    const released = previous === undefined ? 0 : kvEntryBytes(keyBytes, previous.length);
    return this.stateBytes - released + kvEntryBytes(keyBytes, value.length) <= this.stateBytesMax;
  }

  private write(key: string, previous: Bytes | undefined, value: Bytes): void {
    const keyBytes = utf8ByteLength(key);
    if (previous !== undefined) this.stateBytes -= kvEntryBytes(keyBytes, previous.length);
    this.map.set(key, value);
    this.stateBytes += kvEntryBytes(keyBytes, value.length);
  }
}

function* snapshotOf(map: FrozenSortedMap): Generator<Bytes, void, undefined> {
  const writer = new PieceWriter();
  writer.writeBytes(snapshotMagic);
  writer.writeU32(map.size);
  let written = 0;
  for (const leaf of map.leaves()) {
    for (let i = 0; i < leaf.keys.length; i++) {
      const value = leaf.values[i] as Bytes;
      const key = Buffer.from(fromSortKey(leaf.keys[i] as string), 'utf8');
      writer.writeU16(key.length);
      writer.writeBytes(key);
      writer.writeU32(value.length);
      writer.writeBytes(value);
      written++;
    }
    if (writer.sealed.length > 0) yield* writer.sealed.splice(0);
  }
  invariant(written === map.size, 'the snapshot holds every entry');
  writer.writeDigest();
  writer.finish();
  yield* writer.sealed.splice(0);
}

function errorResult(code: KvErrorCodeName, message: string): KvResult {
  return { type: 'error', code, message };
}

function storeFull(stateBytesMax: number): KvResult {
  return errorResult(KvErrorCode.STORE_FULL, `the store holds its maximum of ${stateBytesMax} bytes; delete keys first`);
}
