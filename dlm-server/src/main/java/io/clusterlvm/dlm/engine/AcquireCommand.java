package io.clusterlvm.dlm.engine;

/**
 * A request for a new lock.
 *
 * @param requestId client-chosen; a retry with the same id returns the existing lock
 * @param sessionId 0 for a node-level lock not tied to a client session
 */
public record AcquireCommand(
    String requestId,
    Owner owner,
    long sessionId,
    ResourceKey resource,
    LockMode mode,
    boolean noqueue,
    boolean persistent,
    boolean notifyBlocking) {}
