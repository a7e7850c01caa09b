package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.clvm.lvm.LvmRunner;
import io.clusterlvm.clvm.proto.HostStatusResponse;
import io.clusterlvm.clvm.proto.RefusalDetail;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.clvm.rpc.ClvmClient;
import io.clusterlvm.clvm.rpc.Refusals;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.server.DlmServer;
import io.clusterlvm.dlm.server.DlmServerConfig;
import io.clusterlvm.testing.ChildProcesses;
import io.clusterlvm.testing.LoopVolumeGroup;
import io.clusterlvm.testing.SimulatedLvmHost;
import io.clusterlvm.testing.ZooKeeperSessions;
import io.grpc.StatusRuntimeException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.test.InstanceSpec;
import org.apache.curator.test.TestingServer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A whole cluster for clvm tests, all real parts: an in-process ZooKeeper, a dlm-server, one shared
 * VG on a loop device, and clvm-agents (in-process, or as separate JVMs for tests that kill one).
 * Every simulated host gets its own LVM_SYSTEM_DIR, socket and state dir. {@link #close()} stops
 * what it started, in reverse order, processes by their pid.
 */
final class ClvmTestCluster implements AutoCloseable {

  static final Duration AGENT_LEASE = Duration.ofSeconds(4);

  /** The agent's default --dlm-retry-window. */
  static final Duration DLM_RETRY_WINDOW = Duration.ofSeconds(30);

  /** The agent's default leave drain. */
  static final Duration LEAVE_DRAIN = Duration.ofSeconds(30);

  static final Duration LOCK_TIMEOUT = Duration.ofSeconds(30);

  private static final Logger LOG = LoggerFactory.getLogger(ClvmTestCluster.class);

  final String vg;
  final Path dir;
  final TestingServer zk;
  private volatile DlmServer dlmServer;
  private final int dlmPort;
  final DlmClient admin;
  final LoopVolumeGroup lun;
  private final Map<String, ClvmAgent> agents = new LinkedHashMap<>();
  private final Map<String, Process> agentProcesses = new LinkedHashMap<>();
  private final Deque<AutoCloseable> cleanup = new ArrayDeque<>();
  private final Map<String, ClvmClient> clients = new LinkedHashMap<>();
  private final String dlmHost;

  private ClvmTestCluster(
      String vg,
      Path dir,
      TestingServer zk,
      DlmServer dlmServer,
      DlmClient admin,
      LoopVolumeGroup lun,
      String dlmHost) {
    this.dlmHost = dlmHost;
    this.vg = vg;
    this.dir = dir;
    this.zk = zk;
    this.dlmServer = dlmServer;
    this.dlmPort = dlmServer.port();
    this.admin = admin;
    this.lun = lun;
  }

  /** ZooKeeper, a dlm-server and a loop device with {@code vg} on it; no agent yet. */
  static ClvmTestCluster start(String vg) throws Exception {
    return start(vg, true, "127.0.0.1");
  }

  /**
   * Like {@link #start(String)}, with the dlm-server listening on {@code dlmHost}, an address of
   * this machine (the host end of a {@code NetworkNamespace} link, for an agent in the namespace).
   * ZooKeeper listens on every address.
   */
  static ClvmTestCluster start(String vg, String dlmHost) throws Exception {
    return start(vg, true, dlmHost);
  }

  /**
   * Like {@link #start(String)}, but the loop device is blank: tests create the PV and {@code vg}
   * through clvm.
   */
  static ClvmTestCluster startWithoutVg(String vg) throws Exception {
    return start(vg, false, "127.0.0.1");
  }

  private static ClvmTestCluster start(String vg, boolean createVg, String dlmHost)
      throws Exception {
    LoopVolumeGroup.assumeAvailable();
    // Short paths: a unix socket path must fit in 108 bytes.
    Path dir = Files.createTempDirectory("clvm-");
    TestingServer zk = null;
    DlmServer server = null;
    DlmClient admin = null;
    LoopVolumeGroup lun = null;
    try {
      zk = startZooKeeper();
      server =
          DlmServer.start(
              DlmServerConfig.forTest(zk.getConnectString())
                  .withListen(new java.net.InetSocketAddress(dlmHost, 0)));
      DlmServer s = server;
      await("dlm-server leader").atMost(Duration.ofSeconds(30)).until(s::isLeader);
      admin = DlmClient.connect(dlmHost + ":" + server.port());
      lun = LoopVolumeGroup.create(vg, 1L << 30);
      if (createVg) {
        lun.createSharedVg();
      }
      return new ClvmTestCluster(vg, dir, zk, server, admin, lun, dlmHost);
    } catch (Exception | Error e) {
      closeAll(e, admin, server, zk, lun);
      deleteRecursively(dir);
      throw e;
    }
  }

  /** TestingServer with a short tick, so agents may use short sessions; retried on bind failure. */
  private static TestingServer startZooKeeper() throws Exception {
    Exception last = null;
    for (int attempt = 0; attempt < 3; attempt++) {
      try {
        return new TestingServer(new InstanceSpec(null, -1, -1, -1, true, -1, 500, -1), true);
      } catch (Exception e) {
        last = e;
      }
    }
    throw last;
  }

  /** Stops the dlm-server: the lock service is gone until {@link #startDlmServerAgain}. */
  void stopDlmServer() {
    dlmServer.close();
  }

  /** Starts a dlm-server on the port and ZooKeeper of the stopped one; returns once it leads. */
  void startDlmServerAgain() throws Exception {
    DlmServer again =
        DlmServer.start(
            DlmServerConfig.forTest(zk.getConnectString())
                .withListen(new java.net.InetSocketAddress(dlmHost, dlmPort)));
    dlmServer = again;
    await("dlm-server leader again").atMost(Duration.ofSeconds(30)).until(again::isLeader);
  }

  String dlmServers() {
    return dlmHost + ":" + dlmPort;
  }

  Path socket(String node) {
    return dir.resolve(node + ".sock");
  }

  Path stateDir(String node) {
    return dir.resolve("state-" + node);
  }

  SimulatedLvmHost lvmHost(String node) throws IOException, InterruptedException {
    return lun.host(node);
  }

  AgentConfig config(String node, Path lvmBinary, Duration lockTimeout)
      throws IOException, InterruptedException {
    return config(node, lvmBinary, lockTimeout, LvmRunner.DEFAULT_TIMEOUT, null);
  }

  /** An agent's config, with its lvm timeout and an optional TCP listener ("host:port"). */
  AgentConfig config(
      String node, Path lvmBinary, Duration lockTimeout, Duration lvmTimeout, String tcpListen)
      throws IOException, InterruptedException {
    return new AgentConfig(
        node,
        null,
        zk.getConnectString(),
        dlmServers(),
        "/clusterlvm",
        socket(node),
        tcpListen,
        lvmBinary,
        lun.host(node).systemDir(),
        List.of(),
        AGENT_LEASE,
        Duration.ofSeconds(10),
        lockTimeout,
        lvmTimeout,
        "boot-" + node,
        stateDir(node),
        DLM_RETRY_WINDOW,
        LEAVE_DRAIN,
        null,
        null);
  }

  /** Starts an in-process agent with the real lvm. */
  ClvmAgent startAgent(String node) throws Exception {
    return startAgent(config(node, Path.of(LoopVolumeGroup.lvmBinary()), LOCK_TIMEOUT));
  }

  ClvmAgent startAgent(AgentConfig config) throws Exception {
    ClvmAgent agent = new ClvmAgent(config);
    agent.start();
    agents.put(config.node(), agent);
    return agent;
  }

  ClvmAgent agent(String node) {
    return agents.get(node);
  }

  /** Stops an in-process agent cleanly (it leaves the fence domain). */
  void stopAgent(String node) {
    ClvmAgent a = agents.remove(node);
    if (a != null) {
      a.close();
    }
  }

  /**
   * Starts {@code bin/clvm-agent}'s main class as a separate JVM (the test classpath), and waits
   * until it answers as a member.
   */
  Process startAgentProcess(String node) throws Exception {
    return startAgentProcess(
        node, List.of(), zk.getConnectString(), Path.of(LoopVolumeGroup.lvmBinary()));
  }

  /**
   * Like {@link #startAgentProcess(String)}, run by {@code prefix} (a namespace's {@code ip netns
   * exec NS}, or empty), reaching ZooKeeper at {@code zookeeper}, with {@code lvm} for lvm.
   */
  Process startAgentProcess(String node, List<String> prefix, String zookeeper, Path lvm)
      throws Exception {
    return startAgentProcess(node, prefix, zookeeper, lvm, AGENT_LEASE);
  }

  /** Like {@link #startAgentProcess(String, List, String, Path)}, with its lease's timeout. */
  Process startAgentProcess(
      String node, List<String> prefix, String zookeeper, Path lvm, Duration lease)
      throws Exception {
    return startAgentProcess(node, prefix, zookeeper, lvm, lease, DLM_RETRY_WINDOW);
  }

  /**
   * Like {@link #startAgentProcess(String, List, String, Path, Duration)}, with the agent's {@code
   * --dlm-retry-window}: tests that wait it out set a short one.
   */
  Process startAgentProcess(
      String node,
      List<String> prefix,
      String zookeeper,
      Path lvm,
      Duration lease,
      Duration dlmRetryWindow)
      throws Exception {
    Path bootId = dir.resolve("boot-id-" + node);
    Files.writeString(bootId, "boot-" + node + "\n");
    List<String> cmd = new ArrayList<>(prefix);
    cmd.addAll(
        List.of(
            javaBinary(),
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-cp",
            System.getProperty("java.class.path"),
            ClvmAgentMain.class.getName(),
            "--node",
            node,
            "--zookeeper",
            zookeeper,
            "--dlm-servers",
            dlmServers(),
            "--socket",
            socket(node).toString(),
            "--lvm",
            lvm.toString(),
            "--lvm-system-dir",
            lun.host(node).systemDir().toString(),
            "--zk-session-timeout",
            lease.toMillis() + "ms",
            "--lock-timeout",
            LOCK_TIMEOUT.toSeconds() + "s",
            "--dlm-retry-window",
            dlmRetryWindow.toMillis() + "ms",
            "--state-dir",
            stateDir(node).toString(),
            "--boot-id-file",
            bootId.toString()));
    ProcessBuilder pb = new ProcessBuilder(cmd);
    pb.redirectErrorStream(true);
    pb.redirectOutput(dir.resolve(node + ".log").toFile());
    Process p = ChildProcesses.killOnExit(pb.start());
    agentProcesses.put(node, p);
    LOG.info("[node={}] agent process pid {}", node, p.pid());
    await("agent process " + node + " member")
        .atMost(Duration.ofSeconds(60))
        .pollInterval(Duration.ofMillis(200))
        .failFast("agent process exited; see " + dir.resolve(node + ".log"), () -> !p.isAlive())
        .until(() -> Files.exists(socket(node)) && isMember(node));
    return p;
  }

  private boolean isMember(String node) {
    try (ClvmClient.UnixSocketChannel ch = ClvmClient.connect(socket(node))) {
      return new ClvmClient(ch.channel()).hostStatus(Duration.ofSeconds(5)).getStorageAllowed();
    } catch (RuntimeException e) {
      return false;
    }
  }

  String agentLog(String node) throws IOException {
    return Files.readString(dir.resolve(node + ".log"));
  }

  /** Stops an agent process as systemd does (SIGTERM), and waits for it to exit. */
  synchronized void stopAgentProcess(String node) throws InterruptedException {
    stopAgentProcess(node, Duration.ofSeconds(60));
  }

  /** SIGTERM to an agent process; waits up to {@code stop} for it to end. */
  synchronized void stopAgentProcess(String node, Duration stop) throws InterruptedException {
    Process p = agentProcesses.remove(node);
    p.destroy();
    if (!p.waitFor(stop.toMillis(), TimeUnit.MILLISECONDS)) {
      throw new IllegalStateException("agent process " + p.pid() + " did not stop");
    }
    clients.remove(node); // its channel is closed with the cluster; the next agent gets a new one
  }

  /** Kills an agent process the way a crashed host would stop: SIGKILL, no clean leave. */
  void killAgentProcess(String node) throws InterruptedException {
    Process p = agentProcesses.remove(node);
    p.destroyForcibly();
    if (!p.waitFor(30, TimeUnit.SECONDS)) {
      throw new IllegalStateException("agent process " + p.pid() + " did not die");
    }
  }

  /** A gRPC client on an agent's unix socket (one per node), closed with the cluster. */
  synchronized ClvmClient client(String node) {
    return clients.computeIfAbsent(
        node,
        n -> {
          ClvmClient.UnixSocketChannel ch = ClvmClient.connect(socket(n));
          cleanup.push(ch);
          return new ClvmClient(ch.channel());
        });
  }

  /** Runs argv on {@code node}'s agent over its unix socket. */
  RunCommandResponse run(String node, String... argv) {
    return client(node).run(List.of(argv), "test", Duration.ofSeconds(90));
  }

  /** Runs argv on {@code node}'s agent, which must run lvm and see it exit 0. */
  RunCommandResponse ok(String node, String... argv) {
    RunCommandResponse r = run(node, argv);
    assertThat(r.getExitCode())
        .as("%s on %s: %s", String.join(" ", argv), node, r.getStderr().toStringUtf8())
        .isZero();
    return r;
  }

  /** Runs argv on {@code node}'s agent, which must refuse it; returns why. */
  RefusalDetail refusal(String node, String... argv) {
    StatusRuntimeException e =
        catchThrowableOfType(StatusRuntimeException.class, () -> run(node, argv));
    assertThat(e).as("%s on %s should be refused", String.join(" ", argv), node).isNotNull();
    return Refusals.detailOf(e);
  }

  HostStatusResponse status(String node) {
    return client(node).hostStatus(Duration.ofSeconds(10));
  }

  /** What a {@code clvm} process printed and returned. */
  record Run(int exitCode, String stdout, String stderr) {}

  /**
   * Runs the real {@code bin/clvm} script, installed under {@code name} (a symlink, as an operator
   * would install it as {@code lvcreate}), on {@code node}'s socket.
   */
  Run clvm(String node, String name, String... args) throws IOException, InterruptedException {
    return clvm(true, node, name, args);
  }

  /**
   * {@link #clvm(String, String, String...)}; with {@code testClasspath} false, the script runs as
   * installed: from the built jar and target/lib, with its class-data archive.
   */
  Run clvm(boolean testClasspath, String node, String name, String... args)
      throws IOException, InterruptedException {
    Path bin = dir.resolve("bin");
    Files.createDirectories(bin);
    Path link = bin.resolve(name);
    if (!Files.exists(link, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
      Files.createSymbolicLink(link, clvmScript());
    }
    List<String> cmd = new ArrayList<>();
    cmd.add(link.toString());
    cmd.addAll(List.of(args));
    ProcessBuilder pb = new ProcessBuilder(cmd);
    pb.environment().put("CLVM_SOCKET", socket(node).toString());
    if (testClasspath) {
      pb.environment().put("CLVM_CLASSPATH", System.getProperty("java.class.path"));
    } else {
      pb.environment().remove("CLVM_CLASSPATH");
    }
    String javaDir = Path.of(javaBinary()).getParent().toString();
    pb.environment()
        .put("PATH", javaDir + ":" + System.getenv().getOrDefault("PATH", "/usr/bin:/bin"));
    pb.redirectInput(ProcessBuilder.Redirect.from(Path.of("/dev/null").toFile()));
    Path out = Files.createTempFile(dir, "clvm-out", ".txt");
    Path err = Files.createTempFile(dir, "clvm-err", ".txt");
    pb.redirectOutput(out.toFile());
    pb.redirectError(err.toFile());
    Process p = pb.start();
    try {
      if (!p.waitFor(60, TimeUnit.SECONDS)) {
        throw new IllegalStateException("clvm " + String.join(" ", args) + " did not finish");
      }
    } finally {
      if (p.isAlive()) {
        p.destroyForcibly();
      }
    }
    return new Run(
        p.exitValue(),
        Files.readString(out, StandardCharsets.UTF_8),
        Files.readString(err, StandardCharsets.UTF_8));
  }

  static Path clvmScript() {
    // Tests run in clvm-agent/; the script is in the repository's bin/.
    Path script = Path.of("").toAbsolutePath().getParent().resolve("bin").resolve("clvm");
    if (!Files.isExecutable(script)) {
      throw new IllegalStateException("bin/clvm not found at " + script);
    }
    return script;
  }

  static String javaBinary() {
    return ProcessHandle.current().info().command().orElse("java");
  }

  /**
   * Ends {@code curator}'s ZooKeeper session on the server, as a quorum does when the host is
   * partitioned away for longer than the session timeout: another client attaches to the same
   * session and closes it. The agent then sees its session expire (Curator LOST).
   */
  void expireSession(CuratorFramework curator) throws Exception {
    ZooKeeperSessions.expire(curator.getZookeeperClient().getZooKeeper(), zk.getConnectString());
  }

  /** An in-process agent whose lvm holds lvcreate at {@code gate} (see {@link #slowLvm}). */
  ClvmAgent startSlowAgent(String node, Path gate) throws Exception {
    return startAgent(config(node, slowLvm(gate), LOCK_TIMEOUT));
  }

  /** Like {@link #startSlowAgent(String, Path)}, with a leave drain of {@code leaveDrain}. */
  ClvmAgent startSlowAgent(String node, Path gate, Duration leaveDrain) throws Exception {
    return startAgent(config(node, slowLvm(gate), LOCK_TIMEOUT).withLeaveDrain(leaveDrain));
  }

  /**
   * Waits until the {@link #slowLvm} of {@code gate} holds an lvcreate; returns that lvm's pid (the
   * process the agent started).
   */
  static long awaitGatedLvm(Path gate) throws IOException {
    Path started = gate.resolve("started");
    await("lvm started").atMost(Duration.ofSeconds(30)).until(() -> Files.exists(started));
    return Long.parseLong(Files.readString(started).strip());
  }

  /**
   * A script standing in for lvm that holds lvcreate while {@code gate/slow} exists, and any other
   * command while {@code gate/slow-COMMAND} does (e.g. {@code slow-lvchange}).
   */
  Path slowLvm(Path gate) throws IOException {
    return lvmScript(
        gate,
        "#!/bin/bash\n"
            + "# lvm on a slow disk: lvcreate waits while slow exists (any other command while\n"
            + "# slow-COMMAND exists), until go appears.\n"
            + "gate='"
            + gate
            + "'\n"
            + "if { [ \"$1\" = lvcreate ] && [ -e \"$gate/slow\" ]; } || [ -e \"$gate/slow-$1\" ]; then\n"
            + "  echo $$ > \"$gate/started.tmp\" && mv \"$gate/started.tmp\" \"$gate/started\"\n"
            + "  while [ ! -e \"$gate/go\" ]; do sleep 0.05; done\n"
            + "fi\n"
            + "exec '"
            + LoopVolumeGroup.lvmBinary()
            + "' \"$@\"\n");
  }

  /**
   * A script standing in for lvm whose lvcreate does its work with the real lvm and then hangs, as
   * lvm does when it waits for udev after making the device: the LV exists, and lvm never ends.
   */
  Path hangingLvm(Path dir) throws IOException {
    return lvmScript(
        dir,
        "#!/bin/bash\n"
            + "'"
            + LoopVolumeGroup.lvmBinary()
            + "' \"$@\" || exit $?\n"
            + "if [ \"$1\" = lvcreate ]; then exec sleep 600; fi\n");
  }

  /**
   * A script standing in for lvm that answers {@code lvchange -an} of an LV named in {@code
   * dir/in-use} as lvm does for an LV a running VM holds open, and holds {@code lvchange -an} of an
   * LV named in {@code dir/hold} (writing {@code dir/holding}) until {@code dir/go} exists;
   * everything else, and every other LV, goes to the real lvm. (Without device-mapper no LV is ever
   * open here.) While {@code dir/vanished} exists, lvchange and lvs answer as lvm does when the
   * VG's PVs are gone from this host (a lost storage path), whose LVs stay active all the same.
   * Each call's arguments are appended to {@code dir/calls}.
   */
  Path inUseLvm(Path dir) throws IOException {
    return lvmScript(
        dir,
        "#!/bin/bash\n"
            + "dir='"
            + dir
            + "'\n"
            + "echo \"$*\" >> \"$dir/calls\"\n"
            + "named() { [ -e \"$dir/$2\" ] && grep -qxF -- \"$1\" \"$dir/$2\"; }\n"
            + "if [ -e \"$dir/vanished\" ] && { [ \"$1\" = lvchange ] || [ \"$1\" = lvs ]; }; then\n"
            + "  echo '  Volume group not found' >&2; exit 5\n"
            + "fi\n"
            + "deactivating=\n"
            + "for a in \"$@\"; do [ \"$a\" = -an ] && deactivating=1; done\n"
            + "if [ \"$1\" = lvchange ] && [ -n \"$deactivating\" ]; then\n"
            + "  for lv in \"$@\"; do\n"
            + "    if named \"$lv\" in-use; then echo \"  Logical volume $lv in use.\" >&2; exit 5; fi\n"
            + "    if named \"$lv\" hold; then\n"
            + "      touch \"$dir/holding\"\n"
            + "      while [ ! -e \"$dir/go\" ]; do sleep 0.05; done\n"
            + "    fi\n"
            + "  done\n"
            + "fi\n"
            + "exec '"
            + LoopVolumeGroup.lvmBinary()
            + "' \"$@\"\n");
  }

  /**
   * A script standing in for lvm whose activations go to the real lvm, and that then answers for an
   * LV named in {@code dir/partial} as lvm does for a partial LV (a PV missing on this host): exit
   * 5, the LVs before it activated all the same, since lvm activates LV by LV. With {@code
   * dir/fail-after-rename}, an lvrename renames and then exits 5, as when lvm's wait for udev fails
   * after it renamed the device.
   */
  Path partlyActivatingLvm(Path dir) throws IOException {
    return lvmScript(
        dir,
        "#!/bin/bash\n"
            + "dir='"
            + dir
            + "'\n"
            + "'"
            + LoopVolumeGroup.lvmBinary()
            + "' \"$@\" || exit $?\n"
            + "if [ \"$1\" = lvrename ] && [ -e \"$dir/fail-after-rename\" ]; then\n"
            + "  echo \"  Failed to wait for udev after the rename (test).\" >&2; exit 5\n"
            + "fi\n"
            + "activating=\n"
            + "for a in \"$@\"; do case \"$a\" in -ay|-aey|-asy) activating=1;; esac; done\n"
            + "if [ \"$1\" = lvchange ] && [ -n \"$activating\" ] && [ -e \"$dir/partial\" ]; then\n"
            + "  for lv in \"$@\"; do\n"
            + "    if grep -qxF -- \"$lv\" \"$dir/partial\"; then\n"
            + "      echo \"  Refusing activation of partial LV $lv.\" >&2; exit 5\n"
            + "    fi\n"
            + "  done\n"
            + "fi\n");
  }

  /**
   * Adds, through plain lvm on the observer, a thin pool with thin volumes thin1 and thin2, and a
   * snapshot snap of LV base (made by {@code host} through clvm), to the VG's metadata: lvcreate
   * can't make them without device-mapper.
   */
  void restoreThinPoolAndSnapshot(String host) throws Exception {
    Path file = dir.resolve("stacked-vg.txt");
    RunCommandResponse base = run(host, "lvcreate", "-an", "-Zn", "-n", "base", "-L", "40M", vg);
    assertThat(base.getExitCode()).as(base.getStderr().toStringUtf8()).isZero();
    SimulatedLvmHost observer = lvmHost("observer");
    assertThat(observer.lvm("vgcfgbackup", "-f", file.toString(), vg).succeeded()).isTrue();
    String metadata = Files.readString(file);
    // base takes extents 0-9 of pv0; the new LVs follow it.
    String added =
        lv(
                "pool",
                "\"READ\", \"WRITE\", \"VISIBLE\"",
                "type = \"thin-pool\"\nmetadata = \"pool_tmeta\"\npool = \"pool_tdata\"\n"
                    + "transaction_id = 2\nchunk_size = 128\ndiscards = \"passdown\"\n"
                    + "zero_new_blocks = 0",
                25)
            + lv(
                "thin1",
                "\"READ\", \"WRITE\", \"VISIBLE\"",
                "type = \"thin\"\nthin_pool = \"pool\"\ntransaction_id = 0\ndevice_id = 1",
                5)
            + lv(
                "thin2",
                "\"READ\", \"WRITE\", \"VISIBLE\"",
                "type = \"thin\"\nthin_pool = \"pool\"\ntransaction_id = 1\ndevice_id = 2",
                5)
            + lv("pool_tmeta", "\"READ\", \"WRITE\"", linear(10, 1), 1)
            + lv("pool_tdata", "\"READ\", \"WRITE\"", linear(11, 25), 25)
            + lv("snap", "\"READ\", \"WRITE\", \"VISIBLE\"", linear(36, 5), 5)
            + lv(
                "snapshot0",
                "\"READ\"",
                "type = \"snapshot\"\nchunk_size = 8\norigin = \"base\"\n" + "cow_store = \"snap\"",
                10);
    int end = metadata.lastIndexOf("\t}\n\n}");
    assertThat(end).as("end of logical_volumes in\n" + metadata).isPositive();
    Files.writeString(file, metadata.substring(0, end) + added + metadata.substring(end));
    SimulatedLvmHost.Result restored =
        observer.lvm("vgcfgrestore", "--force", "-f", file.toString(), vg);
    assertThat(restored.succeeded()).as(restored.toString()).isTrue();
    assertThat(observer.lvm("lvs", "--noheadings", "-o", "lv_name,lv_attr", vg).stdout())
        .containsPattern("thin1 +V")
        .containsPattern("pool +t")
        .containsPattern("snap +s")
        .containsPattern("base +o");
  }

  private static String lv(String name, String status, String segment, int extents) {
    return name
        + " {\nid = \""
        + lvmUuid()
        + "\"\nstatus = ["
        + status
        + "]\nflags = []\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = "
        + extents
        + "\n"
        + segment
        + "\n}\n}\n";
  }

  private static String linear(int firstExtent, int extents) {
    return "type = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", " + firstExtent + "]";
  }

  /** A random id in lvm's format: 32 letters and digits in groups of 6-4-4-4-4-4-6. */
  private static String lvmUuid() {
    String chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    StringBuilder id = new StringBuilder();
    java.util.Random random = new java.util.Random();
    for (int group : new int[] {6, 4, 4, 4, 4, 4, 6}) {
      if (id.length() > 0) {
        id.append('-');
      }
      for (int i = 0; i < group; i++) {
        id.append(chars.charAt(random.nextInt(chars.length())));
      }
    }
    return id.toString();
  }

  /** Writes {@code body} as the executable {@code dir/lvm}, a stand-in for lvm. */
  private static Path lvmScript(Path dir, String body) throws IOException {
    Files.createDirectories(dir);
    Path script = dir.resolve("lvm");
    Files.writeString(script, body);
    Files.setPosixFilePermissions(script, PosixFilePermissions.fromString("rwxr-xr-x"));
    return script;
  }

  @Override
  public void close() {
    List<Throwable> failures = new ArrayList<>();
    while (!cleanup.isEmpty()) {
      try {
        cleanup.pop().close();
      } catch (Exception e) {
        failures.add(e);
      }
    }
    for (Map.Entry<String, Process> p : agentProcesses.entrySet()) {
      // SIGTERM: the agent leaves the fence domain cleanly; then by force if it must.
      p.getValue().destroy();
      try {
        if (!p.getValue().waitFor(20, TimeUnit.SECONDS)) {
          p.getValue().destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        p.getValue().destroyForcibly();
      }
    }
    agentProcesses.clear();
    List<String> nodes = new ArrayList<>(agents.keySet());
    java.util.Collections.reverse(nodes);
    for (String n : nodes) {
      try {
        agents.remove(n).close();
      } catch (RuntimeException e) {
        failures.add(e);
      }
    }
    closeAll(null, admin, dlmServer, zk, lun);
    deleteRecursively(dir);
    if (!failures.isEmpty()) {
      LOG.warn("cluster cleanup had {} failure(s): {}", failures.size(), failures);
    }
  }

  private static void closeAll(Throwable into, AutoCloseable... things) {
    for (AutoCloseable c : things) {
      if (c == null) {
        continue;
      }
      try {
        c.close();
      } catch (Exception e) {
        if (into != null) {
          into.addSuppressed(e);
        } else {
          LOG.warn("closing {}: {}", c, e.toString());
        }
      }
    }
  }

  private static void deleteRecursively(Path root) {
    if (!Files.exists(root)) {
      return;
    }
    try (Stream<Path> walk = Files.walk(root)) {
      walk.sorted(Comparator.reverseOrder())
          .forEach(
              p -> {
                try {
                  Files.deleteIfExists(p);
                } catch (IOException e) {
                  throw new UncheckedIOException(e);
                }
              });
    } catch (IOException | UncheckedIOException e) {
      LOG.warn("could not delete {}: {}", root, e.toString());
    }
  }
}
