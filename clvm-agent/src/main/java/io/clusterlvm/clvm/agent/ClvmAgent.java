package io.clusterlvm.clvm.agent;

import io.clusterlvm.clvm.exec.CommandExecutor;
import io.clusterlvm.clvm.exec.MetadataChangeLog;
import io.clusterlvm.clvm.lvm.DeviceMapper;
import io.clusterlvm.clvm.lvm.LogicalVolumeInfo;
import io.clusterlvm.clvm.lvm.LvmResult;
import io.clusterlvm.clvm.lvm.LvmRunner;
import io.clusterlvm.clvm.lvm.StackedActivation;
import io.clusterlvm.clvm.rpc.ClvmServer;
import io.clusterlvm.clvm.rpc.ClvmService;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.Durations;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.LockState;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.clusterlvm.fence.agent.Backoff;
import io.clusterlvm.fence.agent.FenceAgentRunner;
import io.clusterlvm.fence.domain.ActiveConfig;
import io.clusterlvm.fence.domain.FenceBridge;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.MembershipListener;
import io.clusterlvm.fence.domain.NodeMembership;
import io.clusterlvm.fence.domain.ZooKeeperTls;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.client.ZKClientConfig;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The per-host agent: holds the host's membership lease (its own ZooKeeper session), runs the fence
 * bridge, and serves the clvm wrapper. Closing it deactivates the host's LVs and leaves the fence
 * domain cleanly (locks released, not fenced); if an LV stays in use, it hands its lease over to
 * the next agent process on this boot instead ({@link SessionHandover}).
 */
public final class ClvmAgent implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(ClvmAgent.class);

  /**
   * How long lvm run outside a command (at start, before a rejoin or a takeover of the session) is
   * waited for once killed, how long the attestation waits for the lvm of stopped commands, and how
   * long a deactivation before a leave or a stop waits for its lvm once killed.
   */
  private static final Duration KILL_WAIT = Duration.ofSeconds(30);

  /** How long a start that failed after joining waits for its leave, beyond the retry window. */
  private static final Duration FAILED_START_LEAVE_WAIT = Duration.ofSeconds(15);

  private enum State {
    LATENT,
    STARTED,
    CLOSED
  }

  private final AgentConfig config;
  private final AtomicReference<State> state = new AtomicReference<>(State.LATENT);
  private final Deque<AutoCloseable> started = new ArrayDeque<>();

  private CuratorFramework curator;
  private DlmClient dlm;
  private FenceStore fenceStore;
  private ActiveConfig clusterConfig;
  private NodeMembership membership;
  private FenceBridge fenceBridge;
  private LvmRunner lvmRunner;
  private CommandExecutor commands;
  private ClvmServer server;
  private volatile boolean handedOver;

  /** The session this process took over from the previous one; 0 if none. */
  private volatile long resumedSession;

  /** Whether start() joined as a new incarnation (not one handed over); read if start fails. */
  private boolean joinedFresh;

  public ClvmAgent(AgentConfig config) {
    this.config = config;
  }

  /** Joins the cluster and starts serving. Blocks until joined. */
  public void start() throws Exception {
    if (!state.compareAndSet(State.LATENT, State.STARTED)) {
      throw new IllegalStateException("already started");
    }
    try {
      StateDirLock dirLock = StateDirLock.acquire(config.stateDir());
      // Held until the process exits once handed over: the next agent must not resume the session
      // while this process's ZooKeeper client may still use it.
      started.push(
          () -> {
            if (!handedOver) {
              dirLock.close();
            }
          });
      // Before anything runs lvm or attests: an agent process that was killed left them running.
      lvmRunner = lvmRunner();
      Optional<SessionHandover> handover = SessionHandover.read(config.stateDir(), config.bootId());
      if (handover.isPresent() && !lvmRunner.awaitNoneRunning(KILL_WAIT).isEmpty()) {
        // Going on as the incarnation would let its locks move while that lvm writes.
        LOG.error(
            "[node={}] lvm of the previous agent process still runs; not taking over its lease",
            config.node());
        handover = Optional.empty();
      }
      curator =
          CuratorFrameworkFactory.builder()
              .zookeeperFactory(SessionHandover.resumingFirst(handover))
              .connectString(config.zookeeper())
              .sessionTimeoutMs((int) config.zkSessionTimeout().toMillis())
              .connectionTimeoutMs((int) Math.min(5000, config.zkSessionTimeout().toMillis()))
              .retryPolicy(new ExponentialBackoffRetry(200, 10, 5000))
              .zkClientConfig(
                  ZooKeeperTls.configure(new ZKClientConfig(), config.zkTls(), config.stateDir()))
              .build();
      curator.start();
      CuratorFramework zk = curator;
      // Not closed once handed over: closing would end the session, and the lease with it.
      started.push(
          () -> {
            if (!handedOver) {
              zk.close();
            }
          });
      if (!curator.blockUntilConnected(30, TimeUnit.SECONDS)) {
        throw new IllegalStateException("could not connect to ZooKeeper at " + config.zookeeper());
      }
      if (handover.isPresent() && inSession(handover.get().sessionId())) {
        resumedSession = handover.get().sessionId();
      }
      DlmClient owner = DlmClient.connect(config.dlmServers(), config.dlmTls());
      started.push(owner);
      dlm = owner.withRetryWindow(config.dlmRetryWindow());
      fenceStore = new FenceStore(curator, config.zkRoot());
      clusterConfig = new ActiveConfig(fenceStore);
      clusterConfig.start(config.clusterConf(), config.node());
      started.push(clusterConfig);
      if (clusterConfig.get() != null && clusterConfig.get().node(config.node()).isEmpty()) {
        LOG.warn(
            "[node={}] this node is not in the active cluster.conf; it can't be fenced by an"
                + " agent, only acknowledged by an operator",
            config.node());
      }
      commands = commandExecutor();
      started.push(commands);
      membership = new NodeMembership(fenceStore, dlm, config.node(), config.bootId(), endpoint());
      // Before start(): the executor opens its lock session on joined(incarnation).
      membership.addListener(commands);
      // After the executor's: its leaving() drains the commands in flight first.
      membership.addListener(
          new MembershipListener() {
            @Override
            public void leaving() throws Exception {
              deactivateBeforeLeaving();
            }
          });
      membership.setAttestor(this::deactivateOldActivations);
      NodeMembership joining = membership;
      started.push(joining::close); // also a start that failed half-way, so its threads end
      membership.start();
      joinedFresh = !membership.resumed();
      if (membership.resumed()) {
        adoptActivations();
      }
      fenceBridge =
          new FenceBridge(
              fenceStore,
              dlm,
              config.node(),
              clusterConfig,
              FenceAgentRunner.withDefaultSearchPath(config.fenceAgentTimeout()),
              Backoff.DEFAULT);
      fenceBridge.start();
      started.push(fenceBridge);
      startServer();
      // Last: until here, a process that dies leaves the session to the next one.
      SessionHandover.delete(config.stateDir());
      LOG.info(
          "[node={}] clvm-agent started: member with incarnation {}",
          config.node(),
          membership.incarnation());
    } catch (Exception | Error e) {
      state.set(State.CLOSED);
      if (resumedSession != 0 && inSession(resumedSession)) {
        // Closing the resumed session would end the lease of a host whose VMs still run.
        handOver("this agent could not start (" + e + ")");
      } else if (joinedFresh) {
        leaveAfterFailedStart(e);
      }
      closeStarted();
      throw e;
    }
  }

  /**
   * Before this host attests (same boot id, old incarnation not fenced): the LVs its old
   * incarnation held activation locks on may still be active here. Deactivate each locally; only if
   * all of them went down may the old locks be released. The lock service, not this process's
   * memory, says which they were, so this also holds after an agent restart.
   */
  private String deactivateOldActivations(String node, long oldIncarnation) throws Exception {
    // lvm killed when the lease was lost may outlive SIGKILL (uninterruptible I/O): it still
    // writes under the old incarnation's locks, which the attestation would release.
    List<Long> lvms = lvmRunner.awaitNoneRunning(KILL_WAIT);
    if (!lvms.isEmpty()) {
      return "lvm of incarnation " + oldIncarnation + " still runs (pids " + lvms + ")";
    }
    return deactivateAll(oldIncarnation);
  }

  /**
   * Before a clean leave, which releases every lock of this incarnation, activation locks included:
   * an LV left active here would be open to activation elsewhere while a VM here may still write
   * it. Deactivate each; refuse the leave while one stays active (in use, or lvm failed), as the
   * classic clvmd init script refused to stop. A stop checks first, in {@link #close()}, and hands
   * the lease over instead of leaving; this runs again in its leave, after the commands in flight
   * have been stopped.
   */
  private void deactivateBeforeLeaving() {
    String why = deactivateAll(membership.incarnation());
    if (why != null) {
      throw new NotDeactivated(
          why
              + "; stop what uses them first (leaving would release their activation locks while"
              + " they may be in use)");
    }
  }

  /**
   * Deactivates the LVs {@code incarnation} of this node holds activation locks on. Returns null if
   * all of them are down, else why not: some stay active, or the lock service could not say which
   * they are (not knowing that they are down is not knowing that they are unused).
   */
  private String deactivateAll(long incarnation) {
    try {
      List<String> stillActive = deactivateActivationsOf(incarnation);
      return stillActive.isEmpty()
          ? null
          : "LVs still active on this host: " + String.join(", ", stillActive);
    } catch (Exception e) {
      if (e instanceof InterruptedException) {
        Thread.currentThread().interrupt();
      }
      return "could not deactivate this host's LVs (" + e + ")";
    }
  }

  /** The refusal of a leave: LVs stay active on this host, or may. */
  private static final class NotDeactivated extends IllegalStateException {
    NotDeactivated(String why) {
      super(why);
    }
  }

  /**
   * A stop: deactivates the LVs this incarnation holds activation locks on, and says whether it may
   * then leave. If one stays active (a running VM), or the lock service cannot say which they are,
   * a leave would release locks still in use, and a process cannot refuse to stop: it hands its
   * lease over instead ({@link SessionHandover}), keeping every lock for the next agent process on
   * this boot, or, if it cannot, it stays a member until it exits, and is fenced. Runs under the
   * membership's leave lock ({@link NodeMembership#leaveAndClose}), so no operator's leave runs
   * beside it.
   */
  private boolean deactivateOrHandOver() {
    String why = deactivateAll(membership.incarnation());
    if (why == null) {
      // The leave deactivates again, once the commands in flight are stopped: one that
      // activated an LV since then must not have its lock released.
      return true;
    }
    handOverOrBeFenced(why);
    return false;
  }

  /** A stop that cannot leave: hands the lease over if it still may, else leaves it to expire. */
  private void handOverOrBeFenced(String why) {
    // Asked of ZooKeeper, since the membership may be closed; not waited for while disconnected.
    if (!membership.leaseHeldNow()) {
      LOG.error(
          "[node={}] {}; the lease is lost, or ZooKeeper cannot be asked, so this host"
              + " will be fenced",
          config.node(),
          why);
    } else if (commandsStillRun()) {
      // The next process could not know what that lvm does under the locks it would take over.
      LOG.error(
          "[node={}] {}, and commands still run: not leaving, not handing over; this host will be"
              + " fenced",
          config.node(),
          why);
    } else {
      handOver(why);
    }
  }

  private boolean commandsStillRun() {
    return commands.commandsRunning() || !lvmRunner.stillRunning().isEmpty();
  }

  /** Whether this process's ZooKeeper client is in session {@code id} now. */
  private boolean inSession(long id) {
    try {
      return curator.getZookeeperClient().getZooKeeper().getSessionId() == id;
    } catch (Exception e) {
      return false;
    }
  }

  /** Writes the handover of this process's ZooKeeper session; a failure is logged. */
  private void handOver(String why) {
    try {
      ZooKeeper zk = curator.getZookeeperClient().getZooKeeper();
      if (!zk.getState().isConnected()) {
        throw new IllegalStateException("not connected to ZooKeeper");
      }
      new SessionHandover(config.bootId(), zk.getSessionId(), zk.getSessionPasswd())
          .write(config.stateDir());
      handedOver = true;
      LOG.warn(
          "[node={}] {}. Not leaving: this host keeps its lease (ZooKeeper session 0x{}) and every"
              + " lock, for the next clvm-agent on this boot to take over within {}; if none"
              + " does, this host is fenced.",
          config.node(),
          why,
          Long.toHexString(zk.getSessionId()),
          Durations.format(config.zkSessionTimeout()));
    } catch (Exception e) {
      LOG.error(
          "[node={}] {}, and the lease could not be handed over ({}): not leaving; this host will"
              + " be fenced",
          config.node(),
          why,
          e.toString());
    }
  }

  /**
   * After taking over a handed-over lease: the activation locks the previous process held are this
   * process's now. The lock service says which they are.
   */
  private void adoptActivations() {
    long inc = membership.incarnation();
    List<Lock> adopted =
        activationLocksOf(inc).stream()
            .filter(h -> h.lock().getPersistent() && h.lock().getState() == LockState.STATE_GRANTED)
            .map(h -> Lock.listed(h.resource(), h.lock()))
            .toList();
    commands.adoptActivations(adopted);
    LOG.warn(
        "[node={}] took over {} activation lock(s) of incarnation {}: {}",
        config.node(),
        adopted.size(),
        inc,
        adopted.stream().map(l -> l.lockspace() + "/" + l.resource()).toList());
  }

  /**
   * Deactivates, on this host, each LV that {@code incarnation} of this node holds an activation
   * lock on. Returns those that stay active.
   *
   * <p>Thin volumes go before their pools ({@link StackedActivation#deactivationOrder}), and a
   * round that leaves some active but deactivated others is followed by another: lvm may refuse an
   * LV while another one active here stacks on it. {@code -y}: a snapshot's deactivation is also
   * its origin's, which lvm asks about first (and, with no terminal, takes for "no"); the leave
   * releases the locks of both.
   */
  private List<String> deactivateActivationsOf(long incarnation) throws Exception {
    String node = config.node();
    // This runs on the membership's thread: an lvm that will not die must not hang it.
    LvmRunner bounded = lvmRunner.withKillWait(KILL_WAIT);
    List<String> pending =
        deactivationOrder(
            bounded,
            activationLocksOf(incarnation).stream().map(HeldActivation::lv).distinct().toList());
    Map<String, LvmResult> failed = new LinkedHashMap<>();
    while (!pending.isEmpty()) {
      failed.clear();
      for (String lv : pending) {
        LvmResult result = bounded.run("lvchange", List.of("-an", "-y", lv));
        if (result.exitCode() != 0 && notActive(bounded, lv)) {
          // No such LV (e.g. an lvcreate that was stopped when the lease was lost): not active.
          LOG.info(
              "[node={}] {} locked by incarnation {} does not exist; nothing to deactivate",
              node,
              lv,
              incarnation);
        } else if (result.exitCode() != 0) {
          failed.put(lv, result);
        } else {
          LOG.warn(
              "[node={}] deactivated {} (activation lock of incarnation {})",
              node,
              lv,
              incarnation);
        }
      }
      if (failed.size() == pending.size()) {
        break; // no progress
      }
      pending = new ArrayList<>(failed.keySet());
    }
    failed.forEach(
        (lv, result) ->
            LOG.error(
                "[node={}] cannot deactivate {} (lvm exit {}): {}",
                node,
                lv,
                result.exitCode(),
                result.stderr().strip()));
    return new ArrayList<>(failed.keySet());
  }

  /**
   * {@code lvs} ("vg/lv") in the order to deactivate them: within each VG, thin volumes before
   * their pools, as lvs shows them now. A VG lvm can't read keeps the order given.
   */
  private List<String> deactivationOrder(LvmRunner lvm, List<String> lvs) {
    Map<String, List<String>> byVg = new LinkedHashMap<>();
    for (String lv : lvs) {
      byVg.computeIfAbsent(lv.substring(0, lv.indexOf('/')), vg -> new ArrayList<>())
          .add(lv.substring(lv.indexOf('/') + 1));
    }
    List<String> ordered = new ArrayList<>();
    for (Map.Entry<String, List<String>> e : byVg.entrySet()) {
      String vg = e.getKey();
      List<String> names = e.getValue();
      try {
        Optional<List<LogicalVolumeInfo>> seen = lvm.logicalVolumesIfSeen(vg);
        if (seen.isPresent()) {
          names = StackedActivation.deactivationOrder(names, seen.get());
        }
      } catch (IOException | RuntimeException e2) {
        LOG.warn(
            "[node={} vg={}] could not read its LVs to order their deactivation: {}",
            config.node(),
            vg,
            e2.toString());
      } catch (InterruptedException stopped) {
        Thread.currentThread().interrupt();
      }
      names.forEach(lv -> ordered.add(vg + "/" + lv));
    }
    return ordered;
  }

  /** A lock of this node on an LV's activation, as the lock service lists it. */
  private record HeldActivation(ResourceInfo resource, LockInfo lock) {
    String lv() {
      return resource.getLockspace().substring("lvm_".length()) + "/" + resource.getResource();
    }
  }

  /** This node's activation locks of {@code incarnation}, granted or converting. */
  private List<HeldActivation> activationLocksOf(long incarnation) {
    List<HeldActivation> held = new ArrayList<>();
    if (incarnation == 0) {
      return held; // no incarnation, no locks (to the lock service, 0 would mean any)
    }
    for (ResourceInfo r : dlm.locks(null, config.node(), incarnation)) {
      if (!r.getLockspace().startsWith("lvm_")
          || r.getResource().equals("VGLK")
          || r.getResource().equals("GLLK")) {
        continue;
      }
      r.getGrantedList().forEach(l -> held.add(new HeldActivation(r, l)));
      r.getConvertingList().forEach(l -> held.add(new HeldActivation(r, l)));
    }
    return held;
  }

  private LvmRunner lvmRunner() throws IOException {
    LvmRunner.Builder lvm =
        LvmRunner.builder()
            .hostName(config.node())
            .lvmBinary(config.lvmBinary().toString())
            .extraArgs(config.lvmExtraArgs())
            .environment("LVM_SUPPRESS_FD_WARNINGS", "1")
            .timeout(config.lvmTimeout());
    if (config.lvmSystemDir() != null) {
      lvm.systemDir(config.lvmSystemDir());
    }
    lvm.runRecord(config.stateDir().resolve("lvm-running"), config.bootId());
    LvmRunner runner = lvm.build();
    List<Long> earlier = runner.stopEarlierRuns();
    if (!earlier.isEmpty()) {
      LOG.warn(
          "[node={}] stopped lvm pids {} left running by an earlier agent process; a rejoin"
              + " waits for them to end",
          config.node(),
          earlier);
    }
    return runner;
  }

  private CommandExecutor commandExecutor() throws Exception {
    LvmRunner runner = lvmRunner;
    MetadataChangeLog log =
        MetadataChangeLog.open(config.stateDir().resolve("metadata-changes.log"));
    return new CommandExecutor(
        config.node(),
        dlm,
        runner,
        log,
        config.lockTimeout(),
        config.leaveDrain(),
        () -> membership != null && membership.mayUseStorage(),
        () -> curator.getZookeeperClient().isConnected(),
        (incarnation, sessionId) -> membership.bindSession(incarnation, sessionId),
        CommandExecutor.backupDirOf(runner.withKillWait(KILL_WAIT)));
  }

  private void startServer() throws Exception {
    ExecutorService rpc = Executors.newCachedThreadPool(named("clvm-rpc-"));
    started.push(rpc::shutdownNow);
    ExecutorService work = Executors.newCachedThreadPool(named("clvm-command-"));
    started.push(work::shutdownNow);
    server =
        ClvmServer.start(
            config.socket(), config.tcpListen(), new ClvmService(commands, dlm, work), rpc);
    started.push(server);
  }

  private ThreadFactory named(String prefix) {
    AtomicInteger n = new AtomicInteger();
    return r -> {
      Thread t = new Thread(r, prefix + n.getAndIncrement());
      t.setDaemon(true);
      t.setUncaughtExceptionHandler(
          (th, e) -> LOG.error("[node={}] thread {} died", config.node(), th.getName(), e));
      return t;
    };
  }

  private String endpoint() {
    return config.tcpListen() != null ? config.tcpListen() : "unix:" + config.socket();
  }

  public NodeMembership membership() {
    return membership;
  }

  public FenceBridge fenceBridge() {
    return fenceBridge;
  }

  public DlmClient dlm() {
    return dlm;
  }

  public AgentConfig config() {
    return config;
  }

  /** Runs this host's lvm commands under cluster locks. */
  public CommandExecutor commands() {
    return commands;
  }

  /** The clvm API server (unix socket, optional TCP). */
  public ClvmServer server() {
    return server;
  }

  /** The ZooKeeper client whose session is the membership lease (tests expire it). */
  public CuratorFramework curator() {
    return curator;
  }

  /**
   * Deactivates the host's LVs and leaves the fence domain cleanly, then stops; if an LV stays
   * active, hands the lease over to the next agent process instead of leaving.
   */
  @Override
  public void close() {
    if (state.getAndSet(State.CLOSED) != State.STARTED) {
      return;
    }
    // Commands first: a clean leave releases every lock, which must not happen under a running lvm.
    try {
      if (server != null) {
        server.shutdown(Duration.ofSeconds(5));
      }
      if (commands != null) {
        commands.drain(config.leaveDrain());
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    if (membership != null) {
      try {
        membership.leaveAndClose(this::deactivateOrHandOver);
      } catch (NotDeactivated e) {
        // An LV activated by a command the leave stopped (its commands have ended by now), or
        // the lock service, which answered the first pass, did not answer this one: the same
        // answer as the first pass's.
        handOverOrBeFenced(e.getMessage());
      } catch (Exception e) {
        LOG.error(
            "[node={}] clean leave failed ({}); this host will be fenced",
            config.node(),
            e.toString());
      }
    }
    closeStarted();
    LOG.info("[node={}] clvm-agent stopped", config.node());
  }

  /**
   * Whether {@code lv} ("vg/lv"), whose deactivation failed, is not active here: lvm does not find
   * it, and device-mapper has nothing mapped under its name. lvm alone can't tell: a VG whose PVs
   * are gone from this host (a lost storage path) fails lvs like a VG that never existed, while its
   * LVs stay mapped, maybe under a running VM.
   */
  private static boolean notActive(LvmRunner lvm, String lv)
      throws IOException, InterruptedException {
    LvmResult lvs = lvm.run("lvs", List.of("--noheadings", "-o", "lv_name", lv));
    if (lvs.exitCode() == 0) {
      return false; // it exists: the failed deactivation stands
    }
    int slash = lv.indexOf('/');
    return slash > 0 && !DeviceMapper.mayBeMapped(lv.substring(0, slash), lv.substring(slash + 1));
  }

  /**
   * A start that failed after a fresh join (a TCP port in use, say) leaves the fence domain: the
   * host has run nothing as this member yet. Before, the lease just ended with the ZooKeeper
   * session, and the fencer powered off the host, with its VMs, for a configuration error. Bounded
   * (the retry window and 15 s): a leave the lock service does not answer would otherwise keep the
   * process from exiting; the lease then ends as before.
   */
  private void leaveAfterFailedStart(Throwable why) {
    NodeMembership m = membership;
    LOG.error(
        "[node={}] start failed after joining ({}); leaving the fence domain",
        config.node(),
        why.toString());
    CompletableFuture<Void> leave =
        CompletableFuture.runAsync(
            () -> {
              try {
                m.leaveAndClose(() -> true);
              } catch (Exception e) {
                throw new CompletionException(e);
              }
            });
    try {
      // The leave may spend the whole retry window on one unanswered call.
      leave.get(
          config.dlmRetryWindow().plus(FAILED_START_LEAVE_WAIT).toMillis(), TimeUnit.MILLISECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    } catch (ExecutionException | TimeoutException e) {
      LOG.error(
          "[node={}] could not leave after the failed start ({}); the lease ends with this"
              + " process, and the fencer will fence this host",
          config.node(),
          e.toString());
    }
  }

  private void closeStarted() {
    while (!started.isEmpty()) {
      try {
        started.pop().close();
      } catch (Exception e) {
        LOG.debug("closing: {}", e.toString());
      }
    }
  }
}
