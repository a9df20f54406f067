/**
 * A device app that streams numbered values into one twin property through an edge's MQTT broker,
 * for fault tests that must run it where the broker is (e.g. inside the edge's network namespace):
 *
 *   bun tests/helpers/twin-streamer.ts PORT DEVICE_ID PROPERTY INTERVAL_MS MAX_COUNT
 *
 * Value n goes out as `twin/update` with event_id `s<n>` (QoS 1) while the broker link is up. The
 * edge publishes `twin/update/result` only after it stored the twin, so a result without an error
 * code is the acknowledgement: it prints `ack <n>` for each. Lines on stdin steer it:
 *   pause   stop sending; once the last value sent is acknowledged (or 3 s passed) print
 *           `paused lastSent=N lastAcked=L`
 *   resume  send again
 *   stop    (also MAX_COUNT values, or SIGTERM) wait up to 3 s for the last value's result, print
 *           `summary sent=S acked=A lastAcked=L lastSent=N errors=E` and exit.
 */
import { connect } from "mqtt";

const [portArg, deviceId, property, intervalArg, maxArg] = process.argv.slice(2);
const port = Number(portArg);
const intervalMs = Number(intervalArg);
const max = Number(maxArg);
if (!deviceId || !property || !Number.isInteger(port) || !(intervalMs > 0) || !(max > 0)) {
  console.error("usage: twin-streamer.ts PORT DEVICE_ID PROPERTY INTERVAL_MS MAX_COUNT");
  process.exit(2);
}
const base = `$hw/events/device/${deviceId}/twin`;
const app = connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 200, connectTimeout: 2000 });
let sent = 0;
let acked = 0;
let lastAcked = 0;
let errors = 0;
let streaming = true;
const outstanding = new Set<number>();

app.on("connect", () => console.log("connected"));
app.on("error", () => {}); // reconnects on its own; an edge being killed is the point of the test
app.subscribe(`${base}/update/result`, { qos: 1 });
app.on("message", (_topic, payload) => {
  let body: { event_id?: unknown; code?: unknown };
  try {
    body = JSON.parse(payload.toString());
  } catch {
    return;
  }
  const m = typeof body.event_id === "string" ? /^s(\d+)$/.exec(body.event_id) : null;
  if (!m) return;
  const n = Number(m[1]);
  if (!outstanding.delete(n)) return; // a duplicate result
  if (body.code !== undefined) {
    errors++;
    console.log(`error ${n} ${String(body.code)}`);
    return;
  }
  acked++;
  lastAcked = Math.max(lastAcked, n);
  console.log(`ack ${n}`);
});

const tick = setInterval(() => {
  if (!streaming || !app.connected) return;
  if (sent >= max) return void finish();
  const n = ++sent;
  outstanding.add(n);
  app.publish(`${base}/update`, JSON.stringify({ event_id: `s${n}`, timestamp: Date.now(), twin: { [property]: { actual: { value: String(n) } } } }), { qos: 1 });
}, intervalMs);

let finishing = false;
async function finish(): Promise<void> {
  if (finishing) return;
  finishing = true;
  streaming = false;
  clearInterval(tick);
  const end = Date.now() + 3000;
  while (outstanding.has(sent) && Date.now() < end) await Bun.sleep(50);
  console.log(`summary sent=${sent} acked=${acked} lastAcked=${lastAcked} lastSent=${sent} errors=${errors}`);
  app.end(true);
  process.exit(0);
}

async function pause(): Promise<void> {
  streaming = false;
  const end = Date.now() + 3000;
  while (outstanding.has(sent) && Date.now() < end) await Bun.sleep(20);
  console.log(`paused lastSent=${sent} lastAcked=${lastAcked}`);
}

let input = "";
process.stdin.on("data", (d) => {
  input += d.toString();
  const lines = input.split("\n");
  input = lines.pop()!;
  for (const cmd of lines.map((l) => l.trim())) {
    if (cmd === "stop") void finish();
    else if (cmd === "pause") void pause();
    else if (cmd === "resume" && !finishing) streaming = true;
  }
});
process.on("SIGTERM", () => void finish());
