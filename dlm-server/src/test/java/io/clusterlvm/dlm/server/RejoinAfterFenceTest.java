package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.NodeMembership;
import io.clusterlvm.fence.domain.Versioned;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A host comes back while the fencer that fenced it is still purging its old incarnation's locks.
 * The fencer's purge released them; a purge by the rejoining node too would find none, and could
 * still be the one the fence history records: "0 locks released" for a host whose locks were just
 * handed on. The node leaves a purge to the fencer that fenced it.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class RejoinAfterFenceTest {
  private TestingServer zk;
  private DlmServer server;
  private DlmClient dlm;
  private CuratorFramework fencerSide;
  private FenceStore fencer;

  @BeforeEach
  void start() throws Exception {
    zk = new TestingServer();
    server = ServerTestSupport.leading(DlmServerConfig.forTest(zk.getConnectString()));
    dlm = DlmClient.connect("127.0.0.1:" + server.port());
    fencerSide = ServerTestSupport.connected(zk);
    fencer = new FenceStore(fencerSide, "/clusterlvm");
  }

  @AfterEach
  void stop() throws Exception {
    fencerSide.close();
    dlm.close();
    server.close();
    zk.close();
  }

  @Test
  void theFencersPurgeIsTheOneRecorded() throws Exception {
    // The host's first agent joins and takes a lock, then the host dies (its lease goes).
    long first;
    try (CuratorFramework agentSide = ServerTestSupport.agentSession(zk)) {
      NodeMembership before =
          new NodeMembership(new FenceStore(agentSide, "/clusterlvm"), dlm, "n1", "boot-1", "");
      before.start();
      first = before.incarnation();
      DlmSession s = dlm.openSession("n1", first, "workload");
      s.lock(
          "ls", "disk", LockMode.EX, io.clusterlvm.dlm.client.LockOptions.DEFAULT.withPersistent());
      s.drop();
      before.close();
    }

    // The fencer fences it (the record says FENCED) and purges, but records the purge only a
    // little later, as Fencer.purge does once the lock service answered (here: slowly).
    Versioned<FenceNodeRecord> v = fencer.nodeRecord("n1").orElseThrow();
    FenceNodeRecord fenced =
        v.value().toBuilder()
            .setState(FenceState.FENCED)
            .setHow("fence_ipmilan (test)")
            .setSinceEpochMillis(System.currentTimeMillis())
            .setLocksPurged(false)
            .setSelfSettled(false)
            .build();
    assertThat(fencer.compareAndSet("n1", v.version(), fenced)).isTrue();
    int purged = dlm.purge("n1", first, "fenced (test)");
    assertThat(purged).isEqualTo(1);
    CompletableFuture<Boolean> recorded =
        CompletableFuture.supplyAsync(
            () -> {
              try {
                TimeUnit.MILLISECONDS.sleep(1500);
                return fencer.markPurged("n1", v.version() + 1, fenced, purged, "test-fencer");
              } catch (Exception e) {
                throw new IllegalStateException(e);
              }
            });

    // The host is back (rebooted) meanwhile, and its agent rejoins.
    try (CuratorFramework agentSide = ServerTestSupport.agentSession(zk);
        NodeMembership after =
            new NodeMembership(new FenceStore(agentSide, "/clusterlvm"), dlm, "n1", "boot-2", "")) {
      after.start();
      assertThat(after.incarnation()).isGreaterThan(first);
      assertThat(recorded.get(10, TimeUnit.SECONDS)).as("the fencer recorded its purge").isTrue();
      assertThat(fencer.history("n1", 100))
          .filteredOn(e -> e.getEvent().equals("purged"))
          .singleElement()
          .satisfies(e -> assertThat(e.getMessage()).startsWith("1 locks"));
    }
  }
}
