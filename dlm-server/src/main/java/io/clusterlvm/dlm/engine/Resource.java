package io.clusterlvm.dlm.engine;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Predicate;

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

  /**
   * This resource with only the locks of {@code node} in {@code incarnation} (in any if 0), for a
   * listing of that node's locks; null when it has none. Never persisted: a record holds every
   * lock.
   */
  ResourceView viewOf(String node, long incarnation) {
    Predicate<Lock> of = l -> l.owner.is(node, incarnation);
    if (!anyOf(granted, of) && !anyOf(converting, of) && !anyOf(waiting, of)) {
      return null; // most resources a node's listing looks at: no copy made for them
    }
    return view(of);
  }

  private static boolean anyOf(List<Lock> queue, Predicate<Lock> of) {
    for (Lock l : queue) {
      if (of.test(l)) {
        return true;
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
    return view(l -> true);
  }

  private ResourceView view(Predicate<Lock> shown) {
    return new ResourceView(
        key,
        valueBlock.clone(),
        valueBlockValid,
        granted.stream().filter(shown).map(Lock::view).toList(),
        converting.stream().filter(shown).map(Lock::view).toList(),
        waiting.stream().filter(shown).map(Lock::view).toList());
  }
}
