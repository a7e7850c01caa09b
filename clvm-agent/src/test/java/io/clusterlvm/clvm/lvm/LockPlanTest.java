package io.clusterlvm.clvm.lvm;

import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.PERSISTENT_ACTIVATION;
import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.RELEASE_ACTIVATION;
import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.TRANSIENT;
import static io.clusterlvm.dlm.client.LockMode.CW;
import static io.clusterlvm.dlm.client.LockMode.EX;
import static io.clusterlvm.dlm.client.LockMode.NL;
import static io.clusterlvm.dlm.client.LockMode.PR;
import static io.clusterlvm.dlm.client.LockMode.PW;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class LockPlanTest {

  @Test
  void acquisitionOrderIsGlobalThenVgsThenLvsWhateverTheInsertionOrder() {
    LockPlan plan =
        LockPlan.builder()
            .logicalVolume("vg_b", "a", EX, TRANSIENT)
            .volumeGroup("vg_b", EX)
            .logicalVolume("vg_a", "z", EX, TRANSIENT)
            .volumeGroup("vg_a", PR)
            .global(PR)
            .build();
    assertThat(plan.locks())
        .containsExactly(
            LockRequirement.global(PR),
            LockRequirement.volumeGroup("vg_a", PR),
            LockRequirement.volumeGroup("vg_b", EX),
            LockRequirement.logicalVolume("vg_a", "z", EX, TRANSIENT),
            LockRequirement.logicalVolume("vg_b", "a", EX, TRANSIENT));
  }

  @Test
  void duplicatesMergeToTheStrongerModeAndTheActivationScope() {
    LockPlan plan =
        LockPlan.builder()
            .volumeGroup("vg", PR)
            .volumeGroup("vg", EX)
            .logicalVolume("vg", "lv", PR, TRANSIENT)
            .logicalVolume("vg", "lv", PR, PERSISTENT_ACTIVATION)
            .build();
    assertThat(plan.locks())
        .containsExactly(
            LockRequirement.volumeGroup("vg", EX),
            LockRequirement.logicalVolume("vg", "lv", PR, PERSISTENT_ACTIVATION));
    assertThatThrownBy(
            () ->
                LockPlan.builder()
                    .logicalVolume("vg", "lv", EX, PERSISTENT_ACTIVATION)
                    .logicalVolume("vg", "lv", NL, RELEASE_ACTIVATION))
        .isInstanceOf(IllegalArgumentException.class);
  }

  @Test
  void strongestModeIsTheLatticeJoin() {
    assertThat(LockPlan.strongest(CW, PR)).isEqualTo(PW);
    assertThat(LockPlan.strongest(PR, CW)).isEqualTo(PW);
    assertThat(LockPlan.strongest(NL, EX)).isEqualTo(EX);
    assertThat(LockPlan.strongest(PR, PR)).isEqualTo(PR);
  }

  @Test
  void stagedExpansionOfEveryVgAndEveryLv() {
    LockPlan plan =
        LockPlan.builder()
            .global(PR)
            .everyVolumeGroup(PR)
            .everyLogicalVolumeOfEveryVolumeGroup(NL, RELEASE_ACTIVATION)
            .build();
    assertThat(plan.globalLocks()).containsExactly(LockRequirement.global(PR));
    assertThat(plan.needsVolumeGroupList()).isTrue();
    List<String> vgs = List.of("vg_b", "vg_a");
    assertThat(plan.volumeGroupLocks(vgs))
        .containsExactly(
            LockRequirement.volumeGroup("vg_a", PR), LockRequirement.volumeGroup("vg_b", PR));
    assertThat(plan.volumeGroupsNeedingLvList(vgs)).containsExactly("vg_a", "vg_b");
    Map<String, List<String>> lvs = Map.of("vg_a", List.of("y", "x"), "vg_b", List.of());
    assertThat(plan.logicalVolumeLocks(lvs))
        .containsExactly(
            LockRequirement.logicalVolume("vg_a", "x", NL, RELEASE_ACTIVATION),
            LockRequirement.logicalVolume("vg_a", "y", NL, RELEASE_ACTIVATION));

    LockPlan resolved = plan.resolve(vgs, lvs);
    assertThat(resolved.isResolved()).isTrue();
    assertThat(resolved.locks())
        .containsExactly(
            LockRequirement.global(PR),
            LockRequirement.volumeGroup("vg_a", PR),
            LockRequirement.volumeGroup("vg_b", PR),
            LockRequirement.logicalVolume("vg_a", "x", NL, RELEASE_ACTIVATION),
            LockRequirement.logicalVolume("vg_a", "y", NL, RELEASE_ACTIVATION));
  }

  @Test
  void lvWildcardNeedsItsVgLock() {
    assertThatThrownBy(() -> LockPlan.builder().everyLogicalVolume("vg", EX, TRANSIENT).build())
        .isInstanceOf(IllegalStateException.class);
    assertThatThrownBy(
            () -> LockPlan.builder().everyLogicalVolumeOfEveryVolumeGroup(EX, TRANSIENT).build())
        .isInstanceOf(IllegalStateException.class);
  }

  @Test
  void modifiedVolumeGroupsAreTheExVgLocks() throws Exception {
    assertThat(LvmCommand.parse("vgrename", List.of("a", "b")).lockPlan().modifiedVolumeGroups())
        .containsExactly("a", "b");
    assertThat(LvmCommand.parse("lvs", List.of("vg")).lockPlan().modifiedVolumeGroups()).isEmpty();
    LockPlan everyVgWritten = LvmCommand.parse("pvresize", List.of("/dev/x")).lockPlan();
    assertThatThrownBy(everyVgWritten::modifiedVolumeGroups)
        .isInstanceOf(IllegalStateException.class);
    assertThat(everyVgWritten.resolve(List.of("v1", "v2"), Map.of()).modifiedVolumeGroups())
        .containsExactly("v1", "v2");
  }
}
