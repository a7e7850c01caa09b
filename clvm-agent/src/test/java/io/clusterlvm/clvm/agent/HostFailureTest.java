package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.clvm.proto.HostStatusResponse;
import io.clusterlvm.clvm.proto.Refusal;
import io.clusterlvm.clvm.proto.RefusalDetail;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.clvm.rpc.Refusals;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.proto.FenceState;
import io.grpc.Status;
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
 * Rules 2 and 3 through the agent: what happens to a host's storage work and locks when the host
 * fails (its agent is killed) or loses its membership lease in the middle of a command.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class HostFailureTest {

  /**
   * A VM disk active on a host that dies stays locked: no other host can activate it, however long
   * it waits, until the failed incarnation is purged (what the fence bridge does once a fence
   * agent, or an operator, confirms the host is off).
   */
  @Test
  void aFailedHostsActivationLocksStayHeldUntilItIsPurged() throws Exception {
    String vg = "vg_fail";
    String lv = vg + "/vm-101-disk-1";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("host-a");
      Process doomed = cluster.startAgentProcess("host-p");

      // On host-p, through bin/clvm installed as lvcreate/lvchange, as a real process.
      ClvmTestCluster.Run created =
          cluster.clvm("host-p", "lvcreate", "-an", "-n", "vm-101-disk-1", "-L", "4M", vg);
      assertThat(created.exitCode()).as(created.stderr()).isZero();
      ClvmTestCluster.Run active = cluster.clvm("host-p", "lvchange", "-aey", lv);
      assertThat(active.exitCode()).as(active.stderr()).isZero();
      long incarnation = cluster.admin.node("host-p").getIncarnation();
      assertThat(holders(cluster, "lvm_" + vg, "vm-101-disk-1"))
          .containsExactly("host-p/" + incarnation + " EX persistent");

      cluster.killAgentProcess("host-p");
      assertThat(doomed.isAlive()).isFalse();

      // Refused at once, naming the dead host; and it stays so past the lease timeout and the
      // lock service's grace for broken sessions, while the fence domain declares host-p failed.
      FenceStore fence = new FenceStore(cluster.agent("host-a").curator(), "/clusterlvm");
      await("host-p declared failed")
          .atMost(Duration.ofSeconds(30))
          .until(
              () ->
                  fence
                      .nodeRecord("host-p")
                      .map(r -> r.value().getState())
                      .filter(s -> s == FenceState.FAILED || s == FenceState.FENCING)
                      .isPresent());
      await("host-p's activation lock stays held")
          .during(Duration.ofSeconds(8))
          .atMost(Duration.ofSeconds(20))
          .pollInterval(Duration.ofSeconds(1))
          .until(() -> refusedNaming(cluster, "host-p/" + incarnation, lv));
      assertThat(holders(cluster, "lvm_" + vg, "vm-101-disk-1"))
          .containsExactly("host-p/" + incarnation + " EX persistent");

      // Fenced: the fence bridge would purge the incarnation now; the test stands in for it.
      cluster.admin.purge("host-p", incarnation, "test: host-p confirmed off");
      RunCommandResponse taken = cluster.run("host-a", "lvchange", "-aey", lv);
      assertThat(taken.getExitCode()).as(taken.getStderr().toStringUtf8()).isZero();
      assertThat(holders(cluster, "lvm_" + vg, "vm-101-disk-1"))
          .singleElement()
          .asString()
          .startsWith("host-a/");
    }
  }

  private static boolean refusedNaming(ClvmTestCluster cluster, String holder, String lv) {
    StatusRuntimeException e =
        catchThrowableOfType(
            StatusRuntimeException.class, () -> cluster.run("host-a", "lvchange", "-aey", lv));
    if (e == null) {
      return false;
    }
    RefusalDetail d = Refusals.detailOf(e);
    return d != null
        && d.getReason() == Refusal.LOCK_HELD_ELSEWHERE
        && d.getHolder().contains(holder)
        && e.getStatus().getDescription().contains("is in use on another host");
  }

  /**
   * The lease is lost while lvm runs: the agent kills lvm (the host may already have been declared
   * failed and its locks handed on), tells the client the outcome is unknown, and rejoins with a
   * new incarnation, after which commands work again and the other host was never blocked for good.
   */
  @Test
  void aCommandInFlightWhenTheLeaseIsLostIsReportedAsSuch() throws Exception {
    String vg = "vg_lease";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("host-a");
      Path gate = cluster.dir.resolve("gate");
      ClvmAgent slow = cluster.startSlowAgent("host-s", gate);
      long incarnation = slow.membership().incarnation();
      Files.createFile(gate.resolve("slow"));

      CompletableFuture<RunCommandResponse> inFlight =
          CompletableFuture.supplyAsync(
              () -> cluster.run("host-s", "lvcreate", "-n", "inflight-1", "-L", "4M", vg));
      long lvmPid = ClvmTestCluster.awaitGatedLvm(gate);
      HostStatusResponse during = cluster.status("host-s");
      assertThat(during.getCommandsInFlightList())
          .singleElement()
          .satisfies(c -> assertThat(c.getStage()).isEqualTo("RUNNING_LVM"));

      cluster.expireSession(slow.curator());

      StatusRuntimeException e =
          (StatusRuntimeException)
              catchThrowableOfType(
                      java.util.concurrent.ExecutionException.class,
                      () -> inFlight.get(60, TimeUnit.SECONDS))
                  .getCause();
      assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.ABORTED);
      RefusalDetail d = Refusals.detailOf(e);
      assertThat(d.getReason()).isEqualTo(Refusal.LEASE_LOST_IN_FLIGHT);
      assertThat(d.getLvmStarted()).isTrue();
      assertThat(d.getMessage())
          .contains("this host lost its membership lease")
          .contains("'lvcreate -n inflight-1 -L 4M " + vg + "' was running")
          .contains("UNKNOWN");
      // lvm was stopped, not left running under locks that may belong to someone else now.
      await("lvm killed")
          .atMost(Duration.ofSeconds(10))
          .until(() -> ProcessHandle.of(lvmPid).map(p -> !p.isAlive()).orElse(true));
      assertThat(
              cluster.lvmHost("observer").lvm("lvs", "--noheadings", "-o", "lv_name", vg).stdout())
          .doesNotContain("inflight-1");
      assertThat(Files.readString(Path.of(during.getMetadataLog())))
          .containsPattern("\\tend\\tentry=\\d+\\toutcome=unknown: ");

      // The host rejoins with a new incarnation; the old one's locks were purged on the way.
      await("host-s rejoined")
          .atMost(Duration.ofSeconds(60))
          .until(
              () ->
                  slow.membership().incarnation() > incarnation
                      && slow.membership().mayUseStorage());
      RunCommandResponse other = cluster.run("host-a", "lvcreate", "-n", "other-1", "-L", "4M", vg);
      assertThat(other.getExitCode()).as(other.getStderr().toStringUtf8()).isZero();
      Files.delete(gate.resolve("slow"));
      RunCommandResponse again = cluster.run("host-s", "lvcreate", "-n", "after-1", "-L", "4M", vg);
      assertThat(again.getExitCode()).as(again.getStderr().toStringUtf8()).isZero();
      assertThat(cluster.status("host-s").getIncarnation()).isGreaterThan(incarnation);
    }
  }

  /**
   * Self-fence: while the ZooKeeper connection is down (SUSPENDED), no new storage command starts;
   * when it is back and the lease confirmed (or renewed by a rejoin), commands run again.
   */
  @Test
  void noCommandStartsWhileTheZooKeeperConnectionIsSuspended() throws Exception {
    String vg = "vg_susp";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      ClvmAgent agent = cluster.startAgent("host-a");
      assertThat(cluster.run("host-a", "vgs", vg).getExitCode()).isZero();

      cluster.zk.stop();
      await("suspended")
          .atMost(Duration.ofSeconds(20))
          .until(() -> !agent.membership().mayUseStorage());
      StatusRuntimeException e =
          catchThrowableOfType(
              StatusRuntimeException.class, () -> cluster.run("host-a", "vgs", vg));
      assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
      assertThat(Refusals.detailOf(e).getReason()).isEqualTo(Refusal.SUSPENDED);
      assertThat(e.getStatus().getDescription())
          .startsWith("this host's ZooKeeper connection is SUSPENDED (node host-a)");
      ClvmTestCluster.Run viaClvm = cluster.clvm("host-a", "clvm", "lvs", vg);
      assertThat(viaClvm.exitCode()).isEqualTo(77);
      assertThat(cluster.status("host-a").getStorageAllowed()).isFalse();

      cluster.zk.restart();
      await("storage allowed again")
          .atMost(Duration.ofSeconds(60))
          .until(() -> agent.membership().mayUseStorage());
      await("commands run again")
          .atMost(Duration.ofSeconds(60))
          .ignoreExceptions()
          .until(() -> cluster.run("host-a", "vgs", vg).getExitCode() == 0);
    }
  }

  /** "node/incarnation MODE[ persistent]" of every granted lock on a resource. */
  private static List<String> holders(ClvmTestCluster cluster, String ls, String res) {
    return cluster.admin.locks(ls).stream()
        .filter(r -> r.getResource().equals(res))
        .map(ResourceInfo::getGrantedList)
        .flatMap(List::stream)
        .map(
            (LockInfo l) ->
                l.getOwner().getNode()
                    + "/"
                    + l.getOwner().getIncarnation()
                    + " "
                    + l.getGrantedMode().name()
                    + (l.getPersistent() ? " persistent" : ""))
        .sorted()
        .toList();
  }
}
