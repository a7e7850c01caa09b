package io.clusterlvm.clvm.agent;

import io.clusterlvm.clvm.lvm.LvmResult;
import io.clusterlvm.clvm.lvm.LvmRunner;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.clvm.rpc.ClvmClient;
import io.clusterlvm.testing.LoopVolumeGroup;
import io.clusterlvm.testing.SimulatedLvmHost;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * {@code bin/clvm-bench}: what coordination costs per command. On one loop device, the same host
 * runs lvcreate + lvremove of a 4 MiB LV {@code N} times three ways:
 *
 * <ol>
 *   <li>bare lvm (no cluster lock at all: the uncoordinated baseline);
 *   <li>through the clvm-agent's gRPC API on its unix socket (VG lock EX and LV activation lock
 *       from a real dlm-server, the metadata-change log, the seqno into the value block);
 *   <li>through {@code bin/clvm} as a process, as an operator or script runs it (adds a JVM start).
 * </ol>
 *
 * Prints mean / p50 / p95 per command and the ratio to bare lvm. Not a test: a report.
 */
public final class ClvmBench {

  private record Sample(String path, String command, double millis) {}

  public static void main(String[] args) throws Exception {
    int iterations = 50;
    int wrapperIterations = 10;
    int warmup = 5;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--iterations", "-n" -> iterations = Integer.parseInt(args[++i]);
        case "--wrapper-iterations" -> wrapperIterations = Integer.parseInt(args[++i]);
        case "--warmup" -> warmup = Integer.parseInt(args[++i]);
        case "--help", "-h" -> {
          System.out.println(
              "Usage: clvm-bench [--iterations N (50)] [--wrapper-iterations M (10)] [--warmup W (5)]\n"
                  + "Runs lvcreate+lvremove on a loop device: bare lvm, via the clvm-agent's API,\n"
                  + "and via bin/clvm as a process; prints mean/p50/p95 and the overhead ratio.\n"
                  + "Needs root, lvm2 and loop devices; starts its own ZooKeeper and dlm-server.");
          return;
        }
        default -> {
          System.err.println("clvm-bench: unknown argument " + args[i] + " (try --help)");
          System.exit(64);
        }
      }
    }
    try {
      LoopVolumeGroup.assumeAvailable();
    } catch (RuntimeException e) {
      System.err.println("clvm-bench: " + e.getMessage());
      System.exit(69);
    }
    String vg = "vg_bench";
    List<Sample> samples = new ArrayList<>();
    Map<String, double[]> agentSplit = new LinkedHashMap<>();
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("bench-host");
      SimulatedLvmHost host = cluster.lvmHost("bench-host");
      LvmRunner bare =
          LvmRunner.builder()
              .hostName("bench-host")
              .lvmBinary(LoopVolumeGroup.lvmBinary())
              .environment(host.environment())
              .build();
      ClvmClient client = cluster.client("bench-host");

      for (int i = 0; i < warmup; i++) {
        check(bare.run("lvcreate", List.of("-n", "warm-" + i, "-L", "4M", vg)));
        check(bare.run("lvremove", List.of("-y", vg + "/warm-" + i)));
        check(cluster.run("bench-host", "lvcreate", "-n", "warm-" + i, "-L", "4M", vg));
        check(cluster.run("bench-host", "lvremove", "-y", vg + "/warm-" + i));
      }

      double[] lockMs = new double[2];
      double[] lvmMs = new double[2];
      for (int i = 0; i < iterations; i++) {
        String lv = "b-" + i;
        samples.add(
            timed(
                "bare lvm",
                "lvcreate",
                () -> check(bare.run("lvcreate", List.of("-n", lv, "-L", "4M", vg)))));
        samples.add(
            timed(
                "bare lvm",
                "lvremove",
                () -> check(bare.run("lvremove", List.of("-y", vg + "/" + lv)))));
        String alv = "a-" + i;
        RunCommandResponse[] r = new RunCommandResponse[1];
        samples.add(
            timed(
                "clvm-agent API",
                "lvcreate",
                () ->
                    r[0] =
                        check(cluster.run("bench-host", "lvcreate", "-n", alv, "-L", "4M", vg))));
        lockMs[0] += r[0].getLockWaitNanos() / 1e6;
        lvmMs[0] += r[0].getLvmNanos() / 1e6;
        samples.add(
            timed(
                "clvm-agent API",
                "lvremove",
                () -> r[0] = check(cluster.run("bench-host", "lvremove", "-y", vg + "/" + alv))));
        lockMs[1] += r[0].getLockWaitNanos() / 1e6;
        lvmMs[1] += r[0].getLvmNanos() / 1e6;
      }
      agentSplit.put("lvcreate", new double[] {lockMs[0] / iterations, lvmMs[0] / iterations});
      agentSplit.put("lvremove", new double[] {lockMs[1] / iterations, lvmMs[1] / iterations});

      // As installed (built jar, CDS archive) when built; else with the test classpath.
      boolean built =
          java.nio.file.Files.isDirectory(java.nio.file.Path.of("target/lib"))
              && java.nio.file.Files.list(java.nio.file.Path.of("target"))
                  .anyMatch(p -> p.getFileName().toString().matches("clvm-agent-.*\\.jar"));
      if (built) {
        check(cluster.clvm(false, "bench-host", "clvm", "vgs", vg)); // writes the CDS archive
      }
      for (int i = 0; i < wrapperIterations; i++) {
        String lv = "w-" + i;
        samples.add(
            timed(
                "bin/clvm process",
                "lvcreate",
                () ->
                    check(
                        cluster.clvm(!built, "bench-host", "lvcreate", "-n", lv, "-L", "4M", vg))));
        samples.add(
            timed(
                "bin/clvm process",
                "lvremove",
                () -> check(cluster.clvm(!built, "bench-host", "lvremove", "-y", vg + "/" + lv))));
      }
    }
    System.out.println(table(samples, iterations, wrapperIterations, agentSplit));
  }

  @FunctionalInterface
  private interface Work {
    void run() throws Exception;
  }

  private static Sample timed(String path, String command, Work work) throws Exception {
    long start = System.nanoTime();
    work.run();
    return new Sample(path, command, (System.nanoTime() - start) / 1e6);
  }

  private static LvmResult check(LvmResult r) {
    if (!r.succeeded()) {
      throw new IllegalStateException(r + "\n" + r.stderr());
    }
    return r;
  }

  private static RunCommandResponse check(RunCommandResponse r) {
    if (r.getExitCode() != 0) {
      throw new IllegalStateException(
          "exit " + r.getExitCode() + ": " + r.getStderr().toStringUtf8());
    }
    return r;
  }

  private static ClvmTestCluster.Run check(ClvmTestCluster.Run r) {
    if (r.exitCode() != 0) {
      throw new IllegalStateException("clvm exit " + r.exitCode() + ": " + r.stderr());
    }
    return r;
  }

  static String table(List<Sample> samples, int n, int wrapperN, Map<String, double[]> agentSplit) {
    StringBuilder s = new StringBuilder();
    s.append(
        String.format(
            Locale.ROOT,
            "clvm-bench: lvcreate + lvremove of a 4 MiB LV on one loop device, %d iterations"
                + " (%d through bin/clvm)%n%n",
            n,
            wrapperN));
    String f = "%-18s %-9s %5s %9s %9s %9s %8s%n";
    s.append(
        String.format(
            Locale.ROOT, f, "path", "command", "n", "mean ms", "p50 ms", "p95 ms", "x bare"));
    Map<String, Double> bareMean = new LinkedHashMap<>();
    Map<String, Double> pairMean = new LinkedHashMap<>();
    for (String path : List.of("bare lvm", "clvm-agent API", "bin/clvm process")) {
      double pair = 0;
      for (String command : List.of("lvcreate", "lvremove")) {
        double[] ms =
            samples.stream()
                .filter(x -> x.path().equals(path) && x.command().equals(command))
                .mapToDouble(Sample::millis)
                .sorted()
                .toArray();
        if (ms.length == 0) {
          continue;
        }
        double mean = java.util.Arrays.stream(ms).average().orElse(0);
        pair += mean;
        if (path.equals("bare lvm")) {
          bareMean.put(command, mean);
        }
        double ratio = mean / bareMean.getOrDefault(command, mean);
        s.append(
            String.format(
                Locale.ROOT,
                "%-18s %-9s %5d %9.1f %9.1f %9.1f %7.2fx%n",
                path,
                command,
                ms.length,
                mean,
                percentile(ms, 50),
                percentile(ms, 95),
                ratio));
      }
      pairMean.put(path, pair);
    }
    double bare = pairMean.get("bare lvm");
    s.append('\n');
    pairMean.forEach(
        (path, mean) ->
            s.append(
                String.format(
                    Locale.ROOT,
                    "%-18s lvcreate+lvremove %8.1f ms  overhead ratio %.2fx (+%.1f ms)%n",
                    path,
                    mean,
                    mean / bare,
                    mean - bare)));
    s.append("\nclvm-agent API, where the time goes (mean ms):\n");
    agentSplit.forEach(
        (command, split) ->
            s.append(
                String.format(
                    Locale.ROOT,
                    "  %-9s lock requests %6.1f   lvm %6.1f%n",
                    command,
                    split[0],
                    split[1])));
    return s.toString();
  }

  private static double percentile(double[] sorted, int p) {
    int i = (int) Math.ceil(p / 100.0 * sorted.length) - 1;
    return sorted[Math.max(0, Math.min(sorted.length - 1, i))];
  }
}
