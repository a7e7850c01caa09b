package io.clusterlvm.clvm.exec;

import io.clusterlvm.dlm.client.Lock;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * This host's LV activation locks: the persistent locks it holds, under its current incarnation,
 * for every LV it has active through clvm. They outlive the agent's lock session (persistent) and
 * are released by a deactivation, a removal, a clean leave, or a purge of the incarnation after the
 * host was fenced.
 *
 * <p>A command claims an LV's entry while it works on it, so two commands on this host never race
 * to take or release the same LV's lock (they would otherwise see each other's lock as "held by
 * another host"). A command waits for another's claim, as lvm waits for its own local locks: two
 * VMs started at once on thin volumes of one pool both claim the pool. Commands claim in the lock
 * plan's order, so two that claim several LVs can't wait for each other, and take their turns in
 * the order they asked: a command is not passed over by later ones. Thread-safe.
 */
final class ActivationTable {

  private final Map<LockName, Lock> held = new ConcurrentHashMap<>();
  private final Set<LockName> claimed = new HashSet<>(); // guarded by this

  /** Commands waiting for an LV's claim, in the order they asked; guarded by this. */
  private final Map<LockName, Deque<Object>> waiting = new HashMap<>();

  Optional<Lock> get(LockName lv) {
    return Optional.ofNullable(held.get(lv));
  }

  /**
   * Reserves {@code lv} for one command, waiting up to {@code timeout} while another command on
   * this host has it; false if it still has it then.
   */
  synchronized boolean claim(LockName lv, Duration timeout) throws InterruptedException {
    if (!claimed.contains(lv) && !waiting.containsKey(lv)) {
      claimed.add(lv);
      return true;
    }
    long deadline = System.nanoTime() + timeout.toNanos();
    Object turn = new Object();
    Deque<Object> line = waiting.computeIfAbsent(lv, k -> new ArrayDeque<>());
    line.addLast(turn);
    try {
      // A notifyAll wakes every waiter; only the first in line may take the claim.
      while (claimed.contains(lv) || line.peekFirst() != turn) {
        long left = deadline - System.nanoTime();
        if (left <= 0) {
          return false;
        }
        TimeUnit.NANOSECONDS.timedWait(this, left);
      }
      claimed.add(lv);
      return true;
    } finally {
      line.remove(turn);
      if (line.isEmpty()) {
        waiting.remove(lv);
      }
      notifyAll(); // one that gave up may have been first in line
    }
  }

  /** How many commands wait for {@code lv}'s claim. */
  synchronized int waiting(LockName lv) {
    Deque<Object> line = waiting.get(lv);
    return line == null ? 0 : line.size();
  }

  synchronized void unclaim(LockName lv) {
    claimed.remove(lv);
    notifyAll();
  }

  void put(LockName lv, Lock lock) {
    held.put(lv, lock);
  }

  void remove(LockName lv) {
    held.remove(lv);
  }

  /** Forgets every activation (its incarnation is gone); returns what was held. */
  Map<LockName, Lock> clear() {
    Map<LockName, Lock> was = snapshot();
    held.clear();
    return was;
  }

  /** The activation locks, sorted by lockspace and resource. */
  Map<LockName, Lock> snapshot() {
    Map<LockName, Lock> copy =
        new TreeMap<>(
            (a, b) -> {
              int c = a.lockspace().compareTo(b.lockspace());
              return c != 0 ? c : a.resource().compareTo(b.resource());
            });
    copy.putAll(held);
    return copy;
  }
}
