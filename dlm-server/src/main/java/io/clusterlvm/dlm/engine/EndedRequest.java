package io.clusterlvm.dlm.engine;

/** A waiting request or pending conversion that ended without being granted. */
public record EndedRequest(LockView lock, Reason reason) {
  public enum Reason {
    CANCELLED,
    /** The owner's locks were purged (fence) or the owner left. */
    PURGED,
    /** The client session that made the request ended. */
    SESSION_ENDED
  }
}
