package io.clusterlvm.clvm.lvm;

import io.clusterlvm.testing.SimulatedLvmHost;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;

/**
 * The lvcreate race both the uncoordinated control and the clvm test run: {@code hosts} hosts each
 * create {@code perHost} LVs in one shared VG, all at once, then an observer host reads what is
 * left. How each host runs lvcreate (bare lvm, lvm under a local lock, through clvm-agent) is the
 * experiment's variable.
 */
public final class LvcreateExperiment {

  /** Creates one LV as one host; returns lvm's exit code and stderr. */
  @FunctionalInterface
  public interface Creator {
    Attempt create(int host, String lv) throws Exception;
  }

  /** One lvcreate's outcome. */
  public record Attempt(String host, String lv, int exitCode, String stderr) {}

  private LvcreateExperiment() {}

  /** The LV names host {@code h} creates. */
  public static String lvName(int host, int i) {
    return "h" + host + "-lv" + i;
  }

  /** Each host creates its LVs in a loop, all hosts at once. */
  public static List<Attempt> runConcurrently(int hosts, int perHost, Creator creator)
      throws Exception {
    AtomicInteger threadIds = new AtomicInteger();
    ExecutorService pool =
        Executors.newFixedThreadPool(
            hosts, r -> new Thread(r, "experiment-host-" + threadIds.getAndIncrement()));
    try {
      CountDownLatch start = new CountDownLatch(1);
      List<Future<List<Attempt>>> perHostResults = new ArrayList<>();
      for (int h = 0; h < hosts; h++) {
        int host = h;
        perHostResults.add(
            pool.submit(
                () -> {
                  start.await();
                  List<Attempt> mine = new ArrayList<>();
                  for (int i = 0; i < perHost; i++) {
                    mine.add(creator.create(host, lvName(host, i)));
                  }
                  return mine;
                }));
      }
      start.countDown();
      List<Attempt> all = new ArrayList<>();
      for (Future<List<Attempt>> f : perHostResults) {
        all.addAll(f.get(180, TimeUnit.SECONDS));
      }
      return all;
    } finally {
      pool.shutdownNow();
    }
  }

  /** What the observer saw afterwards. {@code visibleLvs} is -1 if the VG could not be read. */
  public record Outcome(
      int attempts,
      int reportedOk,
      int visibleLvs,
      int lostAfterSuccess,
      int vgckExit,
      String vgckOutput,
      Map<String, Long> errors,
      long seqno,
      long elapsedMillis) {

    /** The outcome as a block of text, headed by how the hosts were coordinated. */
    public String report(String coordination, int hosts, int perHost) {
      StringBuilder s = new StringBuilder();
      s.append("=== ")
          .append(hosts)
          .append(" hosts x ")
          .append(perHost)
          .append(" lvcreate, ")
          .append(coordination)
          .append(" ===\n");
      s.append("lvcreate exit 0:         ").append(reportedOk).append('/').append(attempts);
      s.append('\n');
      s.append("LVs visible at the end:  ")
          .append(visibleLvs < 0 ? "VG UNREADABLE" : visibleLvs + "/" + attempts)
          .append('\n');
      s.append("exit 0 but LV missing:   ")
          .append(visibleLvs < 0 ? "all " + reportedOk : lostAfterSuccess)
          .append('\n');
      s.append("VG seqno at the end:     ").append(seqno < 0 ? "unreadable" : seqno).append('\n');
      s.append("vgck exit code:          ").append(vgckExit).append('\n');
      s.append("wall time:               ").append(elapsedMillis).append(" ms\n");
      s.append("vgck output:\n").append(vgckOutput.strip().indent(2));
      s.append("lvcreate errors (distinct stderr lines, count):\n");
      errors.forEach((line, n) -> s.append(String.format("  %4d  %s%n", n, line)));
      return s.toString();
    }
  }

  /** Reads the VG as {@code observer} and sums up {@code attempts}. */
  public static Outcome observe(
      SimulatedLvmHost observer, String vg, List<Attempt> attempts, long elapsedMillis)
      throws Exception {
    Set<String> ok =
        attempts.stream()
            .filter(a -> a.exitCode() == 0)
            .map(Attempt::lv)
            .collect(Collectors.toCollection(TreeSet::new));
    LvmRunner runner = LvmRunnerTest.runnerFor(observer);
    int visible;
    int lost;
    long seqno;
    try {
      Set<String> present =
          runner.logicalVolumes(vg).stream()
              .map(LogicalVolumeInfo::name)
              .collect(Collectors.toSet());
      visible = present.size();
      lost = (int) ok.stream().filter(lv -> !present.contains(lv)).count();
      seqno = runner.vgSeqno(vg);
    } catch (LvmException unreadable) {
      visible = -1;
      lost = -1;
      seqno = -1;
    }
    SimulatedLvmHost.Result vgck = observer.lvm("vgck", vg);
    Map<String, Long> errors =
        attempts.stream()
            .flatMap(a -> a.stderr().lines())
            .map(String::strip)
            .filter(line -> !line.isEmpty() && !isActivationNoise(line))
            .map(line -> line.replaceAll("(offset|at) [0-9]+", "$1 N"))
            .collect(Collectors.groupingBy(line -> line, TreeMap::new, Collectors.counting()));
    return new Outcome(
        attempts.size(),
        ok.size(),
        visible,
        lost,
        vgck.exitCode(),
        (vgck.stdout() + vgck.stderr())
            .lines()
            .filter(line -> !isActivationNoise(line))
            .collect(Collectors.joining("\n")),
        errors,
        seqno,
        elapsedMillis);
  }

  /** Warnings every command prints because activation is off in this sandbox. */
  public static boolean isActivationNoise(String line) {
    return line.contains("Activation disabled")
        || line.contains("not zeroed")
        || line.contains("compiled without activation support");
  }
}
