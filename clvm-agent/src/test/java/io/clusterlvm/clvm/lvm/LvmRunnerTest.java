package io.clusterlvm.clvm.lvm;

import static io.clusterlvm.clvm.lvm.LockRequirement.Scope.RELEASE_ACTIVATION;
import static io.clusterlvm.dlm.client.LockMode.NL;
import static io.clusterlvm.dlm.client.LockMode.PR;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.clusterlvm.testing.LoopVolumeGroup;
import io.clusterlvm.testing.SimulatedLvmHost;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** LvmRunner against real lvm2 on a loop device shared by two simulated hosts. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LvmRunnerTest {

  private static final String VG = "vg_runner";
  private static final long MIB = 1L << 20;
  private static final String BOOT = "boot-of-this-test";

  private LoopVolumeGroup lun;
  private LvmRunner hostA;
  private LvmRunner hostB;

  @BeforeAll
  static void needsLvmAndLoopDevices() {
    LoopVolumeGroup.assumeAvailable();
  }

  @BeforeEach
  void createSharedVg() throws Exception {
    lun = LoopVolumeGroup.create(VG);
    lun.createSharedVg();
    hostA = runnerFor(lun.host("host-a"));
    hostB = runnerFor(lun.host("host-b"));
  }

  @AfterEach
  void detachLoopDevice() throws Exception {
    if (lun != null) {
      lun.close();
      assertThat(lun.attached()).as("%s detached", lun.device()).isFalse();
      assertThat(Files.exists(lun.directory())).isFalse();
    }
  }

  @TempDir static Path scripts;

  /**
   * Stands in for an lvm that runs for as many seconds as its subcommand says, whatever options
   * come after it (the runner adds --nohints, which sleep would refuse).
   */
  private static String sleepingLvm() throws IOException {
    Path script = scripts.resolve("lvm");
    if (!Files.exists(script)) {
      Files.writeString(script, "#!/bin/sh\nexec sleep \"$1\"\n");
      Files.setPosixFilePermissions(script, PosixFilePermissions.fromString("rwxr-xr-x"));
    }
    return script.toString();
  }

  static LvmRunner runnerFor(SimulatedLvmHost host) {
    return LvmRunner.builder()
        .hostName(host.name())
        .lvmBinary(LoopVolumeGroup.lvmBinary())
        .environment(host.environment())
        .build();
  }

  @Test
  void createAndRemoveAdvanceTheSeqno() throws Exception {
    long before = hostA.vgSeqno(VG);

    LvmResult create = hostA.run(LvmCommand.parse("lvcreate", "-n", "lv1", "-L", "8M", VG));
    assertThat(create.exitCode()).as(create.stderr()).isZero();
    assertThat(create.stdout()).contains("Logical volume \"lv1\" created");
    long afterCreate = hostA.vgSeqno(VG);
    assertThat(afterCreate).isGreaterThan(before);
    assertThat(hostA.logicalVolumes(VG))
        .singleElement()
        .satisfies(
            lv -> {
              assertThat(lv.name()).isEqualTo("lv1");
              assertThat(lv.volumeGroup()).isEqualTo(VG);
              assertThat(lv.sizeBytes()).isEqualTo(8 * MIB);
              assertThat(lv.uuid()).hasSize(38);
            });

    LvmResult remove = hostA.run("lvremove", List.of("-y", VG + "/lv1"));
    assertThat(remove.exitCode()).as(remove.stderr()).isZero();
    assertThat(hostA.vgSeqno(VG)).isGreaterThan(afterCreate);
    assertThat(hostA.logicalVolumes(VG)).isEmpty();
  }

  @Test
  void hostBSeesHostAsChangeRightAway() throws Exception {
    // No refresh step in between: lvm 2.03 reads metadata from disk on every command.
    assertThat(hostA.run("lvcreate", List.of("-n", "shared", "-L", "4M", VG)).succeeded()).isTrue();
    assertThat(hostB.logicalVolumes(VG))
        .extracting(LogicalVolumeInfo::name)
        .containsExactly("shared");
    assertThat(hostB.vgSeqno(VG)).isEqualTo(hostA.vgSeqno(VG));

    assertThat(hostA.run("lvextend", List.of("-L", "+4M", VG + "/shared")).succeeded()).isTrue();
    assertThat(hostB.logicalVolumes(VG).get(0).sizeBytes()).isEqualTo(8 * MIB);

    assertThat(hostB.run("lvremove", List.of("-y", VG + "/shared")).succeeded()).isTrue();
    assertThat(hostA.logicalVolumes(VG)).isEmpty();
    assertThat(hostA.vgSeqno(VG)).isEqualTo(hostB.vgSeqno(VG));
  }

  @Test
  void typedViewOfVolumeGroups() throws Exception {
    assertThat(hostA.volumeGroups())
        .singleElement()
        .satisfies(
            vg -> {
              assertThat(vg.name()).isEqualTo(VG);
              assertThat(vg.uuid()).hasSize(38);
              assertThat(vg.seqno()).isPositive();
              assertThat(vg.pvCount()).isEqualTo(1);
              assertThat(vg.lvCount()).isZero();
              assertThat(vg.sizeBytes())
                  .isBetween(
                      LoopVolumeGroup.DEFAULT_SIZE_BYTES - 8 * MIB,
                      LoopVolumeGroup.DEFAULT_SIZE_BYTES);
              assertThat(vg.freeBytes()).isEqualTo(vg.sizeBytes());
              assertThat(vg.lockType()).isEmpty();
            });
    assertThat(hostA.volumeGroupNames()).containsExactly(VG);
    assertThat(hostA.logicalVolumes("no_such_vg")).isEmpty();
  }

  /**
   * Every run skips the hints file, which another host's pvcreate never invalidates; once, even
   * when the client asked for it too (lvm refuses the option twice).
   */
  @Test
  void everyRunSkipsTheHintsFileOnce() throws Exception {
    LvmResult plain = hostA.run("vgs", List.of(VG));
    assertThat(plain.exitCode()).as(plain.stderr()).isZero();
    assertThat(plain.command()).containsOnlyOnce("--nohints");

    for (String given : List.of("--nohints", "--no-hints")) {
      LvmResult asked = hostA.run("vgs", List.of(given, VG));
      assertThat(asked.exitCode()).as(asked.stderr()).isZero();
      assertThat(asked.command().stream().filter(a -> a.replace("-", "").equals("nohints")))
          .hasSize(1);
    }
  }

  @Test
  void exitCodeAndStreamsComeBackUnchanged() throws Exception {
    LvmResult missing = hostA.run("lvs", List.of("no_such_vg"));
    assertThat(missing.exitCode()).isEqualTo(5);
    assertThat(missing.stderr()).contains("Volume group \"no_such_vg\" not found");
    assertThat(missing.stdout()).isEmpty();

    // The same command run by hand gives the same bytes.
    SimulatedLvmHost.Result byHand = lun.host("host-a").lvm("lvs", "no_such_vg");
    assertThat(byHand.exitCode()).isEqualTo(missing.exitCode());
    assertThat(byHand.stderr()).isEqualTo(missing.stderr());

    assertThatThrownBy(() -> hostA.vgSeqno("no_such_vg"))
        .isInstanceOf(LvmException.class)
        .hasMessageContaining("not found");
  }

  /**
   * An lvm that exits but leaves a child holding its output pipes: the exit code still says what it
   * did. Before, such a command counted as not run, and the activation lock of an LV it had
   * activated was released. A report, whose rows are its output, still fails.
   */
  @Test
  void aCommandWhoseOutputOutlivesItStillHasItsExitCode(@TempDir Path dir) throws Exception {
    Path script = dir.resolve("lvm");
    Path child = dir.resolve("child.pid");
    // The JDK closes a process's pipes when it exits unless a reader is blocked in them then, so
    // the script writes more than a pipe holds (its readers must be reading) and waits before it
    // exits (they are blocked in their next read). Otherwise a slow reader finds the pipes closed.
    Files.writeString(
        script,
        "#!/bin/sh\nsleep 30 &\necho $! >> \"$CHILD_PID\"\n"
            + "head -c 200000 /dev/zero\nhead -c 200000 /dev/zero >&2\nsleep 2\nexit 3\n");
    Files.setPosixFilePermissions(script, PosixFilePermissions.fromString("rwxr-xr-x"));
    LvmRunner leaky =
        LvmRunner.builder()
            .lvmBinary(script.toString())
            .environment("CHILD_PID", child.toString())
            .outputDrainTimeout(Duration.ofMillis(500))
            .build();
    try {
      LvmResult result = leaky.runChange(LvmCommand.parse("lvchange", "-aey", VG + "/lv"));
      assertThat(result.exitCode()).isEqualTo(3);
      assertThat(result.stderr())
          .contains("lvm exited with code 3, but its output could not be read");
      assertThatThrownBy(() -> leaky.run(LvmCommand.parse("lvs", VG)))
          .isInstanceOf(IOException.class)
          .hasMessageContaining("still open after the process exited");
      assertThatThrownBy(() -> leaky.volumeGroups())
          .isInstanceOf(IOException.class)
          .hasMessageContaining("still open after the process exited");
    } finally {
      for (String pid : Files.readAllLines(child)) {
        ProcessHandle.of(Long.parseLong(pid.strip())).ifPresent(ProcessHandle::destroyForcibly);
      }
    }
  }

  @Test
  void resolveExpandsWildcardsFromWhatTheHostSees() throws Exception {
    for (String name : List.of("b", "a")) {
      assertThat(hostA.run("lvcreate", List.of("-n", name, "-L", "4M", VG)).succeeded()).isTrue();
    }
    LockPlan deactivateAll = LvmCommand.parse("vgchange", "-an", VG).lockPlan();
    assertThat(hostB.resolve(deactivateAll).locks())
        .containsExactly(
            LockRequirement.volumeGroup(VG, PR),
            LockRequirement.logicalVolume(VG, "a", NL, RELEASE_ACTIVATION),
            LockRequirement.logicalVolume(VG, "b", NL, RELEASE_ACTIVATION));
    assertThat(hostB.resolve(LvmCommand.parse("lvs").lockPlan()).locks())
        .containsExactly(LockRequirement.global(PR), LockRequirement.volumeGroup(VG, PR));
  }

  @Test
  void timeoutKillsTheProcess() throws Exception {
    LvmRunner slow =
        LvmRunner.builder().lvmBinary(sleepingLvm()).timeout(Duration.ofMillis(300)).build();
    long start = System.nanoTime();
    assertThatThrownBy(() -> slow.run("30", List.of()))
        .isInstanceOf(LvmTimeoutException.class)
        .hasMessageContaining("did not finish within");
    assertThat(Duration.ofNanos(System.nanoTime() - start)).isLessThan(Duration.ofSeconds(10));
    // Killed, and ended by the time run() returned: a command counted as stopped has stopped.
    assertThat(slow.stillRunning()).isEmpty();
  }

  /** A command stopped by an interrupt (a lost lease) returns once its lvm has ended. */
  @Test
  void anInterruptKillsTheProcessAndWaitsForItsEnd() throws Exception {
    LvmRunner slow = LvmRunner.builder().lvmBinary(sleepingLvm()).build();
    java.util.concurrent.atomic.AtomicReference<Throwable> thrown =
        new java.util.concurrent.atomic.AtomicReference<>();
    Thread t =
        new Thread(
            () -> {
              try {
                slow.run("30", List.of());
              } catch (Throwable e) {
                thrown.set(e);
              }
            });
    t.start();
    org.awaitility.Awaitility.await()
        .atMost(Duration.ofSeconds(10))
        .until(() -> !slow.stillRunning().isEmpty());
    long pid = slow.stillRunning().get(0);
    t.interrupt();
    t.join(15_000);
    assertThat(thrown.get()).isInstanceOf(InterruptedException.class);
    assertThat(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)).isFalse();
    assertThat(slow.stillRunning()).isEmpty();
    assertThat(slow.awaitNoneRunning(Duration.ZERO)).isEmpty();
  }

  /**
   * An agent process that was killed leaves its lvm running. The next agent process finds it in the
   * run record of the state dir, kills it, and counts it as running until it has ended.
   */
  @Test
  void anLvmLeftRunningByAnEarlierAgentProcessIsStoppedByTheNext(@TempDir Path state)
      throws Exception {
    Path dir = state.resolve("lvm-running");
    LvmRunner earlier = LvmRunner.builder().lvmBinary(sleepingLvm()).runRecord(dir, BOOT).build();
    CompletableFuture<LvmResult> orphan =
        CompletableFuture.supplyAsync(
            () -> {
              try {
                return earlier.run("60", List.of());
              } catch (Exception e) {
                throw new IllegalStateException(e);
              }
            });
    org.awaitility.Awaitility.await()
        .atMost(Duration.ofSeconds(10))
        .until(() -> !earlier.stillRunning().isEmpty());
    long pid = earlier.stillRunning().get(0);
    assertThat(dir.resolve(Long.toString(pid))).exists();

    LvmRunner next = LvmRunner.builder().lvmBinary(sleepingLvm()).runRecord(dir, BOOT).build();
    assertThat(next.stopEarlierRuns()).containsExactly(pid);
    assertThat(next.awaitNoneRunning(Duration.ofSeconds(10))).isEmpty();
    // awaitNoneRunning counts a zombie as ended; Java calls it alive until the earlier runner,
    // its parent here, has reaped it, which the killed run's exit code below waits for.
    assertThat(orphan.get(10, TimeUnit.SECONDS).exitCode()).isNotZero();
    assertThat(ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)).isFalse();
    org.awaitility.Awaitility.await("its record removed")
        .atMost(Duration.ofSeconds(10))
        .until(() -> Files.list(dir).findAny().isEmpty());
    // Nothing is left for the one after.
    assertThat(next.stopEarlierRuns()).isEmpty();
  }

  /**
   * Records that name no earlier lvm are left alone and removed: a pid another process got since
   * (its start differs), one of another boot, one that no process has, a half-written temp file.
   */
  @Test
  void recordsOfNoEarlierLvmAreLeftAloneAndRemoved(@TempDir Path state) throws Exception {
    Path dir = Files.createDirectories(state.resolve("lvm-running"));
    ProcessHandle me = ProcessHandle.current();
    String myTicks = ProcStat.of(me.pid()).orElseThrow().startTicks();
    Files.writeString(dir.resolve(Long.toString(me.pid())), BOOT + " 1\nlvs\n");
    Path parentFile = dir.resolve(Long.toString(me.parent().orElseThrow().pid()));
    String parentTicks = ProcStat.of(me.parent().get().pid()).orElseThrow().startTicks();
    Files.writeString(parentFile, "another-boot " + parentTicks + "\nlvs\n");
    Files.writeString(dir.resolve("999999999"), BOOT + " " + myTicks + "\nlvs\n");
    Files.writeString(dir.resolve(".4242.tmp"), BOOT);
    LvmRunner next = LvmRunner.builder().lvmBinary(sleepingLvm()).runRecord(dir, BOOT).build();
    assertThat(next.stopEarlierRuns()).isEmpty();
    assertThat(me.isAlive()).isTrue();
    assertThat(me.parent().orElseThrow().isAlive()).isTrue();
    assertThat(Files.list(dir).findAny()).isEmpty();
  }

  /**
   * An earlier agent's lvm, once killed, belongs to init, which may be slow to reap it: a zombie
   * has ended (it writes nothing), though Java calls it alive.
   */
  @Test
  void anEarlierLvmKilledButNotYetReapedCountsAsEnded(@TempDir Path state) throws Exception {
    // A parent that never waits for its child: the child, once killed, stays a zombie.
    Process parent = new ProcessBuilder("sh", "-c", "sleep 60 & echo $!; exec sleep 60").start();
    try {
      long child =
          Long.parseLong(
              new java.io.BufferedReader(new java.io.InputStreamReader(parent.getInputStream()))
                  .readLine()
                  .strip());
      Path dir = state.resolve("lvm-running");
      new LvmRunRecord(dir, BOOT)
          .started(ProcessHandle.of(child).orElseThrow(), List.of("lvcreate"));

      LvmRunner next = LvmRunner.builder().lvmBinary(sleepingLvm()).runRecord(dir, BOOT).build();
      assertThat(next.stopEarlierRuns()).containsExactly(child);
      long start = System.nanoTime();
      assertThat(next.awaitNoneRunning(Duration.ofSeconds(20))).isEmpty();
      assertThat(Duration.ofNanos(System.nanoTime() - start)).isLessThan(Duration.ofSeconds(10));
    } finally {
      parent.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
    }
  }
}
