package io.clusterlvm.clvm.lvm;

import io.clusterlvm.dlm.client.LockMode;
import java.nio.charset.StandardCharsets;
import java.util.Objects;

/**
 * One cluster lock an lvm command needs, named the way lvmlockd names its dlm locks:
 *
 * <ul>
 *   <li>global lock: lockspace {@code lvm_global}, resource {@code GLLK};
 *   <li>VG lock: lockspace {@code lvm_<vg>}, resource {@code VGLK};
 *   <li>LV lock: lockspace {@code lvm_<vg>}, resource = the LV <em>name</em>. lvmlockd uses the LV
 *       uuid, which survives renames; we use the name because the plan is computed from the command
 *       line alone, before lvm runs (a new LV has no uuid yet, and looking one up would be I/O).
 *       The price: an LV rename locks both names, a VG rename moves every LV lock to another
 *       lockspace, and the names {@code VGLK}/{@code GLLK} are reserved.
 * </ul>
 *
 * @param lockspace DLM lockspace, at most 64 bytes
 * @param resource resource within the lockspace, at most 64 bytes
 * @param mode mode to hold while the command runs ({@link LockMode#NL}: nothing to acquire)
 * @param scope how long the lock lives relative to the command
 */
public record LockRequirement(String lockspace, String resource, LockMode mode, Scope scope) {

  public static final String GLOBAL_LOCKSPACE = "lvm_global";
  public static final String GLOBAL_RESOURCE = "GLLK";
  public static final String VG_RESOURCE = "VGLK";
  public static final String LOCKSPACE_PREFIX = "lvm_";

  /** DLM limit on lockspace and resource names. */
  public static final int MAX_NAME_BYTES = 64;

  /** How a lock relates to the command's lifetime. */
  public enum Scope {
    /**
     * Acquired before the command, released when it ends (success or not). If this host already
     * holds the resource (an activation lock) at a mode at least as strong, that lock satisfies the
     * requirement and is left as it was.
     */
    TRANSIENT,
    /**
     * Like {@link #TRANSIENT}, but the LV must be inactive on this host as well: an activation lock
     * this host holds refuses the command instead of satisfying it. For a VG rename, which would
     * leave such a lock behind under the VG's old name, where nobody looks for it.
     */
    INACTIVE,
    /**
     * The LV activation lock: acquired before the command (converted if this host already holds it)
     * and, if the command succeeds, kept after it as a persistent lock owned by this host that
     * outlives the client's session; released if the command fails.
     */
    PERSISTENT_ACTIVATION,
    /**
     * Held at {@link #mode()} while the command runs ({@link LockMode#NL}: nothing to acquire, as
     * for a deactivation), then, if the command succeeded, this host's activation lock on the LV is
     * released.
     */
    RELEASE_ACTIVATION
  }

  public LockRequirement {
    Objects.requireNonNull(lockspace, "lockspace");
    Objects.requireNonNull(resource, "resource");
    Objects.requireNonNull(mode, "mode");
    Objects.requireNonNull(scope, "scope");
    checkName("lockspace", lockspace);
    checkName("resource", resource);
  }

  /** The global lock at {@code mode}, transient. */
  public static LockRequirement global(LockMode mode) {
    return new LockRequirement(GLOBAL_LOCKSPACE, GLOBAL_RESOURCE, mode, Scope.TRANSIENT);
  }

  /** {@code vg}'s VG lock at {@code mode}, transient. */
  public static LockRequirement volumeGroup(String vg, LockMode mode) {
    return new LockRequirement(lockspaceOf(vg), VG_RESOURCE, mode, Scope.TRANSIENT);
  }

  /** The lock on LV {@code lv} of {@code vg}. */
  public static LockRequirement logicalVolume(String vg, String lv, LockMode mode, Scope scope) {
    if (lv.equals(VG_RESOURCE) || lv.equals(GLOBAL_RESOURCE)) {
      throw new IllegalArgumentException(
          "LV name " + lv + " is reserved: it would share the VG lock's resource name");
    }
    return new LockRequirement(lockspaceOf(vg), lv, mode, scope);
  }

  /**
   * {@code lvm_<vg>}. A VG named {@code global} is refused: its lockspace would be the global
   * lock's.
   */
  public static String lockspaceOf(String vg) {
    if (vg.equals("global")) {
      throw new IllegalArgumentException(
          "VG name 'global' is reserved: its lockspace would be the global lock's (lvm_global)");
    }
    return LOCKSPACE_PREFIX + vg;
  }

  public boolean isGlobal() {
    return lockspace.equals(GLOBAL_LOCKSPACE);
  }

  public boolean isVolumeGroupLock() {
    return !isGlobal() && resource.equals(VG_RESOURCE);
  }

  public boolean isLogicalVolumeLock() {
    return !isGlobal() && !resource.equals(VG_RESOURCE);
  }

  /** The VG this lock belongs to; throws for the global lock. */
  public String volumeGroup() {
    if (isGlobal()) {
      throw new IllegalStateException("the global lock belongs to no VG");
    }
    return lockspace.substring(LOCKSPACE_PREFIX.length());
  }

  @Override
  public String toString() {
    return "[ls=" + lockspace + " res=" + resource + " " + mode + " " + scope + "]";
  }

  private static void checkName(String what, String name) {
    if (name.isEmpty() || name.getBytes(StandardCharsets.UTF_8).length > MAX_NAME_BYTES) {
      throw new IllegalArgumentException(
          what + " '" + name + "' must be 1.." + MAX_NAME_BYTES + " bytes (DLM name limit)");
    }
  }
}
