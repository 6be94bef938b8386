/** Recently served narinfos, kept encoded in memory: a hit then costs no database call and no
 * string encoding. Measured here (wrk, 25 connections, loopback): a SQLite lookup per request
 * serves about 45k narinfos/s from a bare Bun.serve, a memory hit about 80k/s.
 *
 * Bounded by bytes. What one replica forgets (a narinfo deleted, evicted, replaced) every
 * replica forgets at once, through the broadcast it is shared through (Redis pub/sub);
 * entries also live at most `ttlMs`, which bounds a copy whose forget message was lost
 * (pub/sub keeps nothing for a replica cut off from Redis at that moment). */
import type { Broadcast } from "../lock/broadcast.ts";
import { isStorePathHash } from "../nix/store-path.ts";

export class HotNarInfos {
  private readonly entries = new Map<string, { body: Uint8Array; expires: number }>();
  private bytes = 0;
  private broadcast: Broadcast | null = null;

  constructor(
    private readonly maxBytes = 32 * 1024 * 1024,
    private readonly ttlMs = 30_000,
  ) {}

  /** From now on this replica's forgets reach the others through `broadcast`, and theirs
   * reach this one. A message that is not a store path hash is ignored (anyone who can
   * publish to Redis can send one). */
  shareThrough(broadcast: Broadcast) {
    this.broadcast = broadcast;
    broadcast.listen((hash) => {
      if (isStorePathHash(hash)) this.drop(hash);
    });
  }

  get(hash: string, now = Date.now()): Uint8Array | null {
    const entry = this.entries.get(hash);
    if (!entry) return null;
    if (entry.expires <= now) {
      this.drop(hash);
      return null;
    }
    return entry.body;
  }

  set(hash: string, body: Uint8Array, now = Date.now()) {
    if (body.length > this.maxBytes) return;
    this.drop(hash);
    // Oldest first (insertion order): good enough for a cache whose entries expire anyway.
    for (const [oldest, entry] of this.entries) {
      if (this.bytes + body.length <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= entry.body.length;
    }
    this.entries.set(hash, { body, expires: now + this.ttlMs });
    this.bytes += body.length;
  }

  /** Forgets here and on every replica sharing the broadcast. */
  forget(hash: string) {
    this.drop(hash);
    this.broadcast?.publish(hash);
  }

  private drop(hash: string) {
    const entry = this.entries.get(hash);
    if (!entry) return;
    this.entries.delete(hash);
    this.bytes -= entry.body.length;
  }

  get size(): number {
    return this.entries.size;
  }
}
