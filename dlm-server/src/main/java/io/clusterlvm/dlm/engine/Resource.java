package io.clusterlvm.dlm.engine;

import java.util.ArrayList;
import java.util.List;

/** A named resource and its three queues. Only ever touched by {@link LockEngine}. */
final class Resource {
  final ResourceKey key;

  // Insertion order is queue order. Lists, not linked sets: most resources have one or two locks,
  // and three LinkedHashSets cost ~330 bytes per resource (a quarter of the heap per held lock);
  // removal from the middle is O(n), but a queue is at most MAX_LOCKS_PER_RESOURCE long. A lock
  // is in at most one queue, at most once; Lock keeps identity equality.
  final List<Lock> granted = new ArrayList<>(0);
  final List<Lock> converting = new ArrayList<>(0);
  final List<Lock> waiting = new ArrayList<>(0);

  byte[] valueBlock = new byte[0];
  boolean valueBlockValid = true;

  Resource(ResourceKey key) {
    this.key = key;
  }

  int lockCount() {
    return granted.size() + converting.size() + waiting.size();
  }

  /** Whether {@code node} holds or asks a lock here, in {@code incarnation} (in any if 0). */
  boolean hasLockOf(String node, long incarnation) {
    for (List<Lock> queue : List.of(granted, converting, waiting)) {
      for (Lock l : queue) {
        if (l.owner.is(node, incarnation)) {
          return true;
        }
      }
    }
    return false;
  }

  /**
   * A resource with no locks is forgotten unless its value block carries something (a written
   * value, or the news that it was lost), which must survive until the next holder reads it.
   */
  boolean isDisposable() {
    return lockCount() == 0 && valueBlock.length == 0 && valueBlockValid;
  }

  /** True when {@code mode} conflicts with no lock that holds a mode here, except {@code self}. */
  boolean compatibleWithHolders(LockMode mode, Lock self) {
    for (Lock h : granted) {
      if (h != self && !mode.compatibleWith(h.granted)) {
        return false;
      }
    }
    for (Lock h : converting) {
      if (h != self && !mode.compatibleWith(h.granted)) {
        return false;
      }
    }
    return true;
  }

  List<Lock> holdersBlocking(LockMode mode, Lock self) {
    List<Lock> out = new ArrayList<>();
    for (Lock h : granted) {
      if (h != self && !mode.compatibleWith(h.granted)) {
        out.add(h);
      }
    }
    for (Lock h : converting) {
      if (h != self && !mode.compatibleWith(h.granted)) {
        out.add(h);
      }
    }
    return out;
  }

  ResourceView view() {
    return new ResourceView(
        key,
        valueBlock.clone(),
        valueBlockValid,
        granted.stream().map(Lock::view).toList(),
        converting.stream().map(Lock::view).toList(),
        waiting.stream().map(Lock::view).toList());
  }
}
