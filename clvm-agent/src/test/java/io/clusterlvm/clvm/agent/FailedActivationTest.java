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
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * lvm activates LV by LV: an activation of several that fails on one may have activated the others,
 * and their activation locks must stay with this host, or another host could activate them too.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class FailedActivationTest {

  @Test
  void aFailedActivationOfSeveralLvsKeepsTheLocksOfThoseThatMayBeActive() throws Exception {
    String vg = "vg_partial";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      Path dir = cluster.dir.resolve("partial-lvm");
      cluster.startAgent(
          cluster.config("host-a", cluster.partlyActivatingLvm(dir), ClvmTestCluster.LOCK_TIMEOUT));
      cluster.startAgent("host-b");
      ok(cluster, "host-a", "lvcreate", "-an", "-Zn", "-n", "good", "-L", "4M", vg);
      ok(cluster, "host-a", "lvcreate", "-an", "-Zn", "-n", "partial", "-L", "4M", vg);
      Files.writeString(dir.resolve("partial"), vg + "/partial\n");

      RunCommandResponse failed =
          cluster.run("host-a", "lvchange", "-aey", vg + "/good", vg + "/partial");
      assertThat(failed.getExitCode()).isEqualTo(5);
      assertThat(failed.getStderr().toStringUtf8()).contains("Refusing activation of partial LV");

      // vg/good is active on host-a: host-b must not activate it as well.
      StatusRuntimeException refused =
          catchThrowableOfType(
              StatusRuntimeException.class,
              () -> cluster.run("host-b", "lvchange", "-aey", vg + "/good"));
      RefusalDetail d = Refusals.detailOf(refused);
      assertThat(d.getReason()).isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
      assertThat(d.getHolder()).contains("host-a");
      assertThat(cluster.status("host-a").getActivationsList())
          .extracting(a -> a.getLogicalVolume() + " " + a.getMode())
          .contains("good EX");

      // Deactivating them on host-a gives the locks back.
      ok(cluster, "host-a", "lvchange", "-an", vg + "/good", vg + "/partial");
      ok(cluster, "host-b", "lvchange", "-aey", vg + "/good");
      ok(cluster, "host-b", "lvchange", "-aey", vg + "/partial");
    }
  }

  private static RunCommandResponse ok(ClvmTestCluster cluster, String host, String... argv) {
    RunCommandResponse r = cluster.run(host, argv);
    assertThat(r.getExitCode())
        .as(String.join(" ", argv) + ": " + r.getStderr().toStringUtf8())
        .isZero();
    return r;
  }
}
