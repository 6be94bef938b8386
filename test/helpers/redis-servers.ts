/** Throwaway redis-server processes for outage tests: each on a port of its own, nothing
 * saved to disk; kill() is an outage (SIGKILL), start() brings the server back on the same
 * port, empty, as a restarted Redis without persistence is. */
import { Redis } from "ioredis";
import { eventually } from "./eventually.ts";
import { freePort } from "./ports.ts";
import { hasCommand } from "./prereq.ts";

export const haveRedisServer = hasCommand("redis-server");

export interface RedisServer {
  port: number;
  addr: string;
  running: boolean;
  start(): Promise<void>;
  kill(): Promise<void>;
  /** A plain client to look at keys (closed by kill and by the caller's cleanup). */
  client(): Redis;
}

export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  let proc: Bun.Subprocess | null = null;
  const clients: Redis[] = [];
  const server: RedisServer = {
    port,
    addr: `127.0.0.1:${port}`,
    get running() {
      return proc !== null;
    },
    async start() {
      proc = Bun.spawn(["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdout: "ignore", stderr: "ignore" });
      const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: 0 });
      probe.on("error", () => {});
      try {
        await eventually(
          `redis-server on ${port} answering`,
          async () => {
            try {
              if (probe.status === "wait") await probe.connect();
              return (await probe.ping()) === "PONG";
            } catch {
              return false; // not listening yet
            }
          },
          { deadlineMs: 10_000, everyMs: 50 },
        );
      } finally {
        probe.disconnect();
      }
    },
    async kill() {
      for (const c of clients.splice(0)) c.disconnect();
      if (!proc) return;
      proc.kill("SIGKILL");
      await proc.exited;
      proc = null;
    },
    client() {
      const c = new Redis({ port, host: "127.0.0.1" });
      c.on("error", () => {});
      clients.push(c);
      return c;
    },
  };
  await server.start();
  return server;
}
