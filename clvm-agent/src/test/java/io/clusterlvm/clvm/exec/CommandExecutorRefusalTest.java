package io.clusterlvm.clvm.exec;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.catchThrowableOfType;

import io.clusterlvm.clvm.exec.ClusterRefusalException.Reason;
import io.clusterlvm.clvm.lvm.LvmRunner;
import io.clusterlvm.dlm.client.DlmClient;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * What the executor refuses before it asks the lock service or lvm anything: no lock service and no
 * lvm are needed (the lvm binary is /bin/false, the lock service address a closed port).
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class CommandExecutorRefusalTest {

  @TempDir Path dir;

  private final AtomicBoolean mayUseStorage = new AtomicBoolean(true);
  private final AtomicBoolean connected = new AtomicBoolean(true);
  private DlmClient dlm;
  private CommandExecutor executor;

  @BeforeEach
  void create() throws Exception {
    dlm = DlmClient.connect("127.0.0.1:1");
    executor =
        new CommandExecutor(
            "host-x",
            // joined() tries to open a lock session: let it fail fast.
            dlm.withCallDeadline(Duration.ofMillis(200)).withRetryWindow(Duration.ofMillis(100)),
            LvmRunner.builder().lvmBinary("/bin/false").build(),
            MetadataChangeLog.open(dir.resolve("changes.log")),
            Duration.ofSeconds(1),
            Duration.ofSeconds(30),
            mayUseStorage::get,
            connected::get,
            (incarnation, sessionId) -> {},
            Optional.empty());
  }

  @AfterEach
  void close() {
    executor.close();
    dlm.close();
  }

  private ClusterRefusalException refusal(String... argv) {
    return catchThrowableOfType(
        ClusterRefusalException.class, () -> executor.execute(List.of(argv)));
  }

  /**
   * Which commands keep lvm's exit code when its output is lost ({@code LvmRunner.runChange}): all
   * that activate, deactivate or change metadata, the wildcard ones too (vgchange -aey VG takes
   * only the VG lock PR, and its activation locks come from a wildcard); reports do not.
   */
  @Test
  void commandsThatChangeSomethingAreTold() throws Exception {
    for (List<String> argv :
        List.of(
            List.of("vgchange", "-aey", "vg"),
            List.of("vgchange", "-an", "vg"),
            List.of("lvchange", "-aey", "vg"),
            List.of("lvchange", "-an", "vg/lv"),
            List.of("lvcreate", "-n", "lv", "-L", "4M", "vg"),
            List.of("pvcreate", "/dev/loop9"))) {
      assertThat(CommandExecutor.changes(plan(argv))).as(argv.toString()).isTrue();
    }
    for (List<String> argv : List.of(List.of("lvs"), List.of("vgs", "vg"))) {
      assertThat(CommandExecutor.changes(plan(argv))).as(argv.toString()).isFalse();
    }
  }

  private static io.clusterlvm.clvm.lvm.LockPlan plan(List<String> argv) throws Exception {
    return io.clusterlvm.clvm.lvm.LvmCommand.parse(argv.get(0), argv.subList(1, argv.size()))
        .lockPlan();
  }

  @Test
  void beforeJoiningNothingRuns() {
    mayUseStorage.set(false);
    ClusterRefusalException e = refusal("lvs");
    assertThat(e.reason()).isEqualTo(Reason.NOT_MEMBER);
    assertThat(e.getMessage())
        .isEqualTo(
            "this host is not a member of the fence domain (node host-x: it has not joined yet);"
                + " clvm refuses to touch shared storage");
  }

  @Test
  void whileSuspendedNoCommandStarts() {
    executor.joined(7);
    mayUseStorage.set(false);
    connected.set(false);
    ClusterRefusalException e = refusal("lvcreate", "-n", "x", "-L", "4M", "vg");
    assertThat(e.reason()).isEqualTo(Reason.SUSPENDED);
    assertThat(e.getMessage()).startsWith("this host's ZooKeeper connection is SUSPENDED");
  }

  @Test
  void afterALostLeaseTheMessageSaysSo() {
    executor.joined(7);
    mayUseStorage.set(false);
    connected.set(false);
    executor.leaseLost(7);
    ClusterRefusalException e = refusal("vgs");
    assertThat(e.reason()).isEqualTo(Reason.NOT_MEMBER);
    assertThat(e.getMessage()).contains("membership lease (ZooKeeper session) was lost");
    assertThat(executor.status().member()).isFalse();
  }

  @Test
  void commandsWhoseLocksCantBeNamedAreRefusedWithLvmsReason() {
    ClusterRefusalException e = refusal("lvconvert", "--type", "raid1", "vg/lv");
    assertThat(e.reason()).isEqualTo(Reason.UNSUPPORTED_COMMAND);
    assertThat(e.getMessage()).startsWith("clvm refuses 'lvm lvconvert'");
    assertThat(refusal().reason()).isEqualTo(Reason.UNSUPPORTED_COMMAND);
  }
}
