package io.clusterlvm.clvm.agent;

import io.clusterlvm.clvm.exec.CommandExecutor;
import io.clusterlvm.clvm.exec.MetadataChangeLog;
import io.clusterlvm.clvm.lvm.LvmResult;
import io.clusterlvm.clvm.lvm.LvmRunner;
import io.clusterlvm.clvm.rpc.ClvmServer;
import io.clusterlvm.clvm.rpc.ClvmService;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.clusterlvm.fence.agent.Backoff;
import io.clusterlvm.fence.agent.FenceAgentRunner;
import io.clusterlvm.fence.domain.ActiveConfig;
import io.clusterlvm.fence.domain.FenceBridge;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.MembershipListener;
import io.clusterlvm.fence.domain.NodeMembership;
import io.grpc.Status;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.ThreadFactory;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The per-host agent: holds the host's membership lease (its own ZooKeeper session), runs the fence
 * bridge, and serves the clvm wrapper. Closing it leaves the fence domain cleanly (locks released,
 * never fenced).
 */
public final class ClvmAgent implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(ClvmAgent.class);

  /**
   * How long lvm run outside a command (at start, before a rejoin) is waited for once killed, and
   * how long the attestation waits for the lvm of stopped commands.
   */
  private static final Duration KILL_WAIT = Duration.ofSeconds(30);

  /** How often a stop retries the deactivation of LVs that were still in use. */
  private static final Duration STOP_RETRY = Duration.ofSeconds(5);

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

  public ClvmAgent(AgentConfig config) {
    this.config = config;
  }

  /** Joins the cluster and starts serving. Blocks until joined. */
  public void start() throws Exception {
    if (!state.compareAndSet(State.LATENT, State.STARTED)) {
      throw new IllegalStateException("already started");
    }
    try {
      started.push(StateDirLock.acquire(config.stateDir()));
      curator =
          CuratorFrameworkFactory.builder()
              .connectString(config.zookeeper())
              .sessionTimeoutMs((int) config.zkSessionTimeout().toMillis())
              .connectionTimeoutMs((int) Math.min(5000, config.zkSessionTimeout().toMillis()))
              .retryPolicy(new ExponentialBackoffRetry(200, 10, 5000))
              .build();
      curator.start();
      started.push(curator);
      if (!curator.blockUntilConnected(30, TimeUnit.SECONDS)) {
        throw new IllegalStateException("could not connect to ZooKeeper at " + config.zookeeper());
      }
      dlm = DlmClient.connect(config.dlmServers());
      started.push(dlm);
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
      membership.start();
      started.push(membership);
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
      LOG.info(
          "[node={}] clvm-agent started: member with incarnation {}",
          config.node(),
          membership.incarnation());
    } catch (Exception | Error e) {
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
    List<String> stillActive = deactivateActivationsOf(oldIncarnation);
    return stillActive.isEmpty() ? null : "still active: " + String.join(", ", stillActive);
  }

  /**
   * Before a clean leave, which releases every lock of this incarnation, activation locks included:
   * an LV left active here would be open to activation elsewhere while a VM here may still write
   * it. Deactivate each; refuse the leave while one stays active (in use, or lvm failed), as the
   * classic clvmd init script refused to stop. A process cannot refuse a stop (SIGTERM), so there
   * it waits, a member still holding the locks, and tries again until the LVs are free or the lease
   * is lost. Killing it meanwhile ends its lease without a leave: the host is then fenced before
   * its locks move.
   */
  private void deactivateBeforeLeaving() throws Exception {
    while (true) {
      boolean stopping = state.get() == State.CLOSED;
      String why;
      try {
        List<String> stillActive = deactivateActivationsOf(membership.incarnation());
        if (stillActive.isEmpty()) {
          return;
        }
        why = "LVs still active on this host: " + String.join(", ", stillActive);
        if (!stopping) {
          throw new IllegalStateException(
              why
                  + "; stop what uses them first (leaving would release their activation locks"
                  + " while they are in use)");
        }
      } catch (DlmClientException e) {
        // As the leave itself does: a stop asks again while no server answers.
        if (!stopping
            || (e.code() != Status.Code.UNAVAILABLE && e.code() != Status.Code.DEADLINE_EXCEEDED)) {
          throw e;
        }
        why = "the lock service does not answer (" + e.getMessage() + ")";
      }
      if (!membership.leaseHeld()) {
        throw new IllegalStateException("the lease was lost while the stop waited: " + why);
      }
      LOG.error(
          "[node={}] cannot stop yet: {}. Trying again in {} s; the clvm API is closed meanwhile."
              + " Killing the agent instead gets this host fenced.",
          config.node(),
          why,
          STOP_RETRY.toSeconds());
      TimeUnit.NANOSECONDS.sleep(STOP_RETRY.toNanos());
    }
  }

  /**
   * Deactivates, on this host, each LV that {@code incarnation} of this node holds an activation
   * lock on. Returns those that stay active.
   */
  private List<String> deactivateActivationsOf(long incarnation) throws Exception {
    String node = config.node();
    // This runs on the membership's thread: an lvm that will not die must not hang it.
    LvmRunner bounded = lvmRunner.withKillWait(KILL_WAIT);
    List<String> stillActive = new ArrayList<>();
    for (ResourceInfo r : dlm.locks(null)) {
      if (!r.getLockspace().startsWith("lvm_")
          || r.getResource().equals("VGLK")
          || r.getResource().equals("GLLK")) {
        continue;
      }
      boolean mine =
          java.util.stream.Stream.of(r.getGrantedList(), r.getConvertingList())
              .flatMap(List::stream)
              .anyMatch(
                  l ->
                      l.getOwner().getNode().equals(node)
                          && l.getOwner().getIncarnation() == incarnation);
      if (!mine) {
        continue;
      }
      String lv = r.getLockspace().substring("lvm_".length()) + "/" + r.getResource();
      LvmResult result = bounded.run("lvchange", List.of("-an", lv));
      if (result.exitCode() != 0
          && bounded.run("lvs", List.of("--noheadings", "-o", "lv_name", lv)).exitCode() != 0) {
        // No such LV (e.g. an lvcreate that was stopped when the lease was lost): not active.
        LOG.info(
            "[node={}] {} locked by incarnation {} does not exist; nothing to deactivate",
            node,
            lv,
            incarnation);
      } else if (result.exitCode() != 0) {
        stillActive.add(lv);
        LOG.error(
            "[node={}] cannot deactivate {} (lvm exit {}): {}",
            node,
            lv,
            result.exitCode(),
            result.stderr().strip());
      } else {
        LOG.warn(
            "[node={}] deactivated {} (activation lock of incarnation {})", node, lv, incarnation);
      }
    }
    return stillActive;
  }

  private CommandExecutor commandExecutor() throws Exception {
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
    lvmRunner = runner;
    // Before anything runs lvm or attests: an agent process that was killed left them running.
    List<Long> earlier = runner.stopEarlierRuns();
    if (!earlier.isEmpty()) {
      LOG.warn(
          "[node={}] stopped lvm pids {} left running by an earlier agent process; a rejoin"
              + " waits for them to end",
          config.node(),
          earlier);
    }
    MetadataChangeLog log =
        MetadataChangeLog.open(config.stateDir().resolve("metadata-changes.log"));
    return new CommandExecutor(
        config.node(),
        dlm,
        runner,
        log,
        config.lockTimeout(),
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

  /** Leaves the fence domain cleanly, then stops. */
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
        commands.drain(Duration.ofSeconds(30));
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    if (membership != null) {
      try {
        membership.leave();
      } catch (Exception e) {
        LOG.error(
            "[node={}] clean leave failed ({}); the node may be fenced",
            config.node(),
            e.toString());
      }
    }
    closeStarted();
    LOG.info("[node={}] clvm-agent stopped", config.node());
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
