/** Ports for "upstream down" and "upstream never answers" tests. */
import { createServer, type Socket } from "node:net";

/** A port on 127.0.0.1 that was free a moment ago: bind to port 0, read it, close. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  return address.port;
}

/** A port with nothing listening: connections are refused ("upstream down"). */
export async function startStoppedPort(): Promise<{ port: number; url: string }> {
  const port = await freePort();
  return { port, url: `http://127.0.0.1:${port}` };
}

export interface SilentPort {
  port: number;
  url: string;
  /** TCP connections accepted so far. */
  accepted(): number;
  stop(): Promise<void>;
}

/** Accepts TCP connections and reads whatever arrives, never writing a byte: a peer that
 * is up at the TCP level but never answers HTTP. Unlike a "hang" fault of an upstream,
 * nothing here even parses the request. */
export async function startSilentPort(): Promise<SilentPort> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on("data", () => {});
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no TCP address");
  return {
    port: address.port,
    url: `http://127.0.0.1:${address.port}`,
    accepted: () => accepted,
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
