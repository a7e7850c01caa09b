package io.clusterlvm.it.ha;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.it.ha.Prober.Probe;
import io.grpc.Status;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.curator.test.InstanceSpec;
import org.apache.curator.test.TestingCluster;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInfo;
import org.junit.jupiter.api.Timeout;

/**
 * A leader that loses ZooKeeper must stop granting before anyone else can lead, and whatever it
 * still believes afterwards, nothing it does may count.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LeaderLosesZooKeeperTest {
  private final Started started = new Started();
  private TestInfo info;

  @BeforeEach
  void start(TestInfo info) {
    this.info = info;
  }

  @AfterEach
  void stop() throws Exception {
    started.close();
  }

  private Path dir() {
    return HaLogs.dir(info);
  }

  /**
   * The leader is the only server whose connect string names ZooKeeper server 1, so that is the
   * server it is connected to; server 1 is stopped. The leader's Curator goes SUSPENDED: it must
   * refuse at once. Its session lives on in the ensemble (Curator reconnects to another member, as
   * ZooKeeper's dynamic configuration lists them all), so nobody else could have been elected in
   * the meantime; it may grant again only after taking the lead again, under a new epoch.
   */
  @Test
  void aLeaderThatLosesItsZooKeeperConnectionRefusesAtOnce() throws Exception {
    TestingCluster zk = started.add(Ensembles.three());
    zk.start();
    List<InstanceSpec> specs = new ArrayList<>(zk.getInstances());
    InstanceSpec lonely = specs.get(0);
    DlmServerProcess a =
        DlmServerProcess.launch(
            "dlmA",
            DlmServerCluster.options(lonely.getConnectString(), "/ha", dir().resolve("a")),
            dir());
    DlmServerCluster servers =
        started.add(DlmServerCluster.ledBy(a, zk.getConnectString(), "/ha", dir()));
    long epochA = DlmServerCluster.epoch(a);

    Prober prober = started.add(new Prober(a, "probe"));
    await().atMost(Duration.ofSeconds(10)).until(() -> prober.granted().size() >= 20);
    long cutAt = System.nanoTime();
    assertThat(zk.killServer(lonely)).isTrue();
    DlmServerProcess leader =
        await("a leader with a new epoch")
            .atMost(Duration.ofSeconds(30))
            .pollInterval(Duration.ofMillis(50))
            .until(servers::leader, l -> l.isPresent() && DlmServerCluster.epoch(l.get()) > epochA)
            .get();
    long newEpochAt = System.nanoTime();
    await().atMost(Duration.ofSeconds(10)).until(() -> prober.answeredSince(newEpochAt) >= 10);
    prober.stop();

    List<Probe> all = prober.probes();
    long firstRefusal =
        all.stream()
            .filter(p -> p.sent() > cutAt && !p.granted())
            .mapToLong(Probe::answered)
            .min()
            .orElseThrow();
    HaLogs.metric("suspended.cut_to_first_refusal", Duration.ofNanos(firstRefusal - cutAt));
    HaLogs.metric("suspended.cut_to_new_epoch", Duration.ofNanos(newEpochAt - cutAt));
    HaLogs.metric("suspended.new_leader_is_old_one", leader == a ? 1 : 0);
    assertThat(firstRefusal - cutAt).isLessThan(Duration.ofSeconds(2).toNanos());
    for (Probe p : all) {
      if (p.answered() > firstRefusal) {
        // After the first refusal: refusals that say UNAVAILABLE (clients go elsewhere and come
        // back), and grants only under a new epoch, i.e. after the table was taken over again.
        if (p.granted()) {
          assertThat(p.token() >>> 32).as(p.toString()).isGreaterThan(epochA);
        } else {
          assertThat(p.code()).as(p.toString()).isEqualTo(Status.Code.UNAVAILABLE);
        }
      }
    }
    prober.assertHeld(servers.targets());
  }

  /**
   * The leader freezes (SIGSTOP: a long GC pause, a stalled VM) until its session has expired and
   * another server leads, then wakes up still believing it leads. It must grant nothing (its writes
   * fail the epoch check, its session is gone), answer UNAVAILABLE naming the new leader, and not
   * disturb the new leader.
   */
  @Test
  void aFrozenLeaderWhoseSessionExpiredGrantsNothingWhenItWakes() throws Exception {
    TestingServer zk = started.add(new TestingServer());
    DlmServerCluster servers =
        started.add(DlmServerCluster.start(3, zk.getConnectString(), "/ha", dir()));
    DlmServerProcess a = servers.awaitLeader(Duration.ofSeconds(10));
    long epochA = DlmServerCluster.epoch(a);
    Prober prober = started.add(new Prober(a, "probe"));
    await().atMost(Duration.ofSeconds(10)).until(() -> prober.granted().size() >= 20);

    long pausedAt = System.nanoTime();
    a.pause();
    DlmServerProcess b = servers.awaitLeader(Duration.ofSeconds(30));
    long newLeaderAt = System.nanoTime();
    long epochB = DlmServerCluster.epoch(b);
    assertThat(b).isNotSameAs(a);
    assertThat(epochB).isGreaterThan(epochA);
    HaLogs.metric("frozen.pause_to_new_leader", Duration.ofNanos(newLeaderAt - pausedAt));

    long resumedAt = System.nanoTime();
    a.resume();
    a.awaitFollowing(b, Duration.ofSeconds(30));
    HaLogs.metric("frozen.resume_to_following", Duration.ofNanos(System.nanoTime() - resumedAt));
    long followingAt = System.nanoTime();
    await().atMost(Duration.ofSeconds(10)).until(() -> prober.answeredSince(followingAt) >= 10);
    prober.stop();

    // Nothing granted by the old leader once another server leads (it froze mid-stream, so a few
    // answers already on their way may arrive just after the signal).
    assertThat(prober.granted())
        .allSatisfy(p -> assertThat(p.answered()).as(p.toString()).isLessThan(newLeaderAt));
    assertThat(prober.probes().stream().filter(p -> p.sent() > followingAt))
        .allSatisfy(
            p -> {
              assertThat(p.code()).as(p.toString()).isEqualTo(Status.Code.UNAVAILABLE);
              assertThat(p.description()).contains("the leader is " + b.address());
            });
    // The new leader was not disturbed: still the leader, same epoch.
    assertThat(servers.leader()).contains(b);
    assertThat(DlmServerCluster.epoch(b)).isEqualTo(epochB);
    prober.assertHeld(servers.targets());
  }
}
