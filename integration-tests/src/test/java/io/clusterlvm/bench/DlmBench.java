package io.clusterlvm.bench;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.dlm.proto.ServerStatusResponse;
import io.clusterlvm.dlm.server.DlmServer;
import io.clusterlvm.dlm.server.DlmServerConfig;
import io.clusterlvm.testing.ZooKeeperProcess;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.stream.Stream;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.data.Stat;

/**
 * The lock-service benchmark (issue 3): our DLM against Curator's InterProcessMutex on the same
 * ZooKeeper, in one run. See {@link BenchOptions#USAGE} and bin/dlm-bench.
 *
 * <p>Every loop is bounded by an iteration count or a deadline, and every lock call by a timeout,
 * so a stuck server fails the run instead of hanging it. All traffic goes to 127.0.0.1.
 */
public final class DlmBench {
  private static final String ROOT = "/bench-dlm";
  private static final Duration WAIT_LIMIT = Duration.ofSeconds(30);

  private final BenchOptions o;
  private final LeaderLog leaderLog;
  private final Map<String, Object> results = new LinkedHashMap<>();
  private final List<Map<String, Object>> targets = new ArrayList<>();

  private ZooKeeperProcess zk;
  private CuratorFramework probe; // bare writes, transaction counting, election watch
  private DlmServer server;
  private DlmServer standby; // the fail-over phase's second instance

  private DlmBench(BenchOptions o, LeaderLog leaderLog) {
    this.o = o;
    this.leaderLog = leaderLog;
  }

  public static void main(String[] args) throws Exception {
    BenchOptions o;
    try {
      o = BenchOptions.parse(args);
    } catch (BenchOptions.UsageException e) {
      if (e.getMessage() != null) {
        System.err.println("dlm-bench: " + e.getMessage());
      }
      (e.getMessage() == null ? System.out : System.err).print(BenchOptions.USAGE);
      System.exit(e.getMessage() == null ? 0 : 2);
      return;
    }
    LeaderLog log = LeaderLog.install(o.verbose());
    int rc = new DlmBench(o, log).run();
    System.exit(rc);
  }

  private static void say(String fmt, Object... args) {
    System.out.printf(Locale.ROOT, fmt + "%n", args);
    System.out.flush();
  }

  private int run() throws Exception {
    Path dir = Files.createTempDirectory("dlm-bench-");
    Instant started = Instant.now();
    boolean failed = false;
    try {
      zk = ZooKeeperProcess.start(dir, o.zkFsync());
      say(
          "ZooKeeper %s: child JVM pid %d at %s, fsync %s, data in %s",
          ZooKeeperProcess.version().split(",")[0],
          zk.pid(),
          zk.connectString(),
          o.zkFsync() ? "on" : "off",
          dir);
      probe = curator(zk.connectString());
      server = startServer();
      say(
          "dlm-server: in this JVM on 127.0.0.1:%d (clients share its JVM and the machine's %d"
              + " CPUs with it and with ZooKeeper)",
          server.port(), Runtime.getRuntime().availableProcessors());
      results.put("environment", environment());
      double load = loadAverage();
      int cpus = Runtime.getRuntime().availableProcessors();
      if (load > cpus / 2.0) {
        say(
            "WARNING: the machine is busy (load average %.1f on %d CPUs): figures will be noisy;"
                + " for figures to compare, run on an otherwise idle machine",
            load, cpus);
      }
      results.put("options", o.toMap());

      try (DlmLockSystem dlm = new DlmLockSystem("127.0.0.1:" + server.port(), o.connections());
          CuratorLockSystem cur = new CuratorLockSystem(zk.connectString(), o.connections())) {
        results.put(
            "client_layout", Map.of("dlm", dlm.clientLayout(), "curator", cur.clientLayout()));
        List<LockSystem> both = List.of(dlm, cur);
        latencies(both);
        if (o.runs("throughput")) {
          try (GrpcFloorSystem floor = new GrpcFloorSystem(o.connections(), 2);
              GrpcFloorSystem floor1 = new GrpcFloorSystem(o.connections(), 1)) {
            throughputs(both, List.of(floor, floor1));
          }
        }
      }
      if (o.runs("failover")) {
        results.put("failover", failover());
      }
    } catch (Exception | Error e) {
      failed = true;
      results.put("error", e.toString());
      System.err.println("dlm-bench: the run failed: " + e);
      e.printStackTrace();
    } finally {
      results.put("elapsed_s", Duration.between(started, Instant.now()).toSeconds());
      results.put("load_average_at_end", loadAverage());
      closeQuietly();
      deleteTree(dir);
    }
    evaluateTargets();
    results.put("targets", targets);
    printTable();
    Path out = o.out().toAbsolutePath();
    Files.createDirectories(out.getParent());
    Files.writeString(out, Json.write(results));
    say("results written to %s", out);
    return failed ? 1 : 0;
  }

  // ---------------------------------------------------------------- setup

  private static CuratorFramework curator(String zookeeper) throws InterruptedException {
    CuratorFramework c =
        CuratorFrameworkFactory.builder()
            .connectString(zookeeper)
            .sessionTimeoutMs(10_000)
            .connectionTimeoutMs(5_000)
            .retryPolicy(new ExponentialBackoffRetry(100, 3))
            .build();
    c.start();
    if (!c.blockUntilConnected(30, TimeUnit.SECONDS)) {
      throw new IllegalStateException("could not connect to " + zookeeper);
    }
    return c;
  }

  private DlmServerConfig serverConfig() {
    return DlmServerConfig.forTest(zk.connectString()).withRoot(ROOT);
  }

  private DlmServer startServer() throws Exception {
    DlmServer s = DlmServer.start(serverConfig());
    long deadline = System.nanoTime() + WAIT_LIMIT.toNanos();
    while (!s.isLeader()) {
      if (System.nanoTime() > deadline) {
        s.close();
        throw new IllegalStateException("the dlm-server was not elected within " + WAIT_LIMIT);
      }
      TimeUnit.MILLISECONDS.sleep(10); // polling the server's own flag; nothing to wait on
    }
    return s;
  }

  private Map<String, Object> environment() {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("cpus", Runtime.getRuntime().availableProcessors());
    m.put("java", System.getProperty("java.vm.name") + " " + System.getProperty("java.version"));
    m.put("max_heap_mb", Runtime.getRuntime().maxMemory() >> 20);
    m.put("gc", gcNames());
    m.put("zookeeper", ZooKeeperProcess.version().split(",")[0]);
    m.put("zookeeper_mode", "standalone, child JVM, 127.0.0.1");
    m.put("zookeeper_fsync", o.zkFsync());
    m.put("dlm_server", "one instance in the benchmark JVM (clients share JVM and machine)");
    m.put("git_revision", System.getProperty("bench.gitRevision", "unknown"));
    m.put("started_at", Instant.now().toString());
    m.put("load_average_at_start", loadAverage());
    return m;
  }

  /** The 1-minute load average: other work on the machine makes every figure noisier. */
  private static double loadAverage() {
    return Samples.round2(ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage());
  }

  private static String gcNames() {
    return String.join(
        ",",
        ManagementFactory.getGarbageCollectorMXBeans().stream().map(b -> b.getName()).toList());
  }

  private void closeQuietly() {
    for (DlmServer s : new DlmServer[] {standby, server}) {
      try {
        if (s != null) {
          s.close();
        }
      } catch (RuntimeException e) {
        System.err.println("closing a dlm-server: " + e);
      }
    }
    if (probe != null) {
      probe.close();
    }
    if (zk != null) {
      zk.close();
    }
  }

  private static void deleteTree(Path dir) {
    try (Stream<Path> walk = Files.walk(dir)) {
      walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
    } catch (IOException e) {
      System.err.println("could not delete " + dir + ": " + e);
    }
  }

  // ---------------------------------------------------------------- 1, 3, 4: latency

  /**
   * Bare ZooKeeper writes (4), uncontended latency (1) and hand-off latency (3): a warm-up of each,
   * then {@code rounds} rounds in which every measurement runs a share of its iterations, in an
   * order that rotates from round to round.
   */
  private void latencies(List<LockSystem> systems) throws Exception {
    List<Measurement> ms = new ArrayList<>();
    List<Integer> iterations = new ArrayList<>();
    if (o.runs("zkwrite")) {
      ensurePath("/bench-zk");
      ms.add(new BareWrites(probe.getZookeeperClient().getZooKeeper(), "/bench-zk"));
      iterations.add(o.zkWriteIterations());
    }
    for (LockSystem s : systems) {
      if (o.runs("uncontended")) {
        ms.add(new Uncontended(s));
        iterations.add(o.latencyIterations());
        if (s instanceof DlmLockSystem dlm) {
          ms.add(dlm.floors());
          iterations.add(o.latencyIterations());
          ms.add(
              new Uncontended(
                  dlm,
                  "dlm_unlock_waited",
                  dlm.workerWaitingForUnlock(4, "uncontended-unlock-waited")));
          iterations.add(o.latencyIterations());
        }
      }
    }
    for (LockSystem s : systems) {
      if (o.runs("handoff")) {
        ms.add(new Handoff(s));
        iterations.add(o.handoffIterations());
      }
    }
    if (ms.isEmpty()) {
      return;
    }
    for (int i = 0; i < ms.size(); i++) {
      int warm = ms.get(i) instanceof Handoff ? Math.max(5, iterations.get(i) / 10) : warmup();
      say("warm-up: %s, %d iterations", ms.get(i).label(), warm);
      ms.get(i).run(warm, false);
    }
    int rounds = o.rounds();
    for (int r = 0; r < rounds; r++) {
      say("latency round %d/%d", r + 1, rounds);
      for (int k = 0; k < ms.size(); k++) {
        int i = (k + r) % ms.size();
        int share = iterations.get(i) / rounds + (r < iterations.get(i) % rounds ? 1 : 0);
        ms.get(i).run(share, true);
      }
    }
    for (Measurement m : ms) {
      put(m.key(), m.summary());
    }
  }

  private int warmup() {
    return o.warmupIterations();
  }

  @SuppressWarnings("unchecked")
  private void put(String[] key, Object value) {
    Map<String, Object> at = results;
    for (int i = 0; i < key.length - 1; i++) {
      at = (Map<String, Object>) at.computeIfAbsent(key[i], k -> new LinkedHashMap<>());
    }
    at.put(key[key.length - 1], value);
  }

  private void ensurePath(String path) throws Exception {
    try {
      probe.create().creatingParentsIfNeeded().forPath(path);
    } catch (KeeperException.NodeExistsException e) {
      // there already
    }
  }

  // ---------------------------------------------------------------- 2. throughput

  /**
   * Each round runs a window of every system on distinct and on the shared resource; the systems
   * take turns going first.
   */
  private void throughputs(List<LockSystem> systems, List<LockSystem> floors) throws Exception {
    List<Throughput> ts = new ArrayList<>();
    for (boolean shared : new boolean[] {false, true}) {
      for (LockSystem s : systems) {
        ts.add(new Throughput(s, shared, o.clients(), zk, this::zxidProbe));
      }
    }
    // The gRPC floors, on distinct resources only: they have no locks to contend for.
    for (LockSystem floor : floors) {
      ts.add(new Throughput(floor, false, o.clients(), zk, this::zxidProbe));
    }
    int rounds = o.rounds();
    Duration window = o.throughputDuration().dividedBy(rounds);
    for (int r = 0; r < rounds; r++) {
      for (int k = 0; k < ts.size(); k++) {
        Throughput t = ts.get((k + r) % ts.size());
        say(
            "round %d/%d: %s, %.1f s warm-up + %.1f s",
            r + 1,
            rounds,
            t.label(),
            o.throughputWarmup().toMillis() / 1e3,
            window.toMillis() / 1e3);
        t.run(o.throughputWarmup(), window);
      }
    }
    for (Throughput t : ts) {
      put(t.key(), t.summary());
    }
  }

  /** The current zxid: that of a fresh sequential probe znode (the probe itself is one txn). */
  private long zxidProbe() throws Exception {
    ensurePath("/bench-probe");
    Stat stat = new Stat();
    probe
        .getZookeeperClient()
        .getZooKeeper()
        .create(
            "/bench-probe/p-",
            new byte[0],
            ZooDefs.Ids.OPEN_ACL_UNSAFE,
            CreateMode.EPHEMERAL_SEQUENTIAL,
            stat);
    return stat.getCzxid();
  }

  // ---------------------------------------------------------------- 5+6. fail-over and memory

  /**
   * Takes {@code failover-locks} persistent EX locks on as many resources, measures the heap they
   * cost the server, then hands leadership to a standby instance (closing the leader, which deletes
   * its election node) and measures from the election (the standby's election node becoming the
   * first, seen through a ZooKeeper watch) to the first requests the new leader serves.
   */
  private Map<String, Object> failover() throws Exception {
    Map<String, Object> m = new LinkedHashMap<>();
    int locks = o.failoverLocks();
    standby = DlmServer.start(serverConfig());
    String leaderPath = ROOT + "/dlm/leader";
    long deadline = System.nanoTime() + WAIT_LIMIT.toNanos();
    while (probe.getChildren().forPath(leaderPath).size() < 2) {
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException("the standby did not join the election");
      }
      TimeUnit.MILLISECONDS.sleep(10);
    }
    String both = "127.0.0.1:" + server.port() + ",127.0.0.1:" + standby.port();
    List<DlmClient> clients = new ArrayList<>();
    List<DlmSession> sessions = new ArrayList<>();
    DlmClient standbyClient = DlmClient.connect("127.0.0.1:" + standby.port());
    try {
      for (int i = 0; i < Math.min(4, o.failoverSessions()); i++) {
        clients.add(DlmClient.connect(both));
      }
      for (int i = 0; i < o.failoverSessions(); i++) {
        DlmClient c = clients.get(i % clients.size());
        String node = "fo-node-" + i;
        sessions.add(c.openSession(node, c.join(node, "fo-boot-" + i), "dlm-bench-failover"));
      }
      standbyClient.status(); // connect now, not during the measurement

      long heap0 = usedHeapAfterGc();
      HeapHistogram histogram0 = HeapHistogram.take();
      say(
          "fail-over: taking %d persistent locks (%d lockspaces, %d sessions, lockAsync)",
          locks, o.failoverLockspaces(), o.failoverSessions());
      long zxid0 = zxidProbe();
      long t0 = System.nanoTime();
      takeLocks(sessions, locks);
      long t1 = System.nanoTime();
      long zxid1 = zxidProbe();
      ServerStatusResponse before = clients.get(0).status();
      m.put("locks_taken", locks);
      m.put("locks_reported_by_leader", before.getLocks());
      m.put("take_seconds", Samples.round((t1 - t0) / 1e9));
      m.put("take_locks_per_s", Samples.round(locks / ((t1 - t0) / 1e9)));
      m.put("take_zk_txns", zxid1 - zxid0 - 1);

      long heap1 = usedHeapAfterGc();
      List<String> perClass = HeapHistogram.take().growthSince(histogram0, locks, 15);
      Map<String, Object> mem = new LinkedHashMap<>();
      mem.put("heap_used_without_locks_mb", Samples.round(heap0 / 1048576.0));
      mem.put("heap_used_with_locks_mb", Samples.round(heap1 / 1048576.0));
      mem.put("bytes_per_lock", Math.round((heap1 - heap0) / (double) locks));
      mem.put("growth_by_class", perClass);
      mem.put(
          "method",
          "heap used after System.gc() (min of 4) in the benchmark JVM, which holds the leader"
              + " (and an idle standby and the clients, which keep no per-lock state), with minus"
              + " without the locks, divided by the lock count; ZooKeeper runs in its own JVM");
      say(
          "  %d locks in %.1f s; heap %.1f -> %.1f MB: %d bytes per lock",
          locks,
          (t1 - t0) / 1e9,
          heap0 / 1048576.0,
          heap1 / 1048576.0,
          Math.round((heap1 - heap0) / (double) locks));

      // The election: the standby wins when the leader's election node goes away.
      AtomicLong electedAt = new AtomicLong();
      CountDownLatch changed = new CountDownLatch(1);
      probe
          .getChildren()
          .usingWatcher(
              (Watcher)
                  e -> {
                    electedAt.compareAndSet(0, System.nanoTime());
                    changed.countDown();
                  })
          .forPath(leaderPath);
      say("  closing the leader; the standby takes over");
      long jvmCpu0 = processCpuNanos();
      long zkCpu0 = zk.cpuNanos();
      long closeAt = System.nanoTime();
      DlmServer old = server;
      server = standby;
      standby = null;
      AtomicReference<Throwable> closeFailure = new AtomicReference<>();
      Thread closer =
          new Thread(
              () -> {
                try {
                  old.close();
                } catch (Throwable e) {
                  closeFailure.set(e);
                }
              },
              "bench-close-leader");
      closer.start();

      long statusAt = 0;
      long giveUp = System.nanoTime() + WAIT_LIMIT.toNanos();
      while (System.nanoTime() < giveUp) {
        ServerStatusResponse st = standbyClient.status();
        if (st.getLeader()) {
          statusAt = System.nanoTime();
          break;
        }
        LockSupport.parkNanos(2_000_000); // coarse enough not to slow the loading leader
      }
      if (statusAt == 0) {
        throw new IllegalStateException("the standby did not become leader within " + WAIT_LIMIT);
      }
      long joinedAt;
      long lockedAt;
      long newLockspaceLockedAt;
      long listedAt;
      String node = "fo-probe";
      long inc = standbyClient.join(node, "fo-probe-boot");
      joinedAt = System.nanoTime();
      // A lockspace that holds locks, near the end of the loader's order: the new leader reads
      // it first because a request waits for it.
      String busyLockspace = "fo-" + (o.failoverLockspaces() - 1);
      try (DlmSession ps = standbyClient.openSession(node, inc, "dlm-bench-probe")) {
        LockOptions noqueue = LockOptions.DEFAULT.withNoqueue();
        Lock l = ps.lock(busyLockspace, "first-lock", LockMode.EX, noqueue);
        lockedAt = System.nanoTime();
        Lock fresh = ps.lock("fo-probe", "first-lock", LockMode.EX, noqueue);
        newLockspaceLockedAt = System.nanoTime();
        ps.unlock(l);
        ps.unlock(fresh);
      }
      // A listing needs the whole table: it is answered once everything is loaded.
      standbyClient.locks(busyLockspace);
      listedAt = System.nanoTime();
      long jvmCpu = processCpuNanos() - jvmCpu0;
      long zkCpu = zk.cpuNanos() - zkCpu0;
      closer.join(30_000);
      if (!changed.await(10, TimeUnit.SECONDS)) {
        throw new IllegalStateException("no election change was seen");
      }
      long elected = electedAt.get();
      LeaderLog.Loaded load = leaderLog.lastLoad();
      ServerStatusResponse after = standbyClient.status();
      m.put("close_to_election_ms", ms(elected - closeAt));
      m.put("election_to_status_as_leader_ms", ms(statusAt - elected));
      m.put("election_to_first_write_served_ms", ms(joinedAt - elected));
      m.put("election_to_first_lock_granted_ms", ms(lockedAt - elected));
      m.put("election_to_lock_in_new_lockspace_ms", ms(newLockspaceLockedAt - elected));
      m.put("election_to_listing_of_whole_table_ms", ms(listedAt - elected));
      m.put("close_to_first_lock_granted_ms", ms(lockedAt - closeAt));
      m.put("new_leader_load_ms_reported", load == null ? null : load.millis());
      m.put("cpu_ms_bench_jvm_close_to_first_lock", ms(jvmCpu));
      m.put("cpu_ms_zookeeper_close_to_first_lock", ms(zkCpu));
      m.put("new_leader_locks_loaded", load == null ? null : load.locks());
      m.put("locks_reported_by_new_leader", after.getLocks());
      m.put(
          "method",
          "election = the old leader's election znode deleted (ZooKeeper watch in the benchmark);"
              + " then ServerStatus is polled every 2 ms until leader=true, then a new node"
              + " joins (a write), opens a session and takes a NOQUEUE EX lock (a write) on a new"
              + " resource in "
              + busyLockspace
              + " (a lockspace holding locks: first lock), then one in a new lockspace; then"
              + " lists locks, which waits for the whole table");
      if (closeFailure.get() != null) {
        m.put("old_leader_close_error", closeFailure.get().toString());
      }
      say(
          "  election after %.0f ms; leader status after +%.0f ms, first lock (in %s) after +%.0f"
              + " ms, whole table listed after +%.0f ms (server reports table load %s ms)",
          ms(elected - closeAt),
          ms(statusAt - elected),
          busyLockspace,
          ms(lockedAt - elected),
          ms(listedAt - elected),
          load == null ? "?" : load.millis());

      long heap2 = usedHeapAfterGc();
      mem.put("heap_used_after_failover_mb", Samples.round(heap2 / 1048576.0));
      mem.put("bytes_per_lock_new_leader", Math.round((heap2 - heap0) / (double) locks));
      results.put("memory", mem);

      // What `dlmctl locks` does: the whole table, a page at a time (one message could not hold
      // it). After the heap figure, whose GC this garbage would disturb.
      long listAt = System.nanoTime();
      int listed = standbyClient.locks(null).size();
      long listMs = Math.round(ms(System.nanoTime() - listAt));
      m.put("list_all_resources", listed);
      m.put("list_all_ms", listMs);
      say("  listed all %d resources (every lock) in %d ms", listed, listMs);
    } finally {
      sessions.forEach(DlmSession::close);
      clients.forEach(DlmClient::close);
      standbyClient.close();
    }
    return m;
  }

  /** lockAsync with a bounded number in flight, round-robin over the sessions. */
  private void takeLocks(List<DlmSession> sessions, int locks) throws Exception {
    int window = 4096;
    Semaphore inFlight = new Semaphore(window);
    AtomicReference<Throwable> failure = new AtomicReference<>();
    LockOptions persistent =
        LockOptions.DEFAULT.withPersistent().withTimeout(Duration.ofSeconds(60));
    for (int i = 0; i < locks && failure.get() == null; i++) {
      if (!inFlight.tryAcquire(120, TimeUnit.SECONDS)) {
        throw new IllegalStateException("no lock answered within 120 s");
      }
      DlmSession s = sessions.get(i % sessions.size());
      String lockspace = "fo-" + (i % o.failoverLockspaces());
      s.lockAsync(lockspace, String.format(Locale.ROOT, "vol-%06d", i), LockMode.EX, persistent)
          .whenComplete(
              (l, e) -> {
                if (e != null) {
                  failure.compareAndSet(null, e);
                }
                inFlight.release();
              });
    }
    if (!inFlight.tryAcquire(window, 120, TimeUnit.SECONDS)) {
      throw new IllegalStateException("locks still unanswered after 120 s");
    }
    if (failure.get() != null) {
      throw new IllegalStateException("taking the locks failed: " + failure.get(), failure.get());
    }
  }

  private static long processCpuNanos() {
    return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
        .getProcessCpuTime();
  }

  private static double ms(long nanos) {
    return Samples.round(nanos / 1e6);
  }

  private static long usedHeapAfterGc() throws InterruptedException {
    MemoryMXBean mx = ManagementFactory.getMemoryMXBean();
    long least = Long.MAX_VALUE;
    for (int i = 0; i < 4; i++) {
      System.gc();
      TimeUnit.MILLISECONDS.sleep(100); // let reference processing settle between collections
      least = Math.min(least, mx.getHeapMemoryUsage().getUsed());
    }
    return least;
  }

  // ---------------------------------------------------------------- targets and report

  @SuppressWarnings("unchecked")
  private static Object get(Object root, String... path) {
    Object cur = root;
    for (String p : path) {
      if (!(cur instanceof Map<?, ?> m)) {
        return null;
      }
      cur = ((Map<String, Object>) m).get(p);
    }
    return cur;
  }

  private double num(String... path) {
    Object v = get(results, path);
    return v instanceof Number n ? n.doubleValue() : Double.NaN;
  }

  private void target(String name, double value, String op, double limit, String unit) {
    Map<String, Object> t = new LinkedHashMap<>();
    t.put("target", name);
    t.put("value", Double.isNaN(value) ? null : Samples.round2(value));
    t.put("limit", op + " " + limit + unit);
    // Judged on the value as shown (2 decimals), so the table never contradicts itself.
    double shown = Samples.round2(value);
    boolean pass = !Double.isNaN(value) && (op.equals("<=") ? shown <= limit : shown >= limit);
    t.put("result", Double.isNaN(value) ? "NOT RUN" : pass ? "PASS" : "MISS");
    targets.add(t);
  }

  private void evaluateTargets() {
    target(
        "uncontended acquire+release p50, dlm/curator",
        num("uncontended", "dlm", "p50_us") / num("uncontended", "curator", "p50_us"),
        "<=",
        1.0,
        "x");
    target(
        o.clients() + "-client distinct-resource throughput, dlm/curator",
        num("throughput_distinct", "dlm", "ops_per_s")
            / num("throughput_distinct", "curator", "ops_per_s"),
        ">=",
        5.0,
        "x");
    target(
        "hand-off p50, dlm / one bare ZooKeeper write p50",
        num("handoff", "dlm", "p50_us") / num("bare_zk_write", "one_write", "p50_us"),
        "<=",
        1.5,
        "x");
    // The issue calls the floor "a bare ZooKeeper write (create+delete)"; if that pair is meant
    // as the unit, this is the reading. Reported beside the strict one, never instead of it.
    target(
        "  same, against a bare create+delete pair (the lenient reading)",
        num("handoff", "dlm", "p50_us") / num("bare_zk_write", "create_delete_pair", "p50_us"),
        "<=",
        1.5,
        "x");
    // A hand-off's write follows the quiet of a queued waiter, and a write after 2 ms of quiet
    // costs more than one in a back-to-back loop (docs/benchmarks.md). Shown beside the strict
    // reading, never instead of it.
    target(
        "  same, against a bare write after 2 ms of quiet",
        num("handoff", "dlm", "p50_us") / num("bare_zk_write", "one_write_after_idle", "p50_us"),
        "<=",
        1.5,
        "x");
    target(
        "fail-over, "
            + o.failoverLocks()
            + " locks: election won -> first lock"
            + (o.failoverLocks() < 100_000 ? " (target is at 100000)" : ""),
        num("failover", "election_to_first_lock_granted_ms"),
        "<=",
        2000,
        " ms");
  }

  private void printTable() {
    String line = "-".repeat(100);
    say("");
    say("%s", line);
    say(
        "dlm-bench  %d CPUs, load average %s at start / %s at end; ZooKeeper %s in a child JVM,"
            + " fsync %s",
        Runtime.getRuntime().availableProcessors(),
        get(results, "environment", "load_average_at_start"),
        results.get("load_average_at_end"),
        ZooKeeperProcess.version().split("-")[0],
        o.zkFsync() ? "on" : "off");
    say(
        "           dlm-server and all clients in one JVM; %d clients over %d connections per"
            + " system; %d rounds",
        o.clients(), o.connections(), o.rounds());
    say("%s", line);
    say("%-50s %12s %12s %10s", "measurement", "dlm", "curator", "dlm/cur");
    row("uncontended acquire+release p50 (ms)", "uncontended", "p50_us", 1e-3);
    row("uncontended acquire+release p99 (ms)", "uncontended", "p99_us", 1e-3);
    subRow("  of which acquire p50 (ms)", "uncontended", "acquire", "p50_us", 1e-3);
    subRow("  of which release p50 (ms)", "uncontended", "release", "p50_us", 1e-3);
    say(
        "%-50s %12s %12s %10s",
        "  dlm, unlock() waiting until durable: p50 (ms)",
        fmt(num("uncontended", "dlm_unlock_waited", "p50_us") / 1e3),
        fmt(num("uncontended", "curator", "p50_us") / 1e3),
        fmt(
                num("uncontended", "dlm_unlock_waited", "p50_us")
                    / num("uncontended", "curator", "p50_us"))
            + "x");
    say(
        "%-50s %12s",
        "    of which release p50 (ms)",
        fmt(num("uncontended", "dlm_unlock_waited", "release", "p50_us") / 1e3));
    row(
        "throughput, " + o.clients() + " clients, distinct res. (ops/s)",
        "throughput_distinct",
        "ops_per_s",
        1);
    row("  ZooKeeper txns per acquire+release", "throughput_distinct", "zk_txns_per_pair", 1);
    row("  CPU per acquire+release, both JVMs (us)", "throughput_distinct", null, 1);
    row(
        "  gRPC echo floor (in the dlm column) (ops/s)",
        "grpc-floor",
        "throughput_distinct",
        "ops_per_s",
        1);
    row("    its CPU per pair, both JVMs (us)", "grpc-floor", "throughput_distinct", null, 1);
    row(
        "  the same, 1 round trip per pair (ops/s)",
        "grpc-floor-1rt",
        "throughput_distinct",
        "ops_per_s",
        1);
    row("    its CPU per pair, both JVMs (us)", "grpc-floor-1rt", "throughput_distinct", null, 1);
    row(
        "throughput, " + o.clients() + " clients, 1 shared res. (ops/s)",
        "throughput_shared",
        "ops_per_s",
        1);
    row("  ZooKeeper txns per acquire+release", "throughput_shared", "zk_txns_per_pair", 1);
    row("hand-off, release -> waiter granted p50 (ms)", "handoff", "p50_us", 1e-3);
    row("hand-off, release -> waiter granted p99 (ms)", "handoff", "p99_us", 1e-3);
    say(
        "%-50s %12s %12s",
        "dlm ServerStatus round trip p50 / p99 (ms)",
        fmt(num("dlm_floors", "server_status_rtt", "p50_us") / 1e3),
        fmt(num("dlm_floors", "server_status_rtt", "p99_us") / 1e3));
    say(
        "%-50s %12s %12s",
        "dlm engine round trip, no write p50 / p99 (ms)",
        fmt(num("dlm_floors", "engine_rtt_no_write", "p50_us") / 1e3),
        fmt(num("dlm_floors", "engine_rtt_no_write", "p99_us") / 1e3));
    say(
        "%-50s %12s %12s",
        "bare ZooKeeper write (one) p50 / p99 (ms)",
        fmt(num("bare_zk_write", "one_write", "p50_us") / 1e3),
        fmt(num("bare_zk_write", "one_write", "p99_us") / 1e3));
    say(
        "%-50s %12s %12s",
        "  after 2 ms of quiet p50 / p99 (ms)",
        fmt(num("bare_zk_write", "one_write_after_idle", "p50_us") / 1e3),
        fmt(num("bare_zk_write", "one_write_after_idle", "p99_us") / 1e3));
    say(
        "%-50s %12s %12s",
        "bare ZooKeeper create+delete p50 / p99 (ms)",
        fmt(num("bare_zk_write", "create_delete_pair", "p50_us") / 1e3),
        fmt(num("bare_zk_write", "create_delete_pair", "p99_us") / 1e3));
    say(
        "%-50s %12s",
        "fail-over, " + o.failoverLocks() + " locks: election -> lock in a loaded lockspace (ms)",
        fmt(num("failover", "election_to_first_lock_granted_ms")));
    say(
        "%-50s %12s",
        "  first lock in a new lockspace (ms)",
        fmt(num("failover", "election_to_lock_in_new_lockspace_ms")));
    say(
        "%-50s %12s",
        "  a listing, which waits for the whole table (ms)",
        fmt(num("failover", "election_to_listing_of_whole_table_ms")));
    say(
        "%-50s %12s",
        "  new leader's own table-load time (ms)",
        fmt(num("failover", "new_leader_load_ms_reported")));
    say("%-50s %12s", "listing every lock, in pages (ms)", fmt(num("failover", "list_all_ms")));
    say("%-50s %12s", "memory: heap bytes per held lock", fmt(num("memory", "bytes_per_lock")));
    say("%s", line);
    say("%-66s %10s %12s  %s", "target (issue 3)", "value", "limit", "result");
    for (Map<String, Object> t : targets) {
      say(
          "%-66s %10s %12s  %s",
          t.get("target"),
          t.get("value") == null ? "-" : t.get("value"),
          t.get("limit"),
          t.get("result"));
    }
    say("%s", line);
    double floor = num("throughput_distinct", "grpc-floor", "ops_per_s");
    double floor1 = num("throughput_distinct", "grpc-floor-1rt", "ops_per_s");
    if (!Double.isNaN(floor) && !Double.isNaN(floor1)) {
      say(
          "gRPC floors, distinct resources: an echo service with no lock logic reaches %sx"
              + " Curator's throughput here with 2 stream round trips per pair, %sx with 1 (as"
              + " dlm, whose asynchronous release travels with the next acquire); dlm reaches %s"
              + " of the latter",
          fmt(floor / num("throughput_distinct", "curator", "ops_per_s")),
          fmt(floor1 / num("throughput_distinct", "curator", "ops_per_s")),
          fmt(num("throughput_distinct", "dlm", "ops_per_s") / floor1));
    }
    Object engine = get(results, "throughput_distinct", "dlm", "engine");
    if (engine instanceof Map<?, ?> e && e.containsKey("samples")) {
      say(
          "dlm engine thread, distinct-resource throughput: idle %s, in ZooKeeper multi %s,"
              + " working %s of samples; CPU %s",
          e.get("idle_share"),
          e.get("zookeeper_share"),
          e.get("working_share"),
          e.get("engine_cpu_share"));
    }
    if (get(results, "memory", "growth_by_class") instanceof List<?> l) {
      say("heap growth with the locks, by class (top 5 of %d in the JSON):", l.size());
      l.stream().limit(5).forEach(x -> say("  %s", x));
    }
  }

  private void subRow(String label, String key, String sub, String field, double scale) {
    double d = num(key, "dlm", sub, field) * scale;
    double c = num(key, "curator", sub, field) * scale;
    say("%-50s %12s %12s %10s", label, fmt(d), fmt(c), fmt(d / c) + "x");
  }

  /** A dlm/curator row; a null field means CPU per pair, bench JVM plus ZooKeeper. */
  private void row(String label, String key, String field, double scale) {
    row(label, "dlm", key, field, scale);
  }

  /** {@code system}'s figure beside Curator's; {@code field} null: CPU per pair, both JVMs. */
  private void row(String label, String system, String key, String field, double scale) {
    double d = field == null ? cpuPerPair(key, system) : num(key, system, field) * scale;
    double c = field == null ? cpuPerPair(key, "curator") : num(key, "curator", field) * scale;
    say("%-50s %12s %12s %10s", label, fmt(d), fmt(c), fmt(d / c) + "x");
  }

  /** CPU per acquire+release of {@code system} in window {@code key}: bench JVM plus ZooKeeper. */
  private double cpuPerPair(String key, String system) {
    return num(key, system, "cpu_us_per_pair_bench_jvm")
        + num(key, system, "cpu_us_per_pair_zookeeper");
  }

  private static String fmt(double v) {
    if (Double.isNaN(v) || Double.isInfinite(v)) {
      return "-";
    }
    if (Math.abs(v) >= 1000) {
      return String.format(Locale.ROOT, "%,.0f", v);
    }
    if (Math.abs(v) >= 10) {
      return String.format(Locale.ROOT, "%.1f", v);
    }
    return String.format(Locale.ROOT, "%.2f", v);
  }
}
