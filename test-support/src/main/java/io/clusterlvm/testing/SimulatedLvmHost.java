package io.clusterlvm.testing;

import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * One simulated hypervisor host's view of the shared loop-device LUN: its own {@code
 * LVM_SYSTEM_DIR} with an lvm.conf whose {@code locking_dir}, backup and archive dirs are private
 * to this host, so two simulated hosts never serialize on lvm's local file lock (only a cluster
 * lock can protect them, as on real separate machines).
 *
 * <p>Created by {@link LoopVolumeGroup#host(String)}; its files go away with the fixture.
 */
public final class SimulatedLvmHost {

  /** What one lvm run produced, unchanged. */
  public record Result(List<String> command, int exitCode, String stdout, String stderr) {
    public boolean succeeded() {
      return exitCode == 0;
    }

    @Override
    public String toString() {
      return String.join(" ", command)
          + " -> exit "
          + exitCode
          + (stderr.isBlank() ? "" : "\nstderr:\n" + stderr)
          + (stdout.isBlank() ? "" : "\nstdout:\n" + stdout);
    }
  }

  private static final Duration LVM_TIMEOUT = Duration.ofSeconds(60);

  private final String name;
  private final Path systemDir;
  private final Path lockingDir;
  private final String lvmBinary;

  SimulatedLvmHost(String name, Path systemDir, Path lockingDir, String lvmBinary) {
    this.name = name;
    this.systemDir = systemDir;
    this.lockingDir = lockingDir;
    this.lvmBinary = lvmBinary;
  }

  public String name() {
    return name;
  }

  /** The directory to pass as {@code LVM_SYSTEM_DIR}; holds this host's lvm.conf. */
  public Path systemDir() {
    return systemDir;
  }

  /** lvm's local file-lock directory for this host only. */
  public Path lockingDir() {
    return lockingDir;
  }

  /** The environment an lvm process must get to act as this host. */
  public Map<String, String> environment() {
    return Map.of("LVM_SYSTEM_DIR", systemDir.toString(), "LVM_SUPPRESS_FD_WARNINGS", "1");
  }

  /**
   * Runs {@code lvm <args>} as this host, blocking up to 60 s; stdin is /dev/null so a prompt is
   * answered "no" instead of hanging.
   */
  public Result lvm(String... args) throws IOException, InterruptedException {
    List<String> command = new ArrayList<>();
    command.add(lvmBinary);
    command.addAll(Arrays.asList(args));
    return LoopVolumeGroup.exec(command, environment(), LVM_TIMEOUT);
  }

  @Override
  public String toString() {
    return "SimulatedLvmHost[" + name + " LVM_SYSTEM_DIR=" + systemDir + "]";
  }
}
