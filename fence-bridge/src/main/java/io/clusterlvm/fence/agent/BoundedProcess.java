package io.clusterlvm.fence.agent;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs a program with lines on its stdin and a hard time limit; on time-out the program and every
 * process it started are killed, so a hung ipmitool cannot outlive its fence attempt.
 */
final class BoundedProcess {
  private static final Logger LOG = LoggerFactory.getLogger(BoundedProcess.class);

  /** More output than any agent's summary needs; bounds memory if something floods. */
  private static final int MAX_OUTPUT_BYTES = 64 * 1024;

  /** How long to wait for a killed process to go, and for its output to drain. */
  private static final Duration GRACE = Duration.ofSeconds(5);

  /**
   * How a run ended.
   *
   * @param exitCode -1 when timed out
   * @param killedProcesses how many processes were killed on time-out (the program included)
   * @param output stdout and stderr interleaved, as lines; may contain secrets
   */
  record Exit(
      int exitCode, boolean timedOut, int killedProcesses, List<String> output, Duration elapsed) {}

  private BoundedProcess() {}

  /**
   * Runs {@code command} with {@code PYTHONWARNINGS=ignore} (fence-agents print a
   * DeprecationWarning otherwise), writes {@code stdinLines} and closes stdin.
   *
   * @throws IOException if the program cannot be started
   * @throws InterruptedException if interrupted; the program and its children are killed first
   */
  static Exit run(List<String> command, List<String> stdinLines, Duration timeout)
      throws IOException, InterruptedException {
    ProcessBuilder builder = new ProcessBuilder(command).redirectErrorStream(true);
    builder.environment().put("PYTHONWARNINGS", "ignore");
    long start = System.nanoTime();
    Process process = builder.start();
    OutputCollector output = new OutputCollector(process.getInputStream());
    Thread reader = new Thread(output, "fence-agent-output-" + process.pid());
    reader.setDaemon(true);
    reader.setUncaughtExceptionHandler(
        (t, e) -> LOG.warn("[pid={}] reading agent output failed", process.pid(), e));
    reader.start();
    writeStdin(process, stdinLines);

    boolean exited;
    try {
      exited = process.waitFor(timeout.toNanos(), TimeUnit.NANOSECONDS);
    } catch (InterruptedException e) {
      killTree(process);
      throw e;
    }
    int killed = 0;
    if (!exited) {
      killed = killTree(process);
      process.waitFor(GRACE.toNanos(), TimeUnit.NANOSECONDS);
    }
    // A child that outlived the program (and was not killed) may hold the pipe open; do not wait
    // for it longer than the grace period.
    reader.join(GRACE.toMillis());
    Duration elapsed = Duration.ofNanos(System.nanoTime() - start);
    return new Exit(exited ? process.exitValue() : -1, !exited, killed, output.lines(), elapsed);
  }

  private static void writeStdin(Process process, List<String> lines) {
    try (OutputStream stdin = process.getOutputStream()) {
      if (!lines.isEmpty()) {
        stdin.write((String.join("\n", lines) + "\n").getBytes(StandardCharsets.UTF_8));
      }
    } catch (IOException e) {
      // The program exited without reading its stdin (e.g. it failed at once): its exit code
      // and output say why, so this is not an error in itself.
      LOG.debug("[pid={}] stdin closed early: {}", process.pid(), e.getMessage());
    }
  }

  /**
   * Kills the program and all its descendants; returns how many were killed. Children are killed
   * first: once the program is gone its children are re-parented to init and can no longer be found
   * from it. A second sweep catches children forked during the first.
   */
  static int killTree(Process process) {
    int killed = 0;
    for (int sweep = 0; sweep < 2; sweep++) {
      killed += (int) process.descendants().filter(ProcessHandle::destroyForcibly).count();
    }
    if (process.isAlive()) {
      process.destroyForcibly();
      killed++;
    }
    return killed;
  }

  /** Reads a stream to its end, keeping the first {@link #MAX_OUTPUT_BYTES}. */
  private static final class OutputCollector implements Runnable {
    private final InputStream in;
    private final ByteArrayOutputStream kept = new ByteArrayOutputStream();

    OutputCollector(InputStream in) {
      this.in = in;
    }

    @Override
    public void run() {
      byte[] buffer = new byte[8192];
      try (in) {
        int n;
        while ((n = in.read(buffer)) >= 0) {
          synchronized (kept) {
            kept.write(buffer, 0, Math.min(n, Math.max(0, MAX_OUTPUT_BYTES - kept.size())));
          }
        }
      } catch (IOException e) {
        // The stream closes under us when the process is killed; what was read is kept.
      }
    }

    List<String> lines() {
      synchronized (kept) {
        return kept.toString(StandardCharsets.UTF_8).lines().toList();
      }
    }
  }
}
