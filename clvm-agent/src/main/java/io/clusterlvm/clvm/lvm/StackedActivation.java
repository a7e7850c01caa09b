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
 * per LV and asks the command to name every LV lvm will activate, so that all their locks are taken
 * before lvm runs. Naming them is also what the operator sees lvm do.
 *
 * <p>More rules follow. An LV with a snapshot merge pending (lv_attr {@code O} or {@code S}) is not
 * activated: lvm would start polling the merge, and finish it by rewriting the VG's metadata from
 * the background, without the cluster's VG lock. A shared activation ({@code -asy}) is for plain
 * linear or striped LVs only: lvmlockd refuses it for every other type too, since their devices (a
 * pool's metadata, a snapshot's exceptions, a RAID's bitmaps) are written by whichever host has
 * them active. A thin pool's lock is not released while this host keeps a thin volume of it active:
 * lvm keeps the pool active under it, and another host could then activate the pool. And removing a
 * thin volume activates its pool (lvm sends the pool the delete), so an lvremove of one takes the
 * pool's lock for the command ({@link #poolLocks}).
 *
 * <p>The relations come from lvs's {@code pool_lv} and {@code origin} fields, not from the type
 * letter alone: lvm shows a thin volume that has a snapshot as an origin ({@code o}), and it still
 * needs its pool. Only visible LVs count; a hidden one (a cache pool, a sparse snapshot's virtual
 * origin) belongs to its one LV and can't be named anyway.
 *
 * <p>Pure: the caller reads the VG's LVs with lvs while it holds the VG lock, which keeps them as
 * they are.
 */
public final class StackedActivation {

  private StackedActivation() {}

  /**
   * The locks an lvremove needs besides those it names: the pool of each thin volume it removes, EX
   * for the command ({@link Scope#TRANSIENT}; this host's activation lock on the pool satisfies
   * it).
   *
   * @param lvLocks the command's locks on LVs of {@code vg}; a removal is the one that takes an EX
   *     lock to release ({@link Scope#RELEASE_ACTIVATION}), where a deactivation asks for NL
   */
  public static List<LockRequirement> poolLocks(
      String vg, Collection<LockRequirement> lvLocks, Collection<LogicalVolumeInfo> lvs) {
    Map<String, LogicalVolumeInfo> byName = byName(lvs);
    Set<String> pools = new TreeSet<>();
    for (LockRequirement r : lvLocks) {
      LogicalVolumeInfo lv = byName.get(r.resource());
      if (lv != null
          && r.scope() == Scope.RELEASE_ACTIVATION
          && r.mode() == LockMode.EX
          && byName.containsKey(lv.pool())) {
        pools.add(lv.pool());
      }
    }
    return pools.stream()
        .map(pool -> LockRequirement.logicalVolume(vg, pool, LockMode.EX, Scope.TRANSIENT))
        .toList();
  }

  /**
   * Why a command with these LV locks on {@code vg} must not run, or empty if it may.
   *
   * @param lvLocks the command's locks on LVs of {@code vg}
   * @param lvs the LVs of {@code vg}, read under its VG lock
   * @param activeHere the LVs of {@code vg} whose activation lock this host holds, read after the
   *     command claimed its own (so no other command on this host changes them meanwhile)
   */
  public static Optional<String> refusal(
      String vg,
      Collection<LockRequirement> lvLocks,
      Collection<LogicalVolumeInfo> lvs,
      Set<String> activeHere) {
    Map<String, LogicalVolumeInfo> byName = byName(lvs);
    Set<String> activated = new TreeSet<>();
    Set<String> released = new TreeSet<>();
    for (LockRequirement r : lvLocks) {
      if (r.scope() == Scope.PERSISTENT_ACTIVATION) {
        activated.add(r.resource());
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
        if (lv.volumeType() != '-' || byName.containsKey(lv.pool())) {
          return Optional.of(
              "a shared activation of "
                  + vg
                  + "/"
                  + lv.name()
                  + ", "
                  + describe(lv)
                  + ", would let several hosts write it at once; only plain linear or striped LVs"
                  + " can be active on several hosts. Activate it on one host with -aey, or name"
                  + " only plain LVs");
        }
      }
      if (r.scope() == Scope.PERSISTENT_ACTIVATION
          && (lv.volumeType() == 'O' || lv.volumeType() == 'S')) {
        return Optional.of(
            vg
                + "/"
                + lv.name()
                + " has a snapshot merge pending, which lvm would finish in the background after"
                + " the activation, rewriting the VG's metadata without its cluster lock; clvm does"
                + " not coordinate merges");
      }
      if (r.scope() == Scope.PERSISTENT_ACTIVATION) {
        Set<String> missing = new TreeSet<>(activatedAlong(lv, byName));
        missing.removeAll(activated);
        if (!missing.isEmpty()) {
          Set<String> all = new TreeSet<>();
          boolean snapshots = false;
          for (String named : activated) {
            LogicalVolumeInfo n = byName.get(named);
            all.addAll(n == null ? Set.of(named) : activatedTogether(n, byName));
          }
          for (String one : all) {
            snapshots |= byName.containsKey(one) && isSnapshot(byName.get(one));
          }
          return Optional.of(
              "activating "
                  + vg
                  + "/"
                  + lv.name()
                  + ", "
                  + describe(lv)
                  + ", also activates "
                  + qualified(vg, missing)
                  + ", whose activation lock must be taken with it, or another host could"
                  + " activate that as well. Name every one in the same command, also those"
                  + " already active here: clvm lvchange -aey "
                  + (snapshots ? "-y " : "")
                  + qualified(vg, all));
        }
      }
      if (r.scope() == Scope.RELEASE_ACTIVATION) {
        Set<String> users = new TreeSet<>();
        for (String held : activeHere) {
          LogicalVolumeInfo user = byName.get(held);
          if (user != null && !released.contains(held) && user.pool().equals(lv.name())) {
            users.add(held);
          }
        }
        if (!users.isEmpty()) {
          Set<String> together = new TreeSet<>(users);
          together.add(lv.name());
          return Optional.of(
              qualified(vg, users)
                  + (users.size() == 1
                      ? ", active on this host, keeps "
                      : ", active on this host," + " keep ")
                  + vg
                  + "/"
                  + lv.name()
                  + " active under "
                  + (users.size() == 1 ? "it" : "them")
                  + ": releasing the pool's activation lock would let another host activate the"
                  + " pool as well. Deactivate them together: clvm lvchange -an "
                  + qualified(vg, together));
        }
      }
    }
    return Optional.empty();
  }

  /**
   * {@code names}, LVs of one VG, with every thin or VDO pool after the volumes that use it, which
   * otherwise keep their order: lvm keeps a pool active under an active thin volume.
   */
  public static List<String> deactivationOrder(
      List<String> names, Collection<LogicalVolumeInfo> lvs) {
    Set<String> pools = new TreeSet<>();
    lvs.forEach(lv -> pools.add(lv.pool()));
    List<String> ordered = new ArrayList<>();
    names.stream().filter(n -> !pools.contains(n)).forEach(ordered::add);
    names.stream().filter(pools::contains).forEach(ordered::add);
    return ordered;
  }

  /** The other visible LVs of the VG that lvm activates when it activates {@code lv}. */
  static Set<String> activatedAlong(LogicalVolumeInfo lv, Map<String, LogicalVolumeInfo> byName) {
    Set<String> along = new TreeSet<>();
    if (byName.containsKey(lv.pool())) {
      along.add(lv.pool()); // a thin or VDO volume (an origin too, maybe): the pool under it
    }
    if (isSnapshot(lv) && byName.containsKey(lv.origin())) {
      along.add(lv.origin());
    }
    for (LogicalVolumeInfo other : byName.values()) {
      if (isSnapshot(other) && other.origin().equals(lv.name())) {
        along.add(other.name()); // an origin: every snapshot of it
      }
    }
    return along;
  }

  /** {@code lv} and, transitively, everything activated along with it. */
  private static Set<String> activatedTogether(
      LogicalVolumeInfo lv, Map<String, LogicalVolumeInfo> byName) {
    Set<String> together = new TreeSet<>();
    List<LogicalVolumeInfo> next = new ArrayList<>(List.of(lv));
    while (!next.isEmpty()) {
      LogicalVolumeInfo one = next.remove(next.size() - 1);
      if (together.add(one.name())) {
        for (String along : activatedAlong(one, byName)) {
          next.add(byName.get(along));
        }
      }
    }
    return together;
  }

  /** A thick snapshot (merging or not); a thin snapshot is a thin volume, activated alone. */
  private static boolean isSnapshot(LogicalVolumeInfo lv) {
    return (lv.volumeType() == 's' || lv.volumeType() == 'S') && lv.pool().isEmpty();
  }

  private static Map<String, LogicalVolumeInfo> byName(Collection<LogicalVolumeInfo> lvs) {
    return lvs.stream().collect(Collectors.toMap(LogicalVolumeInfo::name, Function.identity()));
  }

  private static String describe(LogicalVolumeInfo lv) {
    return switch (lv.volumeType()) {
      case 'V' -> "a thin volume of pool " + lv.pool();
      case 't' -> "a thin pool";
      case 'v' -> lv.pool().isEmpty() ? "a virtual LV" : "a VDO volume of pool " + lv.pool();
      case 'd' -> "a VDO pool";
      case 's', 'S' -> "a snapshot of " + lv.origin();
      case 'o', 'O' ->
          lv.pool().isEmpty()
              ? "the origin of a snapshot"
              : "a thin volume of pool " + lv.pool() + " with a snapshot";
      case 'r', 'R' -> "a RAID LV";
      case 'm', 'M' -> "a mirrored LV";
      case 'C' -> "a cached LV";
      default -> "an LV of type '" + lv.volumeType() + "' (lv_attr " + lv.attr() + ")";
    };
  }

  private static String qualified(String vg, Collection<String> lvs) {
    return lvs.stream().map(lv -> vg + "/" + lv).collect(Collectors.joining(" "));
  }
}
