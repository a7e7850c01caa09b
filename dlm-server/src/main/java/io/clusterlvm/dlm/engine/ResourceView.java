package io.clusterlvm.dlm.engine;

import java.util.List;

/**
 * An immutable copy of a resource: its three queues in order and its value block. This is also the
 * unit of persistence: one record per resource, so a hand-off is a single write.
 */
public record ResourceView(
    ResourceKey key,
    byte[] valueBlock,
    boolean valueBlockValid,
    List<LockView> granted,
    List<LockView> converting,
    List<LockView> waiting) {

  public int lockCount() {
    return granted.size() + converting.size() + waiting.size();
  }
}
