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
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** An LV active on a host keeps its activation lock where other hosts look for it. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ActivationLockSafetyTest {

  /**
   * lvm activates LV by LV: an activation of several that fails on one may have activated the
   * others, and their activation locks must stay with this host.
   */
  @Test
  void aFailedActivationOfSeveralLvsKeepsTheLocksOfThoseThatMayBeActive() throws Exception {
    String vg = "vg_partial";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      Path dir = startPartlyActivatingHostAAndHostB(cluster);
      cluster.ok("host-a", "lvcreate", "-an", "-Zn", "-n", "good", "-L", "4M", vg);
      cluster.ok("host-a", "lvcreate", "-an", "-Zn", "-n", "partial", "-L", "4M", vg);
      Files.writeString(dir.resolve("partial"), vg + "/partial\n");

      RunCommandResponse failed =
          cluster.run("host-a", "lvchange", "-aey", vg + "/good", vg + "/partial");
      assertThat(failed.getExitCode()).isEqualTo(5);
      assertThat(failed.getStderr().toStringUtf8()).contains("Refusing activation of partial LV");

      // vg/good is active on host-a: host-b must not activate it as well.
      assertHostAHoldsIt(cluster, vg + "/good");
      assertThat(cluster.status("host-a").getActivationsList())
          .extracting(a -> a.getLogicalVolume() + " " + a.getMode())
          .contains("good EX");

      // Deactivating them on host-a gives the locks back.
      cluster.ok("host-a", "lvchange", "-an", vg + "/good", vg + "/partial");
      cluster.ok("host-b", "lvchange", "-aey", vg + "/good");
      cluster.ok("host-b", "lvchange", "-aey", vg + "/partial");
    }
  }

  /**
   * An LV's activation lock lives in its VG's lockspace (lvm_VG), so a VG rename with an LV active
   * on the renaming host would leave that lock behind under the old name, and another host could
   * activate the LV under the new one.
   */
  @Test
  void aVgRenameWithAnLvActiveOnThisHostIsRefused() throws Exception {
    String vg = "vg_rename";
    String renamed = "vg_renamed";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("host-a");
      cluster.startAgent("host-b");
      cluster.ok("host-a", "lvcreate", "-n", "lv1", "-L", "4M", vg); // active on host-a

      StatusRuntimeException refused =
          catchThrowableOfType(
              StatusRuntimeException.class, () -> cluster.run("host-a", "vgrename", vg, renamed));
      RefusalDetail d = Refusals.detailOf(refused);
      assertThat(d.getReason()).isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
      assertThat(d.getMessage())
          .contains("LV " + vg + "/lv1 is active on this host")
          .contains("clvm lvchange -an " + vg + "/lv1");
      assertThat(cluster.lvmHost("observer").lvm("vgs", "--noheadings", "-o", "vg_name").stdout())
          .contains(vg)
          .doesNotContain(renamed);

      cluster.ok("host-a", "lvchange", "-an", vg + "/lv1");
      cluster.ok("host-a", "vgrename", vg, renamed);
      cluster.ok("host-b", "lvchange", "-aey", renamed + "/lv1");
      StatusRuntimeException held =
          catchThrowableOfType(
              StatusRuntimeException.class,
              () -> cluster.run("host-a", "lvchange", "-aey", renamed + "/lv1"));
      assertThat(Refusals.detailOf(held).getHolder()).contains("host-b");

      cluster.ok("host-b", "lvchange", "-an", renamed + "/lv1");
      cluster.ok("host-b", "vgrename", renamed, vg); // as the cluster's cleanup knows it
    }
  }

  /**
   * Plain lvm can make thin volumes and snapshots in a shared VG, and lvm activates a thin volume's
   * pool with it, a snapshot's origin, and an origin's snapshots. Before, only the named LV was
   * locked, and two hosts could each activate a thin volume of one pool: the pool active on both.
   * No device-mapper here, so the layout is written into the VG's metadata with vgcfgrestore.
   */
  @Test
  void thinVolumesAndSnapshotsAreActivatedOnlyWithWhatLvmActivatesAlongWithThem() throws Exception {
    String vg = "vg_stacked";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("host-a");
      cluster.startAgent("host-b");
      cluster.restoreThinPoolAndSnapshot("host-a");

      RefusalDetail alone = refusal(cluster, "host-a", "lvchange", "-aey", vg + "/thin1");
      assertThat(alone.getReason()).isEqualTo(Refusal.UNSUPPORTED_COMMAND);
      assertThat(alone.getMessage())
          .contains("also activates " + vg + "/pool")
          .contains("clvm lvchange -aey " + vg + "/pool " + vg + "/thin1");
      assertThat(cluster.status("host-a").getActivationsList()).isEmpty();

      cluster.ok("host-a", "lvchange", "-aey", vg + "/pool", vg + "/thin1");
      // host-b's thin volume would activate the same pool: it waits for host-a's pool lock.
      RefusalDetail held =
          refusal(cluster, "host-b", "lvchange", "-aey", vg + "/pool", vg + "/thin2");
      assertThat(held.getReason()).isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
      assertThat(held.getHolder()).contains("host-a");

      // The pool stays active under thin1: its lock goes only with thin1's.
      RefusalDetail poolOnly = refusal(cluster, "host-a", "lvchange", "-an", vg + "/pool");
      assertThat(poolOnly.getMessage())
          .contains(vg + "/thin1, active on this host, keeps " + vg + "/pool active under it");
      assertThat(cluster.status("host-a").getActivationsList())
          .extracting(a -> a.getLogicalVolume() + " " + a.getMode())
          .containsExactlyInAnyOrder("pool EX", "thin1 EX");
      cluster.ok("host-a", "lvchange", "-an", vg + "/pool", vg + "/thin1");
      cluster.ok("host-b", "lvchange", "-aey", vg + "/pool", vg + "/thin2");
      // Removing a thin volume activates its pool (lvm sends the pool the delete).
      RefusalDetail remove = refusal(cluster, "host-a", "lvremove", "-y", vg + "/thin1");
      assertThat(remove.getReason()).isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
      assertThat(remove.getLock()).contains("pool");
      assertThat(remove.getHolder()).contains("host-b");

      // A snapshot comes with its origin, and neither may be active on two hosts.
      assertThat(refusal(cluster, "host-a", "lvchange", "-aey", vg + "/snap").getMessage())
          .contains("clvm lvchange -aey -y " + vg + "/base " + vg + "/snap");
      assertThat(refusal(cluster, "host-a", "lvchange", "-asy", vg + "/base").getMessage())
          .contains("a shared activation of " + vg + "/base");
      cluster.ok("host-a", "lvchange", "-aey", "-y", vg + "/base", vg + "/snap");
      assertThat(refusal(cluster, "host-b", "lvchange", "-aey", vg + "/base").getHolder())
          .contains("host-a");

      // A whole VG's activation names every LV: nothing is missing. host-b holds the pool.
      assertThat(refusal(cluster, "host-a", "vgchange", "-aey", vg).getHolder()).contains("host-b");
      cluster.ok("host-b", "lvchange", "-an", vg + "/pool", vg + "/thin2");
      cluster.ok("host-a", "vgchange", "-aey", "-y", vg);
      cluster.ok("host-a", "vgchange", "-an", vg);
    }
  }

  /**
   * Two commands on one host that need the same LV: the second waits for the first, as lvm waits
   * for its own local lock, up to the lock timeout. Two VMs started at once on thin volumes of one
   * pool both need the pool's lock; before 2026-12-07 the second was refused.
   */
  @Test
  void aSecondCommandOnAnLvThisHostIsWorkingOnWaitsForTheFirst() throws Exception {
    String vg = "vg_claims";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      Path gate = cluster.dir.resolve("gate");
      cluster.startAgent(cluster.config("host-a", cluster.slowLvm(gate), Duration.ofSeconds(4)));
      cluster.restoreThinPoolAndSnapshot("host-a");
      Files.createFile(gate.resolve("slow-lvchange"));
      try {

        CompletableFuture<RunCommandResponse> first =
            runAsync(cluster, "host-a", "lvchange", "-aey", vg + "/pool", vg + "/thin1");
        ClvmTestCluster.awaitGatedLvm(gate);
        CompletableFuture<RunCommandResponse> second =
            runAsync(cluster, "host-a", "lvchange", "-aey", vg + "/pool", vg + "/thin2");
        // A refusal would come within a second; the second command waits for the first's claim.
        org.awaitility.Awaitility.await("the second waits for the first's claim on the pool")
            .during(Duration.ofSeconds(1))
            .atMost(Duration.ofSeconds(3))
            .until(() -> !second.isDone());
        Files.createFile(gate.resolve("go"));
        assertSucceeded(first.get(30, TimeUnit.SECONDS));
        assertSucceeded(second.get(30, TimeUnit.SECONDS));
        assertThat(cluster.status("host-a").getActivationsList())
            .extracting(a -> a.getLogicalVolume() + " " + a.getMode())
            .containsExactlyInAnyOrder("pool EX", "thin1 EX", "thin2 EX");

        // Up to the lock timeout (4 s here), then LOCK_TIMEOUT names what it waited for.
        Files.delete(gate.resolve("go"));
        Files.delete(gate.resolve("started"));
        first = runAsync(cluster, "host-a", "lvchange", "-an", vg + "/thin2");
        ClvmTestCluster.awaitGatedLvm(gate);
        RefusalDetail timedOut = refusal(cluster, "host-a", "lvchange", "-an", vg + "/thin2");
        assertThat(timedOut.getReason()).isEqualTo(Refusal.LOCK_TIMEOUT);
        assertThat(timedOut.getMessage())
            .contains("another command on this host has been working on LV " + vg + "/thin2");
        Files.createFile(gate.resolve("go"));
        assertSucceeded(first.get(30, TimeUnit.SECONDS));
        assertThat(cluster.status("host-a").getActivationsList())
            .extracting(a -> a.getLogicalVolume() + " " + a.getMode())
            .containsExactlyInAnyOrder("pool EX", "thin1 EX");
      } finally {
        if (!Files.exists(gate.resolve("go"))) {
          Files.createFile(gate.resolve("go")); // a failed check must not leave lvm held
        }
      }
    }
  }

  private static CompletableFuture<RunCommandResponse> runAsync(
      ClvmTestCluster cluster, String host, String... argv) {
    return CompletableFuture.supplyAsync(() -> cluster.run(host, argv));
  }

  private static void assertSucceeded(RunCommandResponse r) {
    assertThat(r.getExitCode()).as(r.getStderr().toStringUtf8()).isZero();
  }

  private static RefusalDetail refusal(ClvmTestCluster cluster, String host, String... argv) {
    StatusRuntimeException refused =
        catchThrowableOfType(StatusRuntimeException.class, () -> cluster.run(host, argv));
    assertThat(refused).as(String.join(" ", argv) + " was not refused").isNotNull();
    return Refusals.detailOf(refused);
  }

  /**
   * lvrename renames the device before it waits for udev, so it can fail after the LV has its new
   * name. The activation lock of the LV, active here, must follow it: before, the lock stayed on
   * the old name and the new name was free, so another host could activate the LV as well.
   */
  @Test
  void anLvrenameThatFailsAfterRenamingMovesTheActivationLockAllTheSame() throws Exception {
    String vg = "vg_rename_fail";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      Path dir = startPartlyActivatingHostAAndHostB(cluster);
      cluster.ok("host-a", "lvcreate", "-n", "old", "-L", "4M", vg);
      Files.createFile(dir.resolve("fail-after-rename"));

      RunCommandResponse failed = cluster.run("host-a", "lvrename", vg, "old", "new");
      assertThat(failed.getExitCode()).isEqualTo(5);

      assertHostAHoldsIt(cluster, vg + "/new");
      assertThat(cluster.status("host-a").getActivationsList())
          .extracting(a -> a.getLogicalVolume() + " " + a.getMode())
          .contains("new EX")
          .doesNotContain("old EX");
    }
  }

  /**
   * Starts host-a with the stand-in lvm of {@link ClvmTestCluster#partlyActivatingLvm}, and host-b;
   * returns the stand-in's directory.
   */
  private static Path startPartlyActivatingHostAAndHostB(ClvmTestCluster cluster) throws Exception {
    Path dir = cluster.dir.resolve("partial-lvm");
    cluster.startAgent(
        cluster.config("host-a", cluster.partlyActivatingLvm(dir), ClvmTestCluster.LOCK_TIMEOUT));
    cluster.startAgent("host-b");
    return dir;
  }

  /** host-b's exclusive activation of {@code lv} is refused: host-a holds its lock. */
  private static void assertHostAHoldsIt(ClvmTestCluster cluster, String lv) {
    StatusRuntimeException refused =
        catchThrowableOfType(
            StatusRuntimeException.class, () -> cluster.run("host-b", "lvchange", "-aey", lv));
    RefusalDetail d = Refusals.detailOf(refused);
    assertThat(d.getReason()).isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
    assertThat(d.getHolder()).contains("host-a");
  }
}
