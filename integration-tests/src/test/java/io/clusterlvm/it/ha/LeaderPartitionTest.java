package io.clusterlvm.it.ha;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import com.google.protobuf.TextFormat;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.it.ha.Prober.Probe;
import io.clusterlvm.testing.NetworkNamespace;
import io.clusterlvm.testing.NetworkNamespace.Link;
import io.grpc.Status;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.apache.curator.test.TestingServer;
import org.awaitility.core.ConditionTimeoutException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.Timeout;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The leader's host is partitioned by a real network cut: the leader runs in its own network
 * namespace, joined to ZooKeeper by one veth link and to its clients by another, and the test cuts
 * links. Unlike a stopped ZooKeeper server or a killed process, nothing is reset: packets just
 * vanish, and every side finds out by its own timeouts (ZooKeeper's read timeout, gRPC keepalives).
 *
 * <p>Two servers on this side (B, C) and a storm of clients that know all three servers; a prober
 * that talks to the leader only. The history checker proves no two incompatible holders at once,
 * tokens only increase, no counter update was lost; every prober grant must still be held.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class LeaderPartitionTest {
  private static final Logger LOG = LoggerFactory.getLogger(LeaderPartitionTest.class);
  private final Started started = new Started();
  private TestInfo info;

  @BeforeEach
  void start(TestInfo info) {
    NetworkNamespace.assumeAvailable();
    this.info = info;
  }

  @AfterEach
  void stop() throws Exception {
    started.close();
  }

  /**
   * The dangerous partition: the leader can no longer reach ZooKeeper, but its clients still reach
   * it. It must stop granting before its session expires (when another server may be elected), and
   * grant nothing while cut off; its clients go to the new leader. When the link is back it follows
   * the new leader.
   */
  @Test
  void aLeaderCutOffFromZooKeeperButNotFromItsClientsStopsGrantingBeforeAnotherLeads()
      throws Exception {
    Partition p = Partition.start(this, 11);
    long cutAt = System.nanoTime();
    p.ns().cut(p.zkLink());
    DlmServerProcess next = p.awaitNewLeader();
    long newLeaderAt = System.nanoTime();
    p.awaitStormProgressUnder(next);

    List<Probe> cut = p.prober().probes().stream().filter(x -> x.sent() > cutAt).toList();
    long lastGrant =
        cut.stream().filter(Probe::granted).mapToLong(Probe::answered).max().orElse(cutAt);
    long firstRefusal =
        cut.stream()
            .filter(x -> x.code() == Status.Code.UNAVAILABLE)
            .mapToLong(Probe::answered)
            .min()
            .orElseThrow();
    HaLogs.metric("zk_cut.cut_to_last_grant", Duration.ofNanos(lastGrant - cutAt));
    HaLogs.metric("zk_cut.cut_to_first_refusal", Duration.ofNanos(firstRefusal - cutAt));
    HaLogs.metric("zk_cut.cut_to_new_leader", Duration.ofNanos(newLeaderAt - cutAt));
    // The leader stopped before its session could expire: no other server could lead yet.
    assertThat(firstRefusal - cutAt).isLessThan(DlmServerCluster.ZK_SESSION_TIMEOUT.toNanos());
    assertThat(lastGrant).isLessThan(firstRefusal);
    // Cut off, it granted nothing more, whatever it was asked: a write it could not make would
    // leave a grant nobody else knows of. Answers are refusals a client moves on from, or no
    // answer within the probe's deadline while its ZooKeeper request hangs.
    for (Probe x : cut) {
      if (x.answered() > firstRefusal) {
        assertThat(x.code())
            .as(x.toString())
            .isIn(Status.Code.UNAVAILABLE, Status.Code.DEADLINE_EXCEEDED);
      }
    }

    long healedAt = System.nanoTime();
    p.ns().heal(p.zkLink());
    p.a().awaitFollowing(next, Duration.ofSeconds(60));
    HaLogs.metric("zk_cut.heal_to_following", Duration.ofNanos(System.nanoTime() - healedAt));
    long followingAt = System.nanoTime();
    await().atMost(Duration.ofSeconds(10)).until(() -> p.prober().answeredSince(followingAt) >= 10);
    assertThat(p.prober().probes().stream().filter(x -> x.sent() > followingAt))
        .allSatisfy(
            x -> {
              assertThat(x.code()).as(x.toString()).isEqualTo(Status.Code.UNAVAILABLE);
              assertThat(x.description()).contains("the leader is " + next.address());
            });
    p.finish();
  }

  /**
   * The leader's host drops off the network altogether (both links down). Its clients hear nothing
   * back, not even a reset: they must find out by keepalive, retry on another server, and get
   * exactly-once results there. When the host comes back, its server follows the new leader.
   */
  @Test
  void aLeaderWhoseHostDropsOffTheNetworkIsReplacedAndItsClientsMoveOn() throws Exception {
    Partition p = Partition.start(this, 12);
    long cutAt = System.nanoTime();
    p.ns().cut(p.zkLink());
    p.ns().cut(p.clientLink());
    long cutDone = System.nanoTime(); // each ip command takes a few ms
    DlmServerProcess next = p.awaitNewLeader();
    HaLogs.metric("host_cut.cut_to_new_leader", Duration.ofNanos(System.nanoTime() - cutAt));
    p.awaitStormProgressUnder(next);
    HaLogs.metric(
        "host_cut.cut_to_every_client_served", Duration.ofNanos(System.nanoTime() - cutAt));

    long healedAt = System.nanoTime();
    p.ns().heal(p.zkLink());
    p.ns().heal(p.clientLink());
    p.a().awaitFollowing(next, Duration.ofSeconds(60));
    HaLogs.metric("host_cut.heal_to_following", Duration.ofNanos(System.nanoTime() - healedAt));
    // Nothing the prober sent to the cut-off leader was granted once another server led (a probe
    // that reached it just before the cut may have been answered late, after the heal: by then it
    // is a follower and refuses).
    assertThat(p.prober().granted())
        .allSatisfy(x -> assertThat(x.token() >>> 32).as(x.toString()).isEqualTo(p.epochA()));
    assertThat(p.prober().granted())
        .allSatisfy(x -> assertThat(x.sent()).as(x.toString()).isLessThan(cutDone));
    p.finish();
  }

  /**
   * The setup both tests share: ZooKeeper and servers B, C on this side; leader A in a namespace
   * with a link to ZooKeeper and a link to its clients; a storm over all three; a prober of A.
   */
  private record Partition(
      NetworkNamespace ns,
      Link zkLink,
      Link clientLink,
      DlmServerCluster servers,
      DlmServerProcess a,
      long epochA,
      LockStorm storm,
      Prober prober) {

    static Partition start(LeaderPartitionTest t, long seed) throws Exception {
      Path dir = HaLogs.dir(t.info);
      TestingServer zk = t.started.add(new TestingServer());
      NetworkNamespace ns = t.started.add(NetworkNamespace.create());
      Link zkLink = ns.link();
      Link clientLink = ns.link();
      DlmServerProcess a =
          DlmServerProcess.launchIn(
              ns,
              clientLink.namespaceAddress(),
              "dlmA",
              DlmServerCluster.options(
                  zkLink.hostAddress() + ":" + zk.getPort(), "/ha", dir.resolve("a")),
              dir);
      // Closed before the namespace (what started last closes first): no process is left in it.
      DlmServerCluster servers =
          t.started.add(DlmServerCluster.ledBy(a, zk.getConnectString(), "/ha", dir));
      long epochA = DlmServerCluster.epoch(a);
      LockStorm storm =
          t.started.add(LockStorm.start(servers.targets(), LockStorm.Options.standard(seed)));
      Prober prober = t.started.add(new Prober(a, "probe"));
      LockHistory h = storm.history();
      await().atMost(Duration.ofSeconds(30)).until(() -> h.grantCount() >= 200);
      await().atMost(Duration.ofSeconds(10)).until(() -> prober.granted().size() >= 20);
      return new Partition(ns, zkLink, clientLink, servers, a, epochA, storm, prober);
    }

    /** Waits until B or C leads under a newer epoch. */
    DlmServerProcess awaitNewLeader() {
      return await("B or C leads under a newer epoch")
          .atMost(Duration.ofSeconds(30))
          .pollInterval(Duration.ofMillis(50))
          .until(
              () ->
                  servers.servers().stream()
                      .filter(s -> s != a && s.isLeader())
                      .filter(s -> DlmServerCluster.epoch(s) > epochA)
                      .findFirst(),
              Optional::isPresent)
          .get();
    }

    /** Every storm client was granted again, by {@code next}'s epoch. */
    void awaitStormProgressUnder(DlmServerProcess next) {
      long epoch = DlmServerCluster.epoch(next);
      LockHistory h = storm.history();
      Map<String, Long> before = storm.grantsByClient();
      try {
        await("grants by the new leader")
            .atMost(Duration.ofSeconds(60))
            .until(() -> h.grantsAfterEpoch(epoch - 1) >= 200);
      } catch (ConditionTimeoutException e) {
        // Who holds what the storm waits for: a lock nobody knows they hold shows here.
        try (DlmClient admin = DlmClient.connect(next.address())) {
          admin
              .locks("storm")
              .forEach(r -> LOG.error("stalled: {}", TextFormat.shortDebugString(r)));
        }
        throw e;
      }
      storm.awaitEveryClientGrantedSince(
          before, Duration.ofSeconds(60), "every client makes progress after the partition");
    }

    /** Stops the storm and checks its history, the locks left, and the prober's grants. */
    void finish() throws Exception {
      prober.stop();
      storm.stopAndCheck("storm");
      try (DlmClient admin = DlmClient.connect(servers.targets())) {
        assertThat(admin.locks("storm"))
            .allSatisfy(
                r ->
                    assertThat(r.getGrantedCount() + r.getConvertingCount() + r.getWaitingCount())
                        .as("locks left on %s", r.getResource())
                        .isZero());
      }
      prober.assertHeld(servers.targets());
    }
  }
}
