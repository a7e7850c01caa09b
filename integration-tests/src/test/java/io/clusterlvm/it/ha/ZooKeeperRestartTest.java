package io.clusterlvm.it.ha;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.RetryOneTime;
import org.apache.curator.test.InstanceSpec;
import org.apache.curator.test.TestingCluster;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.Timeout;

/**
 * Three dlm-server processes on a three-server ZooKeeper ensemble; each ZooKeeper server in turn is
 * stopped and started again while clients work. That hits the ensemble's own leader and the server
 * the dlm leader is connected to (which makes the dlm leader step down: Curator suspends the
 * connection), and the history must still be correct.
 */
@Timeout(value = 150, unit = TimeUnit.SECONDS)
class ZooKeeperRestartTest {
  private TestingCluster zk;
  private DlmServerCluster cluster;
  private LockStorm storm;

  @BeforeEach
  void start(TestInfo info) throws Exception {
    zk = Ensembles.three();
    zk.start();
    cluster = DlmServerCluster.start(3, zk.getConnectString(), "/ha", HaLogs.dir(info));
  }

  @AfterEach
  void stop() throws Exception {
    try {
      if (storm != null) {
        storm.close();
      }
      if (cluster != null) {
        cluster.close();
      }
    } finally {
      if (zk != null) {
        zk.close();
      }
    }
  }

  @Test
  void restartingEachZooKeeperServerDuringAStormKeepsTheLocksSafe() throws Exception {
    storm = LockStorm.start(cluster.targets(), LockStorm.Options.standard(7));
    LockHistory h = storm.history();
    await().atMost(Duration.ofSeconds(30)).until(() -> h.grantCount() >= 200);

    List<InstanceSpec> specs = new ArrayList<>(zk.getInstances());
    for (InstanceSpec spec : specs) {
      long grantsBefore = h.grantCount();
      long stoppedAt = System.nanoTime();
      assertThat(zk.killServer(spec)).isTrue();
      // Two of three still make a quorum: service goes on (possibly under a new dlm leader).
      await("grants with ZooKeeper server " + spec.getServerId() + " down")
          .atMost(Duration.ofSeconds(30))
          .until(() -> h.grantCount() >= grantsBefore + 100);
      HaLogs.metric(
          "zk" + spec.getServerId() + ".stop_to_100_grants",
          Duration.ofNanos(System.nanoTime() - stoppedAt));
      assertThat(zk.restartServer(spec)).isTrue();
      awaitInQuorum(spec);
      long grantsAfterRestart = h.grantCount();
      await("grants after ZooKeeper server " + spec.getServerId() + " is back")
          .atMost(Duration.ofSeconds(30))
          .until(() -> h.grantCount() >= grantsAfterRestart + 100);
    }

    storm.stopAndCheck("zkstorm");
    HaLogs.metric(
        "zkstorm.epochs",
        h.grants().stream().mapToLong(LockHistory.Grant::epoch).distinct().count());
    LeaderFailoverTest.assertNoLocks(cluster);
  }

  /** A restarted server serves clients only once it has rejoined the quorum. */
  private static void awaitInQuorum(InstanceSpec spec) {
    await("ZooKeeper server " + spec.getServerId() + " back in the quorum")
        .atMost(Duration.ofSeconds(30))
        .until(
            () -> {
              try (CuratorFramework c =
                  CuratorFrameworkFactory.builder()
                      .connectString(spec.getConnectString())
                      .sessionTimeoutMs(5000)
                      .connectionTimeoutMs(2000)
                      .retryPolicy(new RetryOneTime(100))
                      .build()) {
                c.start();
                if (!c.blockUntilConnected(2, TimeUnit.SECONDS)) {
                  return false;
                }
                return c.checkExists().forPath("/") != null;
              } catch (Exception e) {
                return false;
              }
            });
  }
}
