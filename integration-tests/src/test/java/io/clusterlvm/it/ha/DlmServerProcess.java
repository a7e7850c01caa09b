package io.clusterlvm.it.ha;

import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.ServerStatusRequest;
import io.clusterlvm.dlm.proto.ServerStatusResponse;
import io.clusterlvm.testing.ChildProcesses;
import io.clusterlvm.testing.NetworkNamespace;
import io.grpc.ManagedChannel;
import io.grpc.netty.NettyChannelBuilder;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URISyntaxException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.awaitility.Awaitility;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One dlm-server daemon ({@code DlmServerMain}) as an OS process, so a test can kill -9 it. It
 * keeps its port across restarts (clients hold the address list), logs to {@code
 * <logDir>/<name>-<n>.log}, and is stopped by its own {@link Process} handle, never by name.
 */
final class DlmServerProcess implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(DlmServerProcess.class);

  private final String name;
  private final String host;
  private final List<String> prefix;
  private final int port;
  private final List<String> options;
  private final Path logDir;
  private final ManagedChannel channel;
  private Process process;
  private Path log;
  private int starts;
  private boolean paused;

  private DlmServerProcess(
      String name, String host, List<String> prefix, int port, List<String> options, Path logDir) {
    this.name = name;
    this.host = host;
    this.prefix = List.copyOf(prefix);
    this.port = port;
    this.options = List.copyOf(options);
    this.logDir = logDir;
    this.channel = NettyChannelBuilder.forAddress(host, port).usePlaintext().build();
  }

  /**
   * Launches a server on 127.0.0.1 and a free port without waiting for it; see {@link
   * #awaitServing}. {@code options} are the daemon's options other than --listen and --advertise.
   */
  static DlmServerProcess launch(String name, List<String> options, Path logDir)
      throws IOException {
    DlmServerProcess p =
        new DlmServerProcess(name, "127.0.0.1", List.of(), freePort(), options, logDir);
    p.restart();
    return p;
  }

  /**
   * Like {@link #launch}, inside network namespace {@code ns}, listening on {@code address} (the
   * namespace's end of one of its links, so that clients on this side reach it there).
   */
  static DlmServerProcess launchIn(
      NetworkNamespace ns, String address, String name, List<String> options, Path logDir)
      throws IOException {
    // The namespace has no other listener: any port is free there.
    DlmServerProcess p =
        new DlmServerProcess(name, address, ns.execPrefix(), 7950, options, logDir);
    p.restart();
    return p;
  }

  private static int freePort() throws IOException {
    try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      return s.getLocalPort();
    }
  }

  /** Starts the process (again) on the same port. The previous one must be gone. */
  synchronized void restart() throws IOException {
    if (process != null && process.isAlive()) {
      throw new IllegalStateException(name + " is still running (pid " + process.pid() + ")");
    }
    Files.createDirectories(logDir);
    starts++;
    log = logDir.resolve(name + "-" + starts + ".log");
    List<String> cmd = new ArrayList<>(prefix);
    cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    // Small and quick to start: three of these share two cores with the test.
    cmd.addAll(
        List.of("-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k"));
    cmd.add("-Dlogback.configurationFile=" + logbackConfig());
    cmd.add("-cp");
    cmd.add(classPath());
    cmd.add("io.clusterlvm.dlm.server.DlmServerMain");
    cmd.add("--listen=" + address());
    cmd.add("--advertise=" + address());
    cmd.addAll(options);
    process =
        ChildProcesses.killOnExit(
            new ProcessBuilder(cmd)
                .redirectErrorStream(true)
                .redirectOutput(log.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(nullFile()))
                .start());
    LOG.info("started {} (pid {}) on {}, log {}", name, process.pid(), address(), log);
  }

  private static java.io.File nullFile() {
    return new java.io.File("/dev/null");
  }

  /**
   * The test JVM's own class path: it holds dlm-server and everything it needs, built from the same
   * sources as the client the test uses. Surefire may hide it behind a manifest-only jar, whose
   * Class-Path a child JVM follows as well.
   */
  private static String classPath() {
    String cp = System.getProperty("surefire.test.class.path");
    return cp != null && !cp.isBlank() ? cp : System.getProperty("java.class.path");
  }

  private static String logbackConfig() {
    try {
      return Path.of(DlmServerProcess.class.getResource("/ha/dlm-server-logback.xml").toURI())
          .toString();
    } catch (URISyntaxException e) {
      throw new IllegalStateException(e);
    }
  }

  /** Waits until the process answers ServerStatus; fails with its log if it exits first. */
  void awaitServing(Duration max) throws IOException {
    long deadline = System.nanoTime() + max.toNanos();
    while (System.nanoTime() < deadline) {
      Process p = process;
      if (!p.isAlive()) {
        throw new IllegalStateException(
            name + " exited with " + p.exitValue() + " while starting; log:\n" + logTail());
      }
      if (status(Duration.ofMillis(500)).isPresent()) {
        return;
      }
      // status() waited up to 500 ms for the answer: no busy loop here.
    }
    throw new IllegalStateException(
        name + " did not answer within " + max + "; log:\n" + logTail());
  }

  /** The server's status, or empty if it does not answer within {@code max}. */
  Optional<ServerStatusResponse> status(Duration max) {
    try {
      return Optional.of(
          DlmGrpc.newBlockingStub(channel)
              .withWaitForReady()
              .withDeadlineAfter(max.toMillis(), TimeUnit.MILLISECONDS)
              .serverStatus(ServerStatusRequest.getDefaultInstance()));
    } catch (RuntimeException e) {
      return Optional.empty();
    }
  }

  boolean isLeader() {
    return status(Duration.ofSeconds(1)).map(ServerStatusResponse::getLeader).orElse(false);
  }

  /** Waits until this server says it follows {@code leader}. */
  void awaitFollowing(DlmServerProcess leader, Duration max) {
    Awaitility.await(name + " follows " + leader.name)
        .atMost(max)
        .until(
            () ->
                status(Duration.ofSeconds(1))
                    .map(s -> !s.getLeader() && s.getLeaderId().equals(leader.address()))
                    .orElse(false));
  }

  /** kill -9: no shutdown hook runs, the ZooKeeper session is left to expire. */
  synchronized void kill() throws InterruptedException {
    Process p = process;
    if (p != null && p.isAlive()) {
      LOG.info("kill -9 {} (pid {})", name, p.pid());
      p.destroyForcibly();
      p.waitFor(30, TimeUnit.SECONDS);
    }
  }

  /**
   * SIGTERM (a clean shutdown), then SIGKILL if it takes longer than {@code grace}. True if the
   * process ended by itself within {@code grace} (or was not running).
   */
  synchronized boolean stop(Duration grace) throws InterruptedException {
    Process p = process;
    if (p == null || !p.isAlive()) {
      return true;
    }
    if (paused) {
      p.destroyForcibly(); // a stopped process would not act on SIGTERM
    }
    LOG.info("SIGTERM {} (pid {})", name, p.pid());
    p.destroy();
    if (p.waitFor(grace.toMillis(), TimeUnit.MILLISECONDS)) {
      return !paused;
    }
    LOG.warn("{} (pid {}) did not stop within {}; killing it", name, p.pid(), grace);
    p.destroyForcibly();
    p.waitFor(30, TimeUnit.SECONDS);
    return false;
  }

  /**
   * SIGSTOP: the process freezes as in a long GC pause or a VM stall; its ZooKeeper session expires
   * while it still believes whatever it believed. Undone by {@link #resume}.
   */
  synchronized void pause() throws IOException, InterruptedException {
    signal("STOP");
    paused = true;
  }

  /** SIGCONT after {@link #pause}. */
  synchronized void resume() throws IOException, InterruptedException {
    signal("CONT");
    paused = false;
  }

  private void signal(String sig) throws IOException, InterruptedException {
    // By pid, from our own handle: never by name.
    Process kill = new ProcessBuilder("kill", "-" + sig, Long.toString(process.pid())).start();
    if (!kill.waitFor(10, TimeUnit.SECONDS) || kill.exitValue() != 0) {
      throw new IOException("kill -" + sig + " " + process.pid() + " failed");
    }
    LOG.info("kill -{} {} (pid {})", sig, name, process.pid());
  }

  boolean isAlive() {
    Process p = process;
    return p != null && p.isAlive();
  }

  long pid() {
    return process.pid();
  }

  String name() {
    return name;
  }

  int port() {
    return port;
  }

  /** The address clients use, as the server advertises itself (and is named as leader). */
  String address() {
    return host + ":" + port;
  }

  Path log() {
    return log;
  }

  String logTail() {
    try {
      List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8);
      return String.join("\n", lines.subList(Math.max(0, lines.size() - 40), lines.size()));
    } catch (IOException e) {
      return "(could not read " + log + ": " + e + ")";
    }
  }

  @Override
  public void close() {
    try {
      stop(Duration.ofSeconds(10));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      process.destroyForcibly();
    } finally {
      channel.shutdownNow();
    }
  }

  @Override
  public String toString() {
    Process p = process;
    return name + "(" + address() + (p == null ? "" : ", pid " + p.pid()) + ")";
  }
}
