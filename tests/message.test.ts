import { describe, expect, test } from "bun:test";
import { FrameError, buildResource, encodeFrame, newMessage, nodeResource, parseFrame, parseResource, responseTo, splitNodeResource } from "../lib/message.ts";

describe("message model", () => {
  test("a KubeEdge frame parses, and encodes back newline-terminated", () => {
    const wire = `{"header":{"msg_id":"A","timestamp":1700000000000,"resourceversion":"812"},"route":{"source":"edgecontroller","group":"resource","operation":"update","resource":"default/pod/nginx"},"content":{"kind":"Pod"}}\n`;
    const msg = parseFrame(wire);
    expect(msg.header.resourceversion).toBe("812");
    expect(msg.route.resource).toBe("default/pod/nginx");
    expect(msg.content).toEqual({ kind: "Pod" });
    expect(encodeFrame(msg).endsWith("}\n")).toBe(true);
    expect(parseFrame(encodeFrame(msg))).toEqual(msg);
  });

  test("an ack carries the parent id and copies the route", () => {
    const req = newMessage({ source: "edgecontroller", group: "resource", operation: "insert", resource: "default/pod/p" }, {});
    const ack = responseTo(req, "OK");
    expect(ack.header.parent_msg_id).toBe(req.header.msg_id);
    expect(ack.route).toEqual({ source: "edgecontroller", group: "resource", operation: "response", resource: "default/pod/p" });
    expect(ack.header.msg_id).not.toBe(req.header.msg_id);
  });

  test.each([
    ["not json", "not JSON"],
    ["[]", "not a message"],
    [`{"header":{},"route":{}}`, "header.msg_id"],
    [`{"header":{"msg_id":"x","timestamp":"now"},"route":{}}`, "header.timestamp"],
    [`{"header":{"msg_id":"x"},"route":{"source":5}}`, "route.source"],
    [`{"header":{"msg_id":"x"},"route":[]}`, "route must be an object"],
    [`{"header":[],"route":{}}`, "header must be an object"],
  ])("malformed frame %p is refused naming %p", (text, why) => {
    expect(() => parseFrame(text)).toThrow(FrameError);
    expect(() => parseFrame(text)).toThrow(why);
  });

  test("resource strings", () => {
    expect(buildResource({ namespace: "default", type: "pod", name: "nginx" })).toBe("default/pod/nginx");
    expect(buildResource({ namespace: "", type: "node", name: "n1" })).toBe("null/node/n1");
    expect(buildResource({ namespace: "default", type: "pod" })).toBe("default/pod");
    expect(parseResource("default/pod/nginx")).toEqual({ namespace: "default", type: "pod", name: "nginx" });
    expect(parseResource("default/podlist")).toEqual({ namespace: "default", type: "podlist" });
    expect(parseResource("default/device/ns/x/twin")).toEqual({ namespace: "default", type: "device", name: "ns/x/twin" });
    expect(parseResource("nothing")).toBeNull();
    expect(parseResource("/pod/x")).toBeNull();
    expect(nodeResource("n1", "default/pod/p")).toBe("node/n1/default/pod/p");
    expect(splitNodeResource("node/n1/default/pod/p")).toEqual({ node: "n1", resource: "default/pod/p" });
    expect(splitNodeResource("default/pod/p")).toBeNull();
    expect(splitNodeResource("node//x")).toBeNull();
  });
});
