/** `ncps pin add|rm|ls`: pins for operators. With --server-url the command asks the running
 * server (POST/DELETE /pin/<hash>.narinfo, GET /pins, with the configured put or get token), so
 * `add` also fetches whatever of the closure is missing at once. Without it the command works
 * on the database alone (the server may be down): `add` records the pin, which protects the
 * closure from the next eviction pass, and a server fetches what is missing when it starts. */
import { closurePresence, pinTarget, recordPin, type ClosurePresence } from "../cache/pins.ts";
import type { Config } from "../config/options.ts";
import type { MetadataStore, Pin } from "../db/metadata-store.ts";
import { openMetadataStore, poolSettings } from "../db/open.ts";
import { NixFormatError } from "../nix/errors.ts";
import { startupStep } from "../startup.ts";

export type PinAction = "add" | "rm" | "ls";

/** A mistake or refusal the operator reads as one line. */
class PinCommandError extends Error {
  override name = "PinCommandError";
  readonly userFacing = true;
}

interface Listed extends Pin {
  closure: ClosurePresence;
  warming?: boolean;
}

export async function pin(config: Config, action: PinAction, ref: string | undefined, opts: { serverUrl?: string; out?: (line: string) => void }): Promise<void> {
  const out = opts.out ?? ((line: string) => console.log(line));
  if (action !== "ls") {
    try {
      pinTarget(ref!); // a mistyped path is reported before anything is opened
    } catch (err) {
      if (err instanceof NixFormatError) throw new PinCommandError(`${err.message} (expected a store path or its 32-character hash)`);
      throw err;
    }
  }
  if (opts.serverUrl) return viaServer(config, action, ref, opts.serverUrl, out);
  const db = await startupStep("database", () =>
    openMetadataStore(config.cacheDatabaseUrl, {
      migrate: false,
      pool: poolSettings(config),
    }),
  );
  try {
    await inDatabase(db, action, ref, out);
  } finally {
    await db.close();
  }
}

async function inDatabase(db: MetadataStore, action: PinAction, ref: string | undefined, out: (line: string) => void) {
  if (action === "ls") {
    const pins = await db.listPins();
    const listed = await Promise.all(pins.map(async (p) => ({ ...p, closure: await closurePresence(db, p.hash) })));
    return printList(listed, out);
  }
  if (action === "rm") {
    const { hash } = pinTarget(ref!);
    return out((await db.removePin(hash)) ? `unpinned ${hash}` : `${hash} was not pinned`);
  }
  const recorded = await recordPin(db, ref!);
  if (!recorded) {
    throw new PinCommandError(`${ref} is not in the cache: name its full store path, or pin through a running server with --server-url`);
  }
  const { pin, added } = recorded;
  out(added ? `pinned ${pin.storePath}` : `${pin.storePath} was already pinned`);
  const presence = await closurePresence(db, pin.hash);
  if (!presence.complete) {
    out("part of its closure is not cached: a server fetches it when it starts (pin with --server-url to fetch it now)");
  }
}

async function viaServer(config: Config, action: PinAction, ref: string | undefined, serverUrl: string, out: (line: string) => void) {
  const token = config.cachePutToken || config.cacheGetToken;
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const base = serverUrl.replace(/\/+$/, "");
  const target = action === "ls" ? "/pins" : `/pin/${pinTarget(ref!).hash}.narinfo`;
  const method = { add: "POST", rm: "DELETE", ls: "GET" }[action];
  let res: Response;
  try {
    res = await fetch(`${base}${target}`, { method, headers });
  } catch (err) {
    throw new PinCommandError(`cannot reach ${base}: ${(err as Error).message}`);
  }
  if (!res.ok) throw new PinCommandError(`${method} ${base}${target}: ${res.status} ${(await res.text()).trim()}`);
  const body = await res.json();
  if (action === "ls") return printList(body as Listed[], out);
  if (action === "rm") {
    const { hash, removed } = body as { hash: string; removed: boolean };
    return out(removed ? `unpinned ${hash}` : `${hash} was not pinned`);
  }
  const added = body as Pin & { added: boolean };
  out(added.added ? `pinned ${added.storePath}` : `${added.storePath} was already pinned`);
  out("the server is fetching whatever of its closure is missing (see ncps pin ls)");
}

const MiB = 1024 * 1024;

function printList(pins: Listed[], out: (line: string) => void) {
  if (pins.length === 0) return out("no pins");
  for (const p of pins) {
    const c = p.closure;
    const state = c.complete ? "complete" : p.warming ? "warming" : "incomplete";
    out(`${p.storePath}  ${c.present}/${c.paths} paths  ${(c.bytes / MiB).toFixed(1)} MiB  ${state}  pinned ${new Date(p.createdAt).toISOString()}`);
  }
}
