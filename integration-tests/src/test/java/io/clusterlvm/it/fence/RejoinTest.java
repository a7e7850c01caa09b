package io.clusterlvm.it.fence;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceState;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A failed host that comes back rebooted (a new boot id) counts as fenced: its old incarnation's
 * locks are purged and it joins with a higher incarnation, with no fence agent and no operator.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class RejoinTest extends FenceScenario {

  /** tpve03 crashed holding EX, which tpve01's survivor waits for; tpve03 waits in FENCING. */
  private record Crashed(
      Path conf, SimulatedHost host, SimulatedHost.HeldLock held, Waiting waiting) {}

  private Crashed crashedWhileHoldingEx() throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    HostBmc bmc2 = cluster.bmc("tpve02");
    Path conf = cluster.writeFile("cluster.conf", seedConf(5, bmc1, bmc2).xml());
    SimulatedHost tpve01 = cluster.host("tpve01").poweredBy(bmc1);
    SimulatedHost tpve03 = cluster.host("tpve03"); // no fence device: it waits in FENCING
    startHosts(conf, tpve01, tpve03);
    SimulatedHost.HeldLock held = tpve03.holdLock(LS, VGLK, "EX");
    Waiting waiting = Waiting.request(session(tpve01, "survivor"), LS, VGLK, LockMode.EX);
    tpve03.crash();
    awaitState("tpve03", FenceState.FENCING, Duration.ofSeconds(20));
    return new Crashed(conf, tpve03, held, waiting);
  }

  @Test
  void aHostThatRebootedWhileFencingRejoinsAndItsOldLocksArePurged() throws Exception {
    Crashed c = crashedWhileHoldingEx();
    Path conf = c.conf();
    SimulatedHost tpve03 = c.host();
    SimulatedHost.HeldLock held = c.held();
    Waiting waiting = c.waiting();
    assertThat(waiting.lock()).isNotDone();

    // The host reboots: a new agent process with a new boot id.
    long rejoinStartedAt = System.currentTimeMillis();
    tpve03.startAgent("boot-tpve03-2", conf);
    long incarnation = tpve03.awaitMember(held.incarnation());
    assertThat(incarnation).isGreaterThan(held.incarnation());
    assertThat(waiting.get().fencingToken()).isGreaterThan(held.token());
    assertThat(waiting.grantedAtMillis().get()).isGreaterThanOrEqualTo(rejoinStartedAt);

    FenceEvent fenced = events("tpve03", "fenced").get(0);
    assertThat(fenced.getIncarnation()).isEqualTo(held.incarnation());
    assertThat(fenced.getMessage()).contains("rebooted (boot id changed)");
    assertThat(fenced.getActor()).isEqualTo("tpve03");
    assertThat(fenced.getTimeEpochMillis()).isLessThanOrEqualTo(waiting.grantedAtMillis().get());
    assertThat(events("tpve03", "purged"))
        .singleElement()
        .satisfies(e -> assertThat(e.getMessage()).startsWith("1 locks of incarnation"));
    assertThat(events("tpve03", "agent")).isEmpty();
    assertThat(events("tpve03", "ack")).isEmpty();
    assertThat(cluster.history("tpve03"))
        .extracting(FenceEvent::getEvent)
        .containsSubsequence("joined", "failed", "fencing", "fenced", "purged", "joined");
    assertThat(cluster.record("tpve03").getBootId()).isEqualTo("boot-tpve03-2");
    // The rejoined host works: it can take the lock the survivor gives back.
    assertThat(cluster.granted(LS, VGLK))
        .extracting(l -> l.getOwner().getNode())
        .containsExactly("tpve01");
  }

  /**
   * A node that fences its own earlier incarnation as it rejoins purges that incarnation's locks
   * itself; if its agent dies between the two steps, the fencer purges them. (It used to leave the
   * node a grace of 10 s first, for fear of both purging: the one that found nothing left could
   * write "0 locks released" to the history. The lock service now tells that one the incarnation
   * was already gone, and it writes nothing.)
   */
  @Test
  void aSelfFencedIncarnationItsNodeDidNotPurgeIsPurgedByTheFencer() throws Exception {
    Crashed c = crashedWhileHoldingEx();
    SimulatedHost.HeldLock held = c.held();
    Waiting waiting = c.waiting();

    // What a rejoining agent writes first, as if it then died before purging. Like the agent, it
    // reads again when the fencer moved the record meanwhile (it notes its FENCING attempts).
    long fencedAt = 0;
    boolean written = false;
    for (int i = 0; i < 20 && !written; i++) {
      var v = cluster.store().nodeRecord("tpve03").orElseThrow();
      assertThat(v.value().getIncarnation()).isEqualTo(held.incarnation());
      assertThat(v.value().getState()).isEqualTo(FenceState.FENCING);
      fencedAt = System.currentTimeMillis();
      written =
          cluster
              .store()
              .compareAndSet(
                  "tpve03",
                  v.version(),
                  v.value().toBuilder()
                      .setState(FenceState.FENCED)
                      .setHow("rebooted (boot id changed)")
                      .setSinceEpochMillis(fencedAt)
                      .setLocksPurged(false)
                      .setSelfSettled(true)
                      .build());
    }
    assertThat(written).as("the record written as FENCED").isTrue();

    assertThat(waiting.get().fencingToken()).isGreaterThan(held.token());
    assertThat(waiting.grantedAtMillis().get()).isGreaterThanOrEqualTo(fencedAt);
    // The purge's event is written just after the purge that granted the survivor.
    org.awaitility.Awaitility.await("the fencer records the purge")
        .atMost(Duration.ofSeconds(10))
        .until(() -> !events("tpve03", "purged").isEmpty());
    assertThat(events("tpve03", "purged"))
        .singleElement()
        .satisfies(e -> assertThat(e.getMessage()).startsWith("1 locks of incarnation"));
  }
}
