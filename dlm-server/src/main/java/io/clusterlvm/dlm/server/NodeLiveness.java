package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.engine.Owner;

/**
 * Whether a node still holds its membership lease. This decides what an abrupt end of a client
 * session means: the process died on a live node (release its locks, as the Linux DLM does), or the
 * whole node failed (keep everything frozen until the fence bridge purges it).
 */
interface NodeLiveness {
  enum Verdict {
    /** The node has no lease (no agent, e.g. joined with dlmctl join): a process end is final. */
    UNTRACKED,
    /** The node's lease of this incarnation is held. */
    ALIVE,
    /** The node's lease is gone: it may be dead and its locks must stay frozen. */
    GONE
  }

  /** Blocking (reads ZooKeeper); never called on the engine thread. */
  Verdict check(Owner owner);

  static NodeLiveness untracked() {
    return o -> Verdict.UNTRACKED;
  }
}
