package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.testing.ChildProcesses;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The agent process is killed while its lvm runs. The lvm does not die with it: it goes on under
 * the locks of the agent's incarnation. When the agent comes back on the same boot, it attests that
 * this host runs no storage work of that incarnation and its locks are released, so it must first
 * stop the lvm the earlier process left running.
 */
@Timeout(value = 150, unit = TimeUnit.SECONDS)
class OrphanedLvmTest {

  @Test
  void aRestartedAgentStopsTheLvmItsKilledPredecessorLeftRunning() throws Exception {
    String vg = "vg_orphan";
    try (ClvmTestCluster cluster = ClvmTestCluster.start(vg)) {
      cluster.startAgent("host-a");
      Path gate = cluster.dir.resolve("gate");
      cluster.startAgentProcess(
          "host-s", java.util.List.of(), cluster.zk.getConnectString(), cluster.slowLvm(gate));
      Files.createFile(gate.resolve("slow")); // and no "go": it runs until it is stopped
      CompletableFuture.runAsync(
          () -> {
            try {
              cluster.run("host-s", "lvcreate", "-n", "orphan", "-L", "4M", vg);
            } catch (RuntimeException expected) {
              // the agent is killed under it
            }
          });
      long lvmPid = ClvmTestCluster.awaitGatedLvm(gate);
      try {
        cluster.killAgentProcess("host-s");
        assertThat(ChildProcesses.running(lvmPid)).as("lvm outlives its agent").isTrue();

        // Same boot: the agent attests, and the locks of its old incarnation go.
        ClvmAgent restarted = cluster.startAgent("host-s");
        assertThat(restarted.membership().mayUseStorage()).isTrue();
        assertThat(ChildProcesses.running(lvmPid))
            .as("the old lvm stopped before the attestation")
            .isFalse();
        RunCommandResponse other = cluster.run("host-a", "lvcreate", "-n", "after", "-L", "4M", vg);
        assertThat(other.getExitCode()).as(other.getStderr().toStringUtf8()).isZero();
      } finally {
        ProcessHandle.of(lvmPid).ifPresent(ProcessHandle::destroyForcibly);
      }
    }
  }
}
