package io.clusterlvm.clvm.lvm;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.testing.LoopVolumeGroup;
import io.clusterlvm.testing.SimulatedLvmHost;
import java.nio.file.Files;
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
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantLock;
import java.util.stream.Collectors;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The control experiment: what happens to a shared VG when three hosts change it at the same time
 * with no cluster lock, each host with its own LVM_SYSTEM_DIR and locking_dir (as separate machines
 * have). This is the failure clvm-agent exists to prevent.
 *
 * <p>The outcome is a race, so the test records and prints it (LVs visible at the end out of 90,
 * creates that reported success but are gone, vgck's verdict, lvm's errors) and asserts only what
 * is deterministic: every command ran to an exit code, and the fixture cleaned up.
 */
@Timeout(value = 150, unit = TimeUnit.SECONDS)
class UncoordinatedLvcreateControlTest {

  private static final String VG = "vg_control";
  private static final int HOSTS = 3;
  private static final int LVS_PER_HOST = 30;

  @BeforeAll
  static void needsLvmAndLoopDevices() {
    LoopVolumeGroup.assumeAvailable();
  }

  /** One lvcreate's outcome. */
  private record Attempt(String host, String lv, int exitCode, String stderr) {}

  @Test
  void threeHostsCreateThirtyLvsEachWithoutAClusterLock() throws Exception {
    LoopVolumeGroup lun = LoopVolumeGroup.create(VG);
    try {
      lun.createSharedVg();
      List<LvmRunner> hosts = new ArrayList<>();
      for (int h = 0; h < HOSTS; h++) {
        hosts.add(LvmRunnerTest.runnerFor(lun.host("host-" + h)));
      }

      List<Attempt> attempts = runConcurrently(hosts, null);
      assertThat(attempts).hasSize(HOSTS * LVS_PER_HOST);

      Outcome outcome = observe(lun.host("observer"), attempts);
      System.out.println(outcome.report("no cluster lock"));
      assertThat(outcome.attempts()).isEqualTo(HOSTS * LVS_PER_HOST);
    } finally {
      lun.close();
    }
    assertThat(lun.attached()).as("%s detached", lun.device()).isFalse();
    assertThat(Files.exists(lun.directory())).isFalse();
  }

  /**
   * The positive control: the same hosts and workload, each lvcreate run under one lock standing in
   * for the VG lock EX. Nothing is lost, so the damage above comes from the missing lock, not from
   * the harness (separate LVM_SYSTEM_DIRs and locking_dirs on one loop device).
   */
  @Test
  void sameWorkloadUnderOneExclusiveLockLosesNothing() throws Exception {
    LoopVolumeGroup lun = LoopVolumeGroup.create(VG);
    try {
      lun.createSharedVg();
      List<LvmRunner> hosts = new ArrayList<>();
      for (int h = 0; h < HOSTS; h++) {
        hosts.add(LvmRunnerTest.runnerFor(lun.host("host-" + h)));
      }
      long seqnoBefore = hosts.get(0).vgSeqno(VG);

      List<Attempt> attempts = runConcurrently(hosts, new ReentrantLock(true));

      Outcome outcome = observe(lun.host("observer"), attempts);
      System.out.println(outcome.report("one exclusive lock around each lvcreate"));
      assertThat(outcome.reportedOk()).isEqualTo(HOSTS * LVS_PER_HOST);
      assertThat(outcome.visibleLvs()).isEqualTo(HOSTS * LVS_PER_HOST);
      assertThat(outcome.lostAfterSuccess()).isZero();
      assertThat(outcome.vgckExit()).isZero();
      assertThat(outcome.seqno()).isEqualTo(seqnoBefore + HOSTS * LVS_PER_HOST);
    } finally {
      lun.close();
    }
    assertThat(lun.attached()).as("%s detached", lun.device()).isFalse();
    assertThat(Files.exists(lun.directory())).isFalse();
  }

  /** Each host creates its LVs in a loop, all hosts at once; under {@code lock} if not null. */
  private static List<Attempt> runConcurrently(List<LvmRunner> hosts, Lock lock) throws Exception {
    AtomicInteger threadIds = new AtomicInteger();
    ExecutorService pool =
        Executors.newFixedThreadPool(
            hosts.size(), r -> new Thread(r, "control-host-" + threadIds.getAndIncrement()));
    try {
      CountDownLatch start = new CountDownLatch(1);
      List<Future<List<Attempt>>> perHost = new ArrayList<>();
      for (int h = 0; h < hosts.size(); h++) {
        LvmRunner host = hosts.get(h);
        String hostName = "host-" + h;
        perHost.add(
            pool.submit(
                () -> {
                  start.await();
                  List<Attempt> mine = new ArrayList<>();
                  for (int i = 0; i < LVS_PER_HOST; i++) {
                    String lv = "h" + hostName.charAt(hostName.length() - 1) + "-lv" + i;
                    LvmResult r;
                    if (lock == null) {
                      r = host.run("lvcreate", List.of("-n", lv, "-L", "4M", VG));
                    } else {
                      lock.lockInterruptibly();
                      try {
                        r = host.run("lvcreate", List.of("-n", lv, "-L", "4M", VG));
                      } finally {
                        lock.unlock();
                      }
                    }
                    mine.add(new Attempt(hostName, lv, r.exitCode(), r.stderr()));
                  }
                  return mine;
                }));
      }
      start.countDown();
      List<Attempt> all = new ArrayList<>();
      for (Future<List<Attempt>> f : perHost) {
        all.addAll(f.get(120, TimeUnit.SECONDS));
      }
      return all;
    } finally {
      pool.shutdownNow();
    }
  }

  private record Outcome(
      int attempts,
      int reportedOk,
      int visibleLvs,
      int lostAfterSuccess,
      int vgckExit,
      String vgckOutput,
      Map<String, Long> errors,
      long seqno) {

    String report(String coordination) {
      StringBuilder s = new StringBuilder();
      s.append("=== CONTROL: ")
          .append(HOSTS)
          .append(" hosts x ")
          .append(LVS_PER_HOST)
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
      s.append("vgck output:\n").append(vgckOutput.strip().indent(2));
      s.append("lvcreate errors (distinct stderr lines, count):\n");
      errors.forEach((line, n) -> s.append(String.format("  %4d  %s%n", n, line)));
      return s.toString();
    }
  }

  private static Outcome observe(SimulatedLvmHost observer, List<Attempt> attempts)
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
          runner.logicalVolumes(VG).stream()
              .map(LogicalVolumeInfo::name)
              .collect(Collectors.toSet());
      visible = present.size();
      lost = (int) ok.stream().filter(lv -> !present.contains(lv)).count();
      seqno = runner.vgSeqno(VG);
    } catch (LvmException unreadable) {
      visible = -1;
      lost = -1;
      seqno = -1;
    }
    SimulatedLvmHost.Result vgck = observer.lvm("vgck", VG);
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
        seqno);
  }

  /** Warnings every command prints because activation is off in this sandbox. */
  private static boolean isActivationNoise(String line) {
    return line.contains("Activation disabled")
        || line.contains("not zeroed")
        || line.contains("compiled without activation support");
  }
}
