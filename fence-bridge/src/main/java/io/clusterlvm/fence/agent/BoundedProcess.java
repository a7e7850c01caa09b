package io.clusterlvm.fence.agent;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs a program with lines on its stdin and a hard time limit; on time-out the program and every
 * process it started are killed, so a hung ipmitool cannot outlive its fence attempt. The program
 * runs in a session of its own ({@code setsid}), so that what it leaves behind when it exits (a
 * child it did not wait for, which the kernel re-parents to init) can still be found, by that
 * session's id, and killed too.
 */
final class BoundedProcess {
  private static final Logger LOG = LoggerFactory.getLogger(BoundedProcess.class);

  private static final Path SETSID = Path.of("/usr/bin/setsid");
  private static final Path PROC = Path.of("/proc");

  /** More output than any agent's summary needs; bounds memory if something floods. */
  private static final int MAX_OUTPUT_BYTES = 64 * 1024;

  /** How long to wait for a killed process to go, and for its output to drain. */
  private static final Duration GRACE = Duration.ofSeconds(5);

  /**
   * How a run ended.
   *
   * @param exitCode -1 when timed out
   * @param killedProcesses how many processes were killed: on time-out (the program included), or
   *     left behind by a program that exited
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
    List<String> cmd = new ArrayList<>();
    // Without setsid the program shares this JVM's session: its leftovers cannot be told apart.
    boolean ownSession = Files.isExecutable(SETSID);
    if (ownSession) {
      cmd.add(SETSID.toString()); // not a group leader (Java's child), so it execs, keeping the pid
    }
    cmd.addAll(command);
    ProcessBuilder builder = new ProcessBuilder(cmd).redirectErrorStream(true);
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
      if (ownSession) {
        // Not before the program is gone: while it lives, its session looks like someone else's.
        awaitExit(process);
        killSession(process.pid());
      }
      throw e;
    }
    int killed = 0;
    if (!exited) {
      killed = killTree(process);
      awaitExit(process);
    }
    int leftBehind = ownSession ? killSession(process.pid()) : 0;
    if (leftBehind > 0) {
      LOG.warn(
          "[pid={}] {} left {} process(es) behind when it ended; killed them",
          process.pid(),
          command.get(0),
          leftBehind);
      killed += leftBehind;
    }
    // A child that outlived the program (and was not killed) may hold the pipe open; do not wait
    // for it longer than the grace period.
    reader.join(GRACE.toMillis());
    Duration elapsed = Duration.ofNanos(System.nanoTime() - start);
    return new Exit(exited ? process.exitValue() : -1, !exited, killed, output.lines(), elapsed);
  }

  /**
   * Waits up to {@link #GRACE} for a killed program to be gone, through an interrupt (kept for the
   * caller): its leftovers can be found only once it is.
   */
  private static void awaitExit(Process process) {
    boolean interrupted = Thread.interrupted();
    long deadline = System.nanoTime() + GRACE.toNanos();
    while (process.isAlive()) {
      long left = deadline - System.nanoTime();
      if (left <= 0) {
        break;
      }
      try {
        process.waitFor(left, TimeUnit.NANOSECONDS);
      } catch (InterruptedException again) {
        interrupted = true;
      }
    }
    if (interrupted) {
      Thread.currentThread().interrupt();
    }
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

  /**
   * Kills the processes of session {@code sid} (the program's, started by setsid with its pid),
   * once the program is gone; returns how many. A live leader of that session is someone else's:
   * once the program is reaped its pid is free, and a process that got it and called setsid leads a
   * session with the same id; then nothing is killed. Two sweeps, for children forked during the
   * first. Nothing on a system without /proc.
   */
  static int killSession(long sid) {
    if (liveInSession(sid, sid)) {
      return 0;
    }
    Set<Long> killed = new HashSet<>();
    for (int sweep = 0; sweep < 2; sweep++) {
      try (DirectoryStream<Path> procs = Files.newDirectoryStream(PROC, "[0-9]*")) {
        for (Path p : procs) {
          long pid = Long.parseLong(p.getFileName().toString());
          if (!killed.contains(pid) && liveInSession(pid, sid)) {
            Optional<ProcessHandle> h = ProcessHandle.of(pid);
            if (h.isPresent() && h.get().destroyForcibly()) {
              killed.add(pid);
            }
          }
        }
      } catch (IOException | RuntimeException e) {
        LOG.debug("cannot list the processes of session {}: {}", sid, e.toString());
        break;
      }
    }
    return killed.size();
  }

  /** Whether process {@code pid} runs (is no zombie) in session {@code sid}. */
  private static boolean liveInSession(long pid, long sid) {
    try {
      String stat = Files.readString(PROC.resolve(Long.toString(pid)).resolve("stat"));
      // "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
      String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
      return !f[0].equals("Z") && !f[0].equals("X") && Long.parseLong(f[3]) == sid;
    } catch (IOException | RuntimeException e) {
      return false; // gone, or unreadable
    }
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
