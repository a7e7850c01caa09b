package io.clusterlvm.dlm.engine;

/** A lock that was granted (new or converted), with what its holder gets to see at that moment. */
public record Grant(LockView lock, byte[] valueBlock, boolean valueBlockValid) {}
