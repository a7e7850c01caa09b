package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.engine.NodeView;
import io.clusterlvm.dlm.engine.ResourceView;
import io.clusterlvm.dlm.proto.CloseSessionRequest;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.Owner;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import java.net.InetSocketAddress;
import java.time.Clock;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.RetryOneTime;
import org.apache.curator.test.TestingServer;

/** What the server package's tests build the same way: ZooKeeper clients and leader cores. */
final class ServerTestSupport {
  private ServerTestSupport() {}

  /** A started client of {@code zk}, connected (the caller closes it). */
  static CuratorFramework connected(TestingServer zk) throws InterruptedException {
    CuratorFramework c =
        CuratorFrameworkFactory.newClient(zk.getConnectString(), new RetryOneTime(100));
    c.start();
    assertThat(c.blockUntilConnected(20, TimeUnit.SECONDS)).isTrue();
    return c;
  }

  /**
   * Closes {@code server} and starts a new one on the same port and ZooKeeper, as after a restart
   * (clients keep their channel); returns it once it leads.
   */
  static DlmServer restart(DlmServer server, TestingServer zk) throws Exception {
    int port = server.port();
    server.close();
    return startOn(port, zk);
  }

  /** Starts a server on {@code port} of 127.0.0.1 and {@code zk}; returns it once it leads. */
  static DlmServer startOn(int port, TestingServer zk) throws Exception {
    return leading(onPort(DlmServerConfig.forTest(zk.getConnectString()), port));
  }

  /** Starts a server; returns it once it leads. */
  static DlmServer leading(DlmServerConfig config) throws Exception {
    DlmServer s = DlmServer.start(config);
    try {
      await().atMost(Duration.ofSeconds(20)).until(s::isLeader);
      return s;
    } catch (RuntimeException | Error e) {
      s.close(); // a test restarting on a fixed port would find it taken
      throw e;
    }
  }

  /** {@code config} listening on {@code port} of 127.0.0.1: a restart where clients expect it. */
  static DlmServerConfig onPort(DlmServerConfig config, int port) {
    return config.withListen(new InetSocketAddress("127.0.0.1", port));
  }

  /**
   * A host agent's ZooKeeper client, connected: a session timeout of 10 s, so that a test can see
   * the lease outlive a broken dlm link (the caller closes it).
   */
  static CuratorFramework agentSession(TestingServer zk) throws InterruptedException {
    CuratorFramework c =
        CuratorFrameworkFactory.newClient(
            zk.getConnectString(), 10_000, 5_000, new RetryOneTime(100));
    c.start();
    if (!c.blockUntilConnected(20, TimeUnit.SECONDS)) {
      c.close();
      throw new IllegalStateException("no ZooKeeper connection within 20 s");
    }
    return c;
  }

  /**
   * Ends session {@code sessionId} of {@code node} incarnation {@code incarnation} on the server at
   * {@code port} over a channel of its own, as a process that resumed it and closed it would (or as
   * the server does when its grace runs out): the session's own client is not told.
   */
  static void closeSession(int port, String node, long incarnation, long sessionId)
      throws InterruptedException {
    ManagedChannel ch = ManagedChannelBuilder.forAddress("127.0.0.1", port).usePlaintext().build();
    try {
      DlmGrpc.newBlockingStub(ch)
          .withDeadlineAfter(10, TimeUnit.SECONDS)
          .closeSession(
              CloseSessionRequest.newBuilder()
                  .setOwner(Owner.newBuilder().setNode(node).setIncarnation(incarnation))
                  .setSessionId(sessionId)
                  .build());
    } finally {
      ch.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** A leader core with 5 s session grace and 6 s abrupt-end grace, for nodes without leases. */
  static LeaderCore leaderCore(
      LockStore store,
      String serverId,
      ScheduledExecutorService timers,
      Consumer<Throwable> fatal) {
    return new LeaderCore(
        store,
        serverId,
        Clock.systemUTC(),
        Duration.ofSeconds(5),
        Duration.ofSeconds(6),
        NodeLiveness.untracked(),
        timers,
        fatal);
  }

  /** What {@link #loadAll} read. */
  record Loaded(List<NodeView> nodes, int resources) {}

  /**
   * Reads the whole table the way a new leader does, lockspace by lockspace, but in one call;
   * {@code sink} takes each resource record (on ZooKeeper's event thread).
   */
  static Loaded loadAll(LockStore store, Consumer<ResourceView> sink) throws Exception {
    List<NodeView> nodes = store.loadNodes();
    int resources = 0;
    for (String lockspace : store.listLockspaces()) {
      LockStore.LockspaceRead read = store.readLockspace(lockspace, views -> views.forEach(sink));
      resources += read.keys().size();
      store.markLoaded(read);
    }
    return new Loaded(List.copyOf(nodes), resources);
  }
}
