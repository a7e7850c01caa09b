package io.clusterlvm.fence.domain;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.fence.proto.FenceEvent;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.retry.RetryOneTime;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The fence history keeps the newest events, and trims the oldest once in a while. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class FenceHistoryTest {

  @Test
  void theHistoryIsTrimmedToTheNewestEvents() throws Exception {
    try (TestingServer zk = new TestingServer();
        CuratorFramework curator =
            CuratorFrameworkFactory.newClient(zk.getConnectString(), new RetryOneTime(100))) {
      curator.start();
      FenceStore store = new FenceStore(curator, "/clusterlvm", 50);
      for (int i = 0; i < 250; i++) {
        store.append(FenceStore.event("n1", 1, "agent", "FAILED", "e" + i, "test"));
      }

      List<FenceEvent> kept = store.history(null, 1_000);
      // Trimmed to 50 after the 100th and the 200th append; 50 more came since.
      assertThat(kept).extracting(FenceEvent::getMessage).first().isEqualTo("e150");
      assertThat(kept).extracting(FenceEvent::getMessage).last().isEqualTo("e249");
      assertThat(kept).hasSize(100);
    }
  }
}
