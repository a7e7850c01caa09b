package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.clusterlvm.clvm.lvm.LvcreateExperiment;
import io.clusterlvm.clvm.lvm.LvcreateExperiment.Attempt;
import io.clusterlvm.clvm.lvm.LvcreateExperiment.Outcome;
import io.clusterlvm.clvm.lvm.UncoordinatedLvcreateControlTest;
import io.clusterlvm.clvm.proto.ListVolumesResponse;
import io.clusterlvm.clvm.proto.LogicalVolume;
import io.clusterlvm.clvm.proto.Refusal;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.clvm.rpc.ClvmClient;
import io.clusterlvm.clvm.rpc.Refusals;
import io.clusterlvm.testing.LoopVolumeGroup;
import io.grpc.StatusRuntimeException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Rule 1 end to end: three hosts create 30 LVs each in one shared VG at the same time, each through
 * its own clvm-agent (unix socket, gRPC), coordinated by a real dlm-server. Nothing may be lost:
 * exactly 90 LVs, consistent metadata (vgck), every host's report lists all 90, and the VG seqno
 * went up by exactly one per lvcreate (no commit overwrote another). The same workload without the
 * agents, on a second loop device, is printed beside it.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class ConcurrentClvmLvcreateTest {

  private static final String VG = "vg_conc";
  private static final String LS = "lvm_" + VG;
  private static final int HOSTS = 3;
  private static final int LVS_PER_HOST = 30;
  private static final List<String> NODES = List.of("host-0", "host-1", "host-2");

  @Test
  void threeHostsCreateThirtyLvsEachThroughTheirAgents() throws Exception {
    Outcome coordinated;
    try (ClvmTestCluster cluster = ClvmTestCluster.startWithoutVg(VG)) {
      List<ClvmClient> clients = new ArrayList<>();
      for (String node : NODES) {
        cluster.startAgent(node);
        clients.add(cluster.client(node));
      }
      // The shared VG itself is made through clvm, under the global lock.
      String device = cluster.lun.device();
      assertThat(resources(cluster.ok("host-0", "pvcreate", "-y", device)))
          .containsExactly("lvm_global/GLLK EX");
      RunCommandResponse vgcreate = cluster.ok("host-0", "vgcreate", "--shared", VG, device);
      assertThat(resources(vgcreate)).containsExactly("lvm_global/GLLK EX", LS + "/VGLK EX");
      assertThat(vgcreate.getStderr().toStringUtf8())
          .startsWith("clvm: --shared: the VG is shared through clvm's cluster locks")
          .contains("clvm: --setautoactivation n");
      // No host activates its LVs at boot, without their locks.
      assertThat(
              cluster
                  .ok("host-1", "vgs", "--noheadings", "-o", "vg_autoactivation", VG)
                  .getStdout()
                  .toStringUtf8()
                  .strip())
          .isEmpty();
      assertThat(
              cluster
                  .ok("host-2", "vgs", "--noheadings", "-o", "vg_name")
                  .getStdout()
                  .toStringUtf8()
                  .strip())
          .isEqualTo(VG);
      long seqnoBefore = Long.parseLong(vgsSeqno(cluster));

      long start = System.nanoTime();
      List<Attempt> attempts =
          LvcreateExperiment.runConcurrently(
              HOSTS,
              LVS_PER_HOST,
              (h, lv) -> {
                RunCommandResponse r =
                    clients
                        .get(h)
                        .run(
                            List.of("lvcreate", "-n", lv, "-L", "4M", VG),
                            "test",
                            Duration.ofSeconds(120));
                return new Attempt(NODES.get(h), lv, r.getExitCode(), r.getStderr().toStringUtf8());
              });
      long elapsedMillis = (System.nanoTime() - start) / 1_000_000;
      coordinated =
          LvcreateExperiment.observe(cluster.lvmHost("observer"), VG, attempts, elapsedMillis);
      System.out.println(
          coordinated.report("each through its clvm-agent (VG lock EX)", HOSTS, LVS_PER_HOST));

      Set<String> expected = new TreeSet<>();
      for (int h = 0; h < HOSTS; h++) {
        for (int i = 0; i < LVS_PER_HOST; i++) {
          expected.add(LvcreateExperiment.lvName(h, i));
        }
      }
      assertThat(attempts).allSatisfy(a -> assertThat(a.exitCode()).as(a.stderr()).isZero());
      assertThat(coordinated.visibleLvs()).isEqualTo(HOSTS * LVS_PER_HOST);
      assertThat(coordinated.lostAfterSuccess()).isZero();
      assertThat(coordinated.vgckExit()).as(coordinated.vgckOutput()).isZero();
      assertThat(coordinated.seqno()).isEqualTo(seqnoBefore + HOSTS * LVS_PER_HOST);

      // Every host's own view lists all 90: through ListVolumes and through a plain 'clvm lvs'.
      for (int h = 0; h < HOSTS; h++) {
        ListVolumesResponse v = clients.get(h).listVolumes(Duration.ofSeconds(60));
        Set<String> listed =
            v.getLogicalVolumesList().stream()
                .filter(lv -> lv.getVolumeGroup().equals(VG))
                .map(LogicalVolume::getName)
                .collect(Collectors.toCollection(TreeSet::new));
        assertThat(listed).as("ListVolumes on %s", NODES.get(h)).isEqualTo(expected);
        // Each host created (and so activated) its own 30: it holds their activation locks.
        String mine = "h" + h + "-";
        assertThat(v.getLogicalVolumesList())
            .filteredOn(lv -> lv.getName().startsWith(mine))
            .allSatisfy(lv -> assertThat(lv.getActiveHere()).isEqualTo("EX"));
        RunCommandResponse lvs =
            clients
                .get(h)
                .run(
                    List.of("lvs", "--noheadings", "-o", "lv_name", VG),
                    "test",
                    Duration.ofSeconds(60));
        Set<String> reported =
            lvs.getStdout()
                .toString(StandardCharsets.UTF_8)
                .lines()
                .map(String::strip)
                .filter(l -> !l.isEmpty())
                .collect(Collectors.toCollection(TreeSet::new));
        assertThat(reported).as("clvm lvs on %s", NODES.get(h)).isEqualTo(expected);
        assertThat(cluster.status(NODES.get(h)).getSeenSeqnoMap())
            .containsEntry(VG, seqnoBefore + HOSTS * LVS_PER_HOST);
      }

      // Removing the VG needs every LV inactive on every host.
      StatusRuntimeException busy =
          catchThrowableOfType(
              StatusRuntimeException.class, () -> cluster.run("host-0", "vgremove", "-y", VG));
      assertThat(Refusals.detailOf(busy).getReason()).isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
      for (String node : NODES) {
        cluster.ok(node, "vgchange", "-an", VG);
        assertThat(cluster.status(node).getActivationsList()).isEmpty();
      }
      cluster.ok("host-0", "vgremove", "-y", VG);
      cluster.ok("host-0", "pvremove", "-y", device);
      assertThat(cluster.lvmHost("observer").lvm("vgs", VG).exitCode()).isNotZero();
      assertThat(cluster.admin.locks(LS)).allSatisfy(r -> assertThat(r.getGrantedList()).isEmpty());
    }

    // The control: the same workload, bare lvm, no cluster lock.
    LoopVolumeGroup control = LoopVolumeGroup.create("vg_conc_ctl", 1L << 30);
    Outcome uncoordinated;
    try {
      control.createSharedVg();
      uncoordinated = UncoordinatedLvcreateControlTest.runWithoutClusterLock(control);
    } finally {
      control.close();
    }
    System.out.println(uncoordinated.report("no cluster lock (control)", HOSTS, LVS_PER_HOST));
    System.out.println(sideBySide(coordinated, uncoordinated));
  }

  /** "lockspace/resource MODE" of each lock a command ran under. */
  private static List<String> resources(RunCommandResponse r) {
    return r.getLocksList().stream()
        .map(l -> l.getLockspace() + "/" + l.getResource() + " " + l.getMode())
        .toList();
  }

  private static String vgsSeqno(ClvmTestCluster cluster) throws Exception {
    return cluster
        .lvmHost("observer")
        .lvm("vgs", "--noheadings", "-o", "vg_seqno", VG)
        .stdout()
        .strip();
  }

  private static String sideBySide(Outcome clvm, Outcome bare) {
    String f = "%-26s %-22s %-22s%n";
    StringBuilder s = new StringBuilder("=== 3 hosts x 30 lvcreate on one shared VG ===\n");
    s.append(String.format(f, "", "through clvm-agent", "bare lvm (control)"));
    s.append(
        String.format(
            f,
            "lvcreate exit 0",
            clvm.reportedOk() + "/" + clvm.attempts(),
            bare.reportedOk() + "/" + bare.attempts()));
    s.append(String.format(f, "LVs visible at the end", visible(clvm), visible(bare)));
    s.append(
        String.format(
            f,
            "exit 0 but LV missing",
            clvm.lostAfterSuccess() < 0 ? "all" : clvm.lostAfterSuccess(),
            bare.lostAfterSuccess() < 0 ? "all" : bare.lostAfterSuccess()));
    s.append(String.format(f, "vgck exit code", clvm.vgckExit(), bare.vgckExit()));
    s.append(
        String.format(f, "wall time", clvm.elapsedMillis() + " ms", bare.elapsedMillis() + " ms"));
    return s.toString();
  }

  private static String visible(Outcome o) {
    return o.visibleLvs() < 0 ? "VG UNREADABLE" : o.visibleLvs() + "/" + o.attempts();
  }
}
