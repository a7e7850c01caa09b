package io.clusterlvm.clvm.lvm;

import io.clusterlvm.clvm.lvm.LockRequirement.Scope;
import io.clusterlvm.dlm.client.LockMode;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;

/**
 * The cluster locks one lvm command needs, in the one order every host takes them (global lock,
 * then VG locks by VG name, then LV locks by VG and LV name), so two hosts can never each hold a
 * lock the other waits for.
 *
 * <p>Some commands name no VG ({@code lvs}, {@code vgchange -an}) or name a VG but not its LVs
 * ({@code lvremove vg}). Their plan says so with wildcards ({@link #everyVolumeGroup()}, {@link
 * #everyLogicalVolume()}) that the caller expands in stages, because the lists are only stable
 * under the lock one level up: read the VG list while holding {@link #globalLocks()} (vgcreate and
 * vgremove need the global lock EX), and read a VG's LV list while holding that VG's lock (lvcreate
 * and lvremove need it EX). Hence {@link #volumeGroupLocks(Collection)} and {@link
 * #logicalVolumeLocks(Map)} take the lists as arguments; {@link #resolve} does both at once for
 * callers that hold nothing yet (tests, dry runs).
 *
 * <p>Immutable; the same resource never appears twice (duplicates are merged to the stronger mode).
 */
public final class LockPlan {

  /**
   * Every LV of {@code volumeGroup} (empty: of every VG) at {@code mode} with {@code scope}.
   *
   * @param volumeGroup the VG, or empty for every VG on the system
   */
  public record EveryLogicalVolume(Optional<String> volumeGroup, LockMode mode, Scope scope) {
    public EveryLogicalVolume {
      Objects.requireNonNull(volumeGroup, "volumeGroup");
      Objects.requireNonNull(mode, "mode");
      Objects.requireNonNull(scope, "scope");
    }
  }

  private static final Comparator<LockRequirement> ORDER =
      Comparator.comparingInt(LockPlan::level)
          .thenComparing(r -> r.isGlobal() ? "" : r.volumeGroup())
          .thenComparing(LockRequirement::resource);

  // After ORDER: building uses it.
  private static final LockPlan NONE = new Builder().build();

  private final List<LockRequirement> locks;
  private final Optional<LockMode> everyVolumeGroup;
  private final List<EveryLogicalVolume> everyLogicalVolume;

  private LockPlan(
      List<LockRequirement> locks,
      Optional<LockMode> everyVolumeGroup,
      List<EveryLogicalVolume> everyLogicalVolume) {
    this.locks = locks;
    this.everyVolumeGroup = everyVolumeGroup;
    this.everyLogicalVolume = everyLogicalVolume;
  }

  /** The plan of a command that touches no shared storage. */
  public static LockPlan none() {
    return NONE;
  }

  public static Builder builder() {
    return new Builder();
  }

  /** The named locks, in acquisition order (wildcards not included). */
  public List<LockRequirement> locks() {
    return locks;
  }

  /** If present: the VG lock of every VG on the system, at this mode. */
  public Optional<LockMode> everyVolumeGroup() {
    return everyVolumeGroup;
  }

  /** LV wildcards: every LV of a VG (or of every VG). */
  public List<EveryLogicalVolume> everyLogicalVolume() {
    return everyLogicalVolume;
  }

  /** True if the command needs no cluster lock at all. */
  public boolean isEmpty() {
    return locks.isEmpty() && everyVolumeGroup.isEmpty() && everyLogicalVolume.isEmpty();
  }

  /** True if there is nothing left to expand: {@link #locks()} is the whole plan. */
  public boolean isResolved() {
    return everyVolumeGroup.isEmpty() && everyLogicalVolume.isEmpty();
  }

  /** Stage 1: the global lock, if any. */
  public List<LockRequirement> globalLocks() {
    return locks.stream().filter(LockRequirement::isGlobal).toList();
  }

  /** Whether stage 2 needs the list of every VG on the system. */
  public boolean needsVolumeGroupList() {
    return everyVolumeGroup.isPresent();
  }

  /**
   * Stage 2: the VG locks, in order. Read {@code existingVgs} while holding {@link #globalLocks()}
   * (ignored unless {@link #needsVolumeGroupList()}).
   */
  public List<LockRequirement> volumeGroupLocks(Collection<String> existingVgs) {
    Builder stage = new Builder();
    locks.stream().filter(LockRequirement::isVolumeGroupLock).forEach(stage::add);
    everyVolumeGroup.ifPresent(mode -> existingVgs.forEach(vg -> stage.volumeGroup(vg, mode)));
    return stage.sortedLocks();
  }

  /**
   * The VGs whose LV list stage 3 needs (of {@code existingVgs}, when a wildcard covers every VG).
   */
  public Set<String> volumeGroupsNeedingLvList(Collection<String> existingVgs) {
    Set<String> vgs = new TreeSet<>();
    for (EveryLogicalVolume every : everyLogicalVolume) {
      every.volumeGroup().ifPresentOrElse(vgs::add, () -> vgs.addAll(existingVgs));
    }
    return vgs;
  }

  /**
   * Stage 3: the LV locks, in order. Read each VG's LV list while holding its VG lock; a VG missing
   * from {@code lvsByVg} counts as having no LVs.
   */
  public List<LockRequirement> logicalVolumeLocks(
      Map<String, ? extends Collection<String>> lvsByVg) {
    Builder stage = new Builder();
    locks.stream().filter(LockRequirement::isLogicalVolumeLock).forEach(stage::add);
    for (EveryLogicalVolume every : everyLogicalVolume) {
      Collection<String> vgs =
          every.volumeGroup().map(List::of).orElse(List.copyOf(lvsByVg.keySet()));
      for (String vg : vgs) {
        Collection<String> lvs = lvsByVg.get(vg);
        if (lvs == null) {
          continue;
        }
        for (String lv : lvs) {
          stage.logicalVolume(vg, lv, every.mode(), every.scope());
        }
      }
    }
    return stage.sortedLocks();
  }

  /** All three stages at once, from lists read without holding any lock. */
  public LockPlan resolve(
      Collection<String> existingVgs, Map<String, ? extends Collection<String>> lvsByVg) {
    if (isResolved()) {
      return this;
    }
    Builder resolved = new Builder();
    globalLocks().forEach(resolved::add);
    volumeGroupLocks(existingVgs).forEach(resolved::add);
    logicalVolumeLocks(lvsByVg).forEach(resolved::add);
    return resolved.build();
  }

  /**
   * VGs whose metadata the command may change (VG lock EX): after it, their seqno goes into the VG
   * lock's LVB.
   *
   * @throws IllegalStateException if the plan still has an EX wildcard over every VG
   */
  public Set<String> modifiedVolumeGroups() {
    if (everyVolumeGroup.filter(mode -> mode == LockMode.EX).isPresent()) {
      throw new IllegalStateException("resolve the plan first: it writes every VG");
    }
    Set<String> vgs = new TreeSet<>();
    locks.stream()
        .filter(r -> r.isVolumeGroupLock() && r.mode() == LockMode.EX)
        .forEach(r -> vgs.add(r.volumeGroup()));
    return vgs;
  }

  /**
   * The weakest mode that is at least as strong as both (the modes form a lattice, not a line: CW
   * and PR are incomparable and both are below PW).
   */
  public static LockMode strongest(LockMode a, LockMode b) {
    if ((a == LockMode.CW && b == LockMode.PR) || (a == LockMode.PR && b == LockMode.CW)) {
      return LockMode.PW;
    }
    return a.ordinal() >= b.ordinal() ? a : b;
  }

  /** Whether a lock held at {@code held} already gives everything {@code wanted} would. */
  public static boolean covers(LockMode held, LockMode wanted) {
    return strongest(held, wanted) == held;
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof LockPlan other
        && locks.equals(other.locks)
        && everyVolumeGroup.equals(other.everyVolumeGroup)
        && everyLogicalVolume.equals(other.everyLogicalVolume);
  }

  @Override
  public int hashCode() {
    return Objects.hash(locks, everyVolumeGroup, everyLogicalVolume);
  }

  @Override
  public String toString() {
    StringBuilder s = new StringBuilder("LockPlan").append(locks);
    everyVolumeGroup.ifPresent(mode -> s.append(" + every VG ").append(mode));
    for (EveryLogicalVolume every : everyLogicalVolume) {
      s.append(" + every LV of ")
          .append(every.volumeGroup().orElse("every VG"))
          .append(' ')
          .append(every.mode())
          .append(' ')
          .append(every.scope());
    }
    return s.toString();
  }

  private static int level(LockRequirement r) {
    return r.isGlobal() ? 0 : r.isVolumeGroupLock() ? 1 : 2;
  }

  /**
   * Collects requirements in any order; {@link #build()} merges duplicates and sorts them into the
   * acquisition order.
   */
  public static final class Builder {
    private final Map<List<String>, LockRequirement> locks = new LinkedHashMap<>();
    private Optional<LockMode> everyVolumeGroup = Optional.empty();
    private final List<EveryLogicalVolume> everyLogicalVolume = new ArrayList<>();

    private Builder() {}

    public Builder global(LockMode mode) {
      return add(LockRequirement.global(mode));
    }

    public Builder volumeGroup(String vg, LockMode mode) {
      return add(LockRequirement.volumeGroup(vg, mode));
    }

    public Builder logicalVolume(String vg, String lv, LockMode mode, Scope scope) {
      return add(LockRequirement.logicalVolume(vg, lv, mode, scope));
    }

    /** The VG lock of every VG on the system. */
    public Builder everyVolumeGroup(LockMode mode) {
      everyVolumeGroup =
          Optional.of(everyVolumeGroup.map(m -> LockPlan.strongest(m, mode)).orElse(mode));
      return this;
    }

    /** Every LV of {@code vg}; the plan must also lock {@code vg} itself. */
    public Builder everyLogicalVolume(String vg, LockMode mode, Scope scope) {
      LockRequirement.lockspaceOf(vg); // validates the name
      everyLogicalVolume.add(new EveryLogicalVolume(Optional.of(vg), mode, scope));
      return this;
    }

    /** Every LV of every VG; the plan must also lock every VG. */
    public Builder everyLogicalVolumeOfEveryVolumeGroup(LockMode mode, Scope scope) {
      everyLogicalVolume.add(new EveryLogicalVolume(Optional.empty(), mode, scope));
      return this;
    }

    /**
     * Adds one requirement, merging with an earlier one on the same resource: the stronger mode
     * wins, and an activation scope wins over {@link Scope#TRANSIENT}.
     *
     * @throws IllegalArgumentException if one command would both keep and release the same LV's
     *     activation lock
     */
    public Builder add(LockRequirement r) {
      locks.merge(List.of(r.lockspace(), r.resource()), r, Builder::merge);
      return this;
    }

    public LockPlan build() {
      for (EveryLogicalVolume every : everyLogicalVolume) {
        boolean vgLocked =
            every
                .volumeGroup()
                .map(
                    vg ->
                        everyVolumeGroup.isPresent()
                            || locks.containsKey(
                                List.of(
                                    LockRequirement.lockspaceOf(vg), LockRequirement.VG_RESOURCE)))
                .orElse(everyVolumeGroup.isPresent());
        if (!vgLocked) {
          // The LV list of a VG is only stable under that VG's lock.
          throw new IllegalStateException("LV wildcard " + every + " without its VG lock");
        }
      }
      return new LockPlan(sortedLocks(), everyVolumeGroup, List.copyOf(everyLogicalVolume));
    }

    private List<LockRequirement> sortedLocks() {
      return locks.values().stream().sorted(ORDER).toList();
    }

    private static LockRequirement merge(LockRequirement a, LockRequirement b) {
      Scope scope;
      if (a.scope() == b.scope() || b.scope() == Scope.TRANSIENT) {
        scope = a.scope();
      } else if (a.scope() == Scope.TRANSIENT) {
        scope = b.scope();
      } else {
        throw new IllegalArgumentException(
            "conflicting activation scopes for one resource: " + a + " and " + b);
      }
      return new LockRequirement(
          a.lockspace(), a.resource(), LockPlan.strongest(a.mode(), b.mode()), scope);
    }
  }
}
