package io.clusterlvm.dlm.engine;

/**
 * An immutable copy of one lock, as shown to operators and as persisted.
 *
 * @param grantedMode the mode held; null while waiting
 * @param requestedMode the mode asked for; null while granted and not converting
 * @param queueSeq position in the converting or waiting queue (smaller is earlier)
 * @param sinceMillis wall-clock time it entered its current state, for display only
 * @param lastConversion the lock's latest conversion, which its caller may abandon; null if none
 */
public record LockView(
    long lockId,
    ResourceKey resource,
    Owner owner,
    long sessionId,
    QueueState state,
    LockMode grantedMode,
    LockMode requestedMode,
    long fencingToken,
    boolean persistent,
    boolean notifyBlocking,
    long queueSeq,
    String requestId,
    long sinceMillis,
    Conversion lastConversion) {

  /** A conversion, by its request id, and the mode the lock held before it. */
  public record Conversion(String requestId, LockMode before) {}
}
