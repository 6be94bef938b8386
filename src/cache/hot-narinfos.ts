/** Recently served narinfos, kept encoded in memory: a hit then costs no database call and no
 * string encoding. Measured here (wrk, 25 connections, loopback): a SQLite lookup per request
 * serves about 45k narinfos/s from a bare Bun.serve, a memory hit about 80k/s.
 *
 * Bounded by bytes; entries live at most `ttlMs`, so a narinfo deleted on another replica
 * stops being served from this one within that time (deletes on this replica forget at once). */
export class HotNarInfos {
  private readonly entries = new Map<string, { body: Uint8Array; expires: number }>();
  private bytes = 0;

  constructor(
    private readonly maxBytes = 32 * 1024 * 1024,
    private readonly ttlMs = 30_000,
  ) {}

  get(hash: string, now = Date.now()): Uint8Array | null {
    const entry = this.entries.get(hash);
    if (!entry) return null;
    if (entry.expires <= now) {
      this.forget(hash);
      return null;
    }
    return entry.body;
  }

  set(hash: string, body: Uint8Array, now = Date.now()) {
    if (body.length > this.maxBytes) return;
    this.forget(hash);
    // Oldest first (insertion order): good enough for a cache whose entries expire anyway.
    for (const [oldest, entry] of this.entries) {
      if (this.bytes + body.length <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= entry.body.length;
    }
    this.entries.set(hash, { body, expires: now + this.ttlMs });
    this.bytes += body.length;
  }

  forget(hash: string) {
    const entry = this.entries.get(hash);
    if (!entry) return;
    this.entries.delete(hash);
    this.bytes -= entry.body.length;
  }

  get size(): number {
    return this.entries.size;
  }
}
