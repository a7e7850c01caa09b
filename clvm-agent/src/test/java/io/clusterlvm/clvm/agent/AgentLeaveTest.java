package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.clvm.lvm.DeviceMapper;
import io.clusterlvm.clvm.proto.HostStatusResponse;
import io.clusterlvm.clvm.proto.Refusal;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.Versioned;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import io.grpc.StatusRuntimeException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A clean leave releases every lock of the host's incarnation, so it must not happen under a
 * running lvm: another host would get the VG lock while this one still writes the metadata.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class AgentLeaveTest {

  /** An operator asks a host to leave ({@code dlmctl leave}) while its lvm holds the VG lock. */
  @Test
  void aRequestedLeaveWaitsForTheLvmInFlight() throws Exception {
    String vg = "vg_leave";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("host-a");
      Path gate = cluster.dir.resolve("gate");
      ClvmAgent slow = cluster.startSlowAgent("host-s", gate);
      FenceStore fence = new FenceStore(slow.curator(), "/clusterlvm");
      Files.createFile(gate.resolve("slow"));
      CompletableFuture<Finished> inFlight =
          CompletableFuture.supplyAsync(
              () ->
                  Finished.of(cluster.run("host-s", "lvcreate", "-n", "leaving", "-L", "4M", vg)));
      ClvmTestCluster.awaitGatedLvm(gate);

      fence.requestMembership("host-s", true, "test operator");
      CompletableFuture<Finished> other =
          CompletableFuture.supplyAsync(
              () -> Finished.of(cluster.run("host-a", "lvcreate", "-n", "other", "-L", "4M", vg)));
      // The leave waits for lvm: host-s stays a member, holding the VG lock, and host-a waits.
      await("the leave waits")
          .during(Duration.ofSeconds(4))
          .atMost(Duration.ofSeconds(6))
          .until(() -> !other.isDone() && state(fence, "host-s") == FenceState.MEMBER);

      Files.createFile(gate.resolve("go"));
      Finished leaving = inFlight.get(30, TimeUnit.SECONDS);
      Finished waited = other.get(30, TimeUnit.SECONDS);
      assertThat(leaving.exit()).as(leaving.stderr()).isZero();
      assertThat(waited.exit()).as(waited.stderr()).isZero();
      assertThat(waited.atNanos()).isGreaterThan(leaving.atNanos());
      await("host-s left")
          .atMost(Duration.ofSeconds(20))
          .until(() -> state(fence, "host-s") == FenceState.LEFT);
      assertThat(
              cluster.lvmHost("observer").lvm("lvs", "--noheadings", "-o", "lv_name", vg).stdout())
          .contains("leaving")
          .contains("other");
    }
  }

  /**
   * A leave stops an lvm that runs past the drain. What that lvm did to the VG is unknown, so the
   * VG lock's value block must not go on telling other hosts that their view of the VG is current:
   * the next host to take the lock refreshes it.
   */
  @Test
  void aLeaveThatStopsAnLvmLeavesTheVgSeqnoUnknown() throws Exception {
    String vg = "vg_unknown";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("host-a");
      Path gate = cluster.dir.resolve("gate");
      // A short drain: the leave stops the lvm after it (30 s by default).
      ClvmAgent slow = cluster.startSlowAgent("host-s", gate, Duration.ofSeconds(3));
      FenceStore fence = new FenceStore(slow.curator(), "/clusterlvm");
      RunCommandResponse first = cluster.run("host-a", "lvcreate", "-n", "first", "-L", "4M", vg);
      assertThat(first.getExitCode()).as(first.getStderr().toStringUtf8()).isZero();
      assertThat(cluster.status("host-a").getSeenSeqnoMap()).containsKey(vg);

      Files.createFile(gate.resolve("slow")); // and no "go": this lvm runs until it is stopped
      CompletableFuture<Finished> stuck =
          CompletableFuture.supplyAsync(
              () -> Finished.of(cluster.run("host-s", "lvcreate", "-n", "stuck", "-L", "4M", vg)));
      ClvmTestCluster.awaitGatedLvm(gate);
      fence.requestMembership("host-s", true, "test operator");
      await("host-s left, after stopping its lvm")
          .atMost(Duration.ofSeconds(60))
          .until(() -> state(fence, "host-s") == FenceState.LEFT);
      assertThatThrownBy(() -> stuck.get(10, TimeUnit.SECONDS))
          .hasRootCauseInstanceOf(StatusRuntimeException.class)
          .hasMessageContaining("UNKNOWN");

      long refreshes = cluster.status("host-a").getViewRefreshes();
      RunCommandResponse lvs = cluster.run("host-a", "lvs", vg);
      assertThat(lvs.getExitCode()).as(lvs.getStderr().toStringUtf8()).isZero();
      HostStatusResponse a = cluster.status("host-a");
      assertThat(a.getViewRefreshes()).isEqualTo(refreshes + 1);
      assertThat(a.getSeenSeqnoMap()).doesNotContainKey(vg);
      // The next change records a seqno again, read from the disk.
      RunCommandResponse after = cluster.run("host-a", "lvcreate", "-n", "after", "-L", "4M", vg);
      assertThat(after.getExitCode()).as(after.getStderr().toStringUtf8()).isZero();
      assertThat(cluster.status("host-a").getSeenSeqnoMap()).containsKey(vg);
    }
  }

  /**
   * A leave releases the host's activation locks, so it first deactivates the LVs they cover, and
   * is refused while one stays active: another host could otherwise activate an LV a VM here still
   * writes. lvm refuses {@code lvchange -an} of an LV that is open; with no device-mapper here, a
   * stand-in lvm answers so for the LV the test marks in use ({@link ClvmTestCluster#inUseLvm}).
   */
  @Test
  void aLeaveDeactivatesTheHostsLvsAndIsRefusedWhileOneIsInUse() throws Exception {
    String vg = "vg_inuse";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      Path dir = cluster.dir.resolve("in-use");
      FenceStore fence = startHostAAndInUseHostU(cluster, dir);
      for (String lv : List.of("busy", "idle")) {
        RunCommandResponse made = cluster.run("host-u", "lvcreate", "-n", lv, "-L", "4M", vg);
        assertThat(made.getExitCode()).as(made.getStderr().toStringUtf8()).isZero();
      }
      Files.writeString(dir.resolve("in-use"), vg + "/busy\n");

      fence.requestMembership("host-u", true, "test operator");
      awaitLeaveRefused(fence, "LVs still active on this host: " + vg + "/busy");
      assertThat(state(fence, "host-u")).isEqualTo(FenceState.MEMBER);
      assertThat(cluster.refusal("host-a", "lvchange", "-aey", vg + "/busy").getReason())
          .isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);

      // The VM is stopped: the next request deactivates both LVs, and the host leaves.
      Files.delete(dir.resolve("in-use"));
      await("the refused request is cleared")
          .atMost(Duration.ofSeconds(10))
          .until(() -> !fence.nodeRecord("host-u").orElseThrow().value().getLeaveRequested());
      int callsBefore = Files.readAllLines(dir.resolve("calls")).size();
      fence.requestMembership("host-u", true, "test operator");
      await("host-u left")
          .atMost(Duration.ofSeconds(30))
          .until(() -> state(fence, "host-u") == FenceState.LEFT);
      List<String> calls = Files.readAllLines(dir.resolve("calls"));
      assertThat(calls.subList(callsBefore, calls.size()))
          .anyMatch(c -> c.startsWith("lvchange") && c.contains("-an") && c.contains(vg + "/busy"))
          .anyMatch(c -> c.startsWith("lvchange") && c.contains("-an") && c.contains(vg + "/idle"));
      RunCommandResponse on = cluster.run("host-a", "lvchange", "-aey", vg + "/busy");
      assertThat(on.getExitCode()).as(on.getStderr().toStringUtf8()).isZero();
    }
  }

  /**
   * lvm cannot read the VG (its storage path is gone from this host) while the host's LVs stay
   * mapped in device-mapper: the leave must not take "lvs fails" for "the LV does not exist" and
   * release their locks, as it did; it is refused, and another host cannot activate them. (No
   * device-mapper here: a sysfs stand-in shows the LV mapped.)
   */
  @Test
  void aLeaveWhileLvmCannotReadTheVgKeepsTheLocks() throws Exception {
    String vg = "vg_vanish";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      Path dir = cluster.dir.resolve("in-use");
      FenceStore fence = startHostAAndInUseHostU(cluster, dir);
      RunCommandResponse made = cluster.run("host-u", "lvcreate", "-n", "vm", "-L", "4M", vg);
      assertThat(made.getExitCode()).as(made.getStderr().toStringUtf8()).isZero();
      Files.createFile(dir.resolve("vanished"));
      Path sysBlock = cluster.dir.resolve("sys-block");
      Files.createDirectories(sysBlock.resolve("dm-0").resolve("dm"));
      Files.writeString(sysBlock.resolve("dm-0").resolve("dm").resolve("name"), vg + "-vm\n");
      System.setProperty(DeviceMapper.SYS_BLOCK_PROPERTY, sysBlock.toString());
      try {
        fence.requestMembership("host-u", true, "test operator");
        awaitLeaveRefused(fence, "LVs still active on this host: " + vg + "/vm");
      } finally {
        System.clearProperty(DeviceMapper.SYS_BLOCK_PROPERTY);
      }
      assertThat(state(fence, "host-u")).isEqualTo(FenceState.MEMBER);
      assertThat(cluster.refusal("host-a", "lvchange", "-aey", vg + "/vm").getReason())
          .isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
    }
  }

  /**
   * A leave deactivates thin volumes before their pool (lvm keeps a pool active under an active
   * thin volume; the lock service lists "pool" first), and a snapshot with its origin, which lvm
   * asks about first: without {@code -y} it took the missing answer for "no", and the leave was
   * refused for good.
   */
  @Test
  void aLeaveDeactivatesThinVolumesBeforeTheirPoolAndSnapshotsWithTheirOrigin() throws Exception {
    String vg = "vg_leave_stacked";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      Path dir = cluster.dir.resolve("in-use");
      FenceStore fence = startHostAAndInUseHostU(cluster, dir);
      cluster.restoreThinPoolAndSnapshot("host-u");
      for (List<String> argv :
          List.of(
              List.of("lvchange", "-aey", vg + "/pool", vg + "/thin1"),
              List.of("lvchange", "-aey", "-y", vg + "/base", vg + "/snap"))) {
        RunCommandResponse on = cluster.run("host-u", argv.toArray(String[]::new));
        assertThat(on.getExitCode()).as(on.getStderr().toStringUtf8()).isZero();
      }
      int callsBefore = Files.readAllLines(dir.resolve("calls")).size();

      fence.requestMembership("host-u", true, "test operator");
      await("host-u left")
          .atMost(Duration.ofSeconds(30))
          .until(() -> state(fence, "host-u") == FenceState.LEFT);
      List<String> calls = Files.readAllLines(dir.resolve("calls"));
      List<String> deactivations =
          calls.subList(callsBefore, calls.size()).stream()
              .filter(c -> c.startsWith("lvchange") && c.contains("-an"))
              .map(c -> c.substring(c.lastIndexOf(' ') + 1))
              .toList();
      assertThat(deactivations)
          .containsExactly(vg + "/base", vg + "/snap", vg + "/thin1", vg + "/pool");
      RunCommandResponse on =
          cluster.run("host-a", "lvchange", "-aey", vg + "/pool", vg + "/thin2");
      assertThat(on.getExitCode()).as(on.getStderr().toStringUtf8()).isZero();
    }
  }

  /**
   * A start that fails after the join (here: its TCP port is taken) leaves the fence domain.
   * Before, the lease ended with the failed process, and the fencer took the host for failed and
   * powered it off, with its running VMs, for a configuration error.
   */
  @Test
  void aStartThatFailsAfterItsJoinLeavesInsteadOfGettingTheHostFenced() throws Exception {
    try (ClvmTestCluster cluster = ClvmTestCluster.start("vg_failed_start");
        java.net.ServerSocket taken =
            new java.net.ServerSocket(0, 50, java.net.InetAddress.getLoopbackAddress())) {
      ClvmAgent fencer = cluster.startAgent("host-a");
      FenceStore fence = new FenceStore(fencer.curator(), "/clusterlvm");
      AgentConfig failing =
          cluster.config(
              "host-f",
              Path.of(io.clusterlvm.testing.LoopVolumeGroup.lvmBinary()),
              ClvmTestCluster.LOCK_TIMEOUT,
              io.clusterlvm.clvm.lvm.LvmRunner.DEFAULT_TIMEOUT,
              "127.0.0.1:" + taken.getLocalPort());
      assertThatThrownBy(() -> cluster.startAgent(failing)).isNotNull();

      assertThat(state(fence, "host-f")).isEqualTo(FenceState.LEFT);
      await("host-f stays LEFT: nobody takes it for failed")
          .during(Duration.ofSeconds(3))
          .atMost(Duration.ofSeconds(5))
          .until(() -> state(fence, "host-f") == FenceState.LEFT);
      assertThat(fence.history("host-f", 100))
          .extracting(e -> e.getEvent())
          .containsExactly("joined", "left");
    }
  }

  /**
   * Starts host-a, and host-u with the stand-in lvm of {@link ClvmTestCluster#inUseLvm} in {@code
   * dir}; returns the fence records, read through host-u's session.
   */
  private static FenceStore startHostAAndInUseHostU(ClvmTestCluster cluster, Path dir)
      throws Exception {
    cluster.startAgent("host-a");
    ClvmAgent u =
        cluster.startAgent(
            cluster.config("host-u", cluster.inUseLvm(dir), ClvmTestCluster.LOCK_TIMEOUT));
    return new FenceStore(u.curator(), "/clusterlvm");
  }

  /** Waits for host-u's one "leave-refused" event, saying {@code saying}. */
  private static void awaitLeaveRefused(FenceStore fence, String saying) {
    await("the leave is refused")
        .atMost(Duration.ofSeconds(30))
        .untilAsserted(
            () ->
                assertThat(fence.history("host-u", 100))
                    .filteredOn(e -> e.getEvent().equals("leave-refused"))
                    .singleElement()
                    .satisfies(e -> assertThat(e.getMessage()).contains(saying)));
  }

  private static FenceState state(FenceStore fence, String node) throws Exception {
    return fence
        .nodeRecord(node)
        .map(Versioned::value)
        .map(FenceNodeRecord::getState)
        .orElse(FenceState.FENCE_STATE_UNSPECIFIED);
  }

  /** A command's result, and when the test heard it. */
  private record Finished(int exit, String stderr, long atNanos) {
    static Finished of(RunCommandResponse r) {
      return new Finished(r.getExitCode(), r.getStderr().toStringUtf8(), System.nanoTime());
    }
  }
}
