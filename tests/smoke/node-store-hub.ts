/**
 * Runs under Node 20 (bundled by tests/node.test.ts): the store through better-sqlite3 and a full
 * join + hub exchange, to prove the runtime seam holds outside Bun. Prints one JSON line.
 */
import { join } from "node:path";
import { runtimeName } from "../../lib/runtime/index.ts";
import { openStore } from "../../lib/store/db.ts";
import { edgeMigrations, type EdgeDb } from "../../lib/edge/store.ts";
import { MetaManager } from "../../lib/edge/metamanager.ts";
import { newMessage, Op } from "../../lib/message.ts";
import { joinNode, startTestCloud, startTestEdge } from "../helpers/hubs.ts";
import { eventually, tmpDir } from "../helpers/daemons.ts";

const store = await openStore<EdgeDb>(join(tmpDir("node-smoke"), "edgecore.db"), edgeMigrations);
const cloud = await startTestCloud();
const dir = await joinNode(cloud, "node-smoke");
const edge = await startTestEdge(`127.0.0.1:${cloud.hub.port}`, "node-smoke", dir, {}, [new MetaManager(store.db)]);
await eventually(() => cloud.hub.isConnected("node-smoke"), 10_000, "connected");
const msg = newMessage({ source: "edgecontroller", group: "resource", operation: Op.insert, resource: "default/configmap/c" }, { data: { a: "1" } }, { resourceversion: "3" });
const ack = cloud.router.waitForReply(msg.header.msg_id, 5000);
cloud.hub.sendToNode("node-smoke", msg);
const reply = await ack;
const rows = await store.db.selectFrom("meta").select(["key", "resource_version"]).execute();
await edge.close();
await cloud.close();
await store.close();
console.log(JSON.stringify({ runtime: runtimeName, node: process.version, ack: reply.content, rows }));
process.exit(0);
