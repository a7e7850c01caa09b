package io.clusterlvm.dlm.engine;

/**
 * The immediate result of an acquire or convert.
 *
 * @param grant present when outcome is GRANTED
 * @param retry the acquire's request id found a lock an earlier call of the same request made: this
 *     call did not make it, and its caller going away must not give it back (that call may be a
 *     stale attempt arriving after a retry was told it holds the lock; a client that never heard of
 *     the lock abandons it by request id)
 */
public record LockResult(Outcome outcome, LockView lock, Grant grant, boolean retry) {

  public LockResult(Outcome outcome, LockView lock, Grant grant) {
    this(outcome, lock, grant, false);
  }
}
