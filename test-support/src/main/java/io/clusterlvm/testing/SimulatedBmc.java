package io.clusterlvm.testing;

import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An IPMI BMC (OpenIPMI {@code ipmi_sim}, from the shared testbed) on 127.0.0.1 that powers a
 * simulated host: any process the test started. Powering off SIGKILLs that process, so a real
 * {@code fence_ipmilan} run against this BMC really stops the "host".
 *
 * <p>Power on only records the state (the host process cannot be restarted); status reports the
 * recorded state, like a BMC reporting chassis power whatever the OS does.
 *
 * <p>{@link #close()} stops the BMC and kills the host by PID, and deletes the work directory.
 */
public final class SimulatedBmc implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(SimulatedBmc.class);

  public static final String ADDRESS = "127.0.0.1";
  public static final String DEFAULT_USERNAME = "admin";
  public static final String DEFAULT_PASSWORD = "secret";

  /** System property naming the testbed directory (the one holding start-bmc.sh). */
  public static final String TESTBED_PROPERTY = "clusterlvm.testbed";

  private static final long SCRIPT_TIMEOUT_SECONDS = 30;
  private static final int PORT_ATTEMPTS = 5;

  // POWER_SCRIPT contract of start-bmc.sh: <script> <workdir> on|off|status; status prints on/off.
  // The host's PID is in <workdir>/node.pid (stop-bmc.sh kills it from there too); the power state
  // is in <workdir>/power. off removes node.pid so a recycled PID is never killed later.
  private static final String POWER_SCRIPT =
      """
      #!/bin/sh
      dir=$1
      case $2 in
        status) cat "$dir/power" ;;
        off)    if [ -s "$dir/node.pid" ]; then kill -9 "$(cat "$dir/node.pid")" 2>/dev/null; fi
                rm -f "$dir/node.pid"
                echo off > "$dir/power" ;;
        on)     echo on > "$dir/power" ;;
        *)      echo "usage: $0 <workdir> on|off|status" >&2; exit 1 ;;
      esac
      """;

  private final Path testbed;
  private final Path workDir;
  private final int port;
  private final String username;
  private final String password;
  private final AtomicBoolean closed = new AtomicBoolean();

  private SimulatedBmc(Path testbed, Path workDir, int port, String username, String password) {
    this.testbed = testbed;
    this.workDir = workDir;
    this.port = port;
    this.username = username;
    this.password = password;
  }

  /**
   * Starts a BMC with {@link #DEFAULT_USERNAME}/{@link #DEFAULT_PASSWORD} powering {@code host}.
   */
  public static SimulatedBmc start(ProcessHandle host) throws IOException, InterruptedException {
    return start(host, DEFAULT_USERNAME, DEFAULT_PASSWORD);
  }

  /**
   * Starts a BMC on a free UDP port of 127.0.0.1 that powers {@code host} (power state: on). {@code
   * username} and {@code password} go into ipmi_sim's lan.conf as quoted strings, so they must not
   * contain a double quote.
   *
   * @throws IOException if the testbed is missing or the BMC does not start
   */
  public static SimulatedBmc start(ProcessHandle host, String username, String password)
      throws IOException, InterruptedException {
    Path testbed = locateTestbed();
    Path workDir = Files.createTempDirectory("simulated-bmc-");
    try {
      Path powerScript = workDir.resolve("power.sh");
      writeExecutable(powerScript, POWER_SCRIPT);
      Files.writeString(workDir.resolve("node.pid"), host.pid() + "\n");
      Files.writeString(workDir.resolve("power"), "on\n");
      IOException last = null;
      // A free port can be taken between probing and ipmi_sim binding it; try another then.
      for (int i = 0; i < PORT_ATTEMPTS; i++) {
        int port = freeUdpPort();
        try {
          runScript(
              testbed.resolve("start-bmc.sh"),
              workDir,
              List.of(
                  workDir.toString(),
                  Integer.toString(port),
                  powerScript.toString(),
                  username,
                  password));
          LOG.info("[bmc={}:{}] started for host pid {} in {}", ADDRESS, port, host.pid(), workDir);
          return new SimulatedBmc(testbed, workDir, port, username, password);
        } catch (IOException e) {
          last = e;
          killBmcProcess(workDir);
        }
      }
      throw last;
    } catch (IOException | InterruptedException | RuntimeException e) {
      killBmcProcess(workDir);
      deleteRecursively(workDir);
      throw e;
    }
  }

  public String address() {
    return ADDRESS;
  }

  public int port() {
    return port;
  }

  public String username() {
    return username;
  }

  public String password() {
    return password;
  }

  public Path workDir() {
    return workDir;
  }

  /**
   * Writes an executable script to {@code file} that prints this BMC's password, for a
   * fencedevice's {@code passwd_script}.
   */
  public Path writePasswordScript(Path file) throws IOException {
    // Single quotes keep the shell from expanding anything in the password.
    String quoted = "'" + password.replace("'", "'\\''") + "'";
    writeExecutable(file, "#!/bin/sh\nprintf '%s\\n' " + quoted + "\n");
    return file;
  }

  /** Stops the BMC and kills the host by PID (unless it was powered off), then cleans up. */
  @Override
  public void close() throws IOException, InterruptedException {
    if (!closed.compareAndSet(false, true)) {
      return;
    }
    try {
      runScript(testbed.resolve("stop-bmc.sh"), workDir, List.of(workDir.toString()));
      LOG.info("[bmc={}:{}] stopped", ADDRESS, port);
    } finally {
      deleteRecursively(workDir);
    }
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
  private static void killBmcProcess(Path workDir) throws IOException {
    Path pidFile = workDir.resolve("ipmi_sim.pid");
    if (Files.isRegularFile(pidFile)) {
      String pid = Files.readString(pidFile, StandardCharsets.UTF_8).strip();
      if (!pid.isEmpty()) {
        ProcessHandle.of(Long.parseLong(pid)).ifPresent(ProcessHandle::destroyForcibly);
      }
      Files.delete(pidFile);
    }
  }

  private static int freeUdpPort() throws IOException {
    try (DatagramSocket socket = new DatagramSocket(0, InetAddress.getByName(ADDRESS))) {
      return socket.getLocalPort();
    }
  }

  private static void runScript(Path script, Path workDir, List<String> args)
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
    if (!process.waitFor(SCRIPT_TIMEOUT_SECONDS, TimeUnit.SECONDS)) {
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

  private static void writeExecutable(Path file, String content) throws IOException {
    Files.writeString(file, content, StandardCharsets.UTF_8);
    Files.setPosixFilePermissions(file, PosixFilePermissions.fromString("rwx------"));
  }

  private static void deleteRecursively(Path dir) throws IOException {
    if (!Files.exists(dir)) {
      return;
    }
    try (Stream<Path> paths = Files.walk(dir)) {
      paths
          .sorted(Comparator.reverseOrder())
          .forEach(
              p -> {
                try {
                  Files.deleteIfExists(p);
                } catch (IOException e) {
                  throw new UncheckedIOException(e);
                }
              });
    } catch (UncheckedIOException e) {
      throw e.getCause();
    }
  }
}
