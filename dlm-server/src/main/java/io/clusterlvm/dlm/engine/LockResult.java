package io.clusterlvm.dlm.engine;

/**
 * The immediate result of an acquire or convert.
 *
 * @param grant present when outcome is GRANTED
 */
public record LockResult(Outcome outcome, LockView lock, Grant grant) {}
