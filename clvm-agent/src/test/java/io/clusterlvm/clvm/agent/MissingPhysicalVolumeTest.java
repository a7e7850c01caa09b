package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.clusterlvm.clvm.proto.RefusalDetail;
import io.clusterlvm.clvm.rpc.Refusals;
import io.clusterlvm.testing.LoopVolumeGroup;
import io.clusterlvm.testing.SimulatedLvmHost;
import io.grpc.StatusRuntimeException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A host that does not see every PV of a VG (a devices file not updated on every host, or a lost
 * multipath path) must not change the VG's metadata: lvm would write the PV it does not see as
 * MISSING into the metadata every host reads, its LVs would go partial everywhere, and every later
 * change of the VG would be refused (found in review, reproduced with lvm 2.03.16). Here the VG
 * spans two loop devices, and host-b's lvm.conf lets it see only the first.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class MissingPhysicalVolumeTest {

  @Test
  void aHostThatDoesNotSeeEveryPvOfAVgDoesNotChangeItsMetadata() throws Exception {
    String vg = "vg_missing";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg);
        LoopVolumeGroup second = LoopVolumeGroup.create("vg_missing_pv2", 64L << 20)) {
      // host-a sees both devices; host-b, like the fixture's other hosts, only the first.
      SimulatedLvmHost a = cluster.lun.host("host-a");
      Path conf = a.systemDir().resolve("lvm.conf");
      String first = "\"a|^" + cluster.lun.device() + "$|\"";
      String both = first + ", \"a|^" + second.device() + "$|\"";
      Files.writeString(conf, Files.readString(conf).replace(first, both));
      cluster.startAgent("host-a");
      cluster.startAgent("host-b");
      cluster.ok("host-a", "lvcreate", "-an", "-Zn", "-n", "lv1", "-L", "4M", vg);
      cluster.ok("host-a", "pvcreate", second.device());
      cluster.ok("host-a", "vgextend", vg, second.device());

      StatusRuntimeException refused =
          catchThrowableOfType(
              StatusRuntimeException.class,
              () -> cluster.run("host-b", "lvchange", "--addtag", "t", vg + "/lv1"));
      assertThat(refused).as("host-b's metadata change was refused").isNotNull();
      RefusalDetail d = Refusals.detailOf(refused);
      assertThat(d.getMessage())
          .contains("VG " + vg + " has 1 PV(s) this host does not see")
          .contains("would mark them missing for every host");

      // Nothing was marked missing: the host that sees both PVs still sees a whole VG, and may
      // change it.
      assertThat(missingPvs(a, vg)).isEqualTo("0");
      cluster.ok("host-a", "lvchange", "--addtag", "t", vg + "/lv1");
      // Reports need no whole VG.
      cluster.ok("host-b", "lvs", vg);
    }
  }

  private static String missingPvs(SimulatedLvmHost host, String vg) throws Exception {
    SimulatedLvmHost.Result r = host.lvm("vgs", "--noheadings", "-o", "vg_missing_pv_count", vg);
    assertThat(r.succeeded()).as(r.toString()).isTrue();
    return r.stdout().trim();
  }
}
