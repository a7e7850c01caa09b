package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
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
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A client session that breaks off (no CloseSession) on a node with a membership lease: its locks
 * go only if the node's agent proves it is alive by a heartbeat after the break; otherwise they
 * stay frozen until the node is purged. The agent's own session, bound to the lease, is cut off
 * rather than dead when the heartbeats go on: it keeps its locks.
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
        ServerTestSupport.leading(
            DlmServerConfig.forTest(zk.getConnectString()).withAbruptEndGrace(GRACE));
    admin = DlmClient.connect("127.0.0.1:" + server.port());
    agentSession = ServerTestSupport.agentSession(zk);
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

  /**
   * The agent's session, bound to its lease, breaks off while the agent heartbeats: a partition
   * between the agent and the dlm-servers, not ZooKeeper. Its locks guard lvm commands that may
   * still run, so they stay until the session is closed (or resumed, or the lease goes).
   */
  @Test
  void aLeaseBoundSessionCutOffKeepsItsLocksWhileTheLeaseLives() throws Exception {
    long survivor = admin.join("n2", "boot-2");
    DlmSession other = admin.openSession("n2", survivor, "survivor");
    long boundId = lockBoundThenCutOff();
    CompletableFuture<Lock> waiting = other.lockAsync("ls", "r", LockMode.EX, LockOptions.DEFAULT);
    // Three grace periods of heartbeats: an unbound session would have ended after the first.
    await()
        .pollDelay(GRACE.multipliedBy(3))
        .atMost(GRACE.multipliedBy(4))
        .until(() -> !waiting.isDone());
    closeSession(boundId);
    assertThat(waiting.get(10, TimeUnit.SECONDS).lockspace()).isEqualTo("ls");
  }

  /**
   * A new leader loads the bound session's locks as an orphan's; the session not resumed within the
   * session grace must not end while its lease lives.
   */
  @Test
  void aNewLeaderKeepsTheLocksOfACutOffLeaseBoundSession() throws Exception {
    long survivor = admin.join("n2", "boot-2");
    long boundId = lockBoundThenCutOff();
    int port = server.port();
    server.close();
    server =
        ServerTestSupport.leading(
            ServerTestSupport.onPort(
                DlmServerConfig.forTest(zk.getConnectString())
                    .withAbruptEndGrace(GRACE)
                    .withSessionGrace(Duration.ofSeconds(1)),
                port));
    DlmSession other = admin.openSession("n2", survivor, "survivor");
    CompletableFuture<Lock> waiting = other.lockAsync("ls", "r", LockMode.EX, LockOptions.DEFAULT);
    await()
        .pollDelay(Duration.ofSeconds(1).plus(GRACE.multipliedBy(3)))
        .atMost(GRACE.multipliedBy(5))
        .until(() -> !waiting.isDone());
    closeSession(boundId);
    assertThat(waiting.get(10, TimeUnit.SECONDS).lockspace()).isEqualTo("ls");
  }

  /**
   * The lock service is gone for longer than the client's retry window. The agent's lease-bound
   * session does not give up resuming (the server keeps it while the lease lives), and a release
   * made meanwhile, which fails after the window, is sent again until it lands: the server would
   * otherwise keep that lock for as long as the lease lives.
   */
  @Test
  void aLeaseBoundSessionOutlivesAnOutageAndItsReleaseLands() throws Exception {
    long survivor = admin.join("n2", "boot-2");
    DlmClient agent =
        DlmClient.connect("127.0.0.1:" + server.port()).withRetryWindow(Duration.ofSeconds(3));
    try {
      DlmSession s = agent.openLeaseBoundSession("n1", membership.incarnation(), "clvm-agent");
      membership.bindSession(membership.incarnation(), s.id());
      Lock held = s.lock("ls", "r", LockMode.EX);
      int port = server.port();
      server.close();
      assertThatThrownBy(() -> s.unlock(held)).isInstanceOf(DlmClientException.class);
      // A new request does not wait for the resume for ever: for the retry window.
      assertThatThrownBy(() -> s.lock("ls", "during", LockMode.EX))
          .isInstanceOfSatisfying(
              DlmClientException.class,
              e -> assertThat(e.code()).isEqualTo(io.grpc.Status.Code.UNAVAILABLE));
      server =
          ServerTestSupport.leading(
              ServerTestSupport.onPort(
                  DlmServerConfig.forTest(zk.getConnectString())
                      .withAbruptEndGrace(GRACE)
                      // Longer than this test waits: an orphan's end would not release the lock.
                      .withSessionGrace(Duration.ofSeconds(60)),
                  port));
      DlmSession other = admin.openSession("n2", survivor, "survivor");
      Lock got =
          other.lock(
              "ls", "r", LockMode.EX, LockOptions.DEFAULT.withTimeout(Duration.ofSeconds(20)));
      assertThat(got.fencingToken()).isGreaterThan(held.fencingToken());
      assertThat(s.isLost()).isFalse();
      assertThat(s.lock("ls", "other", LockMode.EX).resource()).isEqualTo("other");
    } finally {
      agent.close();
    }
  }

  /**
   * A caller's code chained to a call that fails while the lock service is gone runs off the
   * client's one retry thread. Code that blocks there on another call of the same client, whose
   * retries need that thread, would otherwise wait for ever, and with it every retry of the client.
   */
  @Test
  void codeChainedToAFailedCallMayBlockOnAnotherCall() throws Exception {
    DlmClient agent =
        DlmClient.connect("127.0.0.1:" + server.port()).withRetryWindow(Duration.ofSeconds(2));
    try {
      DlmSession s = agent.openLeaseBoundSession("n1", membership.incarnation(), "clvm-agent");
      membership.bindSession(membership.incarnation(), s.id());
      server.close();
      CompletableFuture<String> chained =
          s.lockAsync("ls", "during", LockMode.EX, LockOptions.DEFAULT)
              .handle(
                  (lock, failed) -> {
                    assertThat(failed).isNotNull();
                    // Retried for the window, then fails: no server is up.
                    assertThatThrownBy(agent::nodes).isInstanceOf(DlmClientException.class);
                    return Thread.currentThread().getName();
                  });

      assertThat(chained.get(30, TimeUnit.SECONDS)).doesNotStartWith("dlm-client-retry");
    } finally {
      agent.close();
    }
  }

  /**
   * n1's agent opens its lease-bound session, binds it, takes EX on ls/r, and loses its connection
   * (the channel torn down: the stream breaks, no CloseSession) while its lease heartbeats on.
   */
  private long lockBoundThenCutOff() throws Exception {
    DlmClient agent = DlmClient.connect("127.0.0.1:" + server.port());
    DlmSession s = agent.openLeaseBoundSession("n1", membership.incarnation(), "clvm-agent");
    membership.bindSession(membership.incarnation(), s.id());
    s.lock("ls", "r", LockMode.EX);
    agent.close();
    return s.id();
  }

  /** What the agent does when it resumes and ends its session: CloseSession. */
  private void closeSession(long sessionId) throws InterruptedException {
    ServerTestSupport.closeSession(server.port(), "n1", membership.incarnation(), sessionId);
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
    assertThat(admin.purge("n1", inc, "test: n1 is off").getPurgedLocks()).isEqualTo(1);
    assertThat(waiting.get(10, TimeUnit.SECONDS).fencingToken()).isGreaterThan(dead.fencingToken());
  }
}
