package io.clusterlvm.testing;

import java.io.File;
import java.io.IOException;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * One OpenIPMI {@code ipmi_sim} on 127.0.0.1, started and stopped by the shared testbed's scripts
 * ({@code start-bmc.sh}, {@code stop-bmc.sh}) in a work directory. What a BMC does on power
 * on/off/status is its power script's business: {@link SimulatedBmc} kills one process,
 * integration-tests' host BMC a whole simulated host and keeps a power log.
 */
public final class IpmiSim {
  public static final String ADDRESS = "127.0.0.1";

  /** System property naming the testbed directory (the one holding start-bmc.sh). */
  public static final String TESTBED_PROPERTY = "clusterlvm.testbed";

  private static final long SCRIPT_TIMEOUT_SECONDS = 30;
  private static final int PORT_ATTEMPTS = 5;

  private final Path testbed;
  private final Path workDir;
  private final int port;

  private IpmiSim(Path testbed, Path workDir, int port) {
    this.testbed = testbed;
    this.workDir = workDir;
    this.port = port;
  }

  /**
   * Writes {@code powerScript} to {@code workDir}/power.sh and starts ipmi_sim on a free UDP port
   * of 127.0.0.1 with it. The script is called as {@code power.sh WORKDIR on|off|status}; status
   * prints on or off. {@code username} and {@code password} go into ipmi_sim's lan.conf as quoted
   * strings, so they must not contain a double quote.
   *
   * @throws IOException if the testbed is missing or ipmi_sim does not start
   */
  public static IpmiSim start(Path workDir, String powerScript, String username, String password)
      throws IOException, InterruptedException {
    Path testbed = locateTestbed();
    Files.createDirectories(workDir);
    Path script = workDir.resolve("power.sh");
    writeExecutable(script, powerScript);
    IOException last = null;
    // A probed free port can be taken before ipmi_sim binds it: try another then.
    for (int i = 0; i < PORT_ATTEMPTS; i++) {
      int port = freeUdpPort();
      try {
        run(
            testbed.resolve("start-bmc.sh"),
            workDir,
            List.of(
                workDir.toString(), Integer.toString(port), script.toString(), username, password));
        return new IpmiSim(testbed, workDir, port);
      } catch (IOException e) {
        last = e;
        killAfterFailedStart(workDir);
      } catch (InterruptedException | RuntimeException e) {
        try {
          killAfterFailedStart(workDir);
        } catch (IOException | RuntimeException notKilled) {
          e.addSuppressed(notKilled);
        }
        throw e;
      }
    }
    throw last;
  }

  public int port() {
    return port;
  }

  public Path workDir() {
    return workDir;
  }

  /** Stops ipmi_sim (stop-bmc.sh, by the PID it recorded). */
  public void stop() throws IOException, InterruptedException {
    run(testbed.resolve("stop-bmc.sh"), workDir, List.of(workDir.toString()));
  }

  /** A UDP port of 127.0.0.1 that nothing listens on now (a dead BMC, or one to start). */
  public static int freeUdpPort() throws IOException {
    try (DatagramSocket socket = new DatagramSocket(0, InetAddress.getByName(ADDRESS))) {
      return socket.getLocalPort();
    }
  }

  /** Writes an executable script that prints {@code password}, for a {@code passwd_script}. */
  public static Path writePasswordScript(Path file, String password) throws IOException {
    // Single quotes keep the shell from expanding anything in the password.
    String quoted = "'" + password.replace("'", "'\\''") + "'";
    writeExecutable(file, "#!/bin/sh\nprintf '%s\\n' " + quoted + "\n");
    return file;
  }

  /**
   * {@code -Dclusterlvm.testbed=DIR}, else {@code shared/testbed} in the nearest directory above
   * the working directory that has one (CI clones the repository with {@code shared/} beside it).
   */
  static Path locateTestbed() throws IOException {
    String override = System.getProperty(TESTBED_PROPERTY);
    if (override != null && !override.isBlank()) {
      Path dir = Path.of(override).toAbsolutePath();
      if (!Files.isRegularFile(dir.resolve("start-bmc.sh"))) {
        throw new IOException(TESTBED_PROPERTY + "=" + override + " has no start-bmc.sh");
      }
      return dir;
    }
    Path cwd = Path.of("").toAbsolutePath();
    for (Path dir = cwd; dir != null; dir = dir.getParent()) {
      Path candidate = dir.resolve("shared").resolve("testbed");
      if (Files.isRegularFile(candidate.resolve("start-bmc.sh"))) {
        return candidate;
      }
    }
    throw new IOException(
        "no shared/testbed/start-bmc.sh in "
            + cwd
            + " or above; set -D"
            + TESTBED_PROPERTY
            + "=/path/to/testbed");
  }

  /** After a failed start: ipmi_sim may be running without having bound its port. */
  private static void killAfterFailedStart(Path workDir) throws IOException {
    Path pidFile = workDir.resolve("ipmi_sim.pid");
    if (Files.isRegularFile(pidFile)) {
      String pid = Files.readString(pidFile, StandardCharsets.UTF_8).strip();
      if (!pid.isEmpty()) {
        ProcessHandle.of(Long.parseLong(pid)).ifPresent(ProcessHandle::destroyForcibly);
      }
      Files.delete(pidFile);
    }
  }

  private static void run(Path script, Path workDir, List<String> args)
      throws IOException, InterruptedException {
    Path log = workDir.resolve(script.getFileName() + ".out");
    List<String> command = new ArrayList<>(List.of("/bin/sh", script.toString()));
    command.addAll(args);
    Process process =
        new ProcessBuilder(command)
            .redirectErrorStream(true)
            .redirectOutput(log.toFile())
            .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
            .start();
    boolean finished;
    try {
      finished = process.waitFor(SCRIPT_TIMEOUT_SECONDS, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      process.descendants().forEach(ProcessHandle::destroyForcibly);
      process.destroyForcibly();
      throw e;
    }
    if (!finished) {
      process.descendants().forEach(ProcessHandle::destroyForcibly);
      process.destroyForcibly();
      throw new IOException(script + " did not finish in " + SCRIPT_TIMEOUT_SECONDS + " s");
    }
    if (process.exitValue() != 0) {
      throw new IOException(
          script
              + " exited "
              + process.exitValue()
              + ": "
              + Files.readString(log, StandardCharsets.UTF_8).strip());
    }
  }

  static void writeExecutable(Path file, String content) throws IOException {
    Files.writeString(file, content, StandardCharsets.UTF_8);
    Files.setPosixFilePermissions(file, PosixFilePermissions.fromString("rwx------"));
  }
}
