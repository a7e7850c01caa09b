package io.clusterlvm.dlm.engine;

/** Which of a resource's three queues a lock is on. */
public enum QueueState {
  GRANTED,
  CONVERTING,
  WAITING
}
