package io.clusterlvm.dlm.engine;

/** What became of an acquire or convert request at the moment it was made. */
public enum Outcome {
  GRANTED,
  /** Queued; a {@link Grant} or {@link EndedRequest} follows later. */
  QUEUED,
  /** NOQUEUE and not grantable now; nothing changed. */
  WOULD_BLOCK,
  /** A conversion that could never be granted; the lock keeps its granted mode. */
  DEADLOCK
}
