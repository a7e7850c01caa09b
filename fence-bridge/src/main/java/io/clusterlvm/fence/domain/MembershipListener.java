package io.clusterlvm.fence.domain;

/** What the host's storage work needs to hear about its membership. Called on Curator's thread. */
public interface MembershipListener {
  /**
   * Storage use is allowed (true: a member with a live lease) or must stop now (false: the
   * ZooKeeper connection is SUSPENDED, or the lease is lost). No new storage command may start
   * while it is false.
   */
  default void storageAllowed(boolean allowed) {}

  /**
   * The lease was LOST: the host may have been fenced. Drop every cached lock and state, abort what
   * runs; the membership rejoins with a new incarnation by itself.
   */
  default void leaseLost(long oldIncarnation) {}

  /**
   * A member with this incarnation: joined (again), or took over the lease of an earlier agent
   * process of this boot, whose locks are then this process's.
   */
  default void joined(long incarnation) {}

  /**
   * The host is about to leave cleanly, which releases every lock of its incarnation: the storage
   * work under them must end first (no new work starts: storage use is already disallowed). Throw
   * to refuse the leave; the host then stays a member.
   */
  default void leaving() throws Exception {}
}
