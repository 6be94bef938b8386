/** Locks across several independent Redis servers (several `--cache-redis-addrs`), taken on a
 * majority of them: the Redlock scheme, which is what the Go ncps does with the same list
 * (redsync over one client per address, quorum n/2+1). Any minority of the servers can be
 * down, or lose its keys, and no two replicas hold one lock at once.
 *
 * Why not Sentinel or Cluster: the Go ncps's addresses are independent masters, so reading
 * the same list as a Sentinel set or a Cluster's seeds would mean something else for the same
 * configuration; and a failover in either can lose a key just written (replication is
 * asynchronous), handing a held lock to a second replica. A majority of independent servers
 * does not have that hole. Each server is a RedisLocker: its own connection, lease renewal
 * and compare-and-delete release. */
import { DEFAULT_WAIT_MS, LockerClosedError, type Locker } from "./locker.ts";
import { RedisLocker, type RedisLockerOptions } from "./redis.ts";
import { withLockByTrying } from "./retry.ts";

const DEFAULT_TTL_MS = 60_000;
/** Redlock's allowance for clock drift between the servers: a lock taken later than this
 * share of its TTL after the first SET is not trusted (a majority may be about to expire). */
const CLOCK_DRIFT_FACTOR = 0.01;

export class QuorumLocker implements Locker {
  private readonly nodes: RedisLocker[];
  readonly quorum: number;

  constructor(private readonly opts: RedisLockerOptions) {
    if (opts.addrs.length < 2) throw new Error("quorum locker: give it two or more addresses");
    this.nodes = opts.addrs.map((addr) => new RedisLocker({ ...opts, addrs: [addr] }));
    this.quorum = Math.floor(this.nodes.length / 2) + 1;
  }

  /** Every node PINGed at once; throws one line unless a majority answers (naming each that
   * did not, never the password). */
  async check(): Promise<void> {
    const results = await Promise.allSettled(this.nodes.map((n) => n.check()));
    const failures = results.flatMap((r) => (r.status === "rejected" ? [(r.reason as Error).message] : []));
    const answered = this.nodes.length - failures.length;
    if (answered < this.quorum) throw new Error(`${this.shortOf(answered)}: ${failures.join("; ")}`);
  }

  withLock<T>(name: string, fn: () => Promise<T>, waitMs = DEFAULT_WAIT_MS): Promise<T> {
    return withLockByTrying(this, name, fn, waitMs, (err) => this.opts.logger?.warn("redis lock release failed", { lock: name, error: String(err) }));
  }

  /** SET on every node at once; held when a majority took it soon enough. Otherwise what was
   * taken is given back at once, and the answer is "busy" (null) when the nodes that said no
   * could still make a majority, an error (Redis unreachable) when too few answered at all. */
  async tryLock(name: string, ttlMs = DEFAULT_TTL_MS, holder?: string): Promise<(() => Promise<void>) | null> {
    const startedAt = Date.now();
    const results = await Promise.allSettled(this.nodes.map((n) => n.tryLock(name, ttlMs, holder)));
    const releases = results.flatMap((r) => (r.status === "fulfilled" && r.value ? [r.value] : []));
    const releaseAll = () => this.releaseAll(name, releases);
    const inTime = Date.now() - startedAt < ttlMs * (1 - CLOCK_DRIFT_FACTOR);
    if (releases.length >= this.quorum && inTime) return releaseAll;
    await releaseAll().catch(() => {}); // a node that keeps it lets it expire
    const errors = results.flatMap((r) => (r.status === "rejected" ? [r.reason as Error] : []));
    const closed = errors.find((e) => e instanceof LockerClosedError);
    if (closed) throw closed;
    const answered = this.nodes.length - errors.length;
    if (answered < this.quorum) {
      const prefix = `cannot take lock ${JSON.stringify(name)}: `;
      throw new Error(`${prefix}${this.shortOf(answered)}: ${errors.map((e) => e.message.replace(prefix, "")).join("; ")}`);
    }
    return null;
  }

  /** The holder note a majority of the nodes hold for `name`; null when none is (a lock being
   * taken or given back, or nodes down). */
  async holderOf(name: string): Promise<string | null> {
    const results = await Promise.allSettled(this.nodes.map((n) => n.holderOf(name)));
    const counts = new Map<string, number>();
    for (const r of results) if (r.status === "fulfilled" && r.value !== null) counts.set(r.value, (counts.get(r.value) ?? 0) + 1);
    for (const [note, count] of counts) if (count >= this.quorum) return note;
    return null;
  }

  async close(): Promise<void> {
    await Promise.all(this.nodes.map((n) => n.close()));
  }

  /** Released on every node that took it; fails only when no node could release it (the
   * keys then expire after their TTL). */
  private async releaseAll(name: string, releases: (() => Promise<void>)[]): Promise<void> {
    const results = await Promise.allSettled(releases.map((release) => release()));
    const failed = results.flatMap((r) => (r.status === "rejected" ? [r.reason as Error] : []));
    if (releases.length > 0 && failed.length === releases.length) throw new Error(`cannot release lock ${JSON.stringify(name)}: ${failed.map((e) => e.message).join("; ")}`);
  }

  private shortOf(answered: number): string {
    return `only ${answered} of ${this.nodes.length} redis servers answered, ${this.quorum} needed for a lock`;
  }
}
