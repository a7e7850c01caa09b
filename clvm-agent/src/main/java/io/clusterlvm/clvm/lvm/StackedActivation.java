package io.clusterlvm.clvm.lvm;

import io.clusterlvm.clvm.lvm.LockRequirement.Scope;
import io.clusterlvm.dlm.client.LockMode;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Function;
import java.util.stream.Collectors;

/**
 * LVs that lvm activates together, and what that asks of their activation locks.
 *
 * <p>clvm refuses to create thin volumes and snapshots, but plain lvm can make them in a shared VG.
 * Activating a thin volume activates its thin pool; activating a snapshot activates its origin;
 * activating an origin activates all its snapshots. The activation lock of the named LV alone would
 * leave the others' locks free, and another host could activate the same pool or origin through
 * another LV: a thin pool or a snapshot's origin active on two hosts at once is corrupted by the
 * first write. lvmlockd solves this with one lock for the pool or the origin; clvm keeps one lock
 * per LV and asks the command to name every LV lvm will activate, so that all their locks are
 * taken, in the usual order, before lvm runs. Naming them is also what the operator would see lvm
 * do.
 *
 * <p>Two more rules follow. A shared activation ({@code -asy}) is for plain linear or striped LVs
 * only: lvmlockd refuses it for every other type too, since their devices (a pool's metadata, a
 * snapshot's exceptions, a RAID's bitmaps) are written by whichever host has them active. And a
 * thin pool's lock is not released while this host keeps a thin volume of it active: lvm keeps the
 * pool active under it, and another host could then activate the pool.
 *
 * <p>Pure: the caller reads the VG's LVs with lvs while it holds the VG lock, which keeps them as
 * they are.
 */
public final class StackedActivation {

  private StackedActivation() {}

  /**
   * Why a command with these LV locks on {@code vg} must not run, or empty if it may.
   *
   * @param lvLocks the command's locks on LVs of {@code vg}
   * @param lvs the LVs of {@code vg}, read under its VG lock
   * @param activeHere the LVs of {@code vg} whose activation lock this host holds
   */
  public static Optional<String> refusal(
      String vg,
      Collection<LockRequirement> lvLocks,
      Collection<LogicalVolumeInfo> lvs,
      Set<String> activeHere) {
    Map<String, LogicalVolumeInfo> byName =
        lvs.stream().collect(Collectors.toMap(LogicalVolumeInfo::name, Function.identity()));
    Set<String> activatedExclusively = new TreeSet<>();
    Set<String> released = new TreeSet<>();
    for (LockRequirement r : lvLocks) {
      if (r.scope() == Scope.PERSISTENT_ACTIVATION && r.mode() == LockMode.EX) {
        activatedExclusively.add(r.resource());
      } else if (r.scope() == Scope.RELEASE_ACTIVATION) {
        released.add(r.resource());
      }
    }
    for (LockRequirement r : lvLocks) {
      LogicalVolumeInfo lv = byName.get(r.resource());
      if (lv == null) {
        continue; // not there (yet): lvm creates it, or fails on it
      }
      if (r.scope() == Scope.PERSISTENT_ACTIVATION && r.mode() != LockMode.EX) {
        if (lv.volumeType() != '-') {
          return Optional.of(
              "a shared activation of "
                  + vg
                  + "/"
                  + lv.name()
                  + ", "
                  + describe(lv)
                  + ", would let several hosts write it at once; only plain linear or striped LVs"
                  + " can be active on several hosts. Activate it on one host with -aey");
        }
      }
      if (r.scope() == Scope.PERSISTENT_ACTIVATION) {
        List<String> missing = new ArrayList<>();
        for (String along : activatedAlong(lv, lvs)) {
          if (!activatedExclusively.contains(along)) {
            missing.add(along);
          }
        }
        if (!missing.isEmpty()) {
          return Optional.of(
              "activating "
                  + vg
                  + "/"
                  + lv.name()
                  + ", "
                  + describe(lv)
                  + ", also activates "
                  + qualified(vg, missing)
                  + ", whose activation lock must be taken as well, or another host could"
                  + " activate it at the same time. Name them in one command: clvm lvchange -aey "
                  + qualified(vg, activatedTogether(lv, lvs, byName)));
        }
      }
      if (r.scope() == Scope.RELEASE_ACTIVATION) {
        List<String> users = new ArrayList<>();
        for (String held : activeHere) {
          LogicalVolumeInfo user = byName.get(held);
          if (user != null && !released.contains(held) && usesPool(user, lv.name())) {
            users.add(held);
          }
        }
        if (!users.isEmpty()) {
          return Optional.of(
              qualified(vg, users)
                  + " active on this host "
                  + (users.size() == 1 ? "keeps" : "keep")
                  + " "
                  + vg
                  + "/"
                  + lv.name()
                  + " active under "
                  + (users.size() == 1 ? "it" : "them")
                  + ": releasing the pool's activation lock would let another host activate the"
                  + " pool as well. Deactivate them together: clvm lvchange -an "
                  + qualified(vg, union(users, lv.name())));
        }
      }
    }
    return Optional.empty();
  }

  /** The other LVs of the VG that lvm activates when it activates {@code lv}. */
  static Set<String> activatedAlong(LogicalVolumeInfo lv, Collection<LogicalVolumeInfo> lvs) {
    Set<String> along = new TreeSet<>();
    switch (lv.volumeType()) {
      case 'V', 'v' -> { // thin volume, VDO volume: the pool under it
        if (!lv.pool().isEmpty()) {
          along.add(lv.pool());
        }
      }
      case 's', 'S' -> { // snapshot (merging): its origin
        if (!lv.origin().isEmpty()) {
          along.add(lv.origin());
        }
      }
      case 'o', 'O' -> { // origin: every snapshot of it
        for (LogicalVolumeInfo other : lvs) {
          if (isSnapshot(other) && other.origin().equals(lv.name())) {
            along.add(other.name());
          }
        }
      }
      default -> {}
    }
    return along;
  }

  /** {@code lv} and, transitively, everything activated along with it. */
  private static Set<String> activatedTogether(
      LogicalVolumeInfo lv,
      Collection<LogicalVolumeInfo> lvs,
      Map<String, LogicalVolumeInfo> byName) {
    Set<String> together = new TreeSet<>();
    List<LogicalVolumeInfo> next = new ArrayList<>(List.of(lv));
    while (!next.isEmpty()) {
      LogicalVolumeInfo one = next.remove(next.size() - 1);
      if (together.add(one.name())) {
        for (String along : activatedAlong(one, lvs)) {
          LogicalVolumeInfo a = byName.get(along);
          if (a != null) {
            next.add(a);
          } else {
            together.add(along);
          }
        }
      }
    }
    return together;
  }

  private static boolean usesPool(LogicalVolumeInfo lv, String pool) {
    char type = lv.volumeType();
    return (type == 'V' || type == 'v') && lv.pool().equals(pool);
  }

  private static boolean isSnapshot(LogicalVolumeInfo lv) {
    return lv.volumeType() == 's' || lv.volumeType() == 'S';
  }

  private static String describe(LogicalVolumeInfo lv) {
    return switch (lv.volumeType()) {
      case 'V' -> "a thin volume of pool " + lv.pool();
      case 't' -> "a thin pool";
      case 'v' -> lv.pool().isEmpty() ? "a virtual LV" : "a VDO volume of pool " + lv.pool();
      case 'd' -> "a VDO pool";
      case 's', 'S' -> "a snapshot of " + lv.origin();
      case 'o', 'O' -> "the origin of a snapshot";
      case 'r', 'R' -> "a RAID LV";
      case 'm', 'M' -> "a mirrored LV";
      case 'C' -> "a cached LV";
      default -> "an LV of type '" + lv.volumeType() + "' (lv_attr " + lv.attr() + ")";
    };
  }

  private static Set<String> union(Collection<String> lvs, String lv) {
    Set<String> all = new TreeSet<>(lvs);
    all.add(lv);
    return all;
  }

  private static String qualified(String vg, Collection<String> lvs) {
    return lvs.stream().map(lv -> vg + "/" + lv).collect(Collectors.joining(" "));
  }
}
