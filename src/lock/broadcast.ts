/** Short messages every replica hears: what one replica forgets (a narinfo deleted, evicted or
 * replaced), the others forget at once instead of serving their in-memory copy until it
 * expires; and, before an eviction pass, a request to write held access times now. Through
 * Redis pub/sub (redis-broadcast.ts) when replicas share Redis; with one instance there is
 * nobody to tell (`noBroadcast`).
 *
 * Delivery is best effort (pub/sub keeps nothing for a subscriber that is disconnected), so
 * what listeners keep must still expire on its own; and anyone who can publish to Redis can
 * send anything, so a listener checks what it receives. */
export interface Broadcast {
  /** Sends to every other replica; never throws (trouble is logged). */
  publish(message: string): void;
  /** `listener` hears every message other replicas publish (not this replica's own). */
  listen(listener: (message: string) => void): void;
  /** True once messages can be sent (a publish before that is lost), false when that has not
   * happened within `waitMs`; either way nothing of the wait is left behind. For a
   * short-lived process, such as fsck, whose messages are few and all matter. */
  connected(waitMs: number): Promise<boolean>;
  close(): Promise<void>;
}

export const noBroadcast: Broadcast = {
  publish() {},
  listen() {},
  connected: async () => true,
  close: async () => {},
};
