package io.clusterlvm.it.ha;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.dlm.proto.ResourceInfo;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.Timeout;

/**
 * Three dlm-server processes on one ZooKeeper; the leader is killed with SIGKILL while clients
 * work. Nothing granted may be lost or duplicated, and service must resume on another server.
 */
@Timeout(value = 150, unit = TimeUnit.SECONDS)
class LeaderFailoverTest {
  private TestingServer zk;
  private DlmServerCluster cluster;
  private final Started started = new Started();

  @BeforeEach
  void start(TestInfo info) throws Exception {
    zk = started.add(new TestingServer());
    cluster =
        started.add(DlmServerCluster.start(3, zk.getConnectString(), "/ha", HaLogs.dir(info)));
  }

  @AfterEach
  void stop() throws Exception {
    started.close();
  }

  @Test
  void killingTheLeaderTwiceDuringAStormLosesAndDuplicatesNothing() throws Exception {
    LockStorm storm =
        started.add(LockStorm.start(cluster.targets(), LockStorm.Options.standard(3)));
    LockHistory h = storm.history();
    await().atMost(Duration.ofSeconds(30)).until(() -> h.grantCount() >= 300);

    for (int round = 1; round <= 2; round++) {
      DlmServerProcess leader = cluster.awaitLeader(Duration.ofSeconds(10));
      long epoch = DlmServerCluster.epoch(leader);
      assertThat(epoch).isPositive();
      long killedAt = System.nanoTime();
      leader.kill();
      DlmServerProcess next = cluster.awaitLeader(Duration.ofSeconds(30));
      long electedAt = System.nanoTime();
      assertThat(next).isNotSameAs(leader);
      // Progress resumed: the new leader grants, to every client.
      Map<String, Long> before = storm.grantsByClient();
      await("grants by the new leader")
          .atMost(Duration.ofSeconds(30))
          .until(() -> h.grantsAfterEpoch(epoch) >= 300);
      storm.awaitEveryClientGrantedSince(
          before, Duration.ofSeconds(30), "every client makes progress after the fail-over");
      HaLogs.metric(
          "failover" + round + ".kill_to_new_leader", Duration.ofNanos(electedAt - killedAt));
      HaLogs.metric(
          "failover" + round + ".kill_to_first_grant",
          Duration.ofNanos(h.firstAckAfterEpoch(epoch) - killedAt));
      if (round == 1) {
        // The killed server comes back (same address) as a follower; the next round kills the
        // leader that replaced it, so clients must find their way back to a restarted server.
        leader.restart();
        leader.awaitServing(Duration.ofSeconds(60));
      }
    }

    storm.stopAndCheck("storm");
    assertNoLocks(cluster);
  }

  /**
   * No lost release: once every client has let go, the leader holds no lock. (Resources whose value
   * block was written stay, without locks, so the next holder can read it.)
   */
  static void assertNoLocks(DlmServerCluster cluster) {
    try (DlmClient admin = DlmClient.connect(cluster.targets())) {
      assertThat(admin.locks(null))
          .allSatisfy(
              r ->
                  assertThat(r.getGrantedCount() + r.getConvertingCount() + r.getWaitingCount())
                      .as("locks left on %s", r.getResource())
                      .isZero());
      DlmServerProcess leader = cluster.awaitLeader(Duration.ofSeconds(10));
      assertThat(leader.status(Duration.ofSeconds(2)).orElseThrow().getLocks()).isZero();
    }
  }

  @Test
  void theNewLeaderKeepsHoldersWaiterOrderTokensAndSessions() throws Exception {
    DlmClient admin = started.add(DlmClient.connect(cluster.targets()));
    DlmSession a = session("nodeA");
    DlmSession b = session("nodeB");
    DlmSession c = session("nodeC");
    DlmSession d = session("nodeD");
    // e waits on a client whose retry window is shorter than its wait so far: the window must
    // count from when the leader went away, not from when the call began.
    DlmClient eClient =
        started.add(DlmClient.connect(cluster.targets())).withRetryWindow(Duration.ofSeconds(10));
    DlmSession e = started.add(eClient.openSession("nodeE", eClient.join("nodeE", "boot-E"), "t"));

    Lock aEx = a.lock("vg", "r1", LockMode.EX); // a session lock: survives only if a resumes
    Lock aPr = a.lock("vg", "r2", LockMode.PR, LockOptions.DEFAULT.withPersistent());
    Lock dPr = d.lock("vg", "r2", LockMode.PR);
    long waitStart = System.nanoTime();
    CompletableFuture<Lock> eW = e.lockAsync("vg", "r1", LockMode.EX, LockOptions.DEFAULT);
    await().until(() -> waiting(admin, "r1") == 1);
    CompletableFuture<Lock> bW = b.lockAsync("vg", "r1", LockMode.EX, LockOptions.DEFAULT);
    await().until(() -> waiting(admin, "r1") == 2);
    CompletableFuture<Lock> cW = c.lockAsync("vg", "r1", LockMode.PR, LockOptions.DEFAULT);
    await().until(() -> waiting(admin, "r1") == 3);
    CompletableFuture<Lock> dW = d.lockAsync("vg", "r1", LockMode.PR, LockOptions.DEFAULT);
    await().until(() -> waiting(admin, "r1") == 4);
    CompletableFuture<Lock> cW2 = c.lockAsync("vg", "r2", LockMode.EX, LockOptions.DEFAULT);
    await().until(() -> waiting(admin, "r2") == 1);
    List<ResourceInfo> before = admin.locks(null);

    await("e has waited longer than its retry window")
        .atMost(Duration.ofSeconds(15))
        .pollInterval(Duration.ofMillis(100))
        .until(() -> System.nanoTime() - waitStart > Duration.ofSeconds(11).toNanos());
    DlmServerProcess leader = cluster.awaitLeader(Duration.ofSeconds(10));
    long epoch = DlmServerCluster.epoch(leader);
    leader.kill();
    cluster.awaitLeader(Duration.ofSeconds(30));

    // The table as the old leader had it: same locks, owners, sessions, modes, tokens, and the
    // waiters in the same order.
    assertThat(admin.locks(null)).isEqualTo(before);
    // The sessions resume on the new leader (a's EX lock above is only kept because of that).
    for (DlmSession s : List.of(a, b, c, d, e)) {
      Lock probe = s.lock("vg", "probe-" + s.node(), LockMode.EX);
      s.unlock(probe);
      assertThat(s.isLost()).isFalse();
    }
    assertThat(List.of(eW, bW, cW, dW, cW2)).noneMatch(CompletableFuture::isDone);

    // Hand-offs in queue order, with tokens from the new epoch.
    a.unlock(aEx);
    Lock eGot = eW.get(20, TimeUnit.SECONDS);
    assertThat(eGot.fencingToken()).isGreaterThan(aEx.fencingToken());
    assertThat(eGot.fencingToken() >>> 32).isGreaterThan(epoch);
    assertThat(List.of(bW, cW, dW)).noneMatch(CompletableFuture::isDone);
    e.unlock(eGot);
    Lock bGot = bW.get(20, TimeUnit.SECONDS);
    assertThat(bGot.fencingToken()).isGreaterThan(eGot.fencingToken());
    assertThat(List.of(cW, dW)).noneMatch(CompletableFuture::isDone);
    b.unlock(bGot);
    Lock cGot = cW.get(20, TimeUnit.SECONDS);
    Lock dGot = dW.get(20, TimeUnit.SECONDS);
    assertThat(cGot.fencingToken()).isGreaterThan(bGot.fencingToken());
    assertThat(dGot.fencingToken()).isGreaterThan(bGot.fencingToken());
    a.unlock(aPr);
    assertThat(cW2).isNotDone();
    d.unlock(dPr);
    Lock cGot2 = cW2.get(20, TimeUnit.SECONDS);
    assertThat(cGot2.fencingToken() >>> 32).isGreaterThan(epoch);
    for (Lock l : List.of(cGot, cGot2)) {
      c.unlock(l);
    }
    d.unlock(dGot);
    assertNoLocks(cluster);
  }

  private DlmSession session(String node) {
    DlmClient c = started.add(DlmClient.connect(cluster.targets()));
    return started.add(c.openSession(node, c.join(node, "boot-" + node), "t"));
  }

  private static int waiting(DlmClient admin, String resource) {
    return admin.locks("vg").stream()
        .filter(r -> r.getResource().equals(resource))
        .mapToInt(ResourceInfo::getWaitingCount)
        .sum();
  }
}
