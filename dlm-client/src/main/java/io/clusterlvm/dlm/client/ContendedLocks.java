package io.clusterlvm.dlm.client;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Locks someone waits for, as the server's blocking hints say: their asynchronous release goes out
 * at once instead of being held back. One per client, shared by its lock streams, so that a hint
 * outlives the stream it came with (a leader change or a server restart opens a new stream, and the
 * new leader does not hint again for a request it already had).
 *
 * <p>A lock leaves the set when its release is made. Hints for locks that are never released here
 * (a holder that ended, or a hint for a lock whose grant was lost) are dropped wholesale when the
 * set grows too big; a release can then wait for the hold's timer, no longer.
 */
final class ContendedLocks {
  /** Hints remembered at most. */
  private static final int MAX = 4096;

  private final Set<Long> lockIds = ConcurrentHashMap.newKeySet();

  void add(long lockId) {
    if (lockIds.size() >= MAX) {
      lockIds.clear();
    }
    lockIds.add(lockId);
  }

  /**
   * Whether someone waits for {@code lockId}; forgets it either way (its release is being made).
   */
  boolean take(long lockId) {
    return lockIds.remove(lockId);
  }
}
