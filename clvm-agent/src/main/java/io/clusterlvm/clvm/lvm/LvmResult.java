package io.clusterlvm.clvm.lvm;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;

/**
 * What one lvm run produced: exit code and both streams byte for byte, so the clvm wrapper can
 * mirror them unchanged.
 */
public final class LvmResult {

  private final List<String> command;
  private final int exitCode;
  private final byte[] stdout;
  private final byte[] stderr;
  private final Duration elapsed;

  LvmResult(List<String> command, int exitCode, byte[] stdout, byte[] stderr, Duration elapsed) {
    this.command = List.copyOf(command);
    this.exitCode = exitCode;
    this.stdout = stdout.clone();
    this.stderr = stderr.clone();
    this.elapsed = elapsed;
  }

  /** The full command line that ran, binary first. */
  public List<String> command() {
    return command;
  }

  public int exitCode() {
    return exitCode;
  }

  public boolean succeeded() {
    return exitCode == 0;
  }

  public byte[] stdoutBytes() {
    return stdout.clone();
  }

  public byte[] stderrBytes() {
    return stderr.clone();
  }

  /** stdout decoded as UTF-8 (lvm prints names and numbers; invalid bytes become U+FFFD). */
  public String stdout() {
    return new String(stdout, StandardCharsets.UTF_8);
  }

  public String stderr() {
    return new String(stderr, StandardCharsets.UTF_8);
  }

  /** Wall time of the run, measured with the monotonic clock. */
  public Duration elapsed() {
    return elapsed;
  }

  @Override
  public String toString() {
    return String.join(" ", command) + " -> exit " + exitCode + " in " + elapsed.toMillis() + " ms";
  }
}
