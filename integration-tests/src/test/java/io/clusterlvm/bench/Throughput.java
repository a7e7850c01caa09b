package io.clusterlvm.bench;

import io.clusterlvm.testing.ZooKeeperProcess;
import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.LockSupport;

/**
 * {@code clients} threads, each with its own client, acquire and release in a loop, each on its own
 * resource (distinct) or all on one (shared). After a warm-up, the pairs completed within the
 * window are counted. Windows of several rounds add up.
 *
 * <p>ZooKeeper write transactions in the window are counted from the zxids of two probe znodes
 * (every write transaction, a multi included, takes exactly one zxid), which shows whether group
 * commit works: without it, an uncontended acquire+release costs two transactions.
 */
final class Throughput {
  /** Creates a probe znode and returns its zxid. */
  @FunctionalInterface
  interface ZxidProbe {
    long zxid() throws Exception;
  }

  private final LockSystem system;
  private final boolean shared;
  private final ZooKeeperProcess zk;
  private final ZxidProbe zxid;
  private final List<LockSystem.Worker> workers = new ArrayList<>();
  private final Samples samples = new Samples();
  private final EngineProbe.Tally engine = new EngineProbe.Tally();
  private long windowNanos;
  private long txns;
  private long jvmCpuNanos;
  private long zkCpuNanos;

  Throughput(LockSystem system, boolean shared, int clients, ZooKeeperProcess zk, ZxidProbe zxid)
      throws Exception {
    this.system = system;
    this.shared = shared;
    this.zk = zk;
    this.zxid = zxid;
    for (int i = 0; i < clients; i++) {
      workers.add(system.worker(i, shared ? "shared" : "distinct-" + i));
    }
  }

  String label() {
    return "throughput, "
        + system.name()
        + ", "
        + workers.size()
        + " clients on "
        + (shared ? "1 shared resource" : workers.size() + " distinct resources");
  }

  String[] key() {
    return new String[] {shared ? "throughput_shared" : "throughput_distinct", system.name()};
  }

  /** One warm-up and one measured window. */
  void run(Duration warmup, Duration window) throws Exception {
    int n = workers.size();
    AtomicInteger threadNo = new AtomicInteger();
    ExecutorService pool =
        Executors.newFixedThreadPool(
            n,
            r -> {
              Thread t = new Thread(r, "bench-client-" + threadNo.getAndIncrement());
              t.setDaemon(true);
              return t;
            });
    long start = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(100);
    long measureStart = start + warmup.toNanos();
    long measureEnd = measureStart + window.toNanos();
    List<Future<Samples>> futures = new ArrayList<>();
    for (LockSystem.Worker w : workers) {
      futures.add(
          pool.submit(
              () -> {
                Samples mine = new Samples();
                parkUntil(start);
                while (System.nanoTime() < measureEnd) {
                  long t0 = System.nanoTime();
                  w.acquire();
                  w.release();
                  long t1 = System.nanoTime();
                  if (t1 >= measureStart && t1 <= measureEnd) {
                    mine.add(t1 - t0);
                  }
                }
                return mine;
              }));
    }
    try {
      parkUntil(measureStart);
      long zxid0 = zxid.zxid();
      long jvm0 = processCpuNanos();
      long zk0 = zk.cpuNanos();
      EngineProbe probe = EngineProbe.start(engine);
      try {
        parkUntil(measureEnd);
      } finally {
        probe.close();
      }
      long zxid1 = zxid.zxid();
      jvmCpuNanos += processCpuNanos() - jvm0;
      zkCpuNanos += zk.cpuNanos() - zk0;
      txns += zxid1 - zxid0 - 1;
      windowNanos += window.toNanos();
      long giveUpAt = measureEnd + TimeUnit.SECONDS.toNanos(90);
      for (Future<Samples> f : futures) {
        samples.addAll(f.get(Math.max(1, giveUpAt - System.nanoTime()), TimeUnit.NANOSECONDS));
      }
      system.settle();
    } finally {
      pool.shutdownNow();
      pool.awaitTermination(30, TimeUnit.SECONDS);
    }
  }

  private static void parkUntil(long deadline) {
    long wait;
    while ((wait = deadline - System.nanoTime()) > 0) {
      LockSupport.parkNanos(wait);
    }
  }

  private static long processCpuNanos() {
    return ((com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean())
        .getProcessCpuTime();
  }

  Map<String, Object> summary() {
    int pairs = samples.size();
    double seconds = windowNanos / 1e9;
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("ops_per_s", seconds == 0 ? null : Samples.round(pairs / seconds));
    m.put("pairs", pairs);
    m.put("window_s", Samples.round(seconds));
    m.put("pair_latency", samples.summary());
    m.put("zk_txns", txns);
    m.put("zk_txns_per_pair", pairs == 0 ? null : Samples.round2((double) txns / pairs));
    m.put(
        "cpu_us_per_pair_bench_jvm", pairs == 0 ? null : Samples.round(jvmCpuNanos / 1e3 / pairs));
    m.put("cpu_us_per_pair_zookeeper", pairs == 0 ? null : Samples.round(zkCpuNanos / 1e3 / pairs));
    m.put(
        "machine_cpu_busy_share",
        windowNanos == 0
            ? null
            : Samples.round2(
                (jvmCpuNanos + zkCpuNanos)
                    / (windowNanos * (double) Runtime.getRuntime().availableProcessors())));
    if (system.name().equals("dlm")) {
      m.put("engine", engine.summary());
    }
    return m;
  }
}
