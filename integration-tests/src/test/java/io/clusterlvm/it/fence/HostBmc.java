package io.clusterlvm.it.fence;

import io.clusterlvm.testing.IpmiSim;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * An {@code ipmi_sim} BMC from the shared testbed (start-bmc.sh) whose power-off SIGKILLs every
 * process of a simulated host: the clvm-agent and the "workload" processes that hold its locks.
 *
 * <p>test-support's {@code SimulatedBmc} powers one process; a host here is several (the agent, a
 * {@code dlmctl lock} holding a cluster lock, its command), and the tests need two things that BMC
 * does not give: a power log with wall-clock times (to prove nobody got the host's lock before the
 * BMC reported it off) and a slow power-off (the fencer dies while an agent run is in flight).
 *
 * <p>Power log lines are {@code EPOCH_MILLIS ACTION [STATE]}: {@code off-requested}, {@code off}
 * (the host's processes were killed and the power state says off), {@code status on|off}. Wall
 * clock, not a monotonic clock, because the times are compared across processes of one machine.
 */
final class HostBmc implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(HostBmc.class);
  static final String ADDRESS = IpmiSim.ADDRESS;

  // <script> <workdir> on|off|status. A delayed off runs in the background with its stdio closed:
  // ipmi_sim waits for chassis-control's output to end, and would otherwise wait for the sleep.
  private static final String POWER_SCRIPT =
      """
      #!/bin/sh
      dir=$1
      now() { date +%s%3N; }
      power_off() {
        if [ -s "$dir/hosts.pid" ]; then
          for pid in $(cat "$dir/hosts.pid"); do kill -9 "$pid" 2>/dev/null; done
        fi
        rm -f "$dir/hosts.pid"
        echo off > "$dir/power"
        echo "$(now) off" >> "$dir/power.log"
      }
      case $2 in
        status) s=$(cat "$dir/power"); echo "$(now) status $s" >> "$dir/power.log"; echo "$s" ;;
        off)    echo "$(now) off-requested" >> "$dir/power.log"
                delay=$(cat "$dir/off-delay" 2>/dev/null || echo 0)
                if [ "$delay" = 0 ]; then
                  power_off
                else
                  ( sleep "$delay"; power_off ) </dev/null >/dev/null 2>&1 &
                  echo $! >> "$dir/delayed-off.pid"
                fi ;;
        on)     echo on > "$dir/power"; echo "$(now) on" >> "$dir/power.log" ;;
        *)      echo "usage: $0 <workdir> on|off|status" >&2; exit 1 ;;
      esac
      """;

  /** One line of the power log. */
  record PowerEvent(long epochMillis, String action, String state) {}

  private final String name;
  private final IpmiSim sim;
  private final Path workDir;
  private final String username;
  private final String password;
  private final List<ProcessHandle> hosts = new CopyOnWriteArrayList<>();

  private HostBmc(String name, IpmiSim sim, String username, String password) {
    this.name = name;
    this.sim = sim;
    this.workDir = sim.workDir();
    this.username = username;
    this.password = password;
  }

  /** Starts a BMC on a free UDP port of 127.0.0.1; the power is on and powers no process yet. */
  static HostBmc start(String name, Path workDir, String username, String password)
      throws IOException, InterruptedException {
    Files.createDirectories(workDir);
    Files.writeString(workDir.resolve("power"), "on\n");
    IpmiSim sim = IpmiSim.start(workDir, POWER_SCRIPT, username, password);
    LOG.info("[bmc={}] {}:{} started in {}", name, ADDRESS, sim.port(), workDir);
    return new HostBmc(name, sim, username, password);
  }

  /** A UDP port on 127.0.0.1 that nothing listens on: a dead BMC. */
  static int deadPort() throws IOException {
    return IpmiSim.freeUdpPort();
  }

  String name() {
    return name;
  }

  int port() {
    return sim.port();
  }

  String username() {
    return username;
  }

  /** The processes power-off kills (replacing the earlier ones). */
  synchronized void powers(Collection<ProcessHandle> processes) throws IOException {
    hosts.clear();
    hosts.addAll(processes);
    StringBuilder pids = new StringBuilder();
    for (ProcessHandle p : processes) {
      pids.append(p.pid()).append('\n');
    }
    Files.writeString(workDir.resolve("hosts.pid"), pids.toString());
  }

  /** Makes the next power-offs take this long (they answer at once and act in the background). */
  void slowPowerOff(Duration delay) throws IOException {
    Files.writeString(
        workDir.resolve("off-delay"), String.format("%.1f%n", delay.toMillis() / 1000.0));
  }

  /** Writes a passwd_script for this BMC that prints {@code pw} (its own password by default). */
  Path writePasswordScript(Path file, String pw) throws IOException {
    return IpmiSim.writePasswordScript(file, pw);
  }

  Path writePasswordScript(Path file) throws IOException {
    return writePasswordScript(file, password);
  }

  List<PowerEvent> powerLog() throws IOException {
    Path log = workDir.resolve("power.log");
    if (!Files.exists(log)) {
      return List.of();
    }
    List<PowerEvent> out = new ArrayList<>();
    for (String line : Files.readAllLines(log, StandardCharsets.UTF_8)) {
      String[] f = line.trim().split("\\s+");
      if (f.length >= 2) {
        out.add(new PowerEvent(Long.parseLong(f[0]), f[1], f.length > 2 ? f[2] : ""));
      }
    }
    return out;
  }

  /** When the BMC first answered "off" to a status query after a power-off request, if it has. */
  Optional<Long> firstReportedOff() throws IOException {
    boolean offRequested = false;
    for (PowerEvent e : powerLog()) {
      if (e.action().equals("off-requested")) {
        offRequested = true;
      } else if (offRequested && e.action().equals("status") && e.state().equals("off")) {
        return Optional.of(e.epochMillis());
      }
    }
    return Optional.empty();
  }

  boolean offRequested() throws IOException {
    return powerLog().stream().anyMatch(e -> e.action().equals("off-requested"));
  }

  /** Stops ipmi_sim (stop-bmc.sh, by PID) and kills the processes it powers, by handle. */
  @Override
  public void close() throws IOException, InterruptedException {
    // A slow power-off still sleeping in the background finds nothing to kill, and is stopped.
    Files.deleteIfExists(workDir.resolve("hosts.pid"));
    Path delayed = workDir.resolve("delayed-off.pid");
    if (Files.exists(delayed)) {
      for (String pid : Files.readAllLines(delayed)) {
        if (!pid.isBlank()) {
          ProcessHandle.of(Long.parseLong(pid.strip())).ifPresent(HostBmc::killTree);
        }
      }
    }
    try {
      sim.stop();
    } finally {
      for (ProcessHandle p : hosts) {
        p.destroyForcibly();
      }
      LOG.info("[bmc={}] {}:{} stopped", name, ADDRESS, sim.port());
    }
  }

  private static void killTree(ProcessHandle p) {
    p.descendants().forEach(ProcessHandle::destroyForcibly);
    p.destroyForcibly();
  }
}
