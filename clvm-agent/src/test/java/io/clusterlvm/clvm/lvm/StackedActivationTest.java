package io.clusterlvm.clvm.lvm;

import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.PERSISTENT_ACTIVATION;
import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.RELEASE_ACTIVATION;
import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.TRANSIENT;
import static io.clusterlvm.dlm.client.LockMode.EX;
import static io.clusterlvm.dlm.client.LockMode.NL;
import static io.clusterlvm.dlm.client.LockMode.PR;
import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.client.LockMode;
import java.util.Arrays;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The rules of {@link StackedActivation}, on lvs rows as lvm 2.03 prints them. */
@Timeout(value = 10, unit = TimeUnit.SECONDS)
class StackedActivationTest {

  private static final String VG = "vg";

  // As lvs shows a VG with a thin pool, two thin volumes, a snapshot and its origin, a plain LV.
  private static final List<LogicalVolumeInfo> LVS =
      List.of(
          lv("data", "-wi-------", "", ""),
          lv("pool", "twi---tz--", "", ""),
          lv("thin1", "Vwi---tz--", "pool", ""),
          lv("thin2", "Vwi---tz--", "pool", ""),
          lv("base", "owi---s---", "", ""),
          lv("snap1", "swi---s---", "", "base"),
          lv("snap2", "swi---s---", "", "base"),
          lv("mirror", "rwi---r---", "", ""),
          // A thin volume with a thick snapshot: lvm shows it as an origin, and it has a pool.
          lv("thinbase", "owi---tz--", "pool", ""),
          lv("thinsnap", "swi---s---", "", "thinbase"),
          // A sparse snapshot, whose origin is hidden.
          lv("sparse", "swi---s---", "", "[lvol0_vorigin]"));

  @Test
  void aPlainLvIsActivatedAloneExclusivelyOrShared() {
    assertThat(refusal(Set.of(), activate("data", EX))).isEmpty();
    assertThat(refusal(Set.of(), activate("data", PR))).isEmpty();
  }

  @Test
  void aThinVolumeNeedsItsPoolInTheSameCommand() {
    assertThat(refusal(Set.of(), activate("thin1", EX)))
        .hasValueSatisfying(
            why ->
                assertThat(why)
                    .contains("activating vg/thin1, a thin volume of pool pool, also activates")
                    .contains("vg/pool")
                    .endsWith("clvm lvchange -aey vg/pool vg/thin1"));
    assertThat(refusal(Set.of(), activate("thin1", EX), activate("pool", EX))).isEmpty();
    // The pool alone activates nothing else: a host that has a thin volume active holds its lock.
    assertThat(refusal(Set.of(), activate("pool", EX))).isEmpty();
  }

  @Test
  void aSnapshotNeedsItsOriginAndTheOriginEverySnapshot() {
    assertThat(refusal(Set.of(), activate("snap1", EX)))
        .hasValueSatisfying(
            why ->
                assertThat(why)
                    .contains("a snapshot of base")
                    .endsWith("clvm lvchange -aey -y vg/base vg/snap1 vg/snap2"));
    assertThat(refusal(Set.of(), activate("base", EX), activate("snap1", EX)))
        .hasValueSatisfying(why -> assertThat(why).contains("also activates vg/snap2,"));
    assertThat(
            refusal(Set.of(), activate("base", EX), activate("snap1", EX), activate("snap2", EX)))
        .isEmpty();
  }

  @Test
  void aThinVolumeThatIsAlsoAnOriginNeedsItsPoolAndItsSnapshot() {
    assertThat(refusal(Set.of(), activate("thinbase", EX), activate("thinsnap", EX)))
        .hasValueSatisfying(
            why ->
                assertThat(why)
                    .contains("also activates vg/pool,")
                    .endsWith("clvm lvchange -aey -y vg/pool vg/thinbase vg/thinsnap"));
    assertThat(
            refusal(
                Set.of(), activate("thinbase", EX), activate("thinsnap", EX), activate("pool", EX)))
        .isEmpty();
    assertThat(refusal(Set.of("pool", "thinbase", "thinsnap"), release("pool")))
        .hasValueSatisfying(why -> assertThat(why).startsWith("vg/thinbase, active on this host,"));
  }

  @Test
  void theSuggestionKeepsTheOtherLvsTheCommandNamed() {
    assertThat(refusal(Set.of(), activate("data", EX), activate("thin1", EX)))
        .hasValueSatisfying(
            why -> assertThat(why).endsWith("clvm lvchange -aey vg/data vg/pool vg/thin1"));
  }

  @Test
  void anLvWithASnapshotMergePendingIsNotActivated() {
    List<LogicalVolumeInfo> merging =
        List.of(lv("base", "Owi---s---", "", ""), lv("snap", "Swi---s---", "", "base"));
    for (String name : List.of("base", "snap")) {
      assertThat(StackedActivation.refusal(VG, List.of(activate(name, EX)), merging, Set.of()))
          .as(name)
          .hasValueSatisfying(why -> assertThat(why).contains("has a snapshot merge pending"));
    }
    // Deactivating them stays possible.
    assertThat(
            StackedActivation.refusal(
                VG, List.of(release("base"), release("snap")), merging, Set.of("base", "snap")))
        .isEmpty();
  }

  @Test
  void aSparseSnapshotsHiddenOriginIsItsOwn() {
    assertThat(refusal(Set.of(), activate("sparse", EX))).isEmpty();
  }

  @Test
  void removingAThinVolumeLocksItsPoolForTheCommand() {
    LockRequirement remove = LockRequirement.logicalVolume(VG, "thin1", EX, RELEASE_ACTIVATION);
    assertThat(StackedActivation.poolLocks(VG, List.of(remove), LVS))
        .containsExactly(LockRequirement.logicalVolume(VG, "pool", EX, TRANSIENT));
    assertThat(
            StackedActivation.poolLocks(
                VG,
                List.of(LockRequirement.logicalVolume(VG, "thinbase", EX, RELEASE_ACTIVATION)),
                LVS))
        .containsExactly(LockRequirement.logicalVolume(VG, "pool", EX, TRANSIENT));
    // A deactivation (NL) and a plain LV's removal need no pool.
    assertThat(StackedActivation.poolLocks(VG, List.of(release("thin1")), LVS)).isEmpty();
    assertThat(
            StackedActivation.poolLocks(
                VG,
                List.of(LockRequirement.logicalVolume(VG, "data", EX, RELEASE_ACTIVATION)),
                LVS))
        .isEmpty();
  }

  @Test
  void onlyPlainLvsMayBeActiveOnSeveralHosts() {
    for (String lv : List.of("pool", "base", "mirror", "thin1")) {
      assertThat(refusal(Set.of(), activate(lv, PR)))
          .as(lv)
          .hasValueSatisfying(why -> assertThat(why).contains("a shared activation of vg/" + lv));
    }
    // A shared lock that stands in the way of nothing else (a deactivation's NL, a transient PR)
    // is no activation.
    assertThat(
            refusal(
                Set.of(),
                LockRequirement.logicalVolume(VG, "pool", PR, TRANSIENT),
                LockRequirement.logicalVolume(VG, "pool", NL, RELEASE_ACTIVATION)))
        .isEmpty();
  }

  @Test
  void aPoolKeepsItsLockWhileAThinVolumeOfItStaysActiveHere() {
    assertThat(refusal(Set.of("pool", "thin1"), release("pool")))
        .hasValueSatisfying(
            why ->
                assertThat(why)
                    .startsWith("vg/thin1, active on this host, keeps vg/pool active under it")
                    .endsWith("clvm lvchange -an vg/pool vg/thin1"));
    assertThat(refusal(Set.of("pool", "thin1"), release("pool"), release("thin1"))).isEmpty();
    assertThat(refusal(Set.of("pool", "thin1"), release("thin1"))).isEmpty();
    // Another host's thin volume is no concern of this host's release.
    assertThat(refusal(Set.of("pool"), release("pool"))).isEmpty();
  }

  @Test
  void anLvLvsDoesNotListIsLeftToLvm() {
    assertThat(refusal(Set.of(), activate("new", EX))).isEmpty();
  }

  private static Optional<String> refusal(Set<String> activeHere, LockRequirement... locks) {
    return StackedActivation.refusal(VG, Arrays.asList(locks), LVS, activeHere);
  }

  private static LockRequirement activate(String lv, LockMode mode) {
    return LockRequirement.logicalVolume(VG, lv, mode, PERSISTENT_ACTIVATION);
  }

  private static LockRequirement release(String lv) {
    return LockRequirement.logicalVolume(VG, lv, NL, RELEASE_ACTIVATION);
  }

  private static LogicalVolumeInfo lv(String name, String attr, String pool, String origin) {
    return new LogicalVolumeInfo(VG, name, "uuid-" + name, 4 << 20, attr, pool, origin);
  }
}
