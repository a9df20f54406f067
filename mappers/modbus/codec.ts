/** Register words ⇄ values, with KubeEdge's isSwap (bytes within a word) and isRegisterSwap (word order). */

export interface WordLayout {
  isSwap?: boolean;
  isRegisterSwap?: boolean;
}

/** Words as they came off the wire → a big-endian byte buffer in the value's natural order. */
export function wordsToBytes(words: number[], layout: WordLayout): Buffer {
  const ordered = layout.isRegisterSwap ? [...words].reverse() : words;
  const out = Buffer.alloc(ordered.length * 2);
  ordered.forEach((w, i) => {
    const hi = (w >> 8) & 0xff;
    const lo = w & 0xff;
    out[i * 2] = layout.isSwap ? lo : hi;
    out[i * 2 + 1] = layout.isSwap ? hi : lo;
  });
  return out;
}

/** Inverse of wordsToBytes. */
export function bytesToWords(bytes: Buffer, layout: WordLayout): number[] {
  const words: number[] = [];
  for (let i = 0; i < bytes.length; i += 2) {
    const hi = bytes[i]!;
    const lo = bytes[i + 1] ?? 0;
    words.push(layout.isSwap ? (lo << 8) | hi : (hi << 8) | lo);
  }
  return layout.isRegisterSwap ? words.reverse() : words;
}

export type NumberKind = "int" | "uint" | "float";

/** Decodes 1, 2 or 4 registers as a number of the given kind. */
export function decodeWords(words: number[], kind: NumberKind, layout: WordLayout): number {
  const b = wordsToBytes(words, layout);
  switch (b.length) {
    case 2:
      return kind === "int" ? b.readInt16BE(0) : b.readUInt16BE(0);
    case 4:
      return kind === "float" ? b.readFloatBE(0) : kind === "int" ? b.readInt32BE(0) : b.readUInt32BE(0);
    case 8:
      return kind === "float" ? b.readDoubleBE(0) : Number(kind === "int" ? b.readBigInt64BE(0) : b.readBigUInt64BE(0));
    default:
      throw new Error(`cannot decode ${words.length} registers as a number (use limit 1, 2 or 4)`);
  }
}

/** Encodes a number into `count` registers (1, 2 or 4). */
/** Largest magnitudes `count` registers hold for each kind (float holds anything finite). */
function checkRange(value: number, count: number, kind: NumberKind): void {
  if (!Number.isFinite(value)) throw new RangeError(`${value} cannot be written to registers`);
  if (kind === "float") return;
  const bits = count * 16;
  const [lo, hi] = kind === "int" ? [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] : [0, 2 ** bits - 1];
  const n = Math.round(value);
  if (n < lo || n > hi) throw new RangeError(`${value} does not fit ${count} register${count > 1 ? "s" : ""} as ${kind === "int" ? "a signed" : "an unsigned"} integer (${lo}..${hi})`);
}

export function encodeWords(value: number, count: number, kind: NumberKind, layout: WordLayout): number[] {
  if (count === 1 || count === 2 || count === 4) checkRange(value, count, kind);
  const b = Buffer.alloc(count * 2);
  switch (count) {
    case 1:
      if (kind === "int") b.writeInt16BE(Math.round(value), 0);
      else b.writeUInt16BE(Math.round(value) & 0xffff, 0);
      break;
    case 2:
      if (kind === "float") b.writeFloatBE(value, 0);
      else if (kind === "int") b.writeInt32BE(Math.round(value), 0);
      else b.writeUInt32BE(Math.round(value) >>> 0, 0);
      break;
    case 4:
      if (kind === "float") b.writeDoubleBE(value, 0);
      else if (kind === "int") b.writeBigInt64BE(BigInt(Math.round(value)), 0);
      else b.writeBigUInt64BE(BigInt(Math.round(value)), 0);
      break;
    default:
      throw new Error(`cannot encode a number into ${count} registers (use limit 1, 2 or 4)`);
  }
  return bytesToWords(b, layout);
}
