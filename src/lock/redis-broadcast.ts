/** Broadcast through Redis pub/sub, on every server of --cache-redis-addrs (so a minority of
 * them down loses nothing): one connection publishes, one subscribes (a subscribed ioredis
 * connection can do nothing else), per server. Each message carries this process's id so it
 * can skip its own; a message heard from several servers reaches listeners once per server,
 * which is harmless for what is sent (forgetting twice forgets once). */
import { Redis } from "ioredis";
import type { Broadcast } from "./broadcast.ts";
import { formatRedisAddr, parseRedisAddr } from "./redis-addr.ts";
import { DEFAULT_KEY_PREFIX, redisConnection, type RedisLockerOptions } from "./redis.ts";
import { TIMED_OUT, within } from "../within.ts";

/** Bounds a publish, so a stalled server is given up instead of piling up commands. */
const COMMAND_TIMEOUT_MS = 5_000;

export class RedisBroadcast implements Broadcast {
  private readonly channel: string;
  private readonly id = crypto.randomUUID();
  private readonly servers: { addr: string; pub: Redis; sub: Redis }[];
  private readonly listeners: ((message: string) => void)[] = [];
  /** Last error per connection, so a server that stays down is logged once, not per retry. */
  private readonly lastErrors = new Map<Redis, string>();
  private closed = false;

  constructor(private readonly opts: RedisLockerOptions & { channel: string }) {
    this.channel = (opts.keyPrefix ?? DEFAULT_KEY_PREFIX) + opts.channel;
    this.servers = opts.addrs.map((text) => {
      const addr = parseRedisAddr(text);
      const connection = redisConnection(addr, opts);
      // Publishing while disconnected fails at once: the message is lost, not queued for later.
      const pub = new Redis({ ...connection, enableOfflineQueue: false, commandTimeout: COMMAND_TIMEOUT_MS, lazyConnect: true });
      // The subscription is queued until connected and renewed by ioredis after each reconnect.
      const sub = new Redis({ ...connection, lazyConnect: true });
      const server = { addr: formatRedisAddr(addr), pub, sub };
      for (const conn of [pub, sub]) {
        conn.on("error", (err: Error) => this.trouble(conn, server.addr, err));
        conn.on("ready", () => this.lastErrors.delete(conn));
      }
      sub.on("message", (channel: string, payload: string) => this.heard(channel, payload));
      void pub.connect().catch(() => {});
      void sub.connect().catch(() => {});
      void sub.subscribe(this.channel).catch((err: Error) => this.trouble(sub, server.addr, err));
      return server;
    });
  }

  publish(message: string): void {
    const payload = `${this.id} ${message}`;
    for (const { addr, pub } of this.servers) {
      pub.publish(this.channel, payload).catch((err: Error) => this.trouble(pub, addr, err));
    }
  }

  listen(listener: (message: string) => void): void {
    this.listeners.push(listener);
  }

  async connected(waitMs: number): Promise<boolean> {
    const stopWaiting: (() => void)[] = [];
    const ready = (pub: Redis) =>
      new Promise<void>((resolve) => {
        pub.once("ready", resolve);
        stopWaiting.push(() => pub.off("ready", resolve));
      });
    try {
      const all = Promise.all(this.servers.map(({ pub }) => (pub.status === "ready" ? undefined : ready(pub))));
      return (await within(waitMs, all)) !== TIMED_OUT;
    } finally {
      // a server that never came up would otherwise keep a listener per wait
      for (const stop of stopWaiting) stop();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(
      // quit() on a connection that is not up would wait for it to come up first
      this.servers.flatMap(({ pub, sub }) => [pub, sub]).map((conn) => (conn.status === "ready" ? conn.quit().catch(() => conn.disconnect()) : conn.disconnect())),
    );
  }

  private heard(channel: string, payload: string): void {
    if (channel !== this.channel) return;
    const space = payload.indexOf(" ");
    if (space < 0 || payload.slice(0, space) === this.id) return;
    const message = payload.slice(space + 1);
    for (const listener of this.listeners) listener(message);
  }

  private trouble(conn: Redis, addr: string, err: Error): void {
    if (this.closed) return;
    const message = this.opts.password ? err.message.split(this.opts.password).join("***") : err.message;
    if (this.lastErrors.get(conn) === message) return;
    this.lastErrors.set(conn, message);
    this.opts.logger?.warn("redis broadcast trouble: other replicas forget deleted narinfos only when they expire (30 s)", { addr, error: message });
  }
}
