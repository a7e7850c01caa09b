package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.engine.ResourceKey;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A resource record the leader can't parse fails every background load. Each reload takes a new
 * epoch (a ZooKeeper write) and fails every waiter and session stream; before 2026-12-07 they came
 * back to back, about 35 a second here (found in review), so no session could settle. They now wait
 * longer after each failure, up to 5 s.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class UnreadableRecordTest {

  @Test
  void reloadsAfterAnUnreadableRecordBackOff() throws Exception {
    ZkPaths paths = new ZkPaths("/unreadable");
    try (TestingServer zk = new TestingServer();
        CuratorFramework curator = ServerTestSupport.connected(zk)) {
      curator
          .create()
          .creatingParentsIfNeeded()
          .forPath(paths.resource(new ResourceKey("ls", "res")), new byte[] {(byte) 0xff, 1, 2});
      ScheduledExecutorService timers = Executors.newSingleThreadScheduledExecutor();
      LeaderCore core =
          ServerTestSupport.leaderCore(new LockStore(curator, paths), "s1", timers, e -> {});
      try {
        core.start();
        long first = core.epoch();
        Thread.sleep(4000);
        // 100 + 200 + 400 + 800 + 1600 ms of waiting: about 5 reloads in 4 s, not 140.
        assertThat(core.epoch() - first).isBetween(1L, 10L);
      } finally {
        core.close();
        timers.shutdownNow();
      }
    }
  }
}
