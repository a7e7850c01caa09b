package io.clusterlvm.clvm.exec;

import io.clusterlvm.dlm.client.LockMode;

/**
 * One cluster lock a command ran under.
 *
 * @param fencingToken the token of the grant this command used (for a reused activation lock, the
 *     token of its original grant)
 */
public record LockUse(
    String lockspace, String resource, LockMode mode, long fencingToken, Kind kind) {

  /** What became of the lock after the command. */
  public enum Kind {
    /** Released when the command ended. */
    TRANSIENT,
    /** Kept: this host's activation lock on the LV. */
    ACTIVATION,
    /** This host's activation lock, released by the command (deactivation, removal). */
    RELEASED_ACTIVATION
  }

  public String name() {
    return lockspace + "/" + resource;
  }
}
