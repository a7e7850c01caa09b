package io.clusterlvm.it.fence;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.fence.proto.FenceState;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** A host that leaves cleanly releases its locks and is never fenced. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class CleanLeaveTest extends FenceScenario {

  @Test
  void aCleanLeaveBySigtermOrDlmctlLeaveReleasesTheLocksAndFencesNobody() throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    HostBmc bmc2 = cluster.bmc("tpve02");
    Path conf = cluster.writeFile("cluster.conf", seedConf(5, bmc1, bmc2).xml());
    SimulatedHost tpve01 = cluster.host("tpve01").poweredBy(bmc1);
    SimulatedHost tpve02 = cluster.host("tpve02").poweredBy(bmc2);
    SimulatedHost tpve03 = cluster.host("tpve03");
    startHosts(conf, tpve01, tpve02, tpve03);

    SimulatedHost.HeldLock held2 = tpve02.holdLock(LS, "lv-102", "EX");
    SimulatedHost.HeldLock held3 = tpve03.holdLock(LS, "lv-103", "EX");
    DlmSession survivor = session(tpve01, "survivor");
    Waiting waiting2 = Waiting.request(survivor, LS, "lv-102", LockMode.EX);
    Waiting waiting3 = Waiting.request(survivor, LS, "lv-103", LockMode.EX);

    // SIGTERM: the agent leaves the fence domain, then exits.
    tpve02.stopAgent();
    assertThat(cluster.state("tpve02")).isEqualTo(FenceState.LEFT);
    assertThat(waiting2.get().fencingToken()).isGreaterThan(held2.token());

    // dlmctl leave: the running agent leaves on the operator's request.
    FenceCluster.CliResult leave = cluster.dlmctl("leave", "tpve03");
    assertThat(leave.exit()).as(leave.toString()).isZero();
    assertThat(waiting3.get().fencingToken()).isGreaterThan(held3.token());
    awaitState("tpve03", FenceState.LEFT, Duration.ofSeconds(10));
    assertThat(tpve03.agent().isAlive()).isTrue();

    // Long after tpve02's ZooKeeper session is gone, nobody takes either for failed.
    await("no fence after a clean leave")
        .during(FenceCluster.ZK_SESSION.plusSeconds(1))
        .atMost(FenceCluster.ZK_SESSION.plusSeconds(10))
        .pollInterval(Duration.ofMillis(200))
        .until(
            () ->
                cluster.state("tpve02") == FenceState.LEFT
                    && cluster.state("tpve03") == FenceState.LEFT);
    for (String node : new String[] {"tpve02", "tpve03"}) {
      assertThat(events(node, "failed")).isEmpty();
      assertThat(events(node, "agent")).isEmpty();
      assertThat(events(node, "left")).singleElement();
    }
    assertThat(bmc2.offRequested()).isFalse();

    // ... and dlmctl join brings tpve03 back with a new incarnation.
    assertThat(cluster.dlmctl("join", "tpve03").exit()).isZero();
    assertThat(tpve03.awaitMember(held3.incarnation())).isGreaterThan(held3.incarnation());
  }
}
