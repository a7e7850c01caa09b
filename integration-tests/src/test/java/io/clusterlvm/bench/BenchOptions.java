package io.clusterlvm.bench;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * What one benchmark run does, parsed once from the command line. {@code --quick} only changes the
 * defaults; explicit options still win, whatever their order.
 */
record BenchOptions(
    boolean quick,
    Path out,
    int clients,
    int connections,
    boolean zkFsync,
    int warmupIterations,
    int latencyIterations,
    Duration throughputWarmup,
    Duration throughputDuration,
    int handoffIterations,
    int zkWriteIterations,
    int failoverLocks,
    int failoverLockspaces,
    int failoverSessions,
    int rounds,
    Set<String> phases,
    boolean verbose) {

  static final List<String> ALL_PHASES =
      List.of("uncontended", "throughput", "handoff", "zkwrite", "failover");

  private static final Set<String> VALUED =
      Set.of(
          "--out",
          "--clients",
          "--connections",
          "--zk-fsync",
          "--rounds",
          "--warmup-iterations",
          "--iterations",
          "--throughput-warmup",
          "--duration",
          "--handoff-iterations",
          "--zk-write-iterations",
          "--failover-locks",
          "--failover-lockspaces",
          "--failover-sessions",
          "--phases");

  static final String USAGE =
      """
      usage: dlm-bench [options]

      Starts a ZooKeeper (a child JVM on 127.0.0.1, data in a temp dir) and one dlm-server
      (in this JVM), and measures the DLM against Curator's InterProcessMutex on the same
      ZooKeeper. Prints a table and writes JSON.

        --quick                    short run (under a minute): fewer iterations, shorter windows
        --out PATH                 JSON results (default target/bench-results.json)
        --clients N                concurrent clients in the throughput phases (default 64)
        --connections N            connections the clients share: DlmClients (gRPC channels)
                                   for ours, CuratorFrameworks (ZooKeeper sessions) for Curator
                                   (default: one per client)
        --zk-fsync true|false      ZooKeeper fsyncs its transaction log (default true,
                                   as in production)
        --rounds N                 the measurements run in N interleaved rounds, so that a machine
                                   getting busier or quieter weighs on both systems alike
                                   (default 5; --quick 2)
        --warmup-iterations N      untimed acquire+release pairs before a latency measurement
        --iterations N             timed pairs of the uncontended latency, per system
        --throughput-warmup SEC    untimed seconds before each throughput window
        --duration SEC             measured seconds per system and throughput case, split
                                   over the rounds
        --handoff-iterations N     timed hand-offs per system
        --zk-write-iterations N    timed create+delete pairs of the bare-ZooKeeper floor
        --failover-locks N         persistent locks held during the fail-over (default 100000;
                                   --quick 20000)
        --failover-lockspaces N    lockspaces they are spread over (default 100)
        --failover-sessions N      sessions that take them (default 16)
        --phases LIST              comma-separated subset of %s
        --verbose                  keep the servers' INFO logging
        --help
      """
          .formatted(String.join(",", ALL_PHASES));

  static BenchOptions parse(String[] args) {
    Map<String, String> given = new LinkedHashMap<>();
    boolean quick = false;
    boolean verbose = false;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      switch (a) {
        case "--quick" -> quick = true;
        case "--verbose" -> verbose = true;
        case "--help", "-h" -> throw new UsageException(null);
        default -> {
          if (!a.startsWith("--")) {
            throw new UsageException("unexpected argument: " + a);
          }
          String key = a;
          String value;
          int eq = a.indexOf('=');
          if (eq > 0) {
            key = a.substring(0, eq);
          }
          if (!VALUED.contains(key)) {
            throw new UsageException("unknown option " + key);
          }
          if (eq > 0) {
            value = a.substring(eq + 1);
          } else if (i + 1 < args.length) {
            value = args[++i];
          } else {
            throw new UsageException(a + " needs a value");
          }
          given.put(key, value);
        }
      }
    }
    int clients = intOpt(given, "--clients", 64);
    Set<String> phases = new LinkedHashSet<>();
    for (String p : given.getOrDefault("--phases", String.join(",", ALL_PHASES)).split(",")) {
      String name = p.trim();
      if (!ALL_PHASES.contains(name)) {
        throw new UsageException("unknown phase " + name + "; use some of " + ALL_PHASES);
      }
      phases.add(name);
    }
    BenchOptions o =
        new BenchOptions(
            quick,
            Path.of(given.getOrDefault("--out", "target/bench-results.json")),
            clients,
            intOpt(given, "--connections", clients),
            boolOpt(given, "--zk-fsync", true),
            intOpt(given, "--warmup-iterations", quick ? 100 : 1_000),
            intOpt(given, "--iterations", quick ? 300 : 3_000),
            Duration.ofSeconds(intOpt(given, "--throughput-warmup", quick ? 1 : 2)),
            Duration.ofSeconds(intOpt(given, "--duration", quick ? 2 : 15)),
            intOpt(given, "--handoff-iterations", quick ? 40 : 400),
            intOpt(given, "--zk-write-iterations", quick ? 300 : 3_000),
            intOpt(given, "--failover-locks", quick ? 20_000 : 100_000),
            intOpt(given, "--failover-lockspaces", 100),
            intOpt(given, "--failover-sessions", 16),
            intOpt(given, "--rounds", quick ? 2 : 5),
            phases,
            verbose);
    List<String> bad = new ArrayList<>();
    if (o.clients < 1 || o.connections < 1 || o.connections > o.clients) {
      bad.add("need 1 <= --connections <= --clients");
    }
    if (o.latencyIterations < 1 || o.handoffIterations < 1 || o.zkWriteIterations < 1) {
      bad.add("iteration counts must be at least 1");
    }
    if (o.throughputDuration.isZero()) {
      bad.add("--duration must be at least 1 s");
    }
    if (o.rounds < 1) {
      bad.add("--rounds must be at least 1");
    }
    if (o.failoverLocks < 1 || o.failoverLockspaces < 1 || o.failoverSessions < 1) {
      bad.add("--failover-locks, --failover-lockspaces and --failover-sessions must be >= 1");
    }
    if (!bad.isEmpty()) {
      throw new UsageException(String.join("; ", bad));
    }
    return o;
  }

  private static int intOpt(Map<String, String> given, String key, int dflt) {
    String v = given.remove(key);
    if (v == null) {
      return dflt;
    }
    try {
      return Integer.parseInt(v.replace("_", ""));
    } catch (NumberFormatException e) {
      throw new UsageException(key + " needs a whole number, not " + v);
    }
  }

  private static boolean boolOpt(Map<String, String> given, String key, boolean dflt) {
    String v = given.remove(key);
    if (v == null) {
      return dflt;
    }
    return switch (v) {
      case "true", "yes", "on" -> true;
      case "false", "no", "off" -> false;
      default -> throw new UsageException(key + " needs true or false, not " + v);
    };
  }

  boolean runs(String phase) {
    return phases.contains(phase);
  }

  Map<String, Object> toMap() {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("quick", quick);
    m.put("clients", clients);
    m.put("connections", connections);
    m.put("zk_fsync", zkFsync);
    m.put("warmup_iterations", warmupIterations);
    m.put("latency_iterations", latencyIterations);
    m.put("throughput_warmup_s", throughputWarmup.toSeconds());
    m.put("throughput_duration_s", throughputDuration.toSeconds());
    m.put("handoff_iterations", handoffIterations);
    m.put("zk_write_iterations", zkWriteIterations);
    m.put("failover_locks", failoverLocks);
    m.put("failover_lockspaces", failoverLockspaces);
    m.put("failover_sessions", failoverSessions);
    m.put("rounds", rounds);
    m.put("phases", List.copyOf(phases));
    return m;
  }

  /** A bad command line; a null message asks for the usage text alone. */
  static final class UsageException extends RuntimeException {
    UsageException(String message) {
      super(message);
    }
  }
}
