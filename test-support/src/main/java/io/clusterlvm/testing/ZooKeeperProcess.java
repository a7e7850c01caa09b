package io.clusterlvm.testing;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.zookeeper.Version;

/**
 * A real single-node ZooKeeper ({@code ZooKeeperServerMain}) in a child JVM on 127.0.0.1.
 *
 * <p>A separate process, not an in-process TestingServer: the benchmark measures the heap and CPU
 * of its own JVM apart from ZooKeeper's, and a ZooKeeper that serves TLS takes its settings from
 * system properties, which in the test's JVM would apply to every ZooKeeper client there too.
 */
public final class ZooKeeperProcess implements AutoCloseable {
  private final ProcessBuilder builder;
  private volatile Process process;
  private final int port;
  private final Path dir;
  private final boolean fsync;
  private final Thread reaper;

  private ZooKeeperProcess(ProcessBuilder builder, int port, Path dir, boolean fsync)
      throws IOException {
    this.builder = builder;
    this.process = builder.start();
    this.port = port;
    this.dir = dir;
    this.fsync = fsync;
    // If the benchmark or test is interrupted (Ctrl-C), do not leave the child running.
    this.reaper = new Thread(() -> process.destroyForcibly(), "zookeeper-process-reaper");
    Runtime.getRuntime().addShutdownHook(reaper);
  }

  /** Plain text on a free port, with fsync as given; logs in {@code dir}. */
  public static ZooKeeperProcess start(Path dir, boolean fsync) throws Exception {
    return start(dir, fsync, List.of());
  }

  /**
   * TLS only (no plain-text port), with the certificate {@code server} (it must name 127.0.0.1),
   * requiring each client to present a certificate that {@code ca} signed.
   */
  public static ZooKeeperProcess startTls(
      Path dir, TestCertificates ca, TestCertificates.Issued server) throws Exception {
    Path keyStore = dir.resolve("zookeeper-server.pem");
    Files.writeString(keyStore, Files.readString(server.cert()) + Files.readString(server.key()));
    return start(
        dir,
        false,
        List.of(
            "ssl.keyStore.location=" + keyStore,
            "ssl.keyStore.type=PEM",
            "ssl.trustStore.location=" + ca.caCert(),
            "ssl.trustStore.type=PEM",
            "ssl.clientAuth=need"));
  }

  private static ZooKeeperProcess start(Path dir, boolean fsync, List<String> tls)
      throws Exception {
    IOException last = null;
    for (int attempt = 1; attempt <= 3; attempt++) {
      int port = freePort();
      Path data = dir.resolve("data-" + attempt);
      Files.createDirectories(data);
      Path cfg = dir.resolve("zoo-" + attempt + ".cfg");
      List<String> lines = new ArrayList<>();
      lines.add("tickTime=2000");
      lines.add("dataDir=" + data);
      // With TLS the port is the secure one, and there is no plain-text port at all.
      lines.add((tls.isEmpty() ? "clientPort=" : "secureClientPort=") + port);
      lines.add((tls.isEmpty() ? "clientPortAddress=" : "secureClientPortAddress=") + "127.0.0.1");
      // 64 Curator clients plus ours from one address exceed the default of 60.
      lines.add("maxClientCnxns=0");
      lines.add("admin.enableServer=false");
      // ZooKeeperServerMain hands settings it does not know on as "zookeeper."-prefixed system
      // properties, which is where its TLS code reads them.
      lines.addAll(tls);
      Files.writeString(cfg, String.join("\n", lines) + "\n");
      Path logConfig = dir.resolve("logback-zk.xml");
      Files.writeString(
          logConfig,
          """
          <configuration>
            <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">
              <encoder><pattern>%d{HH:mm:ss.SSS} %-5level %logger{20} - %msg%n</pattern></encoder>
            </appender>
            <root level="WARN"><appender-ref ref="OUT"/></root>
          </configuration>
          """);
      String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
      ProcessBuilder pb =
          new ProcessBuilder(
              List.of(
                  java,
                  "-Xms512m",
                  "-Xmx1g",
                  "-Dzookeeper.forceSync=" + (fsync ? "yes" : "no"),
                  // Read before the config file is; TLS needs the netty connection factory.
                  "-Dzookeeper.serverCnxnFactory="
                      + (tls.isEmpty()
                          ? "org.apache.zookeeper.server.NIOServerCnxnFactory"
                          : "org.apache.zookeeper.server.NettyServerCnxnFactory"),
                  "-Dlogback.configurationFile=" + logConfig,
                  "-cp",
                  System.getProperty("java.class.path"),
                  "org.apache.zookeeper.server.ZooKeeperServerMain",
                  cfg.toString()));
      pb.redirectErrorStream(true);
      pb.redirectOutput(
          ProcessBuilder.Redirect.appendTo(dir.resolve("zookeeper-" + attempt + ".log").toFile()));
      ZooKeeperProcess zk = new ZooKeeperProcess(pb, port, dir, fsync);
      try {
        zk.awaitListening(Duration.ofSeconds(30));
        return zk;
      } catch (IOException e) {
        last = e; // most likely someone took the port between probe and bind
        zk.close();
      }
    }
    throw last;
  }

  private static int freePort() throws IOException {
    try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      return s.getLocalPort();
    }
  }

  private void awaitListening(Duration limit) throws IOException, InterruptedException {
    long deadline = System.nanoTime() + limit.toNanos();
    while (System.nanoTime() < deadline) {
      if (!process.isAlive()) {
        throw new IOException(
            "ZooKeeper exited with " + process.exitValue() + "; see its log in " + dir);
      }
      try (Socket s = new Socket()) {
        s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 200);
        return;
      } catch (IOException notYet) {
        TimeUnit.MILLISECONDS.sleep(50); // polling a port: there is nothing to wait on
      }
    }
    throw new IOException("ZooKeeper did not listen on port " + port + " within " + limit);
  }

  public String connectString() {
    return "127.0.0.1:" + port;
  }

  public long pid() {
    return process.pid();
  }

  public boolean fsync() {
    return fsync;
  }

  public static String version() {
    return Version.getFullVersion();
  }

  /** CPU time the ZooKeeper process has used so far, in nanoseconds (0 if the OS won't say). */
  public long cpuNanos() {
    return process.info().totalCpuDuration().map(Duration::toNanos).orElse(0L);
  }

  /**
   * Stops ZooKeeper (SIGTERM) and starts it again on the same port and data: its clients lose their
   * connection, and their sessions live on if they reconnect within the session timeout.
   */
  public void restart() throws Exception {
    stop();
    process = builder.start();
    awaitListening(Duration.ofSeconds(30));
  }

  private void stop() {
    process.destroy();
    try {
      if (!process.waitFor(10, TimeUnit.SECONDS)) {
        process.destroyForcibly();
        process.waitFor(10, TimeUnit.SECONDS);
      }
    } catch (InterruptedException e) {
      process.destroyForcibly();
      Thread.currentThread().interrupt();
    }
  }

  @Override
  public void close() {
    stop();
    try {
      Runtime.getRuntime().removeShutdownHook(reaper);
    } catch (IllegalStateException shuttingDown) {
      // the hook runs anyway
    }
  }
}
