package io.clusterlvm.bench;

/**
 * A lock service under test, seen the way an application uses it: a client per worker thread that
 * acquires and releases one exclusive lock.
 */
interface LockSystem extends AutoCloseable {
  /** One client's exclusive lock on one resource; used by one thread at a time. */
  interface Worker {
    /** Blocks until the lock is held; fails rather than waiting more than {@code timeout}. */
    void acquire() throws Exception;

    void release() throws Exception;
  }

  /**
   * Waits until every release a worker started is complete, and throws if one failed. Workers whose
   * release returns only when it is complete need not do anything.
   */
  default void settle() {}

  /** Short name for tables and JSON: "dlm" or "curator". */
  String name();

  /** A worker with a client (session / mutex) of its own on {@code resource}. */
  Worker worker(int index, String resource) throws Exception;

  /**
   * True once {@code waiter}, which is inside {@link Worker#acquire} on {@code resource}, is queued
   * behind the holder: the hand-off measurement starts only then.
   */
  boolean isQueued(String resource, Thread waiter) throws Exception;

  /** How the clients are spread over connections, for the report. */
  String clientLayout();

  /** Closes every client it opened. */
  @Override
  void close();
}
