import { describe, expect, test } from "bun:test";
import { Router, type Module } from "../lib/router.ts";
import { createLogger } from "../lib/log.ts";
import { newMessage, responseTo, type Message } from "../lib/message.ts";

const quiet = createLogger({ write: () => {} });

function recorder(name: string, group: string, onMsg?: (m: Message) => Promise<void> | void): Module & { got: Message[] } {
  const got: Message[] = [];
  return { name, group, got, start() {}, stop() {}, async handle(m) { got.push(m); await onMsg?.(m); } };
}

const msg = (resource: string) => newMessage({ operation: "insert", resource }, null);

describe("router", () => {
  test("delivers by name and by group, in order", async () => {
    const r = new Router(quiet);
    const a = recorder("a", "meta");
    const b = recorder("b", "meta");
    const c = recorder("c", "twin");
    [a, b, c].forEach((m) => r.register(m));
    expect(r.sendToGroup("meta", msg("x/pod/1"))).toBe(2);
    expect(r.send("c", msg("x/pod/2"))).toBe(true);
    expect(r.send("nobody", msg("x/pod/3"))).toBe(false);
    r.send("a", msg("x/pod/4"));
    await Bun.sleep(5);
    expect(a.got.map((m) => m.route.resource)).toEqual(["x/pod/1", "x/pod/4"]);
    expect(b.got.length).toBe(1);
    expect(c.got.map((m) => m.route.resource)).toEqual(["x/pod/2"]);
  });

  test("a failing module does not stop its inbox, and a full inbox refuses", async () => {
    const r = new Router(quiet, 3);
    const slow = recorder("slow", "g", async (m) => {
      if (m.route.resource.endsWith("boom")) throw new Error("boom");
      await Bun.sleep(20);
    });
    r.register(slow);
    expect(r.send("slow", msg("x/t/boom"))).toBe(true);
    expect(r.send("slow", msg("x/t/1"))).toBe(true);
    expect(r.send("slow", msg("x/t/2"))).toBe(true);
    expect(r.send("slow", msg("x/t/3"))).toBe(true); // boom already taken out of the inbox
    expect(r.send("slow", msg("x/t/4"))).toBe(false);
    await Bun.sleep(100);
    expect(slow.got.map((m) => m.route.resource)).toEqual(["x/t/boom", "x/t/1", "x/t/2", "x/t/3"]);
  });

  test("replies reach the waiter instead of an inbox", async () => {
    const r = new Router(quiet);
    const a = recorder("a", "g");
    r.register(a);
    const req = msg("x/t/q");
    const waiting = r.waitForReply(req.header.msg_id, 1000);
    r.send("a", responseTo(req, "OK"));
    expect((await waiting).content).toBe("OK");
    expect(a.got.length).toBe(0);
    await expect(r.waitForReply("none", 10)).rejects.toThrow(/no reply/);
  });
});
