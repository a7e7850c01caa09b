package io.clusterlvm.dlm.engine;

/**
 * Tells {@code holder}'s owner that its granted lock blocks {@code blocked}. Every holder in the
 * way hears it: in full if it asked ({@code holder.notifyBlocking()}), like a VMS blocking AST;
 * else only as a hint to its client library, which may be holding back an asynchronous release of
 * that lock to send it with its next request, and must not keep a waiter waiting for it.
 */
public record BlockingEvent(LockView holder, LockView blocked) {}
