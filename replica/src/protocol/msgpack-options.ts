// The msgpack options of everything bftkube encodes for others to decode, in a module of their own so that
// any protocol module can use them at load time without an import cycle through the codec.

/** Plain msgpack: no records or extensions; used wherever bftkube encodes bytes that others decode. */
export const plainMsgpackOptions = {
  useRecords: false,
  mapsAsObjects: true,
  moreTypes: false,
  structuredClone: false,
  bundleStrings: false,
  // msgpackr would write undefined as an extension, which our own decoder refuses.
  encodeUndefinedAsNil: true,
  // Numbers beyond 2^53 decode to unsafe numbers, which the schemas reject, instead of bigints.
  int64AsType: 'number',
  // Decoded bin fields are views of the frame, not copies: the transport hands over every frame in memory
  // of its own that it never reuses (transport/frames.ts), so a kept field pins at most its own message,
  // and copying each field made enough garbage to force frequent major GCs (measured: 1 KiB requests,
  // 44-61 major GCs per 17 s with copies, 30 without; +10% throughput, p90 -20%). Decoding a buffer that
  // will be reused needs copies (the write-ahead log's reader sets copyBuffers).
  copyBuffers: false,
  // fixmap headers for our small objects (1 byte instead of 3 per object); decoders accept both.
  variableMapSize: true,
} as const;
