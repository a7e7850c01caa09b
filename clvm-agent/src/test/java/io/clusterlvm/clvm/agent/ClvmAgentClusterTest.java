package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.clvm.lvm.LvmRunner;
import io.clusterlvm.clvm.proto.HostStatusResponse;
import io.clusterlvm.clvm.proto.LockUse;
import io.clusterlvm.clvm.proto.Refusal;
import io.clusterlvm.clvm.proto.RefusalDetail;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.clvm.rpc.ClvmClient;
import io.clusterlvm.clvm.rpc.Refusals;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.clusterlvm.testing.LoopVolumeGroup;
import io.clusterlvm.testing.SimulatedLvmHost;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.Timeout;

/**
 * clvm-agents on two simulated hosts sharing one VG, with a real dlm-server: what an operator sees
 * through {@code clvm} (seqno travelling in the VG lock, activation conflicts, refusals, timeouts)
 * and what the cluster records (locks in the lock service, the metadata-change log).
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class ClvmAgentClusterTest {

  private static final String VG = "vg_clvm";
  private static final String LS = "lvm_" + VG;

  private ClvmTestCluster cluster;

  @BeforeAll
  void startCluster() throws Exception {
    cluster = ClvmTestCluster.start(VG);
    cluster.startAgent("host-a");
    cluster.startAgent("host-b");
  }

  @AfterAll
  void stopCluster() throws Exception {
    if (cluster != null) {
      LoopVolumeGroup lun = cluster.lun;
      cluster.close();
      assertThat(lun.attached()).as("%s detached", lun.device()).isFalse();
      assertThat(Files.exists(cluster.dir)).isFalse();
    }
  }

  private RunCommandResponse ok(String node, String... argv) {
    RunCommandResponse r = cluster.run(node, argv);
    assertThat(r.getExitCode())
        .as("%s on %s: %s", String.join(" ", argv), node, r.getStderr().toStringUtf8())
        .isZero();
    return r;
  }

  private StatusRuntimeException refused(String node, String... argv) {
    StatusRuntimeException e =
        catchThrowableOfType(StatusRuntimeException.class, () -> cluster.run(node, argv));
    assertThat(e).as("%s on %s should be refused", String.join(" ", argv), node).isNotNull();
    return e;
  }

  /** The names of VG's LVs as {@code node}'s agent lists them. */
  private String lvNames(String node) {
    return cluster.run(node, "lvs", "--noheadings", "-o", "lv_name", VG).getStdout().toStringUtf8();
  }

  private long seqno() throws Exception {
    SimulatedLvmHost observer = cluster.lvmHost("observer");
    return Long.parseLong(
        observer.lvm("vgs", "--noheadings", "-o", "vg_seqno", VG).stdout().strip());
  }

  @Test
  void aChangeOnOneHostIsSeenByTheNextReportOnAnotherAndItsSeqnoTravelsInTheVgLock()
      throws Exception {
    RunCommandResponse create = ok("host-a", "lvcreate", "-n", "seen-1", "-L", "4M", VG);
    assertThat(create.getStdout().toStringUtf8()).contains("Logical volume \"seen-1\" created");
    assertThat(create.getLocksList())
        .extracting(
            LockUse::getLockspace, LockUse::getResource, LockUse::getMode, LockUse::getScope)
        .containsExactly(
            org.assertj.core.groups.Tuple.tuple(LS, "VGLK", "EX", "TRANSIENT"),
            org.assertj.core.groups.Tuple.tuple(LS, "seen-1", "EX", "ACTIVATION"));
    long vgToken = create.getLocks(0).getFencingToken();
    long after = seqno();

    // host-b's next report, right after, lists it; taking the VG lock (PR) showed host-b the
    // seqno host-a left in the value block.
    RunCommandResponse lvs = ok("host-b", "lvs", "--noheadings", "-o", "lv_name", VG);
    assertThat(lvs.getStdout().toStringUtf8().lines().map(String::strip)).contains("seen-1");
    assertThat(lvs.getLocksList())
        .extracting(LockUse::getResource, LockUse::getMode)
        .containsExactly(org.assertj.core.groups.Tuple.tuple("VGLK", "PR"));
    assertThat(cluster.status("host-a").getSeenSeqnoMap()).containsEntry(VG, after);
    HostStatusResponse b = cluster.status("host-b");
    assertThat(b.getSeenSeqnoMap()).containsEntry(VG, after);
    assertThat(b.getViewRefreshes()).isPositive();

    // The change went through the guarded log under the VG lock's fencing token.
    String log = Files.readString(Path.of(cluster.status("host-a").getMetadataLog()));
    assertThat(log)
        .containsPattern(
            "\\tbegin\\tentry=\\d+\\tnode=host-a\\tincarnation=\\d+\\ttokens="
                + LS
                + "/VGLK:"
                + vgToken
                + "\\targv=lvcreate -n seen-1 -L 4M "
                + VG)
        .containsPattern("\\tend\\tentry=\\d+\\texit=0\\tseqno=" + VG + ":" + after);
  }

  @Test
  void exclusiveActivationOnASecondHostIsRefusedNamingTheHolderUntilTheFirstDeactivates() {
    ok("host-a", "lvcreate", "-an", "-n", "excl-1", "-L", "4M", VG);
    assertThat(holders("excl-1")).isEmpty();

    RunCommandResponse a = ok("host-a", "lvchange", "-aey", VG + "/excl-1");
    assertThat(a.getLocksList())
        .extracting(LockUse::getResource, LockUse::getMode, LockUse::getScope)
        .contains(org.assertj.core.groups.Tuple.tuple("excl-1", "EX", "ACTIVATION"));
    assertThat(holders("excl-1")).containsExactly("host-a EX persistent");

    StatusRuntimeException e = refused("host-b", "lvchange", "-aey", VG + "/excl-1");
    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
    RefusalDetail d = Refusals.detailOf(e);
    assertThat(d.getReason()).isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
    assertThat(d.getHolder()).contains("host-a").contains("EX");
    assertThat(e.getStatus().getDescription())
        .contains("LV " + VG + "/excl-1 is in use on another host")
        .contains("held by host-a");
    // Shared activation conflicts with it too.
    assertThat(Refusals.detailOf(refused("host-b", "lvchange", "-asy", VG + "/excl-1")).getReason())
        .isEqualTo(Refusal.LOCK_HELD_ELSEWHERE);
    assertThat(cluster.status("host-a").getActivationsList())
        .anySatisfy(
            act -> assertThat(act.getLogicalVolume() + " " + act.getMode()).isEqualTo("excl-1 EX"));

    RunCommandResponse off = ok("host-a", "lvchange", "-an", VG + "/excl-1");
    assertThat(off.getLocksList())
        .extracting(LockUse::getResource, LockUse::getScope)
        .contains(org.assertj.core.groups.Tuple.tuple("excl-1", "RELEASED_ACTIVATION"));
    assertThat(holders("excl-1")).isEmpty();

    ok("host-b", "lvchange", "-aey", VG + "/excl-1");
    assertThat(holders("excl-1")).containsExactly("host-b EX persistent");
    assertThat(Refusals.detailOf(refused("host-a", "lvchange", "-aey", VG + "/excl-1")).getHolder())
        .contains("host-b");

    // Shared on both hosts; then a removal must wait until no other host has it active.
    ok("host-b", "lvchange", "-an", VG + "/excl-1");
    ok("host-a", "lvchange", "-asy", VG + "/excl-1");
    ok("host-b", "lvchange", "-asy", VG + "/excl-1");
    assertThat(holders("excl-1"))
        .containsExactlyInAnyOrder("host-a PR persistent", "host-b PR persistent");
    StatusRuntimeException busy = refused("host-a", "lvremove", "-y", VG + "/excl-1");
    assertThat(busy.getStatus().getDescription()).contains("host-b/").contains("in PR");
    ok("host-b", "lvchange", "-an", VG + "/excl-1");
    ok("host-a", "lvremove", "-y", VG + "/excl-1");
    assertThat(holders("excl-1")).isEmpty();
    assertThat(cluster.status("host-a").getActivationsList())
        .noneSatisfy(act -> assertThat(act.getLogicalVolume()).isEqualTo("excl-1"));
  }

  @Test
  void anActivationFollowsItsLvThroughARename() {
    ok("host-a", "lvcreate", "-n", "old-name", "-L", "4M", VG);
    assertThat(holders("old-name")).containsExactly("host-a EX persistent");
    ok("host-a", "lvrename", VG, "old-name", "new-name");
    assertThat(holders("old-name")).isEmpty();
    assertThat(holders("new-name")).containsExactly("host-a EX persistent");
    assertThat(
            Refusals.detailOf(refused("host-b", "lvchange", "-aey", VG + "/new-name")).getHolder())
        .contains("host-a");
    ok("host-a", "lvremove", "-y", VG + "/new-name");
    assertThat(holders("new-name")).isEmpty();
  }

  @Test
  void theWrapperAsARealProcessMirrorsLvmAndExplainsRefusals() throws Exception {
    // Installed as 'lvcreate' (a symlink to bin/clvm), it acts as lvcreate.
    ClvmTestCluster.Run created =
        cluster.clvm("host-a", "lvcreate", "-n", "wrap-1", "-L", "8M", VG);
    assertThat(created.exitCode()).as(created.stderr()).isZero();
    assertThat(created.stdout()).contains("Logical volume \"wrap-1\" created.");

    // stdout and exit code byte for byte as lvm's own, on this host.
    SimulatedLvmHost hostA = cluster.lvmHost("host-a");
    SimulatedLvmHost.Result direct = hostA.lvm("lvs", "-o", "lv_name,lv_size", "-O", "lv_name", VG);
    ClvmTestCluster.Run viaClvm =
        cluster.clvm("host-a", "clvm", "lvs", "-o", "lv_name,lv_size", "-O", "lv_name", VG);
    assertThat(viaClvm.exitCode()).isEqualTo(direct.exitCode()).isZero();
    assertThat(viaClvm.stdout()).isEqualTo(direct.stdout());

    // A failing lvm command: lvm's exit code and stderr unchanged.
    SimulatedLvmHost.Result missing = hostA.lvm("lvremove", "-y", VG + "/no-such-lv");
    ClvmTestCluster.Run missingViaClvm =
        cluster.clvm("host-a", "lvremove", "-y", VG + "/no-such-lv");
    assertThat(missing.exitCode()).isEqualTo(5);
    assertThat(missingViaClvm.exitCode()).isEqualTo(5);
    assertThat(missingViaClvm.stderr()).isEqualTo(missing.stderr());

    ClvmTestCluster.Run help = cluster.clvm("host-a", "clvm", "--help");
    assertThat(help.exitCode()).isZero();
    assertThat(help.stdout()).contains("Usage: clvm").contains("77  this host is not a member");

    ClvmTestCluster.Run unsupported =
        cluster.clvm("host-a", "clvm", "lvconvert", "--type", "raid1", VG + "/wrap-1");
    assertThat(unsupported.exitCode()).isEqualTo(65);
    assertThat(unsupported.stderr()).startsWith("clvm: clvm refuses 'lvm lvconvert'");

    ClvmTestCluster.Run down =
        cluster.clvm(
            "host-a", "clvm", "--socket", cluster.dir.resolve("nobody.sock").toString(), "lvs");
    assertThat(down.exitCode()).isEqualTo(69);
    assertThat(down.stderr()).contains("cannot reach clvm-agent").contains("nobody.sock");

    ClvmTestCluster.Run status = cluster.clvm("host-a", "clvm", "--status");
    assertThat(status.exitCode()).isZero();
    assertThat(status.stdout())
        .contains("node:             host-a")
        .contains("storage allowed:  yes")
        .contains(VG + "/wrap-1 EX");
    ClvmTestCluster.Run json = cluster.clvm("host-a", "clvm", "--status", "-o", "json");
    assertThat(json.exitCode()).as(json.stderr()).isZero();
    assertThat(json.stdout().strip())
        .startsWith("{")
        .contains("\"node\": \"host-a\"")
        .contains("\"storageAllowed\": true")
        .contains("\"logicalVolume\": \"wrap-1\"");
    ClvmTestCluster.Run statusAndCommand =
        cluster.clvm("host-a", "clvm", "--status", "lvremove", "-y", VG + "/wrap-1");
    assertThat(statusAndCommand.exitCode()).isEqualTo(64);
    assertThat(statusAndCommand.stderr()).contains("--status takes no lvm subcommand");
    ok("host-a", "lvremove", "-y", VG + "/wrap-1");
  }

  @Test
  void aLockWaitTimesOutWithAMessageNamingTheHolderAndTheApiIsServedOnTcpToo() throws Exception {
    // This one also serves the API on TCP.
    ClvmAgent impatient =
        cluster.startAgent(
            cluster.config(
                "host-t",
                Path.of(LoopVolumeGroup.lvmBinary()),
                Duration.ofMillis(1500),
                LvmRunner.DEFAULT_TIMEOUT,
                "127.0.0.1:0"));
    ManagedChannel tcp =
        ManagedChannelBuilder.forAddress("127.0.0.1", impatient.server().tcpPort())
            .usePlaintext()
            .build();
    try {
      ClvmClient overTcp = new ClvmClient(tcp);
      assertThat(overTcp.hostStatus(Duration.ofSeconds(10)).getNode()).isEqualTo("host-t");
      assertThat(overTcp.run(List.of("vgs", VG), "tcp test", Duration.ofSeconds(30)).getExitCode())
          .isZero();
    } finally {
      tcp.shutdownNow();
    }
    long inc = cluster.admin.join("intruder", "boot-intruder");
    try (DlmSession intruder = cluster.admin.openSession("intruder", inc, "test")) {
      Lock vgLock = intruder.lock(LS, "VGLK", LockMode.EX);
      ClvmTestCluster.Run r = cluster.clvm("host-t", "lvcreate", "-n", "late-1", "-L", "4M", VG);
      assertThat(r.exitCode()).isEqualTo(75);
      assertThat(r.stderr())
          .contains("clvm: timed out after 1.5s waiting for the VG lock of " + VG)
          .contains("(" + LS + "/VGLK, EX)")
          .contains("held by intruder");
      StatusRuntimeException e = refused("host-t", "vgs", VG);
      assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
      assertThat(Refusals.detailOf(e).getReason()).isEqualTo(Refusal.LOCK_TIMEOUT);
      intruder.unlock(vgLock);
    } finally {
      cluster.admin.leave("intruder", inc);
    }
    // Nothing was created, and the agent works on.
    assertThat(lvNames("host-t")).doesNotContain("late-1");
    assertThat(impatient.commands().status().inFlight()).isEmpty();
    cluster.stopAgent("host-t");
  }

  /**
   * A client that gives up (Ctrl-C, its --timeout) while its command waits for a lock withdraws the
   * command: it does not run later, unseen, once the lock comes free.
   */
  @Test
  void aCommandWhoseClientGivesUpWhileItWaitsForItsLocksNeverRuns() throws Exception {
    long inc = cluster.admin.join("holder", "boot-holder");
    try (DlmSession holder = cluster.admin.openSession("holder", inc, "test")) {
      Lock vgLock = holder.lock(LS, "VGLK", LockMode.EX);
      StatusRuntimeException gaveUp =
          catchThrowableOfType(
              StatusRuntimeException.class,
              () ->
                  cluster
                      .client("host-a")
                      .run(
                          List.of("lvcreate", "-n", "withdrawn-1", "-L", "4M", VG),
                          "impatient test",
                          Duration.ofSeconds(1)));
      assertThat(gaveUp.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED);
      // Withdrawn at once, not after the agent's own lock timeout (30 s).
      await("the command is withdrawn")
          .atMost(Duration.ofSeconds(10))
          .until(() -> cluster.agent("host-a").commands().status().inFlight().isEmpty());
      holder.unlock(vgLock);
    } finally {
      cluster.admin.leave("holder", inc);
    }
    assertThat(lvNames("host-a")).doesNotContain("withdrawn-1");
  }

  @Test
  void aHostThatIsNotAMemberOfTheFenceDomainIsRefused() throws Exception {
    ClvmAgent agent = cluster.startAgent("host-n");
    ok("host-n", "vgs", VG);
    agent.membership().leave();

    StatusRuntimeException e = refused("host-n", "lvs", VG);
    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.FAILED_PRECONDITION);
    assertThat(Refusals.detailOf(e).getReason()).isEqualTo(Refusal.NOT_MEMBER);
    assertThat(e.getStatus().getDescription())
        .startsWith("this host is not a member of the fence domain (node host-n");
    // Every shared-storage command, reads too; through the wrapper, exit 77.
    ClvmTestCluster.Run r = cluster.clvm("host-n", "lvcreate", "-n", "outsider", "-L", "4M", VG);
    assertThat(r.exitCode()).isEqualTo(77);
    assertThat(r.stderr()).startsWith("clvm: this host is not a member of the fence domain");
    HostStatusResponse s = cluster.status("host-n");
    assertThat(s.getMember()).isFalse();
    assertThat(s.getStorageAllowed()).isFalse();
    // A command that touches no shared storage still runs.
    assertThat(cluster.run("host-n", "version").getExitCode()).isZero();
    cluster.stopAgent("host-n");
    assertThat(cluster.lvmHost("observer").lvm("lvs", VG + "/outsider").exitCode()).isNotZero();
  }

  /** "node MODE[ persistent]" of every granted lock on {@code lv}'s resource. */
  private List<String> holders(String lv) {
    return cluster.admin.locks(LS).stream()
        .filter(r -> r.getResource().equals(lv))
        .map(ResourceInfo::getGrantedList)
        .flatMap(List::stream)
        .map(
            (LockInfo l) ->
                l.getOwner().getNode()
                    + " "
                    + l.getGrantedMode().name()
                    + (l.getPersistent() ? " persistent" : ""))
        .sorted()
        .toList();
  }

  static String utf8(byte[] b) {
    return new String(b, StandardCharsets.UTF_8);
  }
}
