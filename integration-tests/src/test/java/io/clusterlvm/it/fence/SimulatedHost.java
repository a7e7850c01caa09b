package io.clusterlvm.it.fence;

import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.testing.NetworkNamespace;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One simulated host: its clvm-agent (a {@code ClvmAgentMain} process with its own ZooKeeper
 * session, i.e. its membership lease) and its workload, {@code dlmctl lock --node HOST ... --
 * sleep} processes that hold cluster locks as this node. Every BMC that powers the host kills all
 * of these on power-off; {@link #crash()} does the same from the test (kill -9 of everything, no
 * clean leave), which is what a host dying looks like to the cluster.
 */
final class SimulatedHost {
  private static final Logger LOG = LoggerFactory.getLogger(SimulatedHost.class);

  private final FenceCluster cluster;
  private final String name;
  private final Path dir;
  private final List<HostBmc> bmcs = new CopyOnWriteArrayList<>();
  private final List<Process> workloads = new CopyOnWriteArrayList<>();
  private volatile Process agent;

  /** What runs this host's processes: empty, or {@code ip netns exec NS} for its own network. */
  private List<String> prefix = List.of();

  /** How this host reaches ZooKeeper. */
  private String zookeeper;

  private int agentStarts;
  private int lockRuns;

  /** A lock this host holds through a {@code dlmctl lock} process. */
  record HeldLock(
      String lockspace, String resource, long incarnation, long token, Process dlmctl) {}

  SimulatedHost(FenceCluster cluster, String name, Path dir) {
    this.cluster = cluster;
    this.name = name;
    this.dir = dir;
    this.zookeeper = cluster.zookeeper();
  }

  /**
   * This host's processes run in {@code ns}, reaching ZooKeeper and the dlm-server over {@code
   * link} (the cluster's dlm-server must listen on the link's host address), so that cutting the
   * link cuts the host off while it keeps running.
   */
  SimulatedHost inNetwork(NetworkNamespace ns, NetworkNamespace.Link link) {
    prefix = ns.execPrefix();
    zookeeper = link.hostAddress() + ":" + cluster.zookeeperPort();
    return this;
  }

  String name() {
    return name;
  }

  /** BMCs whose power-off kills this host's processes. */
  SimulatedHost poweredBy(HostBmc... b) throws IOException {
    bmcs.addAll(List.of(b));
    updateBmcs();
    return this;
  }

  Process agent() {
    return agent;
  }

  // ---------------------------------------------------------------- the agent

  /**
   * Launches {@code clvm-agent} for this node with boot id {@code bootId} (written to the file
   * --boot-id-file reads, as /proc/sys/kernel/random/boot_id would give it). Does not wait.
   */
  Process startAgent(String bootId, Path clusterConf) throws IOException {
    agentStarts++;
    Path bootIdFile = dir.resolve("boot_id-" + agentStarts);
    Files.writeString(bootIdFile, bootId + "\n", StandardCharsets.US_ASCII);
    List<String> args = new ArrayList<>();
    args.addAll(
        List.of(
            "--node=" + name,
            "--zookeeper=" + zookeeper,
            "--dlm-servers=" + cluster.dlmServers(),
            "--zk-root=" + FenceCluster.ZK_ROOT,
            "--socket=" + socket(),
            "--boot-id-file=" + bootIdFile,
            "--state-dir=" + dir.resolve("state"),
            "--zk-session-timeout=" + cluster.zkSession().toMillis() + "ms",
            "--fence-agent-timeout=20s"));
    if (clusterConf != null) {
      args.add("--cluster-conf=" + clusterConf);
    }
    Path log = dir.resolve("agent-" + agentStarts + ".log");
    agent =
        cluster.startJava(prefix, "io.clusterlvm.clvm.agent.ClvmAgentMain", args, log, Map.of());
    LOG.info(
        "[host={}] clvm-agent started (pid {}, boot id {}), log {}",
        name,
        agent.pid(),
        bootId,
        log);
    updateBmcs();
    return agent;
  }

  /** The unix socket of the agent started last, where clvm talks to it. */
  Path socket() {
    return cluster.socketDir().resolve(name + "-" + agentStarts + ".sock");
  }

  /**
   * Waits until this host's agent is a MEMBER with a live lease and an incarnation above {@code
   * after}; returns the incarnation.
   */
  long awaitMember(long after) {
    Process a = agent;
    return await("[host=" + name + "] member with incarnation > " + after)
        .atMost(Duration.ofSeconds(60))
        .pollInterval(Duration.ofMillis(100))
        .failFast("clvm-agent of " + name + " exited", () -> !a.isAlive())
        .until(
            () -> {
              FenceNodeRecord r = cluster.record(name);
              return r != null
                      && r.getState() == FenceState.MEMBER
                      && r.getIncarnation() > after
                      && cluster.leaseHeld(name)
                  ? r.getIncarnation()
                  : -1L;
            },
            inc -> inc > after);
  }

  long incarnation() throws Exception {
    return cluster.record(name).getIncarnation();
  }

  /** SIGTERM to the agent: it leaves the fence domain cleanly, then exits. */
  void stopAgent() throws InterruptedException {
    Process a = agent;
    a.destroy();
    if (!a.waitFor(30, TimeUnit.SECONDS)) {
      throw new IllegalStateException("clvm-agent of " + name + " did not stop on SIGTERM");
    }
  }

  // ---------------------------------------------------------------- workload

  /**
   * Takes a lock as this node with {@code dlmctl lock --node NAME LS RES -m MODE -- sleep 1000}, a
   * process of this host, and waits until the lock is granted. The lock's client session ends
   * (abruptly) only when that process dies.
   */
  HeldLock holdLock(String lockspace, String resource, String mode) throws Exception {
    lockRuns++;
    Path log = dir.resolve("lock-" + lockRuns + ".log");
    Process p =
        cluster.startDlmctl(
            prefix, log, "lock", "--node", name, "-m", mode, lockspace, resource, "--", "sleep",
            "1000");
    workloads.add(p);
    LockInfo held =
        await("[host=" + name + "] holds " + mode + " on " + lockspace + "/" + resource)
            .atMost(Duration.ofSeconds(30))
            .pollInterval(Duration.ofMillis(100))
            .failFast("dlmctl lock of " + name + " exited; see " + log, () -> !p.isAlive())
            .until(
                () ->
                    cluster.granted(lockspace, resource).stream()
                        .filter(l -> l.getOwner().getNode().equals(name))
                        .findFirst()
                        .orElse(null),
                l -> l != null && p.children().findAny().isPresent());
    updateBmcs();
    return new HeldLock(
        lockspace, resource, held.getOwner().getIncarnation(), held.getFencingToken(), p);
  }

  // ---------------------------------------------------------------- death

  /** Every process of this host that is still running, children included. */
  List<ProcessHandle> processes() {
    List<ProcessHandle> all = new ArrayList<>();
    List<Process> roots = new ArrayList<>(workloads);
    if (agent != null) {
      roots.add(agent);
    }
    for (Process p : roots) {
      if (p.isAlive()) {
        all.add(p.toHandle());
      }
      try (Stream<ProcessHandle> d = p.descendants()) {
        d.forEach(all::add);
      }
    }
    return all;
  }

  private void updateBmcs() throws IOException {
    List<ProcessHandle> ps = processes();
    for (HostBmc b : bmcs) {
      b.powers(ps);
    }
  }

  /**
   * The host dies: kill -9 of the agent and every workload process (and their children: a fence
   * agent this host was running dies with it). No clean leave, the lease is left to expire. Returns
   * the time of death ({@link System#nanoTime()}).
   */
  long crash() throws IOException, InterruptedException {
    List<ProcessHandle> ps = processes();
    long at = System.nanoTime();
    // Children first: once a parent is gone its children can no longer be found from it.
    for (int i = ps.size() - 1; i >= 0; i--) {
      ps.get(i).destroyForcibly();
    }
    // Wait for the processes this JVM started (reaped at once); their children got SIGKILL too,
    // but waiting on a process that is not our child means polling.
    List<Process> roots = new ArrayList<>(workloads);
    if (agent != null) {
      roots.add(agent);
    }
    for (Process p : roots) {
      p.waitFor(10, TimeUnit.SECONDS);
    }
    for (HostBmc b : bmcs) {
      b.powers(List.of()); // nothing left to kill; a recycled PID is never hit
    }
    LOG.info("[host={}] crashed: killed {} processes", name, ps.size());
    return at;
  }

  void crashQuietly() {
    try {
      crash();
    } catch (Exception e) {
      LOG.warn("[host={}] cleanup: {}", name, e.toString());
    }
  }
}
