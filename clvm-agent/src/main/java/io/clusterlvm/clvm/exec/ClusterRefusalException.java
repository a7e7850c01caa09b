package io.clusterlvm.clvm.exec;

import java.util.Objects;

/**
 * The cluster would not let a command run (or could not tell how it ended). The message is meant
 * for the operator; {@link #reason()} says which kind of refusal it is, so transports can map it to
 * a status and the clvm wrapper to an exit code.
 */
public final class ClusterRefusalException extends Exception {

  /** Kinds of refusal, each with its own status and wrapper exit code. */
  public enum Reason {
    /** This host is not a member of the fence domain (not joined, left, or lease lost). */
    NOT_MEMBER,
    /** The ZooKeeper connection is SUSPENDED: no new storage command starts (self-fence). */
    SUSPENDED,
    /** A lock wait ran into the agent's lock timeout. */
    LOCK_TIMEOUT,
    /** A no-wait (NOQUEUE) lock is held by someone else, e.g. the LV is active on another host. */
    LOCK_HELD_ELSEWHERE,
    /** The lease or the lock session was lost while lvm ran: lvm was stopped, outcome unknown. */
    LEASE_LOST_IN_FLIGHT,
    /** clvm can't tell which locks make the command safe. */
    UNSUPPORTED_COMMAND,
    /** The metadata-change log has seen a newer fencing token than this command's. */
    STALE_FENCING_TOKEN,
    /** The lock service can't be reached, or this agent has no lock session. */
    LOCK_SERVICE_UNAVAILABLE,
    /** lvm could not be started, or ran into the agent's time limit and was killed. */
    LVM_FAILED,
    /** Its client went away while it waited for its locks: lvm did not run. */
    CANCELLED
  }

  private final Reason reason;
  private final String lock;
  private final String holder;
  private final boolean lvmStarted;

  public ClusterRefusalException(Reason reason, String message) {
    this(reason, message, null, null, false, null);
  }

  public ClusterRefusalException(
      Reason reason,
      String message,
      String lock,
      String holder,
      boolean lvmStarted,
      Throwable cause) {
    super(message, cause);
    this.reason = Objects.requireNonNull(reason, "reason");
    this.lock = lock;
    this.holder = holder;
    this.lvmStarted = lvmStarted;
  }

  public Reason reason() {
    return reason;
  }

  /** The lock involved ("lvm_vg/lv"), or null. */
  public String lock() {
    return lock;
  }

  /**
   * Who holds it, as the lock service described it ("held by node2/3 in EX (lock 42)"), or null.
   */
  public String holder() {
    return holder;
  }

  /** Whether lvm had been started when the command was stopped. */
  public boolean lvmStarted() {
    return lvmStarted;
  }
}
