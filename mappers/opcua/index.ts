/**
 * OPC UA mapper: node-opcua client with KubeEdge's field names (protocol url, securityMode,
 * securityPolicy, userName/password, certificate/privateKey, timeout; visitor nodeID, browseName).
 * Reads by nodeID (all properties of a device in one Read request), writes with the node's own
 * DataType, and pushes values through one subscription per device (a monitored item per property)
 * when the visitor says `subscribe: true`.
 *
 * node-opcua is heavy (≈ 70 MB RSS, ≈ 0.4 s to load under Bun): it is imported only when an
 * OPC UA device is opened, never by edgecore itself.
 *
 * Certificates: the client's own certificate and key live in a PKI folder (`pkiDir`, default
 * `<tmpdir>/outpost-opcua-pki`), created self-signed on first use, unless `certificate`/`privateKey`
 * name PEM files. A server certificate is checked against `<pkiDir>/trusted/certs` for secured
 * connections; an unknown one is refused (and filed under `<pkiDir>/rejected/`, from where an
 * operator moves it to trusted/) unless `acceptUnknownServerCertificate: true`, which trusts it on
 * first use and files it under trusted/, so later connections with the option off still accept it.
 * KubeEdge's Go mapper does not verify the server certificate at all; here verification is the default.
 */
import { tmpdir } from "node:os";
import { join } from "node:path";
import { format } from "node:util";
import * as v from "valibot";
import type {
  ClientMonitoredItem,
  ClientSession,
  ClientSubscription,
  DataValue,
  OPCUACertificateManager,
  OPCUAClient,
  ReadValueIdOptions,
  StatusCode,
  UserIdentityInfo,
} from "node-opcua";
import type { Logger } from "../../lib/log.ts";
import { defineMapper, type DeviceDriver, type DeviceSpec, type DriverContext, type PropertySpec, type RawValue } from "../plugin.ts";
import { BuiltinType, builtinName, fromVariant, toVariantValue } from "./convert.ts";

type UA = typeof import("node-opcua");

const num = v.pipe(v.union([v.number(), v.pipe(v.string(), v.regex(/^-?\d+(\.\d+)?$/), v.transform(Number))]), v.number());
const int = v.pipe(num, v.integer());
const bool = v.union([v.boolean(), v.pipe(v.picklist(["true", "false"]), v.transform((s) => s === "true"))]);

export const SECURITY_MODES = ["None", "Sign", "SignAndEncrypt"] as const;
export const SECURITY_POLICIES = ["None", "Basic128Rsa15", "Basic256", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] as const;

export const OpcuaProtocolSchema = v.pipe(
  v.object({
    url: v.pipe(
      v.string(),
      v.regex(/^opc\.tcp:\/\/(\[[0-9a-fA-F:.]+\]|[^/:\s[\]]+)(:\d{1,5})?(\/\S*)?$/, "url must look like opc.tcp://host:port/path"),
    ),
    securityMode: v.optional(v.picklist(SECURITY_MODES, `securityMode must be one of ${SECURITY_MODES.join(", ")}`), "None"),
    securityPolicy: v.optional(v.picklist(SECURITY_POLICIES, `securityPolicy must be one of ${SECURITY_POLICIES.join(", ")}`), "None"),
    userName: v.optional(v.pipe(v.string(), v.minLength(1, "userName must not be empty"))),
    password: v.optional(v.string()),
    /** PEM file of the client certificate (else one is made in pkiDir). */
    certificate: v.optional(v.string()),
    /** PEM file of the client private key. */
    privateKey: v.optional(v.string()),
    /** Per-request timeout, milliseconds; connecting may take up to three times this. */
    timeout: v.optional(v.pipe(int, v.minValue(100, "timeout must be at least 100 ms")), 5000),
    /** The client's PKI store (own certificate, trusted/rejected server certificates). */
    pkiDir: v.optional(v.string()),
    /** Trust an unknown server certificate on first use (files it under pkiDir/trusted). */
    acceptUnknownServerCertificate: v.optional(bool, false),
  }),
  v.forward(
    v.check((p) => (p.securityMode === "None") === (p.securityPolicy === "None"), "securityPolicy must be None exactly when securityMode is None"),
    ["securityPolicy"],
  ),
  v.forward(v.check((p) => p.password === undefined || p.userName !== undefined, "userName is required with a password"), ["userName"]),
  v.forward(v.check((p) => (p.certificate === undefined) === (p.privateKey === undefined), "certificate and privateKey go together"), ["privateKey"]),
);

export const OpcuaVisitorSchema = v.object({
  nodeID: v.pipe(
    v.string(),
    v.regex(/^(ns=\d+;)?(i=\d+|s=.+|g=[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|b=[A-Za-z0-9+/=]+)$/, "nodeID must look like ns=2;s=Temperature or ns=2;i=42"),
  ),
  browseName: v.optional(v.string()),
  /** Push values with a monitored item instead of polling. */
  subscribe: v.optional(bool, false),
  /** Monitored item sampling interval, milliseconds (with subscribe). */
  samplingInterval: v.optional(v.pipe(num, v.minValue(0, "samplingInterval must not be negative")), 1000),
});

export type OpcuaProtocol = v.InferOutput<typeof OpcuaProtocolSchema>;
export type OpcuaVisitor = v.InferOutput<typeof OpcuaVisitorSchema>;
type Prop = PropertySpec<OpcuaVisitor>;

export const DEFAULT_PKI_DIR = join(tmpdir(), "outpost-opcua-pki");

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

const oneLine = (e: unknown) => (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, " ").slice(0, 400);

/** node-opcua's ways of saying the channel or session went away under a request. */
const CONNECTION_LOST = /BadConnectionClosed|BadSecureChannel(Closed|IdInvalid)|BadCommunicationError|BadSession(Closed|IdInvalid)|BadNotConnected|Invalid Channel|ECONNRESET|EPIPE/;

const statusText = (sc: StatusCode) => `${sc.name} (0x${sc.value.toString(16).padStart(8, "0")})`;

class OpcuaDriver implements DeviceDriver<OpcuaVisitor> {
  private readonly dataTypes = new Map<string, Promise<number>>();
  private subscription?: Promise<ClientSubscription>;
  private readonly items = new Set<ClientMonitoredItem>();
  private connected = true;
  private sessionAlive = true;
  private closing?: Promise<void>;

  constructor(
    private readonly ua: UA,
    private readonly client: OPCUAClient,
    private readonly session: ClientSession,
    private readonly cm: OPCUACertificateManager,
    private readonly device: DeviceSpec<OpcuaProtocol, OpcuaVisitor>,
    private readonly ctx: DriverContext,
  ) {
    const log = ctx.log;
    client.on("connection_lost", () => {
      this.connected = false;
      log.warn("opcua connection lost, reconnecting", { device: device.id, url: device.protocol.url });
    });
    client.on("connection_reestablished", () => {
      this.connected = true;
      log.info("opcua connection re-established", { device: device.id });
    });
    client.on("close", () => {
      this.connected = false;
    });
    session.on("session_closed", () => {
      this.sessionAlive = false;
    });
    session.on("keepalive_failure", () => {
      this.sessionAlive = false;
    });
    session.on("session_restored", () => {
      this.sessionAlive = true;
    });
    session.on("keepalive", () => {
      this.sessionAlive = true;
    });
    ctx.signal.addEventListener("abort", () => void this.close(), { once: true });
  }

  private get url() {
    return this.device.protocol.url;
  }

  private usable(): void {
    if (this.closing) throw new Error(`opcua ${this.url}: driver closed`);
    if (!this.connected || this.client.isReconnecting) throw new Error(`opcua ${this.url}: disconnected (reconnecting)`);
    if (!this.sessionAlive) throw new Error(`opcua ${this.url}: session lost`);
  }

  /** One service call: refused at once while disconnected, bounded by `timeout`, errors name the endpoint. */
  private async op<T>(what: string, fn: () => Promise<T>): Promise<T> {
    this.usable();
    try {
      return await withTimeout(fn(), this.device.protocol.timeout, `opcua ${this.url}: ${what}`);
    } catch (e) {
      const msg = oneLine(e);
      if (msg.startsWith(`opcua ${this.url}:`)) throw e;
      const lost = CONNECTION_LOST.test(msg) || !this.connected || this.client.isReconnecting;
      throw new Error(`opcua ${this.url}: ${lost ? "disconnected: " : ""}${what} failed: ${msg}`);
    }
  }

  private nodeId(p: Prop) {
    try {
      return this.ua.resolveNodeId(p.visitor.nodeID);
    } catch (e) {
      throw new Error(`property ${p.name}: bad nodeID ${p.visitor.nodeID}: ${(e as Error).message}`);
    }
  }

  private decode(p: Prop, dv: DataValue): RawValue {
    if (dv.statusCode.isNotGood() && !dv.statusCode.isGoodish()) throw new Error(`OPC UA read of ${p.visitor.nodeID} (property ${p.name}) failed: ${statusText(dv.statusCode)}`);
    try {
      return fromVariant(dv.value.dataType, dv.value.value);
    } catch (e) {
      throw new Error(`OPC UA read of ${p.visitor.nodeID} (property ${p.name}): ${(e as Error).message}`);
    }
  }

  async read(p: Prop): Promise<RawValue> {
    const nodeId = this.nodeId(p);
    const dv = await this.op(`read ${p.visitor.nodeID}`, () => this.session.read({ nodeId, attributeId: this.ua.AttributeIds.Value }));
    return this.decode(p, dv);
  }

  /** All properties in one Read request; a Bad node fails only its own property. */
  async readMany(props: Prop[]): Promise<Map<string, RawValue | Error>> {
    const out = new Map<string, RawValue | Error>();
    const ok: Prop[] = [];
    const nodes: ReadValueIdOptions[] = [];
    for (const p of props) {
      try {
        nodes.push({ nodeId: this.nodeId(p), attributeId: this.ua.AttributeIds.Value });
        ok.push(p);
      } catch (e) {
        out.set(p.name, e as Error);
      }
    }
    if (!ok.length) return out;
    try {
      const dvs = await this.op(`read ${ok.length} nodes`, () => this.session.read(nodes));
      ok.forEach((p, i) => {
        try {
          out.set(p.name, this.decode(p, dvs[i]!));
        } catch (e) {
          out.set(p.name, e as Error);
        }
      });
    } catch (e) {
      for (const p of ok) out.set(p.name, e as Error);
    }
    return out;
  }

  /** The node's built-in type: its DataType attribute, or for derived/custom types the variant type of its value. Read once. */
  private dataTypeOf(p: Prop): Promise<number> {
    const key = p.visitor.nodeID;
    let dt = this.dataTypes.get(key);
    if (!dt) {
      dt = this.lookupDataType(p);
      this.dataTypes.set(key, dt);
      dt.catch(() => this.dataTypes.delete(key));
    }
    return dt;
  }

  private async lookupDataType(p: Prop): Promise<number> {
    const nodeId = this.nodeId(p);
    const { AttributeIds } = this.ua;
    const [typeDv, valueDv] = await this.op(`read DataType of ${p.visitor.nodeID}`, () =>
      this.session.read([
        { nodeId, attributeId: AttributeIds.DataType },
        { nodeId, attributeId: AttributeIds.Value },
      ]),
    );
    if (typeDv!.statusCode.isNotGood()) throw new Error(`OPC UA node ${p.visitor.nodeID} (property ${p.name}): cannot read its DataType: ${statusText(typeDv!.statusCode)}`);
    const typeId = typeDv!.value.value as { namespace: number; value: unknown };
    if (typeId.namespace === 0 && typeof typeId.value === "number" && typeId.value >= BuiltinType.Boolean && typeId.value <= BuiltinType.DiagnosticInfo) return typeId.value;
    const fromValue = valueDv!.statusCode.isGoodish() ? valueDv!.value.dataType : BuiltinType.Null;
    if (fromValue === BuiltinType.Null) throw new Error(`OPC UA node ${p.visitor.nodeID} (property ${p.name}): data type ${String(typeId)} is not a built-in type and the node has no value to tell`);
    return fromValue;
  }

  async write(p: Prop, value: RawValue): Promise<void> {
    const dataType = await this.dataTypeOf(p);
    let converted: unknown;
    try {
      converted = toVariantValue(dataType, value);
    } catch (e) {
      throw new Error(`OPC UA write to ${p.visitor.nodeID} (property ${p.name}, ${builtinName(dataType)}): ${(e as Error).message}`);
    }
    const nodeId = this.nodeId(p);
    const { AttributeIds, VariantArrayType } = this.ua;
    const sc = await this.op(`write ${p.visitor.nodeID}`, () =>
      this.session.write({ nodeId, attributeId: AttributeIds.Value, value: { value: { dataType, arrayType: VariantArrayType.Scalar, value: converted } } }),
    );
    if (sc.isNotGood()) throw new Error(`OPC UA write to ${p.visitor.nodeID} (property ${p.name}) failed: ${statusText(sc)}`);
  }

  private getSubscription(): Promise<ClientSubscription> {
    if (!this.subscription) {
      const pushed = this.device.properties.filter((p) => p.visitor.subscribe).map((p) => p.visitor.samplingInterval);
      const publishingInterval = Math.min(1000, Math.max(50, ...(pushed.length ? [Math.min(...pushed)] : [1000])));
      this.subscription = this.op("create subscription", () =>
        this.session.createSubscription2({
          requestedPublishingInterval: publishingInterval,
          requestedLifetimeCount: 600,
          requestedMaxKeepAliveCount: Math.max(3, Math.ceil(10_000 / publishingInterval)),
          maxNotificationsPerPublish: 1000,
          publishingEnabled: true,
          priority: 10,
        }),
      );
      this.subscription.catch(() => (this.subscription = undefined));
    }
    return this.subscription;
  }

  async subscribe(p: Prop, onValue: (value: RawValue) => void): Promise<(() => Promise<void>) | null> {
    if (!p.visitor.subscribe) return null;
    const nodeId = this.nodeId(p);
    const sub = await this.getSubscription();
    const { AttributeIds, TimestampsToReturn } = this.ua;
    const item = await this.op(`monitor ${p.visitor.nodeID}`, () =>
      sub.monitor({ nodeId, attributeId: AttributeIds.Value }, { samplingInterval: p.visitor.samplingInterval, discardOldest: true, queueSize: 10 }, TimestampsToReturn.Both),
    );
    const sc = item.statusCode;
    if (sc && sc.isNotGood()) {
      await item.terminate().catch(() => {});
      throw new Error(`OPC UA monitored item for ${p.visitor.nodeID} (property ${p.name}) refused: ${statusText(sc)}`);
    }
    this.items.add(item);
    item.on("changed", (dv: DataValue) => {
      let value: RawValue;
      try {
        value = this.decode(p, dv);
      } catch (e) {
        this.ctx.log.debug("opcua notification skipped", { device: this.device.id, property: p.name, err: (e as Error).message });
        return;
      }
      onValue(value);
    });
    item.on("err", (msg: string) => this.ctx.log.warn("opcua monitored item error", { device: this.device.id, property: p.name, err: msg }));
    return async () => {
      if (!this.items.delete(item)) return;
      await withTimeout(item.terminate(), this.device.protocol.timeout, "terminate monitored item").catch(() => {});
    };
  }

  async health() {
    if (this.closing || !this.connected || this.client.isReconnecting || !this.sessionAlive) return "disconnected" as const;
    return "ok" as const;
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    const live = this.connected && !this.client.isReconnecting && this.sessionAlive;
    const bound = Math.min(this.device.protocol.timeout, 2000);
    const step = (what: string, p: () => Promise<unknown>) =>
      withTimeout(
        Promise.resolve().then(p),
        bound,
        what,
      ).catch((e: unknown) => this.ctx.log.debug("opcua close step failed", { device: this.device.id, step: what, err: (e as Error).message }));
    if (live && this.subscription) await step("terminate subscription", async () => (await this.subscription!).terminate());
    this.items.clear();
    if (live) await step("close session", () => this.session.close(true));
    await step("disconnect", () => this.client.disconnect());
    await step("dispose certificate manager", () => this.cm.dispose());
  }
}

async function connect(ua: UA, device: DeviceSpec<OpcuaProtocol, OpcuaVisitor>, ctx: DriverContext): Promise<OpcuaDriver> {
  const p = device.protocol;
  const cm = new ua.OPCUACertificateManager({
    rootFolder: p.pkiDir ?? DEFAULT_PKI_DIR,
    automaticallyAcceptUnknownCertificate: p.acceptUnknownServerCertificate,
    disableFileWatchers: true,
  });
  const client = ua.OPCUAClient.create({
    applicationName: "outpost-mapper-opcua",
    clientName: `outpost ${device.id}`,
    endpointMustExist: false,
    securityMode: p.securityMode,
    securityPolicy: p.securityPolicy,
    clientCertificateManager: cm,
    ...(p.certificate ? { certificateFile: p.certificate, privateKeyFile: p.privateKey } : {}),
    // initial connect: one retry, then fail so the host's back-off takes over; after a break
    // node-opcua reconnects in place (keeping the session and its subscriptions when it can)
    connectionStrategy: { maxRetry: 1, initialDelay: 200, maxDelay: 2000, randomisationFactor: 0 },
    defaultTransactionTimeout: p.timeout,
    keepSessionAlive: true,
    keepAliveInterval: Math.max(1000, Math.min(p.timeout, 5000)),
    requestedSessionTimeout: 60_000,
  });
  let session: ClientSession | undefined;
  const abandon = async () => {
    await withTimeout(client.disconnect(), 2000, "disconnect").catch(() => {});
    await cm.dispose().catch(() => {});
  };
  const onAbort = () => void abandon();
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  try {
    await withTimeout(client.connect(p.url), p.timeout * 3, `opcua ${p.url}: connect`).catch((e: unknown) => {
      const msg = oneLine(e);
      const hint = /BadCertificateUntrusted/.test(msg)
        ? `; the server certificate was filed under ${join(cm.rootDir, "rejected")}: move it to ${join(cm.rootDir, "trusted", "certs")} or set acceptUnknownServerCertificate`
        : "";
      throw new Error(`opcua ${p.url}: cannot connect (${p.securityMode}/${p.securityPolicy}): ${msg}${hint}`);
    });
    const identity: UserIdentityInfo =
      p.userName !== undefined ? { type: ua.UserTokenType.UserName, userName: p.userName, password: p.password ?? "" } : { type: ua.UserTokenType.Anonymous };
    session = await withTimeout(client.createSession(identity), p.timeout * 2, `opcua ${p.url}: create session`).catch((e: unknown) => {
      const who = p.userName !== undefined ? `user "${p.userName}"` : "anonymous";
      throw new Error(`opcua ${p.url}: session for ${who} refused: ${oneLine(e)}`);
    });
    if (ctx.signal.aborted) throw new Error(`opcua ${p.url}: closed while connecting`);
  } catch (e) {
    await abandon();
    throw e;
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
  }
  return new OpcuaDriver(ua, client, session, cm, device, ctx);
}

/**
 * node-opcua prints its warnings and errors with console.log (stdout); send them to the mapper's
 * log instead: warnings at debug (the driver reports what matters as Errors), errors at warn.
 * node-opcua's loggers are process-wide, so the latest opened device's logger receives them.
 */
let uaLog: Logger | undefined;
function routeLogs(ua: UA, log: Logger): void {
  const first = !uaLog;
  uaLog = log.child("node-opcua");
  if (!first) return;
  const line = (args: unknown[]) => format(...args).split("\n")[0]!.slice(0, 500);
  ua.setWarningLogger((_ctx?: unknown, ...args: unknown[]) => uaLog!.debug(line(args)));
  ua.setErrorLogger((_ctx?: unknown, ...args: unknown[]) => uaLog!.warn(line(args)));
}

export default defineMapper({
  protocol: "opcua",
  protocolSchema: OpcuaProtocolSchema,
  visitorSchema: OpcuaVisitorSchema,
  async open(device, ctx) {
    const ua = await import("node-opcua");
    routeLogs(ua, ctx.log);
    return connect(ua, device, ctx);
  },
});
