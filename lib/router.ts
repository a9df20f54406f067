/**
 * The beehive idea, kept lean: components are modules with a name and a group, and one router
 * delivers messages to a named module or to every module of a group. Each module has a bounded
 * inbox drained in order, so one slow module never blocks the sender or the other modules.
 */
import type { Message } from "./message.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";

/** Messages a module's inbox holds before the router refuses more (--router-inbox-limit). */
export const DEFAULT_INBOX_LIMIT = 1024;

export interface Module {
  readonly name: string;
  readonly group: string;
  start(ctx: ModuleContext): Promise<void> | void;
  stop(): Promise<void> | void;
  /** Handles one message from the inbox. Errors are logged, never fatal. */
  handle(msg: Message): Promise<void> | void;
}

export interface ModuleContext {
  router: Router;
  log: Logger;
}

interface Inbox {
  module: Module;
  queue: Message[];
  draining: boolean;
  dropped: number;
  /** The running drain, while `draining`. */
  drained?: Promise<void>;
}

export class Router {
  private readonly inboxes = new Map<string, Inbox>();
  private readonly waiters = new Map<string, (m: Message) => void>();

  private readonly droppedCounter;

  constructor(private readonly log: Logger, private readonly inboxLimit = DEFAULT_INBOX_LIMIT, metrics?: Metrics) {
    if (!Number.isInteger(inboxLimit) || inboxLimit < 1) throw new Error(`router inbox limit must be a positive integer (got ${inboxLimit})`);
    this.droppedCounter = metrics?.counter("outpost_router_dropped_total", "Messages refused because a module's inbox was full, by module.");
  }

  register(module: Module): void {
    if (this.inboxes.has(module.name)) throw new Error(`module ${module.name} registered twice`);
    this.inboxes.set(module.name, { module, queue: [], draining: false, dropped: 0 });
  }

  async startAll(): Promise<void> {
    for (const { module } of this.inboxes.values()) await module.start({ router: this, log: this.log.child(module.name) });
  }

  /**
   * Stops the modules in reverse order of registration. Each module first works off what its inbox
   * holds (bounded by `drainMs`), so what a module stopped before it handed on (e.g. the EventBus's
   * last MQTT messages to the twin) is handled while the receiver still runs.
   */
  async stopAll(drainMs = 1000): Promise<void> {
    for (const inbox of [...this.inboxes.values()].reverse()) {
      const { module } = inbox;
      if (inbox.draining && inbox.drained) await Promise.race([inbox.drained, new Promise((r) => setTimeout(r, drainMs))]);
      try {
        await module.stop();
      } catch (e) {
        this.log.error("module stop failed", { module: module.name, err: String(e) });
      }
    }
  }

  /** Delivers to the module called `name`. Returns false if there is none or its inbox is full. */
  send(name: string, msg: Message): boolean {
    if (this.resolveReply(msg)) return true;
    const inbox = this.inboxes.get(name);
    return inbox ? this.enqueue(inbox, msg) : false;
  }

  /** Delivers to every module of `group`. Returns how many accepted it. */
  sendToGroup(group: string, msg: Message): number {
    if (this.resolveReply(msg)) return 1;
    let n = 0;
    for (const inbox of this.inboxes.values()) if (inbox.module.group === group && this.enqueue(inbox, msg)) n++;
    return n;
  }

  /** Waits for the reply whose parent id is `msgId` (KubeEdge's sync messages). */
  waitForReply(msgId: string, timeoutMs: number): Promise<Message> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(msgId);
        reject(new Error(`no reply to ${msgId} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.set(msgId, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
  }

  /** Hands a reply to whoever waits for it (waitForReply). Returns false when nobody does. */
  resolveReply(msg: Message): boolean {
    const parent = msg.header.parent_msg_id;
    const w = parent ? this.waiters.get(parent) : undefined;
    if (!w) return false;
    this.waiters.delete(msg.header.parent_msg_id!);
    w(msg);
    return true;
  }

  private enqueue(inbox: Inbox, msg: Message): boolean {
    if (inbox.queue.length >= this.inboxLimit) {
      this.droppedCounter?.inc({ module: inbox.module.name });
      if (inbox.dropped++ % 1000 === 0) this.log.warn("inbox full, message dropped", { module: inbox.module.name, resource: msg.route.resource });
      return false;
    }
    inbox.queue.push(msg);
    if (!inbox.draining) inbox.drained = this.drain(inbox);
    return true;
  }

  private async drain(inbox: Inbox): Promise<void> {
    inbox.draining = true;
    try {
      let msg: Message | undefined;
      while ((msg = inbox.queue.shift())) {
        try {
          // Await only what is asynchronous: a synchronous handler costs no microtask per message.
          const pending = inbox.module.handle(msg);
          if (pending) await pending;
        } catch (e) {
          this.log.error("module failed on a message", { module: inbox.module.name, resource: msg.route.resource, err: String(e) });
        }
      }
    } finally {
      inbox.draining = false;
    }
  }
}
