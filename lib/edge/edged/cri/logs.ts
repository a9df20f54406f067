/**
 * Container logs written by the CRI runtime: one line per chunk, `<RFC3339Nano> <stream> <P|F> <text>`
 * (P = partial line, F = full line). parseCriLog turns such a file back into the raw output.
 */

export interface CriLogLine {
  time: string;
  stream: "stdout" | "stderr";
  /** The text, with its newline when the line was complete (F). */
  text: string;
}

export function parseCriLogLines(content: string): CriLogLine[] {
  const out: CriLogLine[] = [];
  for (const line of content.split("\n")) {
    const m = /^(\S+) (stdout|stderr) (P|F) ?(.*)$/.exec(line);
    if (!m) continue;
    out.push({ time: m[1]!, stream: m[2] as "stdout" | "stderr", text: m[4]! + (m[3] === "F" ? "\n" : "") });
  }
  return out;
}

/** The container's output as it wrote it (both streams, in order), optionally one stream only. */
export function parseCriLog(content: string, stream?: "stdout" | "stderr"): string {
  return parseCriLogLines(content)
    .filter((l) => !stream || l.stream === stream)
    .map((l) => l.text)
    .join("");
}
