package io.clusterlvm.clvm.exec;

import io.clusterlvm.clvm.exec.ClusterRefusalException.Reason;
import io.clusterlvm.clvm.lvm.LockPlan;
import io.clusterlvm.clvm.lvm.LockRequirement;
import io.clusterlvm.clvm.lvm.LockRequirement.Scope;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Durations;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.grpc.Status;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalLong;
import java.util.Set;
import java.util.TreeSet;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The cluster locks of one command: acquired in the plan's order, released in reverse.
 *
 * <ul>
 *   <li>Global and VG locks wait for their grant, up to the agent's lock timeout. A VG lock at PR
 *       or above comes with the value block; a seqno this host has not seen refreshes its view.
 *   <li>LV locks never wait (NOQUEUE, as lvmlockd asks for them): an LV lock held elsewhere means
 *       the LV is active on another host, and the command fails at once naming the holder. Another
 *       command on this host working on the same LV is waited for, up to the lock timeout. A lock
 *       this host already holds for an activation satisfies the command if strong enough, and is
 *       converted otherwise (and converted back if the command fails).
 *   <li>After the command: activation locks of a successful activation are kept (persistent, owned
 *       by the host's incarnation), those of a deactivation or removal released, and a VG lock held
 *       EX is released with the VG's new seqno in its value block.
 * </ul>
 *
 * Not thread-safe: one command's thread uses it.
 */
final class CommandLocks {

  private static final Logger LOG = LoggerFactory.getLogger(CommandLocks.class);

  /** How this command came to hold a lock. */
  private enum Origin {
    /** Requested for this command. */
    ACQUIRED,
    /** This host's activation lock, already strong enough: used as it is. */
    REUSED,
    /** This host's activation lock, converted from {@code previous} for this command. */
    CONVERTED,
    /** A deactivation of an LV this host has no lock on: nothing to hold or release. */
    NONE
  }

  private static final class Held {
    final LockRequirement req;
    final Origin origin;
    final LockMode previous;
    Lock lock;

    Held(LockRequirement req, Origin origin, Lock lock, LockMode previous) {
      this.req = req;
      this.origin = origin;
      this.lock = lock;
      this.previous = previous;
    }

    LockName name() {
      return LockName.of(req);
    }
  }

  private final String node;
  private final DlmSession session;
  private final ActivationTable activations;
  private final VolumeGroupViews views;
  private final Duration lockTimeout;
  private final List<Held> held = new ArrayList<>();
  private final Map<String, OptionalLong> seqnoAtGrant = new LinkedHashMap<>();
  private long waitNanos;
  private boolean done;
  private boolean outcomeUnknown;
  private Set<LockName> keepActivations = Set.of();

  CommandLocks(
      String node,
      DlmSession session,
      ActivationTable activations,
      VolumeGroupViews views,
      Duration lockTimeout) {
    this.node = node;
    this.session = session;
    this.activations = activations;
    this.views = views;
    this.lockTimeout = lockTimeout;
  }

  /**
   * Takes one lock of the plan.
   *
   * @throws ClusterRefusalException LOCK_TIMEOUT, LOCK_HELD_ELSEWHERE or LOCK_SERVICE_UNAVAILABLE
   * @throws InterruptedException if the command is being stopped
   */
  void acquire(LockRequirement r) throws ClusterRefusalException, InterruptedException {
    long start = System.nanoTime();
    try {
      if (r.isLogicalVolumeLock()) {
        acquireLogicalVolume(r);
      } else {
        Lock lock = request(r, r.mode(), LockOptions.DEFAULT.withTimeout(lockTimeout));
        held.add(new Held(r, Origin.ACQUIRED, lock, null));
        if (r.isVolumeGroupLock()) {
          granted(r.volumeGroup(), lock);
        }
      }
    } finally {
      waitNanos += System.nanoTime() - start;
    }
  }

  private void granted(String vg, Lock lock) {
    Optional<VolumeGroupLockValue> value =
        lock.valueBlockValid() ? VolumeGroupLockValue.decode(lock.valueBlock()) : Optional.empty();
    seqnoAtGrant.put(
        vg,
        value
            .filter(v -> !v.removed())
            .map(v -> OptionalLong.of(v.seqno()))
            .orElse(OptionalLong.empty()));
    views.granted(vg, lock.valueBlock(), lock.valueBlockValid());
  }

  private void acquireLogicalVolume(LockRequirement r)
      throws ClusterRefusalException, InterruptedException {
    LockName name = LockName.of(r);
    // Each lock wait of a command may take the lock timeout, as a VG lock's does.
    if (!activations.claim(name, lockTimeout)) {
      throw new ClusterRefusalException(
          Reason.LOCK_TIMEOUT,
          "another command on this host has been working on LV "
              + describeLv(r)
              + " for longer than the lock timeout ("
              + Durations.format(lockTimeout)
              + "); run this one when it has finished",
          name.toString(),
          "this host (" + node + ")",
          false,
          null);
    }
    Optional<Lock> existing = activations.get(name);
    try {
      LockOptions noWait = LockOptions.DEFAULT.withNoqueue();
      if (r.scope() == Scope.RELEASE_ACTIVATION && r.mode() == LockMode.NL) {
        held.add(
            new Held(
                r,
                existing.isPresent() ? Origin.REUSED : Origin.NONE,
                existing.orElse(null),
                null));
        return;
      }
      if (existing.isPresent() && r.scope() == Scope.INACTIVE) {
        throw new ClusterRefusalException(
            Reason.LOCK_HELD_ELSEWHERE,
            "LV "
                + describeLv(r)
                + " is active on this host; deactivate it first ('clvm lvchange -an "
                + describeLv(r)
                + "')",
            name.toString(),
            "this host (" + node + ") in " + existing.get().mode(),
            false,
            null);
      }
      if (existing.isPresent()) {
        Lock e = existing.get();
        boolean enough =
            r.scope() == Scope.PERSISTENT_ACTIVATION
                ? e.mode() == r.mode()
                : LockPlan.covers(e.mode(), r.mode());
        if (enough) {
          held.add(new Held(r, Origin.REUSED, e, null));
        } else {
          Lock converted = convert(r, e, r.mode(), noWait);
          activations.put(name, converted);
          held.add(new Held(r, Origin.CONVERTED, converted, e.mode()));
        }
        return;
      }
      LockOptions opts =
          r.scope() == Scope.PERSISTENT_ACTIVATION ? noWait.withPersistent() : noWait;
      held.add(new Held(r, Origin.ACQUIRED, request(r, r.mode(), opts), null));
    } catch (ClusterRefusalException | InterruptedException | RuntimeException e) {
      activations.unclaim(name);
      throw e;
    }
  }

  /** Tokens of the exclusive global and VG locks: what a metadata change is written under. */
  Map<String, Long> exclusiveTokens() {
    Map<String, Long> tokens = new LinkedHashMap<>();
    for (Held h : held) {
      if (!h.req.isLogicalVolumeLock() && h.lock != null && h.lock.mode() == LockMode.EX) {
        tokens.put(h.name().toString(), h.lock.fencingToken());
      }
    }
    return tokens;
  }

  /** VGs whose lock this command holds EX: their seqno goes into the value block afterwards. */
  Set<String> exclusiveVolumeGroups() {
    Set<String> vgs = new TreeSet<>();
    for (Held h : held) {
      if (h.req.isVolumeGroupLock() && h.lock != null && h.lock.mode() == LockMode.EX) {
        vgs.add(h.req.volumeGroup());
      }
    }
    return vgs;
  }

  /** The seqno the VG lock's value block held when it was granted, if known. */
  OptionalLong seqnoAtGrant(String vg) {
    return seqnoAtGrant.getOrDefault(vg, OptionalLong.empty());
  }

  Duration lockWait() {
    return Duration.ofNanos(waitNanos);
  }

  /**
   * Ends the command: keeps or releases activation locks according to {@code succeeded}, and
   * releases everything else in reverse order, VG locks held EX with {@code values}.
   *
   * @param renamed for an lvrename that succeeded: the old and new LV lock names (the activation
   *     lock follows the LV), else null
   * @return the locks the command ran under, in acquisition order
   */
  List<LockUse> finish(
      boolean succeeded, Map<String, VolumeGroupLockValue> values, LockName[] renamed) {
    done = true;
    List<LockUse> uses = new ArrayList<>();
    for (Held h : held) {
      uses.add(use(h, succeeded || keepActivations.contains(h.name())));
    }
    if (succeeded && renamed != null) {
      moveActivation(renamed[0], renamed[1], true);
    }
    for (int i = held.size() - 1; i >= 0; i--) {
      Held h = held.get(i);
      try {
        if (h.req.isLogicalVolumeLock()) {
          finishLogicalVolume(h, succeeded || keepActivations.contains(h.name()));
        } else if (h.req.isVolumeGroupLock() && h.lock.mode() == LockMode.EX) {
          VolumeGroupLockValue v = values.get(h.req.volumeGroup());
          session.unlock(h.lock, v == null ? null : v.encode());
          if (v != null) {
            views.wrote(h.req.volumeGroup(), v);
          }
        } else {
          session.unlock(h.lock);
        }
      } catch (DlmClientException e) {
        LOG.warn(
            "[node={}] could not release {} ({}); a release whose answer was lost is sent again"
                + " until the lock service answers",
            node,
            h.name(),
            e.getMessage());
      } finally {
        if (h.req.isLogicalVolumeLock()) {
          activations.unclaim(h.name());
        }
      }
    }
    return uses;
  }

  /**
   * lvm ran, but how it ended is unknown (it timed out, or was stopped): it may have written the
   * metadata of a VG this command holds EX, and activated an LV whose activation lock it took.
   */
  void lvmOutcomeUnknown() {
    outcomeUnknown = true;
  }

  /**
   * Of {@link #newActivations()}, those whose LV may be active now: their locks are kept, as if the
   * command had succeeded, when it is abandoned or finishes having failed (lvm activates LV by LV,
   * so a failed activation of several may have activated some).
   */
  void keepActivations(Set<LockName> maybeActive) {
    keepActivations = Set.copyOf(maybeActive);
  }

  /** The activation locks this command took anew (lvcreate, lvchange -aey of an inactive LV). */
  List<LockRequirement> newActivations() {
    List<LockRequirement> out = new ArrayList<>();
    for (Held h : held) {
      if (h.origin == Origin.ACQUIRED && h.req.scope() == Scope.PERSISTENT_ACTIVATION) {
        out.add(h.req);
      }
    }
    return out;
  }

  /**
   * The command failed before lvm ran, or is being stopped: release what it took (activation locks
   * as they were; a VG lock held EX marked unknown if {@link #lvmOutcomeUnknown} was called). With
   * {@code incarnationGone} nothing is asked of the lock service: the host's old incarnation, and
   * every lock of it, is about to be purged.
   */
  void abandon(boolean incarnationGone) {
    if (done) {
      return;
    }
    done = true;
    InterruptAside.run(() -> release(incarnationGone));
  }

  private void release(boolean incarnationGone) {
    for (int i = held.size() - 1; i >= 0; i--) {
      Held h = held.get(i);
      try {
        if (!incarnationGone) {
          if (h.req.isLogicalVolumeLock()) {
            finishLogicalVolume(h, keepActivations.contains(h.name()));
          } else if (outcomeUnknown
              && h.req.isVolumeGroupLock()
              && h.lock != null
              && h.lock.mode() == LockMode.EX) {
            // Left as it was, the value block would tell other hosts that their view of the VG
            // is current. (A purged incarnation's value blocks are invalidated by the purge.)
            views.unknown(h.req.volumeGroup());
            session.unlock(h.lock, VolumeGroupLockValue.unknown());
          } else if (h.lock != null) {
            session.unlock(h.lock);
          }
        }
      } catch (DlmClientException e) {
        LOG.warn("[node={}] could not release {} ({})", node, h.name(), e.getMessage());
      } finally {
        if (h.req.isLogicalVolumeLock()) {
          activations.unclaim(h.name());
        }
      }
    }
  }

  private void finishLogicalVolume(Held h, boolean succeeded) {
    if (h.lock == null) {
      return; // nothing held (a deactivation of an LV not active here, or moved by a rename)
    }
    LockName name = h.name();
    Scope scope = h.req.scope();
    switch (h.origin) {
      case NONE -> {}
      case REUSED -> {
        if (succeeded && scope == Scope.RELEASE_ACTIVATION) {
          session.unlock(h.lock);
          activations.remove(name);
        }
      }
      case ACQUIRED -> {
        if (succeeded && scope == Scope.PERSISTENT_ACTIVATION) {
          activations.put(name, h.lock);
        } else {
          session.unlock(h.lock);
        }
      }
      case CONVERTED -> {
        if (succeeded && scope == Scope.RELEASE_ACTIVATION) {
          session.unlock(h.lock);
          activations.remove(name);
        } else if (!succeeded || scope == Scope.TRANSIENT) {
          // Back to the activation this host had before the command.
          try {
            activations.put(
                name, session.convert(h.lock, h.previous, LockOptions.DEFAULT.withNoqueue()));
          } catch (DlmClientException e) {
            LOG.warn(
                "[node={}] could not convert {} back to {} ({}); it stays {}",
                node,
                name,
                h.previous,
                e.getMessage(),
                h.lock.mode());
          }
        }
      }
    }
  }

  /**
   * An lvrename that failed or was stopped: lvm renames the device before it waits for udev, so the
   * LV may have its new name all the same ({@code renamed} says what lvs found; null: it could not
   * tell). An activation lock held here then goes to the new name, or, if unknown, covers both
   * names: the new one is taken as an activation lock as well (released with the next leave, or by
   * 'clvm lvchange -an' of the name that exists).
   */
  void lvrenameOutcome(LockName from, LockName to, Boolean renamed) {
    if (Boolean.TRUE.equals(renamed)) {
      moveActivation(from, to, true);
    } else if (renamed == null) {
      moveActivation(from, to, false);
    }
  }

  /**
   * Takes the new name's activation lock for an LV active here under {@code from}, releasing the
   * old name's if {@code releaseOld}.
   */
  private void moveActivation(LockName from, LockName to, boolean releaseOld) {
    Held old = null;
    Held fresh = null;
    for (Held h : held) {
      if (h.name().equals(from)) {
        old = h;
      } else if (h.name().equals(to)) {
        fresh = h;
      }
    }
    if (old == null
        || old.lock == null
        || (old.origin != Origin.REUSED && old.origin != Origin.CONVERTED)
        || fresh == null
        || fresh.origin != Origin.ACQUIRED) {
      return; // not active here (its lock was only taken for the command): nothing to move
    }
    LockMode mode = old.origin == Origin.CONVERTED ? old.previous : old.lock.mode();
    // We still hold the VG lock EX, so no other host can activate the LV under its new name in
    // between: release our transient lock on the new name, then take it as the activation lock.
    try {
      session.unlock(fresh.lock);
      fresh.lock = null;
      Lock moved =
          session.lock(
              to.lockspace(),
              to.resource(),
              mode,
              LockOptions.DEFAULT.withNoqueue().withPersistent());
      activations.put(to, moved);
      if (!releaseOld) {
        LOG.warn(
            "[node={}] lvrename's outcome unknown: the activation lock of {} is kept, and {}"
                + " taken as well",
            node,
            from,
            to);
        return;
      }
      session.unlock(old.lock);
      old.lock = null;
      activations.remove(from);
      LOG.info("[node={}] activation lock moved from {} to {}", node, from, to);
    } catch (DlmClientException e) {
      LOG.error(
          "[node={}] could not move the activation lock of renamed LV {} to {} ({}); check"
              + " 'clvm lvs' and re-activate it",
          node,
          from,
          to,
          e.getMessage());
    }
  }

  private LockUse use(Held h, boolean succeeded) {
    Lock l = h.lock;
    LockMode mode = l != null ? l.mode() : h.req.mode();
    long token = l != null ? l.fencingToken() : 0;
    LockUse.Kind kind = LockUse.Kind.TRANSIENT;
    if (h.req.isLogicalVolumeLock()) {
      if (h.req.scope() == Scope.PERSISTENT_ACTIVATION && succeeded) {
        kind = LockUse.Kind.ACTIVATION;
      } else if (h.req.scope() == Scope.RELEASE_ACTIVATION
          && succeeded
          && h.origin != Origin.NONE) {
        kind = LockUse.Kind.RELEASED_ACTIVATION;
      } else if (h.origin == Origin.REUSED || h.origin == Origin.CONVERTED) {
        kind = LockUse.Kind.ACTIVATION;
      }
    }
    return new LockUse(h.req.lockspace(), h.req.resource(), mode, token, kind);
  }

  private Lock request(LockRequirement r, LockMode mode, LockOptions opts)
      throws ClusterRefusalException, InterruptedException {
    try {
      return session.lock(r.lockspace(), r.resource(), mode, opts);
    } catch (DlmClientException e) {
      throw refusal(r, mode, e);
    }
  }

  private Lock convert(LockRequirement r, Lock held, LockMode mode, LockOptions opts)
      throws ClusterRefusalException, InterruptedException {
    try {
      return session.convert(held, mode, opts);
    } catch (DlmClientException e) {
      throw refusal(r, mode, e);
    }
  }

  private ClusterRefusalException refusal(LockRequirement r, LockMode mode, DlmClientException e)
      throws InterruptedException {
    if (Thread.interrupted() || e.code() == Status.Code.CANCELLED) {
      throw new InterruptedException("stopped while waiting for " + LockName.of(r));
    }
    String what = describe(r) + " (" + LockName.of(r) + ", " + mode + ")";
    String holder = holderOf(e.getMessage());
    if (e.wouldBlock()) {
      String message =
          r.isLogicalVolumeLock()
              ? "LV " + describeLv(r) + " is in use on another host: " + what + " is " + holder
              : what + " is " + holder;
      return new ClusterRefusalException(
          Reason.LOCK_HELD_ELSEWHERE, message, LockName.of(r).toString(), holder, false, e);
    }
    if (e.timedOut()) {
      return new ClusterRefusalException(
          Reason.LOCK_TIMEOUT,
          "timed out after "
              + Durations.format(lockTimeout)
              + " waiting for "
              + what
              + ", "
              + holder,
          LockName.of(r).toString(),
          holder,
          false,
          e);
    }
    return new ClusterRefusalException(
        Reason.LOCK_SERVICE_UNAVAILABLE,
        "the lock service did not grant " + what + ": " + e.getMessage(),
        LockName.of(r).toString(),
        null,
        false,
        e);
  }

  /** "held by node2/3 in EX (lock 42)" out of the lock service's message. */
  static String holderOf(String message) {
    if (message == null) {
      return "held by an unknown holder";
    }
    int i = message.indexOf("held by");
    return i >= 0 ? message.substring(i).strip() : message;
  }

  private static String describe(LockRequirement r) {
    if (r.isGlobal()) {
      return "the global lock";
    }
    if (r.isVolumeGroupLock()) {
      return "the VG lock of " + r.volumeGroup();
    }
    return "the lock of LV " + describeLv(r);
  }

  private static String describeLv(LockRequirement r) {
    return r.volumeGroup() + "/" + r.resource();
  }
}
