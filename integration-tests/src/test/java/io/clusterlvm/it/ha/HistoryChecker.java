package io.clusterlvm.it.ha;

import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.it.ha.LockHistory.Grant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Proves the safety properties of a recorded storm, per resource.
 *
 * <h2>Which holding interval</h2>
 *
 * A client holds a grant, as far as it can act on it, from the moment the grant reached it ({@link
 * Grant#acked}) to the moment it called release ({@link Grant#releaseSent}). The server's own
 * interval is wider on both sides (it granted before the reply arrived and releases after the
 * request arrives), so the client interval lies inside it. Two client intervals that overlap are
 * therefore a real violation: two processes acting as holders of incompatible locks at the same
 * instant, and the checker never blames the server for a hand-off that merely looked concurrent
 * from outside (B's call was already waiting when A released). Using the wider interval [call,
 * release answered] instead would flag every legitimate hand-off. Every client runs in the test
 * JVM, so all times come from one monotonic clock.
 *
 * <h2>Tokens</h2>
 *
 * If grant A reached its client before the acquire call of grant B was made, the server granted A
 * before B, so B's fencing token must be higher. That is the "tokens only increase" promise in
 * real-time terms, and it holds across leaders (the epoch is the token's high half).
 *
 * <h2>Value block</h2>
 *
 * Each EX holder found the counter n in the resource's value block and wrote n + 1 on release; PR
 * holders only read it. With mutual exclusion and durable releases, the EX holders in token order
 * find 0, 1, 2, ..., every grant finds the number of EX grants with a lower token, and the final
 * value is the number of EX grants: no lost update, no lost release, no grant that missed an
 * earlier release.
 */
final class HistoryChecker {
  private HistoryChecker() {}

  /** Every violation found; empty if the history is correct. */
  static List<String> check(List<Grant> grants, Map<String, Integer> finalValues) {
    List<String> out = new ArrayList<>();
    Map<String, List<Grant>> byResource = new HashMap<>();
    for (Grant g : grants) {
      byResource.computeIfAbsent(g.resource(), k -> new ArrayList<>()).add(g);
    }
    for (Map.Entry<String, List<Grant>> e : byResource.entrySet()) {
      List<Grant> gs = e.getValue();
      out.addAll(overlaps(gs));
      out.addAll(tokenOrder(gs));
      out.addAll(valueBlock(e.getKey(), gs, finalValues));
    }
    return out;
  }

  static boolean compatible(LockMode a, LockMode b) {
    return io.clusterlvm.dlm.engine.LockMode.valueOf(a.name())
        .compatibleWith(io.clusterlvm.dlm.engine.LockMode.valueOf(b.name()));
  }

  /** Incompatible holders whose client intervals [acked, releaseSent] intersect. */
  static List<String> overlaps(List<Grant> gs) {
    List<String> out = new ArrayList<>();
    List<Grant> byAck = new ArrayList<>(gs);
    byAck.sort(Comparator.comparingLong(Grant::acked));
    List<Grant> active = new ArrayList<>();
    for (Grant g : byAck) {
      active.removeIf(a -> a.releaseSent() <= g.acked());
      for (Grant a : active) {
        if (!compatible(a.mode(), g.mode())) {
          out.add(
              "overlap on "
                  + g.resource()
                  + ": "
                  + describe(a)
                  + " was still held when "
                  + describe(g)
                  + " was granted ("
                  + (a.releaseSent() - g.acked()) / 1000
                  + " us of overlap)");
        }
      }
      active.add(g);
    }
    return out;
  }

  /** A grant whose call began after another grant had arrived, yet has a lower token. */
  static List<String> tokenOrder(List<Grant> gs) {
    List<String> out = new ArrayList<>();
    List<Grant> byAck = new ArrayList<>(gs);
    byAck.sort(Comparator.comparingLong(Grant::acked));
    List<Grant> byInvoke = new ArrayList<>(gs);
    byInvoke.sort(Comparator.comparingLong(Grant::invoked));
    Set<Long> tokens = new HashSet<>();
    for (Grant g : gs) {
      if (!tokens.add(g.token())) {
        out.add("token " + g.token() + " given twice on " + g.resource() + ": " + describe(g));
      }
    }
    int i = 0;
    Grant highest = null;
    for (Grant g : byInvoke) {
      while (i < byAck.size() && byAck.get(i).acked() < g.invoked()) {
        Grant a = byAck.get(i++);
        if (highest == null || a.token() > highest.token()) {
          highest = a;
        }
      }
      if (highest != null && g.token() <= highest.token()) {
        out.add(
            "token went backwards on "
                + g.resource()
                + ": "
                + describe(g)
                + " was requested after "
                + describe(highest)
                + " had been granted");
      }
    }
    return out;
  }

  /** The value-block counter: see the class comment. */
  static List<String> valueBlock(String resource, List<Grant> gs, Map<String, Integer> finals) {
    List<String> out = new ArrayList<>();
    long[] exTokens =
        gs.stream().filter(g -> g.mode() == LockMode.EX).mapToLong(Grant::token).sorted().toArray();
    for (Grant g : gs) {
      int before = lowerCount(exTokens, g.token());
      if (g.valueAtGrant() != before) {
        out.add(
            describe(g)
                + " found "
                + g.valueAtGrant()
                + " in the value block, but "
                + before
                + " EX grants came before it");
      }
      if (g.valueRead() >= 0 && g.valueRead() != g.valueAtGrant()) {
        out.add(
            describe(g)
                + " read "
                + g.valueRead()
                + " while holding, but was granted with "
                + g.valueAtGrant());
      }
    }
    Integer last = finals == null ? null : finals.get(resource);
    if (last != null && last != exTokens.length) {
      out.add(
          resource
              + " ends with "
              + last
              + " in the value block after "
              + exTokens.length
              + " EX grants");
    }
    return out;
  }

  private static int lowerCount(long[] sorted, long token) {
    int lo = 0;
    int hi = sorted.length;
    while (lo < hi) {
      int mid = (lo + hi) >>> 1;
      if (sorted[mid] < token) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  static String describe(Grant g) {
    return g.client()
        + " "
        + g.mode()
        + " (lock "
        + g.lockId()
        + ", token "
        + (g.token() >>> 32)
        + ":"
        + (g.token() & 0xffffffffL)
        + ")";
  }
}
