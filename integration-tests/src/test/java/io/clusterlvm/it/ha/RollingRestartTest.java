package io.clusterlvm.it.ha;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.Timeout;

/**
 * An operator's rolling restart (an upgrade): every dlm-server in turn gets SIGTERM, as {@code
 * systemctl restart} sends it, and comes back, followers first, the leader last. A clean stop must
 * end the process by itself, hand the leadership over at once, and lose or duplicate nothing while
 * clients keep working.
 */
@Timeout(value = 200, unit = TimeUnit.SECONDS)
class RollingRestartTest {
  /**
   * Long, so that a leader which left its seat to its ZooKeeper session's expiry (as kill -9 does)
   * fails the test: the next one must lead well before the session could have expired.
   */
  private static final Duration ZK_SESSION_TIMEOUT = Duration.ofSeconds(40);

  private TestingServer zk;
  private DlmServerCluster cluster;
  private final Started started = new Started();

  @BeforeEach
  void start(TestInfo info) throws Exception {
    zk = started.add(new TestingServer());
    cluster =
        started.add(
            DlmServerCluster.start(
                3, zk.getConnectString(), "/ha", HaLogs.dir(info), ZK_SESSION_TIMEOUT));
  }

  @AfterEach
  void stop() throws Exception {
    started.close();
  }

  @Test
  void restartingEveryServerInTurnWithSigtermLosesNothingAndServesThroughout() throws Exception {
    LockStorm storm =
        started.add(LockStorm.start(cluster.targets(), LockStorm.Options.standard(11)));
    LockHistory h = storm.history();
    await().atMost(Duration.ofSeconds(30)).until(() -> h.grantCount() >= 300);

    DlmServerProcess firstLeader = cluster.awaitLeader(Duration.ofSeconds(10));
    List<DlmServerProcess> order = new ArrayList<>(cluster.servers());
    order.remove(firstLeader);
    order.add(firstLeader);
    for (DlmServerProcess server : order) {
      DlmServerProcess leader = cluster.awaitLeader(Duration.ofSeconds(30));
      boolean wasLeader = server == leader;
      long epoch = DlmServerCluster.epoch(leader);
      Map<String, Long> before = storm.grantsByClient();
      long stoppedAt = System.nanoTime();
      assertThat(server.stop(Duration.ofSeconds(20)))
          .as("%s ends by itself after SIGTERM", server.name())
          .isTrue();
      HaLogs.metric(
          "rolling." + server.name() + (wasLeader ? ".leader" : ".follower") + ".sigterm_to_exit",
          Duration.ofNanos(System.nanoTime() - stoppedAt));
      if (wasLeader) {
        DlmServerProcess next = cluster.awaitLeader(ZK_SESSION_TIMEOUT.dividedBy(2));
        assertThat(next).isNotSameAs(server);
        await("grants by the next leader")
            .atMost(Duration.ofSeconds(30))
            .until(() -> h.grantsAfterEpoch(epoch) >= 100);
        HaLogs.metric(
            "rolling.leader_sigterm_to_first_grant",
            Duration.ofNanos(h.firstAckAfterEpoch(epoch) - stoppedAt));
      }
      storm.awaitEveryClientGrantedSince(
          before,
          Duration.ofSeconds(30),
          "every client is served after " + server.name() + " left");
      server.restart();
      server.awaitServing(Duration.ofSeconds(60));
    }
    // Everyone came back: one leads, the other two follow it.
    DlmServerProcess leader = cluster.awaitLeader(Duration.ofSeconds(30));
    for (DlmServerProcess s : cluster.servers()) {
      if (s != leader) {
        s.awaitFollowing(leader, Duration.ofSeconds(30));
      }
    }

    storm.stopAndCheck("storm");
    LeaderFailoverTest.assertNoLocks(cluster);
  }
}
