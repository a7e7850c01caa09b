package io.clusterlvm.clvm.rpc;

import io.grpc.BindableService;
import io.grpc.Server;
import io.grpc.netty.NettyServerBuilder;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.epoll.EpollEventLoopGroup;
import io.netty.channel.epoll.EpollServerDomainSocketChannel;
import io.netty.channel.epoll.EpollServerSocketChannel;
import io.netty.channel.unix.DomainSocketAddress;
import io.netty.util.concurrent.DefaultThreadFactory;
import java.io.IOException;
import java.net.ConnectException;
import java.net.InetSocketAddress;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Serves the clvm API on a unix socket (mode 0660: root and the socket's group may run lvm commands
 * through it) and, optionally, on TCP. A socket file left by an agent that died is replaced; one
 * that another live agent listens on is not.
 */
public final class ClvmServer implements AutoCloseable {

  private static final Logger LOG = LoggerFactory.getLogger(ClvmServer.class);

  private final Path socket;
  private final Server unixServer;
  private final Server tcpServer;
  private final EventLoopGroup boss;
  private final EventLoopGroup workers;
  private final AtomicBoolean closed = new AtomicBoolean();

  private ClvmServer(
      Path socket,
      Server unixServer,
      Server tcpServer,
      EventLoopGroup boss,
      EventLoopGroup workers) {
    this.socket = socket;
    this.unixServer = unixServer;
    this.tcpServer = tcpServer;
    this.boss = boss;
    this.workers = workers;
  }

  /**
   * Starts serving {@code service}.
   *
   * @param tcpListen "host:port" to serve TCP too (port 0: any free port), or null
   * @param executor runs the service's handlers
   * @throws IOException if the socket is in use by a live agent, or binding fails
   */
  public static ClvmServer start(
      Path socket, String tcpListen, BindableService service, Executor executor)
      throws IOException {
    prepareSocketPath(socket);
    EventLoopGroup boss =
        new EpollEventLoopGroup(1, new DefaultThreadFactory("clvm-rpc-accept", true));
    EventLoopGroup workers =
        new EpollEventLoopGroup(2, new DefaultThreadFactory("clvm-rpc-io", true));
    Server unix = null;
    Server tcp = null;
    try {
      unix =
          NettyServerBuilder.forAddress(new DomainSocketAddress(socket.toString()))
              .channelType(EpollServerDomainSocketChannel.class)
              .bossEventLoopGroup(boss)
              .workerEventLoopGroup(workers)
              .executor(executor)
              .addService(service)
              .build()
              .start();
      Files.setPosixFilePermissions(socket, PosixFilePermissions.fromString("rw-rw----"));
      if (tcpListen != null) {
        tcp =
            NettyServerBuilder.forAddress(tcpAddress(tcpListen))
                .channelType(EpollServerSocketChannel.class)
                .bossEventLoopGroup(boss)
                .workerEventLoopGroup(workers)
                .executor(executor)
                .addService(service)
                .build()
                .start();
      }
    } catch (IOException | RuntimeException e) {
      if (unix != null) {
        unix.shutdownNow();
      }
      boss.shutdownGracefully(0, 1, TimeUnit.SECONDS);
      workers.shutdownGracefully(0, 1, TimeUnit.SECONDS);
      Files.deleteIfExists(socket);
      throw e;
    }
    LOG.info(
        "clvm API on unix:{}{}",
        socket,
        tcp == null ? "" : " and tcp:" + tcp.getListenSockets().get(0));
    return new ClvmServer(socket, unix, tcp, boss, workers);
  }

  public Path socket() {
    return socket;
  }

  /** The TCP port, or -1 without TCP. */
  public int tcpPort() {
    return tcpServer == null ? -1 : tcpServer.getPort();
  }

  /** Stops accepting calls, gives running ones {@code grace} to finish, removes the socket. */
  public void shutdown(java.time.Duration grace) throws InterruptedException {
    if (!closed.compareAndSet(false, true)) {
      return;
    }
    long deadline = System.nanoTime() + grace.toNanos();
    for (Server s : new Server[] {unixServer, tcpServer}) {
      if (s != null) {
        s.shutdown();
      }
    }
    for (Server s : new Server[] {unixServer, tcpServer}) {
      if (s != null
          && !s.awaitTermination(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS)) {
        s.shutdownNow();
      }
    }
    boss.shutdownGracefully(0, 1, TimeUnit.SECONDS);
    workers.shutdownGracefully(0, 1, TimeUnit.SECONDS);
    try {
      Files.deleteIfExists(socket);
    } catch (IOException e) {
      LOG.warn("could not remove {}: {}", socket, e.toString());
    }
  }

  @Override
  public void close() {
    try {
      shutdown(java.time.Duration.ofSeconds(5));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  private static void prepareSocketPath(Path socket) throws IOException {
    Path dir = socket.toAbsolutePath().getParent();
    if (dir != null && !Files.isDirectory(dir)) {
      Files.createDirectories(dir);
      Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwxr-x---"));
    }
    if (!Files.exists(socket)) {
      return;
    }
    try (SocketChannel probe = SocketChannel.open(StandardProtocolFamily.UNIX)) {
      probe.connect(UnixDomainSocketAddress.of(socket));
      throw new IOException(
          "another process (a running clvm-agent?) is listening on "
              + socket
              + "; not replacing it");
    } catch (ConnectException stale) {
      LOG.info("removing stale socket {} (nobody listens on it)", socket);
      Files.delete(socket);
    }
  }

  /**
   * The TCP address to serve on, which must be a loopback one: whoever connects runs lvm as root on
   * this host's shared storage, and TCP has no peer credentials to check, where the unix socket has
   * its file permissions (found in review: the docs suggested 0.0.0.0). A remote tool reaches the
   * agent over ssh, or a tunnel to this port.
   *
   * @throws IllegalArgumentException for a malformed, unresolvable or non-loopback address
   */
  public static InetSocketAddress tcpAddress(String hostPort) {
    int colon = hostPort.lastIndexOf(':');
    if (colon < 0) {
      throw new IllegalArgumentException("--tcp-listen wants HOST:PORT, got '" + hostPort + "'");
    }
    String host = hostPort.substring(0, colon);
    int port;
    try {
      port = Integer.parseInt(hostPort.substring(colon + 1));
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("--tcp-listen: bad port in '" + hostPort + "'");
    }
    InetSocketAddress address =
        host.isEmpty() || host.equals("*") ? null : new InetSocketAddress(host, port);
    if (address == null || address.isUnresolved() || !address.getAddress().isLoopbackAddress()) {
      throw new IllegalArgumentException(
          "--tcp-listen "
              + hostPort
              + ": only a loopback address (e.g. 127.0.0.1:7960); the clvm API runs lvm as root"
              + " for whoever connects, and TCP can't tell who that is");
    }
    return address;
  }
}
