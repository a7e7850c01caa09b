package io.clusterlvm.clvm.lvm;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.clvm.lvm.LvcreateExperiment.Attempt;
import io.clusterlvm.clvm.lvm.LvcreateExperiment.Outcome;
import io.clusterlvm.testing.LoopVolumeGroup;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantLock;
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
public class UncoordinatedLvcreateControlTest {

  private static final String VG = "vg_control";
  private static final int HOSTS = 3;
  private static final int LVS_PER_HOST = 30;

  @BeforeAll
  static void needsLvmAndLoopDevices() {
    LoopVolumeGroup.assumeAvailable();
  }

  @Test
  void threeHostsCreateThirtyLvsEachWithoutAClusterLock() throws Exception {
    LoopVolumeGroup lun = LoopVolumeGroup.create(VG);
    try {
      lun.createSharedVg();
      List<LvmRunner> hosts = new ArrayList<>();
      for (int h = 0; h < HOSTS; h++) {
        hosts.add(LvmRunnerTest.runnerFor(lun.host("host-" + h)));
      }

      Outcome outcome = run(lun, hosts, null);
      System.out.println(outcome.report("no cluster lock", HOSTS, LVS_PER_HOST));
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

      Outcome outcome = run(lun, hosts, new ReentrantLock(true));
      System.out.println(
          outcome.report("one exclusive lock around each lvcreate", HOSTS, LVS_PER_HOST));
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

  /**
   * The uncoordinated run, for other tests to compare with: three hosts of {@code lun}, bare lvm.
   */
  public static Outcome runWithoutClusterLock(LoopVolumeGroup lun) throws Exception {
    List<LvmRunner> hosts = new ArrayList<>();
    for (int h = 0; h < HOSTS; h++) {
      hosts.add(LvmRunnerTest.runnerFor(lun.host("host-" + h)));
    }
    return run(lun, hosts, null);
  }

  /** Each host creates its LVs in a loop, all hosts at once; under {@code lock} if not null. */
  private static Outcome run(LoopVolumeGroup lun, List<LvmRunner> hosts, Lock lock)
      throws Exception {
    String vg = lun.vgName();
    long start = System.nanoTime();
    List<Attempt> attempts =
        LvcreateExperiment.runConcurrently(
            hosts.size(),
            LVS_PER_HOST,
            (h, lv) -> {
              LvmResult r;
              if (lock == null) {
                r = hosts.get(h).run("lvcreate", List.of("-n", lv, "-L", "4M", vg));
              } else {
                lock.lockInterruptibly();
                try {
                  r = hosts.get(h).run("lvcreate", List.of("-n", lv, "-L", "4M", vg));
                } finally {
                  lock.unlock();
                }
              }
              return new Attempt("host-" + h, lv, r.exitCode(), r.stderr());
            });
    long elapsedMillis = (System.nanoTime() - start) / 1_000_000;
    assertThat(attempts).hasSize(hosts.size() * LVS_PER_HOST);
    return LvcreateExperiment.observe(lun.host("observer"), vg, attempts, elapsedMillis);
  }
}
