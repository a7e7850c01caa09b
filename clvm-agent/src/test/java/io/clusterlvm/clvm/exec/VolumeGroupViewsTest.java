package io.clusterlvm.clvm.exec;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** When a host refreshes its view of a VG, from what the VG lock's value block says. */
@Timeout(value = 10, unit = TimeUnit.SECONDS)
class VolumeGroupViewsTest {

  private final List<String> refreshed = new ArrayList<>();
  private final VolumeGroupViews views = new VolumeGroupViews("host-a", refreshed::add);

  @Test
  void theValueBlockEncodesSeqnoOrRemoval() {
    assertThat(VolumeGroupLockValue.decode(VolumeGroupLockValue.of(41).encode()))
        .hasValue(VolumeGroupLockValue.of(41));
    assertThat(VolumeGroupLockValue.decode(VolumeGroupLockValue.gone().encode()))
        .hasValue(VolumeGroupLockValue.gone());
    assertThat(VolumeGroupLockValue.decode(new byte[0])).isEmpty();
    assertThat(VolumeGroupLockValue.decode(new byte[] {9, 0, 0, 0, 0, 0, 0, 0, 0, 1})).isEmpty();
  }

  @Test
  void refreshesOnlyWhenAnotherHostChangedTheVg() {
    // Nobody has written the block yet: nothing to refresh.
    assertThat(views.granted("vg", new byte[0], true)).isFalse();

    assertThat(views.granted("vg", VolumeGroupLockValue.of(5).encode(), true)).isTrue();
    assertThat(views.granted("vg", VolumeGroupLockValue.of(5).encode(), true)).isFalse();

    // This host wrote 6 itself: seeing 6 again is not news.
    views.wrote("vg", VolumeGroupLockValue.of(6));
    assertThat(views.granted("vg", VolumeGroupLockValue.of(6).encode(), true)).isFalse();

    // Another host committed twice since.
    assertThat(views.granted("vg", VolumeGroupLockValue.of(8).encode(), true)).isTrue();
    assertThat(views.seen()).containsEntry("vg", 8L);
    assertThat(refreshed).containsExactly("vg", "vg");
  }

  @Test
  void anInvalidBlockOrARecreatedVgRefreshesToo() {
    views.granted("vg", VolumeGroupLockValue.of(30).encode(), true);
    // The last EX holder died without writing it.
    assertThat(views.granted("vg", VolumeGroupLockValue.of(30).encode(), false)).isTrue();
    assertThat(views.seen()).doesNotContainKey("vg");
    views.granted("vg", VolumeGroupLockValue.of(30).encode(), true);
    // Removed, then created again by another host: its seqno starts over, lower than before.
    assertThat(views.granted("vg", VolumeGroupLockValue.gone().encode(), true)).isTrue();
    assertThat(views.granted("vg", VolumeGroupLockValue.of(1).encode(), true)).isTrue();
    assertThat(views.refreshes()).isEqualTo(5);
  }
}
