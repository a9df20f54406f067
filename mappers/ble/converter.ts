/**
 * KubeEdge's BLE data converter (visitor `dataConverter`): bytes of a characteristic value → a number.
 *
 * The rule, as KubeEdge's bluetooth mapper (kubeedge/mappers-go mappers/ble, and the older
 * kubeedge/kubeedge mappers/bluetooth_mapper) applies it:
 *  1. take the bytes from `startIndex` to `endIndex`, both inclusive; when startIndex > endIndex
 *     walk backwards (so `startIndex: 1, endIndex: 0` reads a little-endian 16-bit value);
 *  2. make one unsigned integer of them, the first byte taken being the most significant;
 *  3. shift it left by `shiftLeft`, then right by `shiftRight` (64-bit unsigned, as Go's uint64);
 *  4. apply `orderOfOperations` in order (Add, Subtract, Multiply, Divide; names case-insensitive)
 *     on the float value.
 *
 * Two places where KubeEdge's code differs from what its field names promise, and what we do:
 *  - Step 2: KubeEdge glues the bytes' *decimal* spellings together and parses that string
 *    (`[0x01, 0x2c]` → "1" + "44" → 144), which is only right for one byte. We build the binary
 *    integer (→ 300), which is what device documentation (e.g. the CC2650 demo's
 *    `startIndex 1, endIndex 0, shiftRight 2, Multiply 0.03125`) expects. `decimalConcat: true`
 *    reproduces KubeEdge's value exactly for configurations that were tuned against it.
 *  - Step 3: KubeEdge applies shiftLeft if it is non-zero and otherwise shiftRight, never both.
 *    We apply both (left, then right), which is the same whenever only one is set.
 */

export type OperationType = "Add" | "Subtract" | "Multiply" | "Divide";

export interface DataConverter {
  startIndex: number;
  endIndex: number;
  shiftLeft?: number;
  shiftRight?: number;
  orderOfOperations?: { operationType: OperationType; operationValue: number }[];
  /** KubeEdge-exact step 2 (decimal spellings concatenated). */
  decimalConcat?: boolean;
}

const U64 = (1n << 64n) - 1n;

/** The indexes the converter takes, in the order it takes them. */
export function converterIndexes(c: Pick<DataConverter, "startIndex" | "endIndex">): number[] {
  const out: number[] = [];
  if (c.startIndex <= c.endIndex) for (let i = c.startIndex; i <= c.endIndex; i++) out.push(i);
  else for (let i = c.startIndex; i >= c.endIndex; i--) out.push(i);
  return out;
}

export function convertReadData(data: Uint8Array, c: DataConverter): number {
  // Check the range first: indexes far past the value (e.g. startIndex 1e9) must not be listed.
  const last = Math.max(c.startIndex, c.endIndex);
  if (last >= data.length) throw new Error(`dataConverter: needs byte ${last} but the value has ${data.length} byte(s)`);
  const idx = converterIndexes(c);
  let n = 0n;
  if (c.decimalConcat) {
    const digits = idx.map((i) => String(data[i]!)).join("");
    n = BigInt(digits) & U64;
  } else {
    for (const i of idx) n = ((n << 8n) | BigInt(data[i]!)) & U64;
  }
  if (c.shiftLeft) n = (n << BigInt(c.shiftLeft)) & U64;
  if (c.shiftRight) n >>= BigInt(c.shiftRight);
  let x = Number(n);
  for (const op of c.orderOfOperations ?? []) {
    switch (op.operationType) {
      case "Add":
        x += op.operationValue;
        break;
      case "Subtract":
        x -= op.operationValue;
        break;
      case "Multiply":
        x *= op.operationValue;
        break;
      case "Divide":
        x /= op.operationValue;
        break;
    }
  }
  return x;
}
