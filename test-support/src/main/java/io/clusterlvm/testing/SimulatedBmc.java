package io.clusterlvm.testing;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
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

  public static final String ADDRESS = IpmiSim.ADDRESS;
  public static final String DEFAULT_USERNAME = "admin";
  public static final String DEFAULT_PASSWORD = "secret";

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

  private final IpmiSim sim;
  private final String username;
  private final String password;
  private final AtomicBoolean closed = new AtomicBoolean();

  private SimulatedBmc(IpmiSim sim, String username, String password) {
    this.sim = sim;
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
    Path workDir = Files.createTempDirectory("simulated-bmc-");
    try {
      Files.writeString(workDir.resolve("node.pid"), host.pid() + "\n");
      Files.writeString(workDir.resolve("power"), "on\n");
      IpmiSim sim = IpmiSim.start(workDir, POWER_SCRIPT, username, password);
      LOG.info(
          "[bmc={}:{}] started for host pid {} in {}", ADDRESS, sim.port(), host.pid(), workDir);
      return new SimulatedBmc(sim, username, password);
    } catch (IOException | InterruptedException | RuntimeException e) {
      deleteRecursively(workDir);
      throw e;
    }
  }

  public String address() {
    return ADDRESS;
  }

  public int port() {
    return sim.port();
  }

  public String username() {
    return username;
  }

  public String password() {
    return password;
  }

  public Path workDir() {
    return sim.workDir();
  }

  /**
   * Writes an executable script to {@code file} that prints this BMC's password, for a
   * fencedevice's {@code passwd_script}.
   */
  public Path writePasswordScript(Path file) throws IOException {
    return IpmiSim.writePasswordScript(file, password);
  }

  /** Stops the BMC and kills the host by PID (unless it was powered off), then cleans up. */
  @Override
  public void close() throws IOException, InterruptedException {
    if (!closed.compareAndSet(false, true)) {
      return;
    }
    try {
      sim.stop();
      LOG.info("[bmc={}:{}] stopped", ADDRESS, sim.port());
    } finally {
      deleteRecursively(sim.workDir());
    }
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
