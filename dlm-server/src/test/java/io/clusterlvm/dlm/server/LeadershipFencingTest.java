package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.engine.AcquireCommand;
import io.clusterlvm.dlm.engine.Effects;
import io.clusterlvm.dlm.engine.LockEngine;
import io.clusterlvm.dlm.engine.LockMode;
import io.clusterlvm.dlm.engine.Owner;
import io.clusterlvm.dlm.engine.ResourceKey;
import io.clusterlvm.dlm.engine.ResourceView;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.JoinRequest;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.test.TestingServer;
import org.apache.zookeeper.CreateMode;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A leader that was deposed (another server took over: the epoch moved on) cannot write another
 * record, whatever it still believes, and a leader core that finds out stops answering.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class LeadershipFencingTest {
  private static final ZkPaths PATHS = new ZkPaths("/fencing");

  private TestingServer zk;
  private CuratorFramework oldLeader;
  private CuratorFramework newLeader;
  private ScheduledExecutorService timers;

  @BeforeEach
  void start() throws Exception {
    zk = new TestingServer();
    oldLeader = ServerTestSupport.connected(zk);
    newLeader = ServerTestSupport.connected(zk);
    timers = Executors.newSingleThreadScheduledExecutor();
  }

  @AfterEach
  void stop() throws Exception {
    timers.shutdownNow();
    newLeader.close();
    oldLeader.close();
    zk.close();
  }

  @Test
  void aStoreWhoseEpochWasTakenOverCannotWrite() throws Exception {
    LockStore old = new LockStore(oldLeader, PATHS);
    long e1 = old.takeOver("old");
    LockEngine engine = new LockEngine(e1, Clock.systemUTC());
    ServerTestSupport.Loaded loaded = ServerTestSupport.loadAll(old, engine::restoreResource);
    engine.restoreNodes(loaded.nodes());

    Effects fx = new Effects();
    long inc = engine.join("node1", "boot", fx).incarnation();
    old.writeAsync(fx, engine).get(); // still the leader: fine

    LockStore usurper = new LockStore(newLeader, PATHS);
    assertThat(usurper.takeOver("new")).isGreaterThan(e1);

    Effects fx2 = new Effects();
    engine.acquire(
        new AcquireCommand(
            "req-1",
            new Owner("node1", inc),
            0,
            new ResourceKey("ls", "res"),
            LockMode.EX,
            false,
            true,
            false),
        fx2);
    engine.join("node2", "boot", fx2);
    assertThatThrownBy(() -> old.writeAsync(fx2, engine).get())
        .isInstanceOf(ExecutionException.class)
        .satisfies(
            e ->
                assertThat(e.getCause())
                    .isInstanceOf(LockStore.NotLeaderException.class)
                    .hasMessageContaining("another dlm-server took over"));

    // Nothing of the refused transaction reached ZooKeeper; the new leader sees the old state.
    assertThat(newLeader.checkExists().forPath(PATHS.node("node2"))).isNull();
    assertThat(newLeader.checkExists().forPath(PATHS.resource(new ResourceKey("ls", "res"))))
        .isNull();
    List<ResourceView> resources = new ArrayList<>();
    ServerTestSupport.Loaded seen = ServerTestSupport.loadAll(usurper, resources::add);
    assertThat(seen.nodes()).extracting(n -> n.node()).containsExactly("node1");
    assertThat(seen.resources()).isZero();
    assertThat(resources).isEmpty();
  }

  @Test
  void takingOverNeedsTheElectionNodeTheServerWonWith() throws Exception {
    String won =
        oldLeader
            .create()
            .creatingParentsIfNeeded()
            .withMode(CreateMode.EPHEMERAL_SEQUENTIAL)
            .forPath("/fencing/dlm/leader/_c_x-latch-");
    LockStore store = new LockStore(oldLeader, PATHS, won);
    long e1 = store.takeOver("old");
    assertThat(store.takeOver("old")).isEqualTo(e1 + 1);

    // The session that held the election node ended (or the election was reset): the node is
    // gone, and with it the right to take the epoch from whoever leads now.
    oldLeader.delete().forPath(won);
    assertThatThrownBy(() -> store.takeOver("old"))
        .isInstanceOf(LockStore.NotLeaderException.class)
        .hasMessageContaining("no longer leads");
    assertThat(new LockStore(newLeader, PATHS).takeOver("new")).isEqualTo(e1 + 2);
  }

  @Test
  void aLeaderCoreThatFindsItselfDeposedFailsTheBatchAndStepsDown() throws Exception {
    AtomicReference<Throwable> fatal = new AtomicReference<>();
    LeaderCore core =
        ServerTestSupport.leaderCore(new LockStore(oldLeader, PATHS), "old:1", timers, fatal::set);
    core.start();
    String name = InProcessServerBuilder.generateName();
    Server server =
        InProcessServerBuilder.forName(name)
            .directExecutor()
            .addService(
                new DlmGrpcService(
                    () -> core,
                    new DlmGrpcService.ServerInfo() {
                      @Override
                      public String serverId() {
                        return "old:1";
                      }

                      @Override
                      public String zookeeper() {
                        return zk.getConnectString();
                      }

                      @Override
                      public String leaderId() {
                        return "old:1";
                      }
                    }))
            .build()
            .start();
    ManagedChannel ch = InProcessChannelBuilder.forName(name).directExecutor().build();
    try {
      DlmGrpc.DlmBlockingStub stub =
          DlmGrpc.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS);
      stub.join(JoinRequest.newBuilder().setNode("node1").setBootId("b").build());

      new LockStore(newLeader, PATHS).takeOver("new:1");

      assertThatThrownBy(
              () ->
                  DlmGrpc.newBlockingStub(ch)
                      .withDeadlineAfter(10, TimeUnit.SECONDS)
                      .join(JoinRequest.newBuilder().setNode("node2").setBootId("b").build()))
          .isInstanceOfSatisfying(
              StatusRuntimeException.class,
              e -> {
                assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
                assertThat(e.getStatus().getDescription()).contains("lost leadership");
              });
      await().atMost(Duration.ofSeconds(10)).until(() -> fatal.get() != null);
      assertThat(fatal.get()).isInstanceOf(LockStore.NotLeaderException.class);
      assertThat(newLeader.checkExists().forPath(PATHS.node("node2"))).isNull();
      // The server steps the core down on another thread, a moment later; here it never does. A
      // call that reaches the core meanwhile is refused, not queued to an engine that has ended
      // (a lock wait without a timeout would never hear back).
      assertThatThrownBy(
              () ->
                  DlmGrpc.newBlockingStub(ch)
                      .withDeadlineAfter(5, TimeUnit.SECONDS)
                      .join(JoinRequest.newBuilder().setNode("node3").setBootId("b").build()))
          .isInstanceOfSatisfying(
              StatusRuntimeException.class,
              e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE));
      assertThat(newLeader.checkExists().forPath(PATHS.node("node1"))).isNotNull();
    } finally {
      ch.shutdownNow();
      server.shutdownNow();
      core.close();
    }
  }
}
