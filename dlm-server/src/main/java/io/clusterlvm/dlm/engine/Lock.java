package io.clusterlvm.dlm.engine;

import java.util.HashSet;
import java.util.Set;

/** One lock request on one resource. Mutable, and only ever touched by {@link LockEngine}. */
final class Lock {
  final long id;
  final Resource resource;
  final Owner owner;
  final long sessionId;
  final boolean persistent;
  final boolean notifyBlocking;
  final String requestId;

  QueueState state;
  LockMode granted; // null while waiting
  LockMode requested; // null unless converting or waiting
  long token;
  long queueSeq;
  long sinceMillis;

  /** The latest conversion (see {@link LockEngine#abandonConversion}); null if none. */
  LockView.Conversion lastConversion;

  /**
   * Ids of the holders already told that they block this request (while it waits or converts), so
   * each is told once per request. Cleared when a new conversion is queued; not persisted, so a new
   * leader may tell a holder again.
   */
  private Set<Long> notifiedHolders; // null until the first (most locks never block anyone)

  Lock(
      long id,
      Resource resource,
      Owner owner,
      long sessionId,
      boolean persistent,
      boolean notifyBlocking,
      String requestId) {
    this.id = id;
    this.resource = resource;
    this.owner = owner;
    this.sessionId = sessionId;
    this.persistent = persistent;
    this.notifyBlocking = notifyBlocking;
    this.requestId = requestId;
  }

  /** Records that holder {@code holderId} was told it blocks this lock; false if it already was. */
  boolean markNotified(long holderId) {
    if (notifiedHolders == null) {
      notifiedHolders = new HashSet<>(4);
    }
    return notifiedHolders.add(holderId);
  }

  void clearNotified() {
    notifiedHolders = null;
  }

  /** The mode this lock asks for or holds, whichever decides whether it can be granted. */
  LockMode wanted() {
    return requested != null ? requested : granted;
  }

  LockView view() {
    return new LockView(
        id,
        resource.key,
        owner,
        sessionId,
        state,
        granted,
        requested,
        token,
        persistent,
        notifyBlocking,
        queueSeq,
        requestId,
        sinceMillis,
        lastConversion);
  }
}
