package io.clusterlvm.it.fence;

import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.clusterlvm.dlm.server.DlmServer;
import io.clusterlvm.dlm.server.DlmServerConfig;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.Versioned;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.testing.ChildProcesses;
import java.io.File;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.curator.test.InstanceSpec;
import org.apache.curator.test.TestingServer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A cluster for fence scenarios, built from real parts: a ZooKeeper (curator-test, in this JVM), a
 * dlm-server (in this JVM), simulated hosts whose clvm-agent runs as its own OS process ({@code
 * ClvmAgentMain}, so a BMC power-off really kills it), ipmi_sim BMCs from the shared testbed, and
 * dlmctl run as a process the way an operator runs it.
 *
 * <p>Times are short so a scenario takes seconds: ZooKeeper ticks every 200 ms, an agent's session
 * (its membership lease) lasts {@link #ZK_SESSION} by default, and a broken client session of a
 * node waits {@link #ABRUPT_END_GRACE} (longer than the lease, as the server's contract demands)
 * before the server decides between "process died" and "host died".
 *
 * <p>{@link #close()} kills every process it started, and their children, by handle; it stops every
 * BMC by PID. Logs stay in {@code target/fence-it/CLASS/METHOD}.
 */
final class FenceCluster implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(FenceCluster.class);

  static final Duration ZK_SESSION = Duration.ofSeconds(3);
  static final Duration ABRUPT_END_GRACE = Duration.ofSeconds(6);
  static final String ZK_ROOT = "/it-fence";

  /** JVM options of the child JVMs: several share two cores with the test; start fast. */
  static final List<String> CHILD_JVM =
      List.of(
          "-Xms16m",
          "-Xmx160m",
          "-XX:+UseSerialGC",
          "-XX:TieredStopAtLevel=1",
          "-Xshare:auto",
          "-Xss512k");

  private final Path dir;
  private final Duration zkSession;
  private final Duration abruptEndGrace;
  private final String dlmHost;
  private Path socketDir;
  private final List<AutoCloseable> closeables = new ArrayList<>();
  private final List<Process> processes = new CopyOnWriteArrayList<>();
  private final Map<String, SimulatedHost> hosts = new LinkedHashMap<>();
  private final AtomicInteger cliRuns = new AtomicInteger();
  private TestingServer zk;
  private DlmServer server;
  private CuratorFramework curator;
  private FenceStore store;
  private DlmClient client;

  private FenceCluster(Path dir, Duration zkSession, Duration abruptEndGrace, String dlmHost) {
    this.dir = dir.toAbsolutePath();
    this.zkSession = zkSession;
    this.abruptEndGrace = abruptEndGrace;
    this.dlmHost = dlmHost;
  }

  /** Starts ZooKeeper and a dlm-server; logs and work files go to {@code dir}. */
  static FenceCluster start(Path dir) throws Exception {
    return start(dir, ZK_SESSION, ABRUPT_END_GRACE);
  }

  /**
   * With the agents' lease ({@code zkSession}, at most 20 ZooKeeper ticks) and the server's grace
   * for broken sessions of their nodes ({@code abruptEndGrace}, longer than the lease) given.
   */
  static FenceCluster start(Path dir, Duration zkSession, Duration abruptEndGrace)
      throws Exception {
    return start(dir, zkSession, abruptEndGrace, "127.0.0.1");
  }

  /**
   * With the dlm-server listening on {@code dlmHost}, an address of this machine: the host end of a
   * {@code NetworkNamespace} link, for hosts that run in the namespace. (ZooKeeper listens on every
   * address.)
   */
  static FenceCluster start(Path dir, Duration zkSession, Duration abruptEndGrace, String dlmHost)
      throws Exception {
    if (abruptEndGrace.compareTo(zkSession) <= 0) {
      throw new IllegalArgumentException("the grace must outlast the lease");
    }
    FenceCluster c = new FenceCluster(dir, zkSession, abruptEndGrace, dlmHost);
    try {
      c.doStart();
      return c;
    } catch (Exception | Error e) {
      c.close();
      throw e;
    }
  }

  private void doStart() throws Exception {
    deleteRecursively(dir);
    Files.createDirectories(dir);
    // Unix socket paths are limited to 108 bytes; the log directory's path is longer.
    socketDir = Files.createTempDirectory("clvm-it-");
    // A short tick: ZooKeeper bounds session timeouts to 2..20 ticks and expires sessions on
    // tick boundaries; the default 3 s tick would stretch a 3 s lease to 6 s. 200 ms for 3 s.
    int tickMs = (int) Math.max(50, Math.min(2000, zkSession.toMillis() / 15));
    zk =
        new TestingServer(
            new InstanceSpec(
                Files.createDirectories(dir.resolve("zookeeper")).toFile(),
                -1,
                -1,
                -1,
                true,
                1,
                tickMs,
                -1),
            true);
    curator =
        CuratorFrameworkFactory.builder()
            .connectString(zk.getConnectString())
            .sessionTimeoutMs(10_000)
            .retryPolicy(new ExponentialBackoffRetry(100, 5))
            .build();
    curator.start();
    curator.blockUntilConnected(30, TimeUnit.SECONDS);
    store = new FenceStore(curator, ZK_ROOT);
    server =
        DlmServer.start(
            DlmServerConfig.forTest(zk.getConnectString())
                .withRoot(ZK_ROOT)
                .withListen(new InetSocketAddress(dlmHost, 0))
                .withAbruptEndGrace(abruptEndGrace));
    await("dlm-server elected")
        .atMost(Duration.ofSeconds(30))
        .pollInterval(Duration.ofMillis(50))
        .until(server::isLeader);
    client = DlmClient.connect(dlmServers());
    LOG.info("fence cluster in {}: ZooKeeper {}, dlm-server {}", dir, zookeeper(), dlmServers());
  }

  Path dir() {
    return dir;
  }

  /** The agents' ZooKeeper session timeout: their membership lease. */
  Duration zkSession() {
    return zkSession;
  }

  CuratorFramework curator() {
    return curator;
  }

  /** A short directory for the agents' unix sockets. */
  Path socketDir() {
    return socketDir;
  }

  String zookeeper() {
    return zk.getConnectString();
  }

  int zookeeperPort() {
    return zk.getPort();
  }

  String dlmServers() {
    return dlmHost + ":" + server.port();
  }

  DlmClient client() {
    return client;
  }

  FenceStore store() {
    return store;
  }

  // ---------------------------------------------------------------- hosts and BMCs

  /** A simulated host (not started). */
  SimulatedHost host(String name) throws IOException {
    SimulatedHost h = new SimulatedHost(this, name, Files.createDirectories(dir.resolve(name)));
    hosts.put(name, h);
    return h;
  }

  /** A BMC with the default credentials admin/secret. */
  HostBmc bmc(String name) throws IOException, InterruptedException {
    return bmc(name, "admin", "secret");
  }

  HostBmc bmc(String name, String username, String password)
      throws IOException, InterruptedException {
    HostBmc b = HostBmc.start(name, dir.resolve("bmc-" + name), username, password);
    closeables.add(b);
    return b;
  }

  Path writeFile(String name, String content) throws IOException {
    Path p = dir.resolve(name);
    Files.writeString(p, content, StandardCharsets.UTF_8);
    return p;
  }

  // ---------------------------------------------------------------- processes

  /**
   * A child JVM running {@code mainClass} from this test's class path, output to {@code log}, run
   * by {@code prefix} (empty, or a namespace's {@code ip netns exec NS}, which execs the JVM).
   */
  Process startJava(
      List<String> prefix, String mainClass, List<String> args, Path log, Map<String, String> env)
      throws IOException {
    List<String> cmd = new ArrayList<>(prefix);
    cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    cmd.addAll(CHILD_JVM);
    cmd.add("-Dlogback.configurationFile=" + resource("/fence/child-logback.xml"));
    cmd.add("-cp");
    cmd.add(classPath());
    cmd.add(mainClass);
    cmd.addAll(args);
    ProcessBuilder pb =
        new ProcessBuilder(cmd)
            .redirectErrorStream(true)
            .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
            .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
    pb.environment().putAll(env);
    Process p = ChildProcesses.killOnExit(pb.start());
    processes.add(p);
    return p;
  }

  /**
   * The test JVM's class path: the code under test as this build made it (bin/dlmctl and
   * bin/clvm-agent run whichever jar was packaged last). Surefire may hide it behind a
   * manifest-only jar, whose Class-Path a child JVM follows as well.
   */
  static String classPath() {
    String cp = System.getProperty("surefire.test.class.path");
    return cp != null && !cp.isBlank() ? cp : System.getProperty("java.class.path");
  }

  static String resource(String name) {
    try {
      return Path.of(FenceCluster.class.getResource(name).toURI()).toString();
    } catch (URISyntaxException e) {
      throw new IllegalStateException(e);
    }
  }

  /** What one dlmctl run printed, and its exit status. */
  record CliResult(int exit, String out, String err) {
    @Override
    public String toString() {
      return "exit " + exit + "\nstdout:\n" + out + "\nstderr:\n" + err;
    }
  }

  /** Runs {@code dlmctl ARGS} (io.clusterlvm.dlm.cli.Dlmctl, as bin/dlmctl does) to its end. */
  CliResult dlmctl(String... args) throws IOException, InterruptedException {
    int n = cliRuns.incrementAndGet();
    Path out = dir.resolve("dlmctl-" + n + ".out");
    Path err = dir.resolve("dlmctl-" + n + ".err");
    List<String> cmd = new ArrayList<>();
    cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    cmd.addAll(CHILD_JVM);
    cmd.add("-cp");
    cmd.add(classPath());
    cmd.add("io.clusterlvm.dlm.cli.Dlmctl");
    cmd.addAll(List.of(args));
    ProcessBuilder pb =
        new ProcessBuilder(cmd)
            .redirectOutput(out.toFile())
            .redirectError(err.toFile())
            .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")));
    pb.environment().put("DLM_SERVERS", dlmServers());
    Process p = pb.start();
    processes.add(p);
    if (!p.waitFor(60, TimeUnit.SECONDS)) {
      p.destroyForcibly();
      throw new IllegalStateException("dlmctl " + String.join(" ", args) + " hung");
    }
    CliResult r =
        new CliResult(
            p.exitValue(),
            Files.readString(out, StandardCharsets.UTF_8),
            Files.readString(err, StandardCharsets.UTF_8));
    LOG.info("dlmctl {} -> exit {}", String.join(" ", args), r.exit());
    return r;
  }

  /** Starts a long-running dlmctl (e.g. {@code dlmctl lock ... -- sleep 1000}). */
  Process startDlmctl(List<String> prefix, Path log, String... args) throws IOException {
    return startJava(
        prefix,
        "io.clusterlvm.dlm.cli.Dlmctl",
        List.of(args),
        log,
        Map.of("DLM_SERVERS", dlmServers()));
  }

  /** Closed by {@link #close()} after every process was killed (e.g. their network namespace). */
  <T extends AutoCloseable> T closeAfterProcesses(T c) {
    closeables.add(c);
    return c;
  }

  // ---------------------------------------------------------------- records

  FenceNodeRecord record(String node) throws Exception {
    return store.nodeRecord(node).map(Versioned::value).orElse(null);
  }

  FenceState state(String node) throws Exception {
    FenceNodeRecord r = record(node);
    return r == null ? FenceState.FENCE_STATE_UNSPECIFIED : r.getState();
  }

  boolean leaseHeld(String node) throws Exception {
    return store.memberRecord(node).isPresent();
  }

  List<FenceEvent> history(String node) throws Exception {
    return store.history(node, 10_000);
  }

  /** The host whose agent is the elected fencer, if any. */
  Optional<String> fencer() throws Exception {
    List<String> children;
    try {
      children = new ArrayList<>(curator.getChildren().forPath(store.fencerPath()));
    } catch (org.apache.zookeeper.KeeperException.NoNodeException e) {
      return Optional.empty();
    }
    children.sort(Comparator.comparing(c -> c.substring(c.lastIndexOf('-') + 1)));
    for (String c : children) {
      try {
        return Optional.of(
            new String(
                curator.getData().forPath(store.fencerPath() + "/" + c), StandardCharsets.UTF_8));
      } catch (org.apache.zookeeper.KeeperException.NoNodeException gone) {
        // its session ended while we looked
      }
    }
    return Optional.empty();
  }

  /** The granted locks on a resource. */
  List<LockInfo> granted(String lockspace, String resource) {
    // All lockspaces: naming one that has no lock yet is an error (it does not exist).
    for (ResourceInfo r : client.locks(null)) {
      if (r.getLockspace().equals(lockspace) && r.getResource().equals(resource)) {
        return r.getGrantedList();
      }
    }
    return List.of();
  }

  // ---------------------------------------------------------------- cleanup

  @Override
  public void close() throws Exception {
    for (SimulatedHost h : hosts.values()) {
      h.crashQuietly();
    }
    for (Process p : processes) {
      p.descendants().forEach(ProcessHandle::destroyForcibly);
      p.destroyForcibly();
    }
    for (Process p : processes) {
      p.waitFor(10, TimeUnit.SECONDS);
    }
    for (int i = closeables.size() - 1; i >= 0; i--) {
      try {
        closeables.get(i).close();
      } catch (Exception e) {
        LOG.warn("cleanup: {}", e.toString());
      }
    }
    if (client != null) {
      client.close();
    }
    if (server != null) {
      server.close();
    }
    if (curator != null) {
      curator.close();
    }
    if (zk != null) {
      zk.close();
    }
    if (socketDir != null) {
      deleteRecursively(socketDir);
    }
  }

  static void deleteRecursively(Path d) throws IOException {
    if (!Files.exists(d)) {
      return;
    }
    try (var paths = Files.walk(d)) {
      for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
        Files.deleteIfExists(p);
      }
    }
  }
}
