package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.engine.Owner;

/**
 * Whether a node is alive, as its agent proves by heartbeats on its membership lease. This decides
 * what an abrupt end of a client session means: a process died on a live node (release its locks,
 * as the Linux DLM does), or the whole node failed (keep everything frozen until the fence bridge
 * purges it). A lease that merely still exists proves nothing (ZooKeeper may extend a dead
 * session's life across its own leader change); a heartbeat written after the session broke does.
 *
 * <p>The lease also names the session bound to it, the agent's own: the process that heartbeats is
 * the process that holds that session, so a heartbeat after its break proves a lost connection, not
 * a dead process.
 */
interface NodeLiveness {
  /** The node has no lease at all (no agent, e.g. joined with dlmctl join). */
  long UNTRACKED = -1;

  /** The node's lease of this incarnation is gone. */
  long NO_LEASE = -2;

  /**
   * What the lock service reads of a node's lease: {@code heartbeat} grows with every heartbeat
   * (the lease znode's mzxid), or is {@link #UNTRACKED} / {@link #NO_LEASE}; {@code boundSessionId}
   * is the session bound to the lease, 0 if none.
   */
  record Lease(long heartbeat, long boundSessionId) {
    static final Lease NONE = new Lease(NO_LEASE, 0);
    static final Lease NOT_TRACKED = new Lease(UNTRACKED, 0);
  }

  enum Verdict {
    UNTRACKED,
    /** A heartbeat after the break: the session's process died on a live node. */
    ALIVE,
    /** A heartbeat after the break, and the session is bound to the lease: it was cut off. */
    CUT_OFF,
    GONE
  }

  /**
   * The node's lease of {@code owner}'s incarnation. Blocking (reads ZooKeeper); never called on
   * the engine thread.
   */
  Lease lease(Owner owner);

  static NodeLiveness untracked() {
    return o -> Lease.NOT_TRACKED;
  }
}
