package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.dlm.proto.PurgeResponse;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.NodeMembership;
import io.clusterlvm.fence.domain.Versioned;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A host comes back while the fencer that fenced it purges its old incarnation's locks. Both purge;
 * the lock service tells the one that comes second that the incarnation was already gone, and how
 * many locks went when it ended, so whichever of the two marks the record writes the right count.
 * Before, the second could write "0 locks released" for a host whose locks had just been handed on,
 * and each side waited a grace for the other to avoid it.
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

  /**
   * The fencer purges first, but the node's own purge, which found nothing left, marks the record
   * first: its event says what the fencer's purge released.
   */
  @Test
  void theFencerPurgesFirstAndRecordsLast() throws Exception {
    long first = hostDiesHoldingALock();
    Versioned<FenceNodeRecord> v = markFenced();
    PurgeResponse purged = dlm.purge("n1", first, "fenced (test)");
    assertThat(purged.getPurgedLocks()).isEqualTo(1);
    assertThat(purged.getAlreadyGone()).isFalse();

    try (CuratorFramework agentSide = ServerTestSupport.agentSession(zk);
        NodeMembership after =
            new NodeMembership(new FenceStore(agentSide, "/clusterlvm"), dlm, "n1", "boot-2", "")) {
      after.start();
      assertThat(after.incarnation()).isGreaterThan(first);
      assertThat(fencer.markPurged("n1", v.version(), v.value(), purged, "test-fencer")).isFalse();
    }
    assertThat(purgedEvents())
        .singleElement()
        .satisfies(
            e -> {
              assertThat(e.getActor()).isEqualTo("n1");
              assertThat(e.getMessage()).startsWith("1 locks of incarnation " + first);
            });
  }

  /** The node purges first; the fencer's purge, after it, finds the incarnation gone. */
  @Test
  void theNodePurgesFirst() throws Exception {
    long first = hostDiesHoldingALock();
    Versioned<FenceNodeRecord> v = markFenced();
    try (CuratorFramework agentSide = ServerTestSupport.agentSession(zk);
        NodeMembership after =
            new NodeMembership(new FenceStore(agentSide, "/clusterlvm"), dlm, "n1", "boot-2", "")) {
      after.start();
    }
    PurgeResponse late = dlm.purge("n1", first, "fenced (test)");
    assertThat(late.getAlreadyGone()).isTrue();
    assertThat(fencer.markPurged("n1", v.version(), v.value(), late, "test-fencer")).isFalse();
    assertThat(purgedEvents())
        .singleElement()
        .satisfies(
            e -> {
              assertThat(e.getActor()).isEqualTo("n1");
              assertThat(e.getMessage()).startsWith("1 locks");
            });
  }

  /** The host's first agent joins and takes a persistent lock, then the host dies. */
  private long hostDiesHoldingALock() throws Exception {
    try (CuratorFramework agentSide = ServerTestSupport.agentSession(zk)) {
      NodeMembership before =
          new NodeMembership(new FenceStore(agentSide, "/clusterlvm"), dlm, "n1", "boot-1", "");
      before.start();
      long first = before.incarnation();
      DlmSession s = dlm.openSession("n1", first, "workload");
      s.lock("ls", "disk", LockMode.EX, LockOptions.DEFAULT.withPersistent());
      s.drop();
      before.close();
      return first;
    }
  }

  /** What the fencer writes once the host is off. */
  private Versioned<FenceNodeRecord> markFenced() throws Exception {
    Versioned<FenceNodeRecord> v = fencer.nodeRecord("n1").orElseThrow();
    FenceNodeRecord fenced =
        v.value().toBuilder()
            .setState(FenceState.FENCED)
            .setHow("fence_ipmilan (test)")
            .setSinceEpochMillis(System.currentTimeMillis())
            .setLocksPurged(false)
            .build();
    assertThat(fencer.compareAndSet("n1", v.version(), fenced)).isTrue();
    return fencer.nodeRecord("n1").orElseThrow();
  }

  private java.util.List<FenceEvent> purgedEvents() throws Exception {
    return fencer.history("n1", 100).stream().filter(e -> e.getEvent().equals("purged")).toList();
  }
}
