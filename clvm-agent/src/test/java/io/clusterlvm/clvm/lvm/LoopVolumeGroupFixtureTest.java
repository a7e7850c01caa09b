package io.clusterlvm.clvm.lvm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.clusterlvm.testing.LoopVolumeGroup;
import io.clusterlvm.testing.SimulatedLvmHost;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The test-support fixture itself: hosts are isolated, cleanup always detaches by path. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class LoopVolumeGroupFixtureTest {

  @BeforeAll
  static void needsLvmAndLoopDevices() {
    LoopVolumeGroup.assumeAvailable();
  }

  @Test
  void hostsHavePrivateLockingDirsAndSeeOnlyTheLoopDevice() throws Exception {
    try (LoopVolumeGroup lun = LoopVolumeGroup.create("vg_fixture")) {
      lun.createSharedVg();
      SimulatedLvmHost a = lun.host("a");
      SimulatedLvmHost b = lun.host("b");
      assertThat(lun.host("a")).isSameAs(a);
      assertThat(a.lockingDir()).isNotEqualTo(b.lockingDir());
      assertThat(a.lvm("lvmconfig", "--validate").succeeded()).isTrue();
      assertThat(a.lvm("lvmconfig", "global/locking_dir").stdout())
          .contains(a.lockingDir().toString());

      SimulatedLvmHost.Result pvs = b.lvm("pvs", "--noheadings", "-o", "pv_name,vg_name");
      assertThat(pvs.exitCode()).as(pvs.toString()).isZero();
      assertThat(pvs.stdout().strip().split("\\s+")).containsExactly(lun.device(), "vg_fixture");
    }
  }

  @Test
  void closeDetachesEvenFromAnInterruptedThreadAndIsIdempotent() throws Exception {
    LoopVolumeGroup lun = LoopVolumeGroup.create("vg_fixture");
    lun.createSharedVg();
    assertThat(lun.attached()).isTrue();

    Thread.currentThread().interrupt(); // as a JUnit timeout leaves it
    lun.close();
    assertThat(Thread.interrupted()).as("interrupt flag restored").isTrue();

    assertThat(lun.attached()).isFalse();
    assertThat(Files.exists(lun.directory())).isFalse();
    lun.close();
    assertThatThrownBy(() -> lun.host("late")).isInstanceOf(IllegalStateException.class);
  }

  @Test
  void failedCreationLeavesNoFiles() throws IOException {
    Path tmp = Path.of(System.getProperty("java.io.tmpdir"));
    assertThatThrownBy(() -> LoopVolumeGroup.create("vg_broken", -1))
        .isInstanceOf(IOException.class);
    try (Stream<Path> left = Files.list(tmp)) {
      List<Path> leftovers =
          left.filter(p -> p.getFileName().toString().startsWith("loopvg-vg_broken-")).toList();
      assertThat(leftovers).isEmpty();
    }
  }
}
