package io.clusterlvm.clvm.exec;

import io.clusterlvm.clvm.exec.ClusterRefusalException.Reason;
import io.clusterlvm.clvm.exec.CommandsInFlight.Command;
import io.clusterlvm.clvm.exec.CommandsInFlight.Stage;
import io.clusterlvm.clvm.lvm.DeviceMapper;
import io.clusterlvm.clvm.lvm.LockPlan;
import io.clusterlvm.clvm.lvm.LockRequirement;
import io.clusterlvm.clvm.lvm.LockRequirement.Scope;
import io.clusterlvm.clvm.lvm.LogicalVolumeInfo;
import io.clusterlvm.clvm.lvm.LvmCommand;
import io.clusterlvm.clvm.lvm.LvmResult;
import io.clusterlvm.clvm.lvm.LvmRunner;
import io.clusterlvm.clvm.lvm.LvmTimeoutException;
import io.clusterlvm.clvm.lvm.StackedActivation;
import io.clusterlvm.clvm.lvm.UnsupportedLvmCommandException;
import io.clusterlvm.clvm.lvm.VolumeGroupInfo;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.fence.domain.MembershipListener;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs lvm commands on this host under the cluster locks they need: the agent's side of rule 1
 * ("change shared VG metadata only under the VG's cluster lock") and rule 2 ("touch shared storage
 * only as a member of the fence domain").
 *
 * <p>For each command: refuse it unless this host may use storage; take the locks of its {@link
 * LockPlan} stage by stage (global, then VG locks, then LV locks, the lists behind wildcards read
 * under the lock one level up); record the fencing tokens of its exclusive locks in the {@link
 * MetadataChangeLog} (which refuses a stale token); run the real lvm; write each changed VG's new
 * seqno into its lock's value block on release. How the command arrived (gRPC today, lvmlockd's
 * socket later) is not its business.
 *
 * <p>Membership: listen to {@code NodeMembership}. A lost lease stops every command in flight (its
 * lvm process is killed: the host may have been declared failed and its locks handed on), reports
 * it as such, forgets this host's activation locks (the rejoin purges them) and waits for the
 * rejoin's new incarnation. While the ZooKeeper connection is SUSPENDED no new command starts.
 *
 * <p>Thread-safe; commands run on their callers' threads, which a lost lease interrupts.
 */
public final class CommandExecutor implements MembershipListener, AutoCloseable {

  private static final Logger LOG = LoggerFactory.getLogger(CommandExecutor.class);

  /** How long a lease loss waits for stopped commands to end before the rejoin goes on. */
  private static final Duration STOP_WAIT = Duration.ofSeconds(15);

  private final String node;
  private final LvmRunner lvm;
  private final MetadataChangeLog changeLog;
  private final Duration lockTimeout;

  /** How long a leave waits for the commands in flight before it stops them. */
  private final Duration leaveDrain;

  private final BooleanSupplier mayUseStorage;
  private final BooleanSupplier connected;
  private final AgentLockSession lockSession;
  private final ActivationTable activations = new ActivationTable();
  private final VolumeGroupViews views;
  private final VolumeGroupSeqnos seqnos;
  private final CommandsInFlight inFlight = new CommandsInFlight();
  private final AtomicReference<String> notMemberBecause =
      new AtomicReference<>("it has not joined yet");
  private volatile boolean closed;

  /**
   * @param mayUseStorage whether this host may touch shared storage now ({@code
   *     NodeMembership::mayUseStorage})
   * @param connected whether the ZooKeeper connection is up (to tell SUSPENDED from not a member)
   * @param leaseBinding binds the lock session to the lease ({@code NodeMembership::bindSession})
   * @param backupDir where lvm writes this host's metadata backups (empty: read seqnos with vgs)
   */
  public CommandExecutor(
      String node,
      DlmClient dlm,
      LvmRunner lvm,
      MetadataChangeLog changeLog,
      Duration lockTimeout,
      Duration leaveDrain,
      BooleanSupplier mayUseStorage,
      BooleanSupplier connected,
      LeaseBinding leaseBinding,
      Optional<java.nio.file.Path> backupDir) {
    this.node = node;
    this.lvm = lvm;
    this.changeLog = changeLog;
    this.lockTimeout = lockTimeout;
    this.leaveDrain = leaveDrain;
    this.mayUseStorage = mayUseStorage;
    this.connected = connected;
    this.views = new VolumeGroupViews(node, VolumeGroupViews.lvmRescans(node));
    this.seqnos = new VolumeGroupSeqnos(lvm, backupDir);
    this.lockSession = new AgentLockSession(dlm, node, leaseBinding, this::lockSessionLost);
  }

  /** Asks lvm where this host's metadata backups go (see {@link VolumeGroupSeqnos}). */
  public static Optional<java.nio.file.Path> backupDirOf(LvmRunner lvm)
      throws InterruptedException {
    return VolumeGroupSeqnos.backupDirOf(lvm);
  }

  public String node() {
    return node;
  }

  // ---------------------------------------------------------------- membership

  @Override
  public void joined(long incarnation) {
    if (lockSession.incarnation() != 0 && lockSession.incarnation() != incarnation) {
      // Rejoined after a clean leave: that released every lock of the old incarnation.
      activations.clear();
    }
    lockSession.joined(incarnation);
    notMemberBecause.set(null);
  }

  /** Whether a command runs now. */
  public boolean commandsRunning() {
    return !inFlight.isEmpty();
  }

  /**
   * Takes up the activation locks the previous agent process of this incarnation held, when it
   * handed its lease over: commands see them as this host's, and a deactivation releases them.
   */
  public void adoptActivations(List<Lock> locks) {
    for (Lock l : locks) {
      activations.put(new LockName(l.lockspace(), l.resource()), l);
    }
  }

  @Override
  public void storageAllowed(boolean allowed) {
    if (!allowed) {
      LOG.warn("[node={}] storage use stopped: no new lvm command starts", node);
    }
  }

  @Override
  public void leaseLost(long oldIncarnation) {
    notMemberBecause.set(
        "its membership lease (ZooKeeper session) was lost; the agent is rejoining with a new"
            + " incarnation");
    try {
      int stopped =
          inFlight.abortIncarnation(
              oldIncarnation,
              "this host lost its membership lease (ZooKeeper session of incarnation "
                  + oldIncarnation
                  + ")",
              STOP_WAIT);
      if (stopped > 0) {
        LOG.error(
            "[node={}] lease lost: stopped {} command(s) in flight; their outcome is unknown",
            node,
            stopped);
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    lockSession.incarnationEnded(stillRunning("lease lost"));
    Map<LockName, Lock> dropped = activations.clear();
    views.forgetAll();
    if (!dropped.isEmpty()) {
      LOG.error(
          "[node={}] lease lost: the cluster locks of {} LV activation(s) on this host go with"
              + " incarnation {}: {}. Deactivate them here (lvchange -an) before using them again.",
          node,
          dropped.size(),
          oldIncarnation,
          dropped.keySet());
    }
  }

  private void lockSessionLost(DlmSession lost) {
    // Its transient locks are gone (the lock service ended the session): nothing may still run
    // under them. Activation locks are persistent and stay.
    Thread t =
        new Thread(
            () -> {
              try {
                int stopped =
                    inFlight.abortSession(
                        lost,
                        "this host's lock session " + lost.id() + " with the lock service was lost",
                        STOP_WAIT);
                if (stopped > 0) {
                  LOG.error(
                      "[node={}] lock session lost: stopped {} command(s) in flight",
                      node,
                      stopped);
                }
                // Bind a new session to the lease at once: should the server still keep the old
                // one (the client gave it up, the server did not end it), it ends it as soon as
                // the lease names another, and the old one's locks go. Not while a command of
                // the old one still runs (lvm that would not die): those locks must stay.
                if (inFlight.snapshot().stream().noneMatch(c -> c.session == lost)) {
                  lockSession.current();
                }
              } catch (ClusterRefusalException e) {
                LOG.info("[node={}] no new lock session yet: {}", node, e.getMessage());
              } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
              }
            },
            "clvm-session-lost");
    t.setDaemon(true);
    t.start();
  }

  // ---------------------------------------------------------------- commands

  /**
   * Runs {@code argv} ({@code ["lvcreate", "-n", "x", "-L", "4M", "vg"]}) under its locks and
   * returns lvm's result, whatever its exit code. Commands that touch no shared storage ({@code
   * version}, {@code --help}) run without locks, member or not.
   *
   * @throws ClusterRefusalException when the cluster refuses it, or its outcome is unknown
   * @throws InterruptedException if the calling thread is interrupted (lvm is killed)
   */
  public CommandResult execute(List<String> argv)
      throws ClusterRefusalException, InterruptedException {
    return execute(argv, new Cancellation());
  }

  /**
   * {@link #execute(List)}, which {@code cancellation} may withdraw while it waits for its locks.
   */
  public CommandResult execute(List<String> argv, Cancellation cancellation)
      throws ClusterRefusalException, InterruptedException {
    if (argv.isEmpty()) {
      throw new ClusterRefusalException(
          Reason.UNSUPPORTED_COMMAND, "no lvm subcommand given (e.g. 'clvm lvs')");
    }
    List<String> args = new ArrayList<>(argv.subList(1, argv.size()));
    List<String> notes = new ArrayList<>();
    if (argv.get(0).equals("vgcreate") && args.remove("--shared")) {
      // lvm would refuse --shared without lvmlockd (which clvm-agent does not speak yet); the VG
      // is shared all the same, through the cluster locks this agent takes. Say so.
      notes.add(
          "clvm: --shared: the VG is shared through clvm's cluster locks; it is created without"
              + " an lvmlockd lock type, so manage it with clvm on every host");
    }
    if (argv.get(0).equals("vgcreate")
        && args.stream()
            .noneMatch(
                a -> a.startsWith("--") && a.replace("-", "").startsWith("setautoactivation"))) {
      // Autoactivation (udev/systemd event activation at boot, vgchange -aay) would activate the
      // VG's LVs on every host that sees the LUN, with no cluster lock: the VG says no, in its
      // metadata, which every host reads. An explicit "--setautoactivation y" is refused.
      args.add(0, "--setautoactivation");
      args.add(1, "n");
      notes.add(
          "clvm: --setautoactivation n: a shared VG's LVs are activated through clvm only, never"
              + " at boot");
    }
    LvmCommand command;
    try {
      command = LvmCommand.parse(argv.get(0), args);
    } catch (UnsupportedLvmCommandException e) {
      throw new ClusterRefusalException(Reason.UNSUPPORTED_COMMAND, e.getMessage());
    }
    LockPlan plan = command.lockPlan();
    if (plan.isEmpty()) {
      return new CommandResult(runLvm(command, false), List.of(), Duration.ZERO, notes);
    }
    LockName[] renamed = renamed(command);
    return underLocks(
        command.argv(),
        plan,
        !command.subcommand().equals("lvcreate"),
        cancellation,
        (locks, c) -> {
          if (!c.commitToRun()) {
            throw new InterruptedException(c.abortedBecause()); // withdrawn as its locks came
          }
          Map<String, Long> tokens = locks.exclusiveTokens();
          long entry = tokens.isEmpty() ? 0 : beginChange(c, tokens);
          c.stage(Stage.RUNNING_LVM);
          LvmResult result;
          try {
            result = runLvm(command, changes(plan));
          } catch (InterruptedException | ClusterRefusalException e) {
            if (e instanceof InterruptedException || ((ClusterRefusalException) e).lvmStarted()) {
              lvmOutcomeUnknown(locks, c, entry, e);
              if (renamed != null && !c.incarnationGone()) {
                InterruptAside.run(() -> lvrenameOutcome(locks, renamed));
              }
            } else if (entry != 0) {
              endChange(entry, Map.of("outcome", "unknown: " + e.getMessage()));
            }
            throw e;
          }
          c.stage(Stage.RELEASING_LOCKS);
          if (!result.succeeded() && !locks.newActivations().isEmpty() && !c.incarnationGone()) {
            locks.keepActivations(
                maybeActive(
                    locks.newActivations(),
                    "lvm failed (exit " + result.exitCode() + ") and may have activated some"));
          }
          // lvm has ended, and how: a stop that comes now must not cost that outcome (an LV this
          // command activated would lose its lock), so it is put off until the locks are done.
          boolean interrupted = false;
          Map<String, VolumeGroupLockValue> values = new LinkedHashMap<>();
          for (String vg : locks.exclusiveVolumeGroups()) {
            try {
              if (!interrupted) {
                values.put(vg, seqnos.after(vg, locks.seqnoAtGrant(vg)));
              }
            } catch (InterruptedException e) {
              interrupted = true;
              LOG.warn(
                  "[node={} vg={}] stopped while reading the seqno after {}; the VG lock's value"
                      + " block is left as it was",
                  node,
                  vg,
                  command.subcommand());
            } catch (IOException | RuntimeException e) {
              LOG.warn(
                  "[node={} vg={}] could not read the seqno after {} ({}); the VG lock's value"
                      + " block is left as it was",
                  node,
                  vg,
                  command.subcommand(),
                  e.toString());
            }
          }
          if (renamed != null && !result.succeeded() && !c.incarnationGone()) {
            lvrenameOutcome(locks, renamed);
          }
          List<LockUse> uses = locks.finish(result.succeeded(), values, renamed);
          if (entry != 0) {
            endChange(entry, result, values);
          }
          if (interrupted) {
            Thread.currentThread().interrupt();
          }
          return new CommandResult(result, uses, locks.lockWait(), notes);
        });
  }

  /** A snapshot of the VGs and LVs this host sees, read under the global and every VG lock (PR). */
  public Volumes listVolumes() throws ClusterRefusalException, InterruptedException {
    LockPlan plan = LockPlan.builder().global(LockMode.PR).everyVolumeGroup(LockMode.PR).build();
    return underLocks(
        List.of("(list volumes)"),
        plan,
        false,
        new Cancellation(),
        (locks, c) -> {
          c.stage(Stage.RUNNING_LVM);
          try {
            List<VolumeGroupInfo> vgs = lvm.volumeGroups();
            List<LogicalVolumeInfo> lvs = lvm.logicalVolumes();
            locks.finish(true, Map.of(), null);
            Map<String, LockMode> active = new LinkedHashMap<>();
            activations
                .snapshot()
                .forEach(
                    (name, lock) ->
                        active.put(
                            name.lockspace().substring(LockRequirement.LOCKSPACE_PREFIX.length())
                                + "/"
                                + name.resource(),
                            lock.mode()));
            return new Volumes(vgs, lvs, active);
          } catch (IOException e) {
            throw new ClusterRefusalException(
                Reason.LVM_FAILED, "lvm could not list the volumes: " + e.getMessage());
          }
        });
  }

  /** What {@link #listVolumes()} returns; {@code activeHere} maps "vg/lv" to the lock's mode. */
  public record Volumes(
      List<VolumeGroupInfo> volumeGroups,
      List<LogicalVolumeInfo> logicalVolumes,
      Map<String, LockMode> activeHere) {}

  /**
   * A command that changes a VG's metadata (its VG lock EX) runs only on a host that sees every PV
   * of the VG. lvm lets some (lvremove, lvchange of a property) run with a PV missing, and writes
   * that PV as MISSING into the metadata every host reads: its LVs go partial everywhere and every
   * later change of the VG is refused until the PV is restored (found in review: a devices file not
   * updated on every host, RHEL 9's default, or one lost multipath path is enough). Read under the
   * VG lock, so no other host's change of the VG falls in between.
   */
  private void requireEveryPvSeen(List<LockRequirement> vgLocks)
      throws IOException, InterruptedException, ClusterRefusalException {
    for (LockRequirement r : vgLocks) {
      if (r.isGlobal() || r.mode() != LockMode.EX) {
        continue;
      }
      String vg = r.volumeGroup();
      int missing = lvm.missingPhysicalVolumes(vg);
      if (missing > 0) {
        throw new ClusterRefusalException(
            Reason.UNSUPPORTED_COMMAND,
            "VG "
                + vg
                + " has "
                + missing
                + " PV(s) this host does not see; a change of its metadata here would mark them"
                + " missing for every host. Make them visible on this host (multipath, the lvm"
                + " devices file, the filter) and try again, or run it on a host that sees them all");
      }
    }
  }

  @FunctionalInterface
  private interface LockedWork<T> {
    T run(CommandLocks locks, Command command) throws ClusterRefusalException, InterruptedException;
  }

  /**
   * Runs {@code work} holding the plan's locks, taken stage by stage. With {@code existingLvs}, the
   * command acts on LVs that exist already (not lvcreate), and an activation or deactivation of a
   * thin volume, pool, snapshot or origin is checked against what lvm activates with it ({@link
   * StackedActivation}), under the VG lock, once the LV locks are claimed.
   */
  private <T> T underLocks(
      List<String> argv,
      LockPlan plan,
      boolean existingLvs,
      Cancellation cancellation,
      LockedWork<T> work)
      throws ClusterRefusalException, InterruptedException {
    checkMayUseStorage();
    DlmSession session = lockSession.current();
    Command c = inFlight.begin(argv, session.incarnation(), session);
    cancellation.attach(c);
    CommandLocks locks = new CommandLocks(node, session, activations, views, lockTimeout);
    try {
      for (LockRequirement r : plan.globalLocks()) {
        locks.acquire(r);
      }
      List<String> vgs = plan.needsVolumeGroupList() ? lvm.volumeGroupNames() : List.of();
      List<LockRequirement> vgLocks = plan.volumeGroupLocks(vgs);
      for (LockRequirement r : vgLocks) {
        locks.acquire(r);
      }
      requireEveryPvSeen(vgLocks);
      Map<String, List<LogicalVolumeInfo>> lvs = new LinkedHashMap<>();
      for (String vg : plan.volumeGroupsNeedingLvList(vgs)) {
        lvs.put(vg, lvm.logicalVolumes(vg));
      }
      Map<String, List<String>> lvNames = new LinkedHashMap<>();
      lvs.forEach(
          (vg, list) -> lvNames.put(vg, list.stream().map(LogicalVolumeInfo::name).toList()));
      List<LockRequirement> lvLocks = plan.logicalVolumeLocks(lvNames);
      if (existingLvs) {
        lvLocks = withPoolLocks(lvLocks, lvs);
      }
      for (LockRequirement r : lvLocks) {
        locks.acquire(r);
      }
      if (existingLvs) {
        // After the LV locks: each is claimed now, so no other command on this host changes
        // which of them are active here while this one looks.
        checkStackedActivation(argv, lvLocks, lvs);
      }
      // The connection may have been SUSPENDED while we waited: don't start lvm then.
      checkMayUseStorage();
      if (c.abortedBecause() != null) {
        throw new InterruptedException(c.abortedBecause());
      }
      return work.run(locks, c);
    } catch (InterruptedException e) {
      throw stopped(c, e);
    } catch (IOException e) {
      throw new ClusterRefusalException(
          Reason.LVM_FAILED,
          "lvm could not list the VGs/LVs to lock: " + e.getMessage(),
          null,
          null,
          false,
          e);
    } finally {
      locks.abandon(c.incarnationGone());
      inFlight.end(c);
    }
  }

  /**
   * {@code lvLocks} and the pool locks an lvremove of thin volumes needs ({@link
   * StackedActivation#poolLocks}), in acquisition order. Reads lvs, under the VG lock, of each VG
   * in which the command removes LVs, into {@code lvs} (which may have it already).
   */
  private List<LockRequirement> withPoolLocks(
      List<LockRequirement> lvLocks, Map<String, List<LogicalVolumeInfo>> lvs)
      throws IOException, InterruptedException {
    List<LockRequirement> pools = new ArrayList<>();
    for (Map.Entry<String, List<LockRequirement>> e : byVolumeGroup(lvLocks).entrySet()) {
      // A removal takes the lock it releases EX; a deactivation asks for NL.
      boolean removes =
          e.getValue().stream()
              .anyMatch(r -> r.scope() == Scope.RELEASE_ACTIVATION && r.mode() == LockMode.EX);
      if (removes) {
        pools.addAll(
            StackedActivation.poolLocks(e.getKey(), e.getValue(), logicalVolumes(e.getKey(), lvs)));
      }
    }
    if (pools.isEmpty()) {
      return lvLocks;
    }
    LockPlan.Builder all = LockPlan.builder();
    lvLocks.forEach(all::add);
    pools.forEach(all::add);
    return all.build().locks();
  }

  /**
   * Refuses an activation that would leave an LV lvm activates with the named ones without its
   * lock, a shared activation of anything but a plain LV, and a release of a thin pool's lock while
   * this host keeps a thin volume of it active ({@link StackedActivation#refusal}). Call with the
   * LV locks claimed; reads lvs, under the VG locks held, where {@code lvs} lacks a VG it needs.
   */
  private void checkStackedActivation(
      List<String> argv, List<LockRequirement> lvLocks, Map<String, List<LogicalVolumeInfo>> lvs)
      throws ClusterRefusalException, IOException, InterruptedException {
    for (Map.Entry<String, List<LockRequirement>> e : byVolumeGroup(lvLocks).entrySet()) {
      String vg = e.getKey();
      String lockspace = LockRequirement.lockspaceOf(vg);
      Set<String> activeHere = new TreeSet<>();
      for (LockName held : activations.snapshot().keySet()) {
        if (held.lockspace().equals(lockspace)) {
          activeHere.add(held.resource());
        }
      }
      Set<String> staysActive = new TreeSet<>(activeHere);
      boolean activates = false;
      for (LockRequirement r : e.getValue()) {
        activates |= r.scope() == Scope.PERSISTENT_ACTIVATION;
        if (r.scope() == Scope.RELEASE_ACTIVATION) {
          staysActive.remove(r.resource());
        }
      }
      if (!activates && staysActive.isEmpty()) {
        continue; // only releases, and nothing else of this VG stays active here
      }
      Optional<String> refusal =
          StackedActivation.refusal(vg, e.getValue(), logicalVolumes(vg, lvs), activeHere);
      if (refusal.isPresent()) {
        throw new ClusterRefusalException(
            Reason.UNSUPPORTED_COMMAND,
            "refused '" + String.join(" ", argv) + "': " + refusal.get() + "; lvm did not run");
      }
    }
  }

  /** The activation and release locks among {@code lvLocks}, by VG. */
  private static Map<String, List<LockRequirement>> byVolumeGroup(List<LockRequirement> lvLocks) {
    Map<String, List<LockRequirement>> byVg = new LinkedHashMap<>();
    for (LockRequirement r : lvLocks) {
      if (r.scope() == Scope.PERSISTENT_ACTIVATION || r.scope() == Scope.RELEASE_ACTIVATION) {
        byVg.computeIfAbsent(r.volumeGroup(), vg -> new ArrayList<>()).add(r);
      }
    }
    return byVg;
  }

  /** {@code vg}'s LVs from {@code lvs}, read with lvs (and kept there) if it has none yet. */
  private List<LogicalVolumeInfo> logicalVolumes(
      String vg, Map<String, List<LogicalVolumeInfo>> lvs)
      throws IOException, InterruptedException {
    List<LogicalVolumeInfo> known = lvs.get(vg);
    if (known == null) {
      known = lvm.logicalVolumes(vg);
      lvs.put(vg, known);
    }
    return known;
  }

  /**
   * The refusal a command stopped by a lost lease or lock session ends with; rethrows {@code e} if
   * nothing stopped it (its caller interrupted it).
   */
  private ClusterRefusalException stopped(Command c, InterruptedException e)
      throws InterruptedException {
    String why = c.abortedBecause();
    if (why == null) {
      throw e;
    }
    if (!c.lvmStarted()) {
      return new ClusterRefusalException(
          c.cancelled()
              ? Reason.CANCELLED
              : c.incarnationGone() ? Reason.NOT_MEMBER : Reason.LOCK_SERVICE_UNAVAILABLE,
          why
              + " while '"
              + String.join(" ", c.argv)
              + "' waited for its locks; lvm did not run, nothing was changed",
          null,
          null,
          false,
          e);
    }
    return new ClusterRefusalException(
        Reason.LEASE_LOST_IN_FLIGHT,
        why
            + " while '"
            + String.join(" ", c.argv)
            + "' was running. The agent stopped lvm (its locks may already belong to another"
            + " host); whether the change was committed is UNKNOWN. Check with 'clvm lvs' once"
            + " this host has rejoined the fence domain.",
        null,
        null,
        true,
        e);
  }

  private long beginChange(Command c, Map<String, Long> tokens) throws ClusterRefusalException {
    try {
      return changeLog.begin(node, c.incarnation, c.argv, tokens);
    } catch (StaleFencingTokenException e) {
      throw new ClusterRefusalException(
          Reason.STALE_FENCING_TOKEN,
          "refused '" + String.join(" ", c.argv) + "': " + e.getMessage(),
          e.resource(),
          null,
          false,
          e);
    } catch (IOException e) {
      throw new ClusterRefusalException(
          Reason.LVM_FAILED,
          "could not write the metadata-change log "
              + changeLog.path()
              + " ("
              + e.getMessage()
              + "); lvm did not run",
          null,
          null,
          false,
          e);
    }
  }

  /**
   * lvm was killed (it timed out, or its command was stopped) and what it did is unknown. Marks the
   * command's locks so first, before anything here can fail, then records it and works out which
   * new activation locks to keep. The interrupt that stopped the command is put aside meanwhile, so
   * that it does not cut the log write and the lvs short; it is restored afterwards.
   */
  private void lvmOutcomeUnknown(CommandLocks locks, Command c, long entry, Exception why) {
    InterruptAside.run(
        () -> {
          locks.lvmOutcomeUnknown();
          if (entry != 0) {
            endChange(entry, Map.of("outcome", "unknown: " + why.getMessage()));
          }
          if (!c.incarnationGone()) { // else the purge takes every lock of the incarnation
            locks.keepActivations(
                maybeActive(locks.newActivations(), "lvm was stopped with its outcome unknown"));
          }
        });
  }

  /**
   * Of the activation locks a killed or failed lvm was given, those whose LV exists now: it may be
   * active (a device-mapper device made before lvm hung, or one LV of several that lvm activated
   * before another failed), and releasing its lock would let another host activate it too. An LV
   * that does not exist keeps no lock, which nothing could release. When lvs can't tell, every lock
   * is kept.
   */
  private Set<LockName> maybeActive(List<LockRequirement> activations, String why) {
    Map<String, List<LockRequirement>> byVg = new LinkedHashMap<>();
    for (LockRequirement r : activations) {
      byVg.computeIfAbsent(r.volumeGroup(), vg -> new ArrayList<>()).add(r);
    }
    Set<LockName> keep = new HashSet<>();
    for (Map.Entry<String, List<LockRequirement>> e : byVg.entrySet()) {
      // Empty: a VG lvm does not see, never made (a typo) or its storage path lost while its LVs
      // stay mapped here; device-mapper tells which. Null: lvs can't tell.
      Optional<Set<String>> lvs = logicalVolumeNames(e.getKey());
      for (LockRequirement r : e.getValue()) {
        boolean may =
            lvs == null
                || (lvs.isPresent()
                    ? lvs.get().contains(r.resource())
                    : DeviceMapper.mayBeMapped(r.volumeGroup(), r.resource()));
        if (may) {
          keep.add(LockName.of(r));
        }
      }
    }
    if (!keep.isEmpty()) {
      LOG.warn(
          "[node={}] {}; keeping the activation locks of {}, which may be active here:"
              + " deactivate with 'clvm lvchange -an' to release them",
          node,
          why,
          keep);
    }
    return keep;
  }

  private void endChange(long entry, LvmResult result, Map<String, VolumeGroupLockValue> values) {
    Map<String, String> outcome = new LinkedHashMap<>();
    outcome.put("exit", Integer.toString(result.exitCode()));
    List<String> seqs = new ArrayList<>();
    values.forEach((vg, v) -> seqs.add(vg + ":" + (v.removed() ? "removed" : v.seqno())));
    outcome.put("seqno", String.join(",", seqs));
    endChange(entry, outcome);
  }

  private void endChange(long entry, Map<String, String> outcome) {
    try {
      changeLog.end(entry, outcome);
    } catch (IOException e) {
      LOG.warn("[node={}] could not record the end of change {}: {}", node, entry, e.toString());
    }
  }

  /**
   * Whether a command under {@code plan} changes something the locks must follow: an activation or
   * deactivation, or metadata (a VG lock EX). Its exit code then decides even when lvm's output is
   * lost; a report's output is its result, and without it the report fails.
   */
  static boolean changes(LockPlan plan) {
    // The wildcards too: vgchange -aey VG activates every LV under the VG lock PR.
    return plan.locks().stream().anyMatch(r -> changes(r.mode(), r.scope()))
        || plan.everyVolumeGroup().filter(mode -> mode == LockMode.EX).isPresent()
        || plan.everyLogicalVolume().stream().anyMatch(e -> changes(e.mode(), e.scope()));
  }

  private static boolean changes(LockMode mode, Scope scope) {
    return mode == LockMode.EX
        || scope == Scope.PERSISTENT_ACTIVATION
        || scope == Scope.RELEASE_ACTIVATION;
  }

  private LvmResult runLvm(LvmCommand command, boolean change)
      throws ClusterRefusalException, InterruptedException {
    try {
      return change ? lvm.runChange(command) : lvm.run(command);
    } catch (LvmTimeoutException e) {
      throw new ClusterRefusalException(
          Reason.LVM_FAILED,
          e.getMessage() + "; whether it changed anything is unknown",
          null,
          null,
          true,
          e);
    } catch (IOException e) {
      throw new ClusterRefusalException(
          Reason.LVM_FAILED, "lvm could not be run: " + e.getMessage(), null, null, false, e);
    }
  }

  /**
   * After an lvrename that failed or was stopped: whether the LV has its new name (lvm renames the
   * device before it waits for udev), read with lvs while the VG lock is still held EX; the
   * activation lock follows what lvs finds ({@link CommandLocks#lvrenameOutcome}).
   */
  private void lvrenameOutcome(CommandLocks locks, LockName[] renamed) {
    String vg = renamed[0].lockspace().substring(LockRequirement.LOCKSPACE_PREFIX.length());
    Optional<Set<String>> found = logicalVolumeNames(vg);
    Set<String> lvs = found == null ? null : found.orElse(Set.of());
    Boolean done = null; // null: lvs can't tell
    if (lvs != null) {
      boolean hasOld = lvs.contains(renamed[0].resource());
      boolean hasNew = lvs.contains(renamed[1].resource());
      if (hasNew != hasOld) {
        done = hasNew;
      } else if (hasOld || !lvs.isEmpty()) {
        // Both exist (the new name was another LV's, and lvm refused), or lvm reads the VG and
        // finds neither (no such LV): nothing was renamed.
        done = false;
      }
    }
    locks.lvrenameOutcome(renamed[0], renamed[1], done);
  }

  /**
   * The names of {@code vg}'s LVs as lvm sees them now: empty if lvm does not see the VG, null if
   * lvs failed (an interrupt is kept for the caller).
   */
  private Optional<Set<String>> logicalVolumeNames(String vg) {
    try {
      return lvm.logicalVolumesIfSeen(vg)
          .map(lvs -> lvs.stream().map(LogicalVolumeInfo::name).collect(Collectors.toSet()));
    } catch (InterruptedException stopped) {
      Thread.currentThread().interrupt();
      return null;
    } catch (IOException | RuntimeException unreadable) {
      LOG.warn("[node={} vg={}] could not list its LVs: {}", node, vg, unreadable.toString());
      return null;
    }
  }

  /** For an lvrename: the LV lock names before and after, so an activation lock can follow. */
  private static LockName[] renamed(LvmCommand command) {
    return command
        .logicalVolumeRename()
        .map(
            r -> {
              String ls = LockRequirement.LOCKSPACE_PREFIX + r.volumeGroup();
              return new LockName[] {new LockName(ls, r.from()), new LockName(ls, r.to())};
            })
        .orElse(null);
  }

  private void checkMayUseStorage() throws ClusterRefusalException {
    if (closed) {
      throw new ClusterRefusalException(
          Reason.NOT_MEMBER, "clvm-agent on " + node + " is stopping: no new command starts");
    }
    if (mayUseStorage.getAsBoolean()) {
      List<Long> earlier = lvm.earlierStillRunning();
      if (!earlier.isEmpty()) {
        // Killed as this agent started, but still in the kernel (uninterruptible I/O): it may
        // still write metadata under the locks of an incarnation that is no longer this host's.
        throw new ClusterRefusalException(
            Reason.NOT_MEMBER,
            "lvm left running by an earlier clvm-agent process on "
                + node
                + " (pids "
                + earlier
                + ") was killed but has not ended; no storage command starts until it has");
      }
      return;
    }
    String why = notMemberBecause.get();
    if (why == null && !connected.getAsBoolean()) {
      throw new ClusterRefusalException(
          Reason.SUSPENDED,
          "this host's ZooKeeper connection is SUSPENDED (node "
              + node
              + "): no storage command starts until it is back and the membership lease is"
              + " confirmed (self-fence)");
    }
    throw new ClusterRefusalException(
        Reason.NOT_MEMBER,
        "this host is not a member of the fence domain (node "
            + node
            + ": "
            + (why != null ? why : "it left the fence domain, or has not joined yet")
            + "); clvm refuses to touch shared storage");
  }

  // ---------------------------------------------------------------- status

  /** What {@link #status()} reports. */
  public record Status(
      String node,
      long incarnation,
      boolean member,
      boolean storageAllowed,
      String membershipNote,
      Map<String, Lock> activations,
      List<InFlight> inFlight,
      Map<String, Long> seenSeqno,
      long viewRefreshes,
      String metadataLog) {}

  /** A command running now. */
  public record InFlight(long id, List<String> argv, String stage, Duration running) {}

  public Status status() {
    boolean allowed = mayUseStorage.getAsBoolean();
    String why = notMemberBecause.get();
    boolean member =
        why == null && lockSession.incarnation() != 0 && (allowed || !connected.getAsBoolean());
    String note = "";
    if (!allowed) {
      note =
          why != null
              ? why
              : !connected.getAsBoolean()
                  ? "ZooKeeper connection SUSPENDED: no storage command starts"
                  : "not a member of the fence domain (left, or not joined)";
    }
    Map<String, Lock> acts = new LinkedHashMap<>();
    activations.snapshot().forEach((name, lock) -> acts.put(name.toString(), lock));
    List<InFlight> running =
        inFlight.snapshot().stream()
            .map(c -> new InFlight(c.id, c.argv, c.stage().name(), c.running()))
            .toList();
    return new Status(
        node,
        lockSession.incarnation(),
        member,
        allowed,
        note,
        acts,
        running,
        views.seen(),
        views.refreshes(),
        changeLog.path().toString());
  }

  /**
   * Whether a command or an lvm of this agent still runs (an lvm that would not die): its locks
   * must stay, so the lock session is dropped rather than closed, and they stay frozen until this
   * host is fenced or attests. Logs it, with {@code when}.
   */
  private boolean stillRunning(String when) {
    List<Long> lvms = lvm.stillRunning();
    if (inFlight.isEmpty() && lvms.isEmpty()) {
      return false;
    }
    LOG.error(
        "[node={}] {}: {} command(s) still running (lvm pids {}); the lock session is dropped, not"
            + " closed, so their locks stay until this host is fenced or attests",
        node,
        when,
        inFlight.snapshot().size(),
        lvms);
    return true;
  }

  /**
   * Before a clean leave, which releases every lock of the incarnation: waits up to the leave drain
   * for the commands in flight (none, if {@link #drain} ran), then stops the rest and waits for
   * their lvm processes to end. Refuses the leave if one still runs.
   */
  @Override
  public void leaving() throws InterruptedException {
    if (!inFlight.awaitEmpty(closed ? Duration.ZERO : leaveDrain)) {
      // Not as for a lost lease: these commands release their locks (once their lvm has ended),
      // since a refused leave keeps the host a member.
      int stopped = inFlight.abortAll("this host is leaving the fence domain", STOP_WAIT);
      LOG.warn(
          "[node={}] leaving: stopped {} command(s) still running after {}",
          node,
          stopped,
          closed ? "the drain" : leaveDrain);
    }
    List<Long> lvms = lvm.awaitNoneRunning(STOP_WAIT);
    if (!inFlight.isEmpty() || !lvms.isEmpty()) {
      throw new IllegalStateException(
          "commands still run on this host ("
              + inFlight.snapshot().size()
              + " in flight, lvm pids "
              + lvms
              + "); leaving would release the locks they run under");
    }
  }

  /**
   * Stops taking commands and waits (up to {@code wait}) for those in flight, so that a clean leave
   * afterwards does not release locks under a running lvm.
   */
  public void drain(Duration wait) throws InterruptedException {
    closed = true;
    if (!inFlight.awaitEmpty(wait)) {
      LOG.warn(
          "[node={}] {} command(s) still running after {}", node, inFlight.snapshot().size(), wait);
    }
  }

  @Override
  public void close() {
    closed = true;
    lockSession.close(stillRunning("stopping"));
    try {
      changeLog.close();
    } catch (IOException e) {
      LOG.warn("[node={}] closing {}: {}", node, changeLog.path(), e.toString());
    }
  }
}
