package io.clusterlvm.it.fence;

import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.recipes.cache.CuratorCache;
import org.apache.curator.framework.recipes.cache.CuratorCacheListener;

/**
 * {@code bin/fence-bench}: how long a survivor waits for a lock held by a host that dies, from the
 * host's death (kill -9 of all its processes) to the survivor's grant, split into:
 *
 * <ul>
 *   <li>detection: death until the fencer records the node FAILED (the agent's ZooKeeper session
 *       must expire: about the session timeout);
 *   <li>post-fail: FAILED until FENCING (post_fail_delay, 0 here);
 *   <li>fence agent: FENCING until FENCED (the real fence_ipmilan against an ipmi_sim BMC: off,
 *       then status OFF);
 *   <li>hand-off: FENCED until the survivor's grant (purge of the dead incarnation's locks, the
 *       grant, its reply).
 * </ul>
 *
 * <p>The same parts as the integration tests: ZooKeeper and dlm-server in this JVM, two clvm-agent
 * processes, the dead host's lock held by a {@code dlmctl lock} process. After each run the victim
 * comes back with a new boot id. Times are taken in this JVM with {@link System#nanoTime()}; the
 * fence states are seen through a ZooKeeper watch on the node's record (a state that lasted less
 * than the watch's round trip may be seen late, and then counts as zero).
 */
public final class FailoverToGrantBench {
  private static final String LS = "vg_shared";
  private static final String RES = "VGLK";

  /** One run, in milliseconds. */
  record Run(
      int run,
      long incarnation,
      double detection,
      double postFail,
      double fenceAgent,
      double handoff,
      double total,
      long agentRunsMillis,
      long tokenBefore,
      long tokenAfter) {}

  public static void main(String[] args) throws Exception {
    int runs = 5;
    Duration zkSession = Duration.ofSeconds(3);
    Duration grace = null;
    Path json = null;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--runs" -> runs = Integer.parseInt(args[++i]);
        case "--zk-session-timeout" -> zkSession = parse(args[++i]);
        case "--session-end-grace" -> grace = parse(args[++i]);
        case "--json" -> json = Path.of(args[++i]);
        case "-h", "--help" -> {
          System.out.println(
              "usage: fence-bench [--runs N] [--zk-session-timeout 3s] [--session-end-grace 2x]"
                  + " [--json FILE]");
          return;
        }
        default -> throw new IllegalArgumentException("unknown option " + args[i]);
      }
    }
    if (grace == null) {
      grace = zkSession.multipliedBy(2);
    }
    List<Run> results = bench(runs, zkSession, grace);
    print(System.out, results, zkSession, grace);
    String j = json(results, zkSession, grace);
    System.out.println(j);
    if (json != null) {
      Files.writeString(json, j);
    }
    System.exit(0);
  }

  private static Duration parse(String s) {
    if (s.endsWith("ms")) {
      return Duration.ofMillis(Long.parseLong(s.substring(0, s.length() - 2)));
    }
    if (s.endsWith("s")) {
      return Duration.ofMillis((long) (Double.parseDouble(s.substring(0, s.length() - 1)) * 1000));
    }
    throw new IllegalArgumentException("not a duration (e.g. 3s, 500ms): " + s);
  }

  static List<Run> bench(int runs, Duration zkSession, Duration grace) throws Exception {
    List<Run> out = new ArrayList<>();
    try (FenceCluster cluster =
        FenceCluster.start(Path.of("target", "fence-bench"), zkSession, grace)) {
      HostBmc bmc1 = cluster.bmc("tpve01");
      HostBmc bmc2 = cluster.bmc("tpve02");
      Path conf =
          cluster.writeFile(
              "cluster.conf",
              new ClusterConfXml("tpve", 1)
                  .fenceDaemon(0, 0)
                  .ipmiDevice(
                      "tpve01", bmc1, bmc1.writePasswordScript(cluster.dir().resolve("pw01")))
                  .ipmiDevice(
                      "tpve02", bmc2, bmc2.writePasswordScript(cluster.dir().resolve("pw02")))
                  .node("tpve01", 1, ClusterConfXml.method("power", "tpve01"))
                  .node("tpve02", 2, ClusterConfXml.method("power", "tpve02"))
                  .xml());
      SimulatedHost survivor = cluster.host("tpve01").poweredBy(bmc1);
      SimulatedHost victim = cluster.host("tpve02").poweredBy(bmc2);
      survivor.startAgent("boot-tpve01-1", conf);
      long survivorIncarnation = survivor.awaitMember(0);
      await("tpve01 is the fencer")
          .atMost(Duration.ofSeconds(30))
          .until(() -> cluster.fencer().orElse(""), "tpve01"::equals);
      String recordPath = FenceCluster.ZK_ROOT + "/fence/nodes/" + victim.name();

      long incarnation = 0;
      for (int i = 1; i <= runs; i++) {
        victim.startAgent("boot-tpve02-" + i, conf);
        incarnation = victim.awaitMember(incarnation);
        SimulatedHost.HeldLock held = victim.holdLock(LS, RES, "EX");
        long inc = incarnation;
        Map<FenceState, Long> seen = new EnumMap<>(FenceState.class);
        try (CuratorCache watch = CuratorCache.build(cluster.curator(), recordPath);
            DlmSession s = cluster.client().openSession("tpve01", survivorIncarnation, "bench")) {
          watch
              .listenable()
              .addListener(
                  CuratorCacheListener.builder()
                      .forCreatesAndChanges(
                          (o, n) -> {
                            long now = System.nanoTime();
                            try {
                              FenceNodeRecord r = FenceNodeRecord.parseFrom(n.getData());
                              if (r.getIncarnation() == inc) {
                                synchronized (seen) {
                                  seen.putIfAbsent(r.getState(), now);
                                }
                              }
                            } catch (Exception e) {
                              // not a record
                            }
                          })
                      .build());
          watch.start();
          CompletableFuture<Lock> lock = s.lockAsync(LS, RES, LockMode.EX, LockOptions.DEFAULT);
          CompletableFuture<Long> grantedAt = lock.thenApply(l -> System.nanoTime());
          long died = victim.crash();
          long granted = grantedAt.get(120, TimeUnit.SECONDS);
          Lock l = lock.get();
          s.unlock(l);
          Map<FenceState, Long> t;
          synchronized (seen) {
            t = new EnumMap<>(seen);
          }
          // A state seen late (or not at all) took no time of its own: use the next one seen.
          long fenced = t.getOrDefault(FenceState.FENCED, granted);
          long fencing = Math.min(t.getOrDefault(FenceState.FENCING, fenced), fenced);
          long failed = Math.min(t.getOrDefault(FenceState.FAILED, fencing), fencing);
          long agentMillis =
              cluster.history(victim.name()).stream()
                  .filter(e -> e.getEvent().equals("agent") && e.getIncarnation() == inc)
                  .mapToLong(FenceEvent::getDurationMillis)
                  .sum();
          Run r =
              new Run(
                  i,
                  inc,
                  ms(failed - died),
                  ms(fencing - failed),
                  ms(fenced - fencing),
                  ms(granted - fenced),
                  ms(granted - died),
                  agentMillis,
                  held.token(),
                  l.fencingToken());
          out.add(r);
          System.err.printf(
              Locale.ROOT,
              "run %d: %.0f ms from death to grant (detection %.0f, fence agent %.0f, hand-off"
                  + " %.0f)%n",
              i,
              r.total(),
              r.detection(),
              r.fenceAgent(),
              r.handoff());
        }
      }
    }
    return out;
  }

  private static double ms(long nanos) {
    return nanos / 1e6;
  }

  static void print(PrintStream o, List<Run> runs, Duration zkSession, Duration grace) {
    o.printf(
        "%nhost death -> survivor's grant (real fence_ipmilan via ipmi_sim; ZooKeeper session"
            + " timeout %d ms, session-end grace %d ms, post_fail_delay 0)%n%n",
        zkSession.toMillis(), grace.toMillis());
    o.printf(
        "%-6s %11s %10s %12s %9s %9s %14s%n",
        "run", "detection", "post-fail", "fence-agent", "hand-off", "total", "agent runs*");
    for (Run r : runs) {
      o.printf(
          Locale.ROOT,
          "%-6d %9.0fms %8.0fms %10.0fms %7.0fms %7.0fms %12dms%n",
          r.run(),
          r.detection(),
          r.postFail(),
          r.fenceAgent(),
          r.handoff(),
          r.total(),
          r.agentRunsMillis());
    }
    for (String stat : List.of("min", "median", "max")) {
      o.printf(
          Locale.ROOT,
          "%-6s %9.0fms %8.0fms %10.0fms %7.0fms %7.0fms %12.0fms%n",
          stat,
          stat(runs, Run::detection, stat),
          stat(runs, Run::postFail, stat),
          stat(runs, Run::fenceAgent, stat),
          stat(runs, Run::handoff, stat),
          stat(runs, Run::total, stat),
          stat(runs, r -> (double) r.agentRunsMillis(), stat));
    }
    o.println(
        "* agent runs: the fence_ipmilan runs themselves (off + status), as timed by the fencer");
    o.println();
  }

  private static double stat(List<Run> runs, java.util.function.ToDoubleFunction<Run> f, String s) {
    double[] v = runs.stream().mapToDouble(f).sorted().toArray();
    return switch (s) {
      case "min" -> v[0];
      case "max" -> v[v.length - 1];
      default -> v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
    };
  }

  static String json(List<Run> runs, Duration zkSession, Duration grace) {
    StringBuilder b = new StringBuilder();
    b.append("{\"benchmark\": \"failover-to-grant\", \"zk_session_timeout_ms\": ")
        .append(zkSession.toMillis())
        .append(", \"session_end_grace_ms\": ")
        .append(grace.toMillis())
        .append(", \"fence_agent\": \"fence_ipmilan\", \"runs\": [");
    for (int i = 0; i < runs.size(); i++) {
      Run r = runs.get(i);
      b.append(i == 0 ? "\n  " : ",\n  ")
          .append(
              String.format(
                  Locale.ROOT,
                  "{\"run\": %d, \"incarnation\": %d, \"detection_ms\": %.1f, \"post_fail_ms\":"
                      + " %.1f, \"fence_agent_ms\": %.1f, \"handoff_ms\": %.1f, \"total_ms\": %.1f,"
                      + " \"agent_runs_ms\": %d, \"token_before\": %d, \"token_after\": %d}",
                  r.run(),
                  r.incarnation(),
                  r.detection(),
                  r.postFail(),
                  r.fenceAgent(),
                  r.handoff(),
                  r.total(),
                  r.agentRunsMillis(),
                  r.tokenBefore(),
                  r.tokenAfter()));
    }
    b.append("\n], \"median\": {");
    b.append(
        String.format(
            Locale.ROOT,
            "\"detection_ms\": %.1f, \"post_fail_ms\": %.1f, \"fence_agent_ms\": %.1f,"
                + " \"handoff_ms\": %.1f, \"total_ms\": %.1f}}",
            stat(runs, Run::detection, "median"),
            stat(runs, Run::postFail, "median"),
            stat(runs, Run::fenceAgent, "median"),
            stat(runs, Run::handoff, "median"),
            stat(runs, Run::total, "median")));
    return b.toString();
  }

  private FailoverToGrantBench() {}
}
