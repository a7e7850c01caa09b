package io.clusterlvm.testing;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * A safety net for the processes a test starts: those still running when the test JVM exits are
 * killed with it. A test cleans up its own processes; this catches the JVM exiting before the
 * test's cleanup ran (ZooKeeper's own exit, a fork killed by its timeout's SIGTERM), which once
 * left three dlm-servers running after a CI run.
 */
public final class ChildProcesses {
  private static final Set<Process> RUNNING = ConcurrentHashMap.newKeySet();

  static {
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> RUNNING.forEach(p -> p.destroyForcibly()), "kill-test-child-processes"));
  }

  private ChildProcesses() {}

  /**
   * Whether process {@code pid} runs. A zombie (killed, not yet reaped by its parent or init) has
   * ended, though Java calls it alive.
   */
  public static boolean running(long pid) {
    try {
      String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
      char state = stat.charAt(stat.lastIndexOf(')') + 2); // "pid (comm) S ..."
      return state != 'Z' && state != 'X';
    } catch (IOException gone) {
      return false;
    }
  }

  /** Kills {@code p} when this JVM exits, unless it has ended by then. Returns {@code p}. */
  public static Process killOnExit(Process p) {
    RUNNING.add(p);
    p.onExit().thenRun(() -> RUNNING.remove(p));
    return p;
  }
}
