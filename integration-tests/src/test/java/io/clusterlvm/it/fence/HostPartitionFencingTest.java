package io.clusterlvm.it.fence;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.clvm.proto.HostStatusResponse;
import io.clusterlvm.clvm.rpc.ClvmClient;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.testing.NetworkNamespace;
import io.clusterlvm.testing.NetworkNamespace.Link;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A host is cut off from the network while it runs, holding an EX lock: the split-brain case that
 * fencing exists for. Unlike a crashed host, its agent and its lock holder are alive and think they
 * still hold the lock. The host runs in its own network namespace (its link to ZooKeeper and the
 * dlm-server is cut by the test); its BMC stays reachable, as a BMC on a separate management
 * network is.
 *
 * <p>The host's agent must stop allowing storage commands as soon as it hears nothing from
 * ZooKeeper, before its lease can expire; the survivor's request must wait until the real
 * fence_ipmilan has powered the host off (which kills its processes), and only then be granted,
 * with a higher fencing token.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class HostPartitionFencingTest extends FenceScenario {
  private static final Logger LOG = LoggerFactory.getLogger(HostPartitionFencingTest.class);
  private NetworkNamespace ns;
  private Link link;

  @Override
  FenceCluster newCluster(Path dir) throws Exception {
    NetworkNamespace.assumeAvailable();
    NetworkNamespace n = NetworkNamespace.create();
    try {
      Link l = n.link();
      FenceCluster c =
          FenceCluster.start(
              dir, FenceCluster.ZK_SESSION, FenceCluster.ABRUPT_END_GRACE, l.hostAddress());
      // Deleted after the cluster killed the host's processes: none is left in it.
      c.closeAfterProcesses(n);
      ns = n;
      link = l;
      return c;
    } catch (Exception | Error e) {
      n.close();
      throw e;
    }
  }

  @Test
  void aHostCutOffWhileHoldingExStopsItsStorageAndIsFencedBeforeTheSurvivorGetsTheLock()
      throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    HostBmc bmc2 = cluster.bmc("tpve02");
    Path conf = cluster.writeFile("cluster.conf", seedConf(1, bmc1, bmc2).xml());
    SimulatedHost tpve01 = cluster.host("tpve01").inNetwork(ns, link).poweredBy(bmc1);
    SimulatedHost tpve02 = cluster.host("tpve02").poweredBy(bmc2);
    startHosts(conf, tpve02, tpve01);
    // Its clvm API comes up just after it joined.
    await("tpve01's agent allows storage")
        .atMost(Duration.ofSeconds(20))
        .ignoreExceptions()
        .until(() -> status(tpve01).getStorageAllowed());

    SimulatedHost.HeldLock held = tpve01.holdLock(LS, VGLK, "EX");
    DlmSession survivor = session(tpve02, "survivor");
    Waiting waiting = Waiting.request(survivor, LS, VGLK, LockMode.EX);
    assertWouldBlock(session(tpve02, "try-lock"), LS, VGLK);

    // Its BMC takes 4 s to cut the power: a window in which the host, declared failed and being
    // fenced, still runs.
    bmc1.slowPowerOff(Duration.ofSeconds(4));
    long cutAt = System.nanoTime();
    long cutAtMillis = System.currentTimeMillis(); // compared with the fence history's times
    ns.cut(link);

    // The cut-off agent hears nothing from ZooKeeper and stops storage on its own (by design
    // before its lease expires on the quorum side, which is when the others may act on its
    // locks: two thirds of the session timeout against all of it).
    HostStatusResponse refusing =
        await("tpve01's agent refuses storage")
            .atMost(Duration.ofSeconds(15))
            .until(() -> status(tpve01), s -> !s.getStorageAllowed());
    long refusedAt = System.nanoTime();
    assertThat(refusing.getMembershipNote()).contains("SUSPENDED");

    // Its lease expires: failed, though every process of the host still runs.
    await("tpve01 is declared failed")
        .atMost(Duration.ofSeconds(20))
        .pollInterval(Duration.ofMillis(50))
        .until(() -> cluster.state("tpve01") != FenceState.MEMBER);
    assertThat(held.dlmctl().isAlive()).as("the lock holder on the cut-off host").isTrue();
    assertThat(tpve01.agent().isAlive()).isTrue();

    awaitFencedNeverGrantingEarly("tpve01", waiting, Duration.ofSeconds(40));
    Lock granted = waiting.get();
    long grantedAt = waiting.grantedAtMillis().get();
    long grantedNanos = System.nanoTime();
    assertThat(granted.fencingToken()).isGreaterThan(held.token());
    assertThat(bmc1.firstReportedOff()).isPresent();
    assertThat(grantedAt).isGreaterThan(bmc1.firstReportedOff().get());
    assertThat(bmc2.offRequested()).as("the survivor's BMC is never touched").isFalse();
    // The power-off, not the cut, ended the host's processes.
    assertThat(held.dlmctl().waitFor(10, TimeUnit.SECONDS)).isTrue();
    assertThat(tpve01.agent().waitFor(10, TimeUnit.SECONDS)).isTrue();
    assertThat(cluster.history("tpve01"))
        .extracting(FenceEvent::getEvent)
        .containsSubsequence("joined", "failed", "fencing", "agent", "fenced", "purged");

    LOG.info(
        "host partition: refusal seen {} ms, declared failed {} ms, survivor granted {} ms after"
            + " the cut",
        millis(refusedAt - cutAt),
        events("tpve01", "failed").get(0).getTimeEpochMillis() - cutAtMillis,
        millis(grantedNanos - cutAt));
    ns.heal(link);
  }

  /**
   * A node without an agent (joined by dlmctl: no lease, no fence device, the one-machine trial)
   * has nothing to be fenced by; its locks go when its client session breaks. A client cut off the
   * network does not break its connection, it falls silent: the server must notice by its own
   * keepalive, or the lock stays until TCP gives up on the connection, a quarter of an hour later.
   */
  @Test
  void aNodeWithoutALeaseCutOffLosesItsLocksOnceTheServerHearsNothingFromIt() throws Exception {
    FenceCluster.CliResult joined = cluster.dlmctl("join", "trial");
    assertThat(joined.exit()).as(joined.toString()).isZero();
    SimulatedHost trial = cluster.host("trial").inNetwork(ns, link);
    SimulatedHost.HeldLock held = trial.holdLock(LS, "r", "EX");
    DlmSession other =
        cluster.client().openSession("other", cluster.client().join("other", "boot"), "test");

    long cutAt = System.nanoTime();
    ns.cut(link);
    Lock got =
        other.lock(LS, "r", LockMode.EX, LockOptions.DEFAULT.withTimeout(Duration.ofSeconds(40)));
    long grantedAt = System.nanoTime();
    assertThat(got.fencingToken()).isGreaterThan(held.token());
    assertThat(held.dlmctl().isAlive()).as("cut off, not dead").isTrue();
    LOG.info(
        "node without a lease cut off: its lock granted to another {} ms after the cut",
        millis(grantedAt - cutAt));
    ns.heal(link);
  }

  /** What {@code clvm --status} shows, asked over the agent's socket. */
  private static HostStatusResponse status(SimulatedHost h) {
    try (ClvmClient.UnixSocketChannel ch = ClvmClient.connect(h.socket())) {
      return new ClvmClient(ch.channel()).hostStatus(Duration.ofSeconds(5));
    }
  }

  private static long millis(long nanos) {
    return TimeUnit.NANOSECONDS.toMillis(nanos);
  }
}
