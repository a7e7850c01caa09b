package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.clvm.proto.Refusal;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.testing.Async;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * An agent restart (systemd's stop, then a new process) while a VM still uses an LV of the host.
 * The stop cannot deactivate the LV, and a leave would release its activation lock, so the stopping
 * agent hands its lease over; the next process on the same boot takes it and every lock up, as the
 * same incarnation, and the host is not fenced. With no device-mapper here, a stand-in lvm answers
 * for the LV in use ({@link ClvmTestCluster#inUseLvm}).
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class AgentRestartTest {
  /** The stopped process's session timeout: the time the restart has, on a busy machine too. */
  private static final Duration LEASE = Duration.ofSeconds(10);

  @Test
  void aRestartWithAnLvInUseKeepsTheLeaseAndTheLvLock() throws Exception {
    String vg = "vg_restart";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      Hosts h = hostsWithAnActiveLv(cluster, vg);
      FenceStore fence = h.fence();
      Path dir = h.dir();
      Path lvm = h.lvm();
      long incarnation = record(fence).getIncarnation();
      Files.writeString(dir.resolve("in-use"), vg + "/busy\n");

      cluster.stopAgentProcess("host-u");
      assertThat(cluster.agentLog("host-u")).contains("Not leaving: this host keeps its lease");
      // While no agent runs on the host, it keeps its lease, and its VM the LV's lock.
      assertThat(record(fence).getState()).isEqualTo(FenceState.MEMBER);
      assertThat(fence.memberRecord("host-u")).isPresent();
      assertThat(cluster.refusal("host-a", "lvchange", "-aey", vg + "/busy").getReason())
          .isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);

      ClvmAgent restarted =
          cluster.startAgent(cluster.config("host-u", lvm, ClvmTestCluster.LOCK_TIMEOUT));
      assertThat(restarted.membership().resumed()).isTrue();
      assertThat(restarted.membership().incarnation()).isEqualTo(incarnation);
      assertThat(cluster.stateDir("host-u").resolve(SessionHandover.FILE)).doesNotExist();
      // Past the session timeout of the stopped process: nobody takes the host for failed.
      await("host-u stays a member")
          .during(LEASE.plusSeconds(2))
          .atMost(LEASE.plusSeconds(10))
          .until(
              () ->
                  record(fence).getState() == FenceState.MEMBER
                      && record(fence).getIncarnation() == incarnation);
      assertThat(fence.history("host-u", 100))
          .extracting(FenceEvent::getEvent)
          .contains("resumed")
          .doesNotContain("failed", "fenced", "left");
      assertThat(cluster.refusal("host-a", "lvchange", "-aey", vg + "/busy").getReason())
          .isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);

      // The lock is the new process's: once the VM is stopped, a deactivation here releases it.
      Files.delete(dir.resolve("in-use"));
      RunCommandResponse off = cluster.run("host-u", "lvchange", "-an", vg + "/busy");
      assertThat(off.getExitCode()).as(off.getStderr().toStringUtf8()).isZero();
      RunCommandResponse on = cluster.run("host-a", "lvchange", "-aey", vg + "/busy");
      assertThat(on.getExitCode()).as(on.getStderr().toStringUtf8()).isZero();
    }
  }

  /**
   * The stop deactivates first and then leaves, and the leave deactivates again once the commands
   * in flight have stopped, asking the lock service again which LVs are the host's. If it answered
   * the first time and not the second, the stop hands the lease over, as when the first pass gets
   * no answer, rather than letting the host be fenced.
   */
  @Test
  void aStopWhoseLeaveCannotAskTheLockServiceHandsTheLeaseOver() throws Exception {
    String vg = "vg_restart2";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      // Its second pass's listing gives up after the agent's retry window, short here.
      Hosts h = hostsWithAnActiveLv(cluster, vg, Duration.ofSeconds(5));
      FenceStore fence = h.fence();
      Path dir = h.dir();
      Path lvm = h.lvm();
      long incarnation = record(fence).getIncarnation();
      Files.writeString(dir.resolve("hold"), vg + "/busy\n");

      CompletableFuture<Void> stopped =
          Async.run(() -> cluster.stopAgentProcess("host-u", Duration.ofSeconds(120)));
      // The first pass has listed the host's LVs and deactivates them: the lock service goes.
      await("first deactivation").atMost(Duration.ofSeconds(30)).until(() -> held(dir));
      cluster.stopDlmServer();
      Files.createFile(dir.resolve("go"));
      stopped.get(130, TimeUnit.SECONDS);
      assertThat(cluster.agentLog("host-u"))
          .contains("leave refused: could not deactivate this host's LVs")
          .contains("Not leaving: this host keeps its lease");
      assertThat(record(fence).getState()).isEqualTo(FenceState.MEMBER);

      // The next process resumes the session at once, and waits for the lock service to adopt.
      CompletableFuture<Void> back = Async.run(cluster::startDlmServerAgain);
      ClvmAgent restarted =
          cluster.startAgent(cluster.config("host-u", lvm, ClvmTestCluster.LOCK_TIMEOUT));
      back.get(30, TimeUnit.SECONDS);
      assertThat(restarted.membership().resumed()).isTrue();
      assertThat(restarted.membership().incarnation()).isEqualTo(incarnation);
      assertThat(cluster.refusal("host-a", "lvchange", "-aey", vg + "/busy").getReason())
          .isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
      assertThat(fence.history("host-u", 100))
          .extracting(FenceEvent::getEvent)
          .contains("resumed")
          .doesNotContain("failed", "fenced", "left");
      // The lock is the new process's: a deactivation here releases it, and the stop can leave.
      RunCommandResponse off = cluster.run("host-u", "lvchange", "-an", vg + "/busy");
      assertThat(off.getExitCode()).as(off.getStderr().toStringUtf8()).isZero();
      RunCommandResponse on = cluster.run("host-a", "lvchange", "-aey", vg + "/busy");
      assertThat(on.getExitCode()).as(on.getStderr().toStringUtf8()).isZero();
    }
  }

  private static boolean held(Path dir) {
    return Files.exists(dir.resolve("holding"));
  }

  /** host-a in this JVM; host-u as a process with a stand-in lvm, and {@code vg}/busy active. */
  private static Hosts hostsWithAnActiveLv(ClvmTestCluster cluster, String vg) throws Exception {
    return hostsWithAnActiveLv(cluster, vg, ClvmTestCluster.DLM_RETRY_WINDOW);
  }

  /** The same, host-u with its {@code --dlm-retry-window}. */
  private static Hosts hostsWithAnActiveLv(
      ClvmTestCluster cluster, String vg, Duration dlmRetryWindow) throws Exception {
    ClvmAgent a = cluster.startAgent("host-a");
    Path dir = cluster.dir.resolve("in-use");
    Path lvm = cluster.inUseLvm(dir);
    cluster.startAgentProcess(
        "host-u", List.of(), cluster.zk.getConnectString(), lvm, LEASE, dlmRetryWindow);
    RunCommandResponse made = cluster.run("host-u", "lvcreate", "-n", "busy", "-L", "4M", vg);
    assertThat(made.getExitCode()).as(made.getStderr().toStringUtf8()).isZero();
    return new Hosts(new FenceStore(a.curator(), "/clusterlvm"), dir, lvm);
  }

  /** What the tests use of {@link #hostsWithAnActiveLv}: the fence records, the stand-in lvm. */
  private record Hosts(FenceStore fence, Path dir, Path lvm) {}

  private static FenceNodeRecord record(FenceStore fence) throws Exception {
    return fence.nodeRecord("host-u").orElseThrow().value();
  }
}
