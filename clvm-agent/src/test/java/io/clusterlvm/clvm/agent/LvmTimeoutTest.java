package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.clusterlvm.clvm.proto.Refusal;
import io.clusterlvm.clvm.proto.RefusalDetail;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.clvm.rpc.Refusals;
import io.grpc.StatusRuntimeException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * An lvm that outlives the agent's lvm timeout is killed, and its outcome is unknown. The VG's
 * seqno is marked unknown, so other hosts refresh their view; an LV it may have activated keeps its
 * activation lock, so that no other host activates it too.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LvmTimeoutTest {
  private static final Duration LVM_TIMEOUT = Duration.ofSeconds(3);

  @Test
  void anLvcreateKilledAfterMakingItsLvKeepsTheLvActivationLock() throws Exception {
    String vg = "vg_hung";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("host-a");
      cluster.startAgent(
          cluster.config(
              "host-h",
              cluster.hangingLvm(cluster.dir.resolve("hanging")),
              ClvmTestCluster.LOCK_TIMEOUT,
              LVM_TIMEOUT,
              null));
      RunCommandResponse first = cluster.run("host-a", "lvcreate", "-n", "first", "-L", "4M", vg);
      assertThat(first.getExitCode()).as(first.getStderr().toStringUtf8()).isZero();
      long refreshes = cluster.status("host-a").getViewRefreshes();

      StatusRuntimeException killed =
          catchThrowableOfType(
              StatusRuntimeException.class,
              () -> cluster.run("host-h", "lvcreate", "-n", "hung", "-L", "4M", vg));
      RefusalDetail d = Refusals.detailOf(killed);
      assertThat(d.getReason()).isEqualTo(Refusal.LVM_FAILED);
      assertThat(d.getMessage()).contains("did not finish").contains("unknown");
      assertThat(
              cluster.lvmHost("observer").lvm("lvs", "--noheadings", "-o", "lv_name", vg).stdout())
          .contains("hung");

      // The killed lvcreate did change the metadata: host-a, whose last seen seqno is that of its
      // own lvcreate, must not take its view for current.
      RunCommandResponse lvs = cluster.run("host-a", "lvs", vg);
      assertThat(lvs.getExitCode()).as(lvs.getStderr().toStringUtf8()).isZero();
      assertThat(cluster.status("host-a").getViewRefreshes()).isEqualTo(refreshes + 1);

      // host-h may have the LV active: host-a must not activate it as well.
      StatusRuntimeException refused =
          catchThrowableOfType(
              StatusRuntimeException.class,
              () -> cluster.run("host-a", "lvchange", "-aey", vg + "/hung"));
      assertThat(Refusals.detailOf(refused).getReason()).isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
      assertThat(Refusals.detailOf(refused).getHolder()).contains("host-h");

      // Deactivating it on host-h gives the lock back.
      RunCommandResponse off = cluster.run("host-h", "lvchange", "-an", vg + "/hung");
      assertThat(off.getExitCode()).as(off.getStderr().toStringUtf8()).isZero();
      RunCommandResponse on = cluster.run("host-a", "lvchange", "-aey", vg + "/hung");
      assertThat(on.getExitCode()).as(on.getStderr().toStringUtf8()).isZero();
    }
  }

  /** An lvcreate killed before it made its LV keeps no lock: nothing could ever release it. */
  @Test
  void anLvcreateKilledBeforeMakingItsLvKeepsNoLock() throws Exception {
    String vg = "vg_slow";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("host-a");
      Path gate = cluster.dir.resolve("gate");
      cluster.startAgent(
          cluster.config(
              "host-s", cluster.slowLvm(gate), ClvmTestCluster.LOCK_TIMEOUT, LVM_TIMEOUT, null));
      Files.createFile(gate.resolve("slow")); // and no "go": lvcreate never reaches lvm

      StatusRuntimeException killed =
          catchThrowableOfType(
              StatusRuntimeException.class,
              () -> cluster.run("host-s", "lvcreate", "-n", "never", "-L", "4M", vg));
      assertThat(Refusals.detailOf(killed).getReason()).isEqualTo(Refusal.LVM_FAILED);

      RunCommandResponse made = cluster.run("host-a", "lvcreate", "-n", "never", "-L", "4M", vg);
      assertThat(made.getExitCode()).as(made.getStderr().toStringUtf8()).isZero();
    }
  }
}
