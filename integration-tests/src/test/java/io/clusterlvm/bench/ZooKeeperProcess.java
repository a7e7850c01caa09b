package io.clusterlvm.bench;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.zookeeper.Version;

/**
 * A real single-node ZooKeeper ({@code ZooKeeperServerMain}) in a child JVM on 127.0.0.1.
 *
 * <p>A separate process, not an in-process TestingServer, so that the heap measured in the
 * benchmark JVM is the dlm-server's (ZooKeeper's DataTree holds every lock record too) and so that
 * ZooKeeper's CPU can be told apart from ours. Both systems under test share it.
 */
final class ZooKeeperProcess implements AutoCloseable {
  private final Process process;
  private final int port;
  private final Path dir;
  private final boolean fsync;
  private final Thread reaper;

  private ZooKeeperProcess(Process process, int port, Path dir, boolean fsync) {
    this.process = process;
    this.port = port;
    this.dir = dir;
    this.fsync = fsync;
    // If the benchmark is interrupted (Ctrl-C), do not leave the child running.
    this.reaper = new Thread(process::destroyForcibly, "bench-zk-reaper");
    Runtime.getRuntime().addShutdownHook(reaper);
  }

  static ZooKeeperProcess start(Path dir, boolean fsync) throws Exception {
    IOException last = null;
    for (int attempt = 1; attempt <= 3; attempt++) {
      int port = freePort();
      Path data = dir.resolve("data-" + attempt);
      Files.createDirectories(data);
      Path cfg = dir.resolve("zoo-" + attempt + ".cfg");
      Files.writeString(
          cfg,
          String.join(
              "\n",
              "tickTime=2000",
              "dataDir=" + data,
              "clientPort=" + port,
              "clientPortAddress=127.0.0.1",
              // 64 Curator clients plus ours from one address exceed the default of 60.
              "maxClientCnxns=0",
              "admin.enableServer=false",
              ""));
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
                  "-Dlogback.configurationFile=" + logConfig,
                  "-cp",
                  System.getProperty("java.class.path"),
                  "org.apache.zookeeper.server.ZooKeeperServerMain",
                  cfg.toString()));
      pb.redirectErrorStream(true);
      pb.redirectOutput(dir.resolve("zookeeper-" + attempt + ".log").toFile());
      Process p = pb.start();
      ZooKeeperProcess zk = new ZooKeeperProcess(p, port, dir, fsync);
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

  String connectString() {
    return "127.0.0.1:" + port;
  }

  long pid() {
    return process.pid();
  }

  boolean fsync() {
    return fsync;
  }

  static String version() {
    return Version.getFullVersion();
  }

  /** CPU time the ZooKeeper process has used so far, in nanoseconds (0 if the OS won't say). */
  long cpuNanos() {
    return process.info().totalCpuDuration().map(Duration::toNanos).orElse(0L);
  }

  @Override
  public void close() {
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
    try {
      Runtime.getRuntime().removeShutdownHook(reaper);
    } catch (IllegalStateException shuttingDown) {
      // the hook runs anyway
    }
  }
}
