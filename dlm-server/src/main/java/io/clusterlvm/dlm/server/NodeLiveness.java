package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.engine.Owner;

/**
 * Whether a node is alive, as its agent proves by heartbeats on its membership lease. This decides
 * what an abrupt end of a client session means: a process died on a live node (release its locks,
 * as the Linux DLM does), or the whole node failed (keep everything frozen until the fence bridge
 * purges it). A lease that merely still exists proves nothing (ZooKeeper may extend a dead
 * session's life across its own leader change); a heartbeat written after the session broke does.
 */
interface NodeLiveness {
  /** The node has no lease at all (no agent, e.g. joined with dlmctl join). */
  long UNTRACKED = -1;

  /** The node's lease of this incarnation is gone. */
  long NO_LEASE = -2;

  enum Verdict {
    UNTRACKED,
    ALIVE,
    GONE
  }

  /**
   * A number that grows with every heartbeat of the node's lease (the lease znode's mzxid), or
   * {@link #UNTRACKED} / {@link #NO_LEASE}. Blocking (reads ZooKeeper); never called on the engine
   * thread.
   */
  long heartbeat(Owner owner);

  static NodeLiveness untracked() {
    return o -> UNTRACKED;
  }
}
