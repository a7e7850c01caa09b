package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.NodeMembership;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.RetryOneTime;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A client session that breaks off (no CloseSession) on a node with a membership lease: its locks
 * go only if the node's agent proves it is alive by a heartbeat after the break; otherwise they
 * stay frozen until the node is purged.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class AbruptSessionEndTest {
  private static final Duration GRACE = Duration.ofSeconds(3);

  private TestingServer zk;
  private DlmServer server;
  private CuratorFramework agentSession;
  private NodeMembership membership;
  private DlmClient admin;

  @BeforeEach
  void start() throws Exception {
    zk = new TestingServer();
    server =
        DlmServer.start(DlmServerConfig.forTest(zk.getConnectString()).withAbruptEndGrace(GRACE));
    await().atMost(Duration.ofSeconds(20)).until(server::isLeader);
    admin = DlmClient.connect("127.0.0.1:" + server.port());
    agentSession =
        CuratorFrameworkFactory.newClient(
            zk.getConnectString(), 10_000, 5_000, new RetryOneTime(100));
    agentSession.start();
    agentSession.blockUntilConnected();
    membership =
        new NodeMembership(new FenceStore(agentSession, "/clusterlvm"), admin, "n1", "boot-1", "");
    membership.start();
  }

  @AfterEach
  void stop() throws Exception {
    membership.close();
    agentSession.close();
    admin.close();
    server.close();
    zk.close();
  }

  /** A process on n1 takes EX, then vanishes without closing its session. */
  private Lock lockThenVanish() {
    DlmClient process = DlmClient.connect("127.0.0.1:" + server.port());
    DlmSession s = process.openSession("n1", membership.incarnation(), "doomed process");
    Lock held = s.lock("ls", "r", LockMode.EX);
    process.close(); // channel torn down: the stream breaks, no CloseSession
    return held;
  }

  @Test
  void aDeadProcessOnALiveNodeLosesItsLocksAfterTheGrace() throws Exception {
    long survivor = admin.join("n2", "boot-2");
    DlmSession other = admin.openSession("n2", survivor, "survivor");
    Lock dead = lockThenVanish();
    long t0 = System.nanoTime();
    CompletableFuture<Lock> waiting = other.lockAsync("ls", "r", LockMode.EX, LockOptions.DEFAULT);
    Lock got = waiting.get(30, TimeUnit.SECONDS);
    assertThat(System.nanoTime() - t0).isGreaterThanOrEqualTo(GRACE.toNanos() / 2);
    assertThat(got.fencingToken()).isGreaterThan(dead.fencingToken());
  }

  @Test
  void aSilentNodeKeepsItsLocksFrozenUntilPurged() throws Exception {
    long survivor = admin.join("n2", "boot-2");
    DlmSession other = admin.openSession("n2", survivor, "survivor");
    long inc = membership.incarnation();
    membership.close(); // the agent stops heartbeating; its lease znode stays (session open)
    Lock dead = lockThenVanish();
    CompletableFuture<Lock> waiting = other.lockAsync("ls", "r", LockMode.EX, LockOptions.DEFAULT);
    // Well past two grace periods the lock is still frozen: a lease without heartbeats proves
    // nothing.
    await()
        .pollDelay(GRACE.multipliedBy(3))
        .atMost(GRACE.multipliedBy(4))
        .until(() -> !waiting.isDone());
    assertThat(admin.purge("n1", inc, "test: n1 is off")).isEqualTo(1);
    assertThat(waiting.get(10, TimeUnit.SECONDS).fencingToken()).isGreaterThan(dead.fencingToken());
  }
}
