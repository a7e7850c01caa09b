package io.clusterlvm.dlm.server;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.zookeeper.server.ServerCnxnFactory;
import org.apache.zookeeper.server.ZooKeeperServer;

/**
 * A single-node ZooKeeper inside the dlm-server process, for a one-machine trial. It listens on
 * loopback only: a real cluster points every dlm-server and agent at an ensemble instead.
 */
final class EmbeddedZooKeeper implements AutoCloseable {
  private final ZooKeeperServer server;
  private final ServerCnxnFactory factory;

  EmbeddedZooKeeper(Path dataDir, int port) throws IOException, InterruptedException {
    Files.createDirectories(dataDir);
    server = new ZooKeeperServer(dataDir.toFile(), dataDir.toFile(), 2000);
    factory = ServerCnxnFactory.createFactory(new InetSocketAddress("127.0.0.1", port), 1000);
    factory.startup(server);
  }

  String connectString() {
    return "127.0.0.1:" + factory.getLocalPort();
  }

  @Override
  public void close() {
    factory.shutdown();
    server.shutdown();
  }
}
