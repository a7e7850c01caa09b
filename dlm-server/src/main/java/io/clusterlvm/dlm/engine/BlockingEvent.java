package io.clusterlvm.dlm.engine;

/** Tells {@code holder}'s owner that its granted lock blocks {@code blocked}. */
public record BlockingEvent(LockView holder, LockView blocked) {}
