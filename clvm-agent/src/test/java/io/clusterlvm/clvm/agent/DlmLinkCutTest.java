package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.testing.LoopVolumeGroup;
import io.clusterlvm.testing.NetworkNamespace;
import io.clusterlvm.testing.NetworkNamespace.Link;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A host loses its path to the dlm-servers but not to ZooKeeper, while lvm runs there under the VG
 * lock: a failed switch port on a storage-side network, say. Its lease lives (the agent heartbeats
 * it), so it is neither failed nor fenced, and nothing stops the lvm it runs. The lock service must
 * keep the VG lock for it: handing the lock on would give the VG two metadata writers. Once the
 * link is back, the agent's session resumes, lvm's result stands and the lock goes to the host that
 * waited.
 *
 * <p>The host's agent runs in its own network namespace with two links, one to ZooKeeper and one to
 * the dlm-server; the test cuts only the second.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class DlmLinkCutTest {
  private static final Logger LOG = LoggerFactory.getLogger(DlmLinkCutTest.class);

  /**
   * How long the link stays cut with lvm running. The agent's client notices after its keepalive
   * (10 s + 5 s); it used to give the session up after its retry window (set to 5 s here) more, and
   * stop lvm: 20 s. The leader notices after its own keepalive (10 s + 5 s), and used to end the
   * session after its grace for broken sessions (6 s) more, and hand the VG lock on: 21 s. Both
   * with a margin for a slow keepalive.
   */
  private static final Duration CUT = Duration.ofSeconds(32);

  private static final Duration RETRY_WINDOW = Duration.ofSeconds(5);

  @Test
  void aHostCutOffFromTheLockServiceOnlyKeepsTheVgLockUntilItIsBack() throws Exception {
    NetworkNamespace.assumeAvailable();
    String vg = "vg_dlmcut";
    try (NetworkNamespace ns = NetworkNamespace.create()) {
      Link zkLink = ns.link();
      Link dlmLink = ns.link();
      try (ClvmTestCluster cluster = ClvmTestCluster.start(vg, dlmLink.hostAddress())) {
        Path gate = cluster.dir.resolve("gate");
        cluster.startAgentProcess(
            "host-c",
            ns.execPrefix(),
            zkLink.hostAddress() + ":" + cluster.zk.getPort(),
            cluster.slowLvm(gate),
            ClvmTestCluster.AGENT_LEASE,
            RETRY_WINDOW);
        // The other host waits for the VG lock for as long as the cut lasts, and more.
        cluster.startAgent(
            cluster.config(
                "host-w", Path.of(LoopVolumeGroup.lvmBinary()), Duration.ofSeconds(120)));

        Files.createFile(gate.resolve("slow"));
        CompletableFuture<Finished> cutOff =
            CompletableFuture.supplyAsync(
                () -> Finished.of(cluster.run("host-c", "lvcreate", "-n", "lv_c", "-L", "4M", vg)));
        ClvmTestCluster.awaitGatedLvm(gate);

        long cutAt = System.nanoTime();
        ns.cut(dlmLink);
        CompletableFuture<Finished> waiter =
            CompletableFuture.supplyAsync(
                () -> Finished.of(cluster.run("host-w", "lvcreate", "-n", "lv_w", "-L", "4M", vg)));

        // The leader hears nothing from host-c's agent, whose lease heartbeats on: host-w must
        // not get the VG lock while host-c's lvm runs.
        await("the cut lasts")
            .pollDelay(CUT)
            .atMost(CUT.plusSeconds(5))
            .until(() -> !waiter.isDone());
        assertThat(cluster.agentLog("host-c")).doesNotContain("is lost");

        Files.createFile(gate.resolve("go")); // host-c's lvm goes on and ends while still cut off
        Thread.sleep(1000); // nothing to wait on: lvm's end cannot reach the lock service
        assertThat(waiter).isNotDone();
        ns.heal(dlmLink);
        long healedAt = System.nanoTime();

        Finished c = cutOff.get(60, TimeUnit.SECONDS);
        Finished w = waiter.get(60, TimeUnit.SECONDS);
        assertThat(c.exit()).as(c.stderr()).isZero();
        assertThat(w.exit()).as(w.stderr()).isZero();
        assertThat(w.atNanos()).isGreaterThan(healedAt);
        assertThat(cluster.agentLog("host-c")).doesNotContain("is lost");
        RunCommandResponse lvs = cluster.run("host-w", "lvs", "--noheadings", "-o", "lv_name", vg);
        assertThat(lvs.getStdout().toStringUtf8()).contains("lv_c").contains("lv_w");
        LOG.info(
            "dlm link cut for {} ms with lvm running: host-c's lvcreate ended {} ms and host-w's"
                + " {} ms after the heal",
            TimeUnit.NANOSECONDS.toMillis(healedAt - cutAt),
            TimeUnit.NANOSECONDS.toMillis(c.atNanos() - healedAt),
            TimeUnit.NANOSECONDS.toMillis(w.atNanos() - healedAt));
      }
    }
  }

  /** A command's result, and when the test heard it. */
  private record Finished(int exit, String stderr, long atNanos) {
    static Finished of(RunCommandResponse r) {
      return new Finished(r.getExitCode(), r.getStderr().toStringUtf8(), System.nanoTime());
    }
  }
}
