/** HTTP requests written byte for byte on a TCP socket: request targets and Host headers that
 * fetch() would normalise or refuse (absolute-form targets, no Host, odd encodings). */
import { connect } from "node:net";

export interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Sends `head` (request line and headers, without the blank line) plus `Connection: close`,
 * and reads the whole answer. Rejects when nothing answers within `timeoutMs`. */
export function rawRequest(port: number, head: string, timeoutMs = 5_000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms to ${JSON.stringify(head.split("\r\n")[0])}`));
    }, timeoutMs);
    socket.on("connect", () => socket.write(`${head}\r\nConnection: close\r\n\r\n`));
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", () => {}); // a reset after the answer still leaves the answer to parse
    socket.on("close", () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString("latin1");
      const end = text.indexOf("\r\n\r\n");
      const lines = text.slice(0, end < 0 ? text.length : end).split("\r\n");
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "")?.[1] ?? 0);
      const headers = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        if (colon > 0) headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
      }
      resolve({ status, headers, body: end < 0 ? "" : text.slice(end + 4) });
    });
  });
}
