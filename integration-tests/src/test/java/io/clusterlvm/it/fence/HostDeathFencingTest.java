package io.clusterlvm.it.fence;

import static io.clusterlvm.it.fence.ClusterConfXml.method;
import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A host dies holding an EX lock and is fenced through its BMC by the real fence_ipmilan: the
 * survivor's request waits, and is granted (with a higher fencing token) only after the BMC
 * reported the host off. Then the same with the fencer itself dying in the middle of the fence.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class HostDeathFencingTest extends FenceScenario {

  @Test
  void aHostKilledHoldingExIsFencedThroughItsBmcBeforeTheSurvivorGetsTheLock() throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    HostBmc bmc2 = cluster.bmc("tpve02");
    // The seed file of issue 4, fence_ilo swapped for fence_ipmilan against the simulated BMCs;
    // no fence_daemon element, so fenced's defaults (post_join_delay 6 s) apply.
    Path conf =
        cluster.writeFile(
            "cluster.conf",
            new ClusterConfXml("tpve", 5)
                .ipmiDevice("tpve01", bmc1, bmc1.writePasswordScript(cluster.dir().resolve("pw01")))
                .ipmiDevice("tpve02", bmc2, bmc2.writePasswordScript(cluster.dir().resolve("pw02")))
                .node("tpve01", 1, method("power", "tpve01"))
                .node("tpve02", 2, method("power", "tpve02"))
                .node("tpve03", 3)
                .xml());
    SimulatedHost tpve01 = cluster.host("tpve01").poweredBy(bmc1);
    SimulatedHost tpve02 = cluster.host("tpve02").poweredBy(bmc2);
    startHosts(conf, tpve02, tpve01);

    SimulatedHost.HeldLock held = tpve01.holdLock(LS, VGLK, "EX");
    DlmSession survivor = session(tpve02, "survivor");
    Waiting waiting = Waiting.request(survivor, LS, VGLK, LockMode.EX);
    assertWouldBlock(session(tpve02, "try-lock"), LS, VGLK);

    tpve01.crash();
    assertWouldBlock(survivor, LS, VGLK);
    awaitFencedNeverGrantingEarly("tpve01", waiting, Duration.ofSeconds(40));

    Lock granted = waiting.get();
    long grantedAt = waiting.grantedAtMillis().get();
    assertThat(granted.fencingToken()).isGreaterThan(held.token());
    // The BMC saw the power-off and then answered "off" to fence_ipmilan's status, and the grant
    // came after that answer.
    assertThat(bmc1.firstReportedOff()).isPresent();
    assertThat(grantedAt).isGreaterThan(bmc1.firstReportedOff().get());
    assertThat(bmc2.offRequested()).as("the survivor's BMC is never touched").isFalse();

    FenceNodeRecord r = cluster.record("tpve01");
    assertThat(r.getHow()).isEqualTo("agent");
    assertThat(r.getMethod()).isEqualTo("power");
    assertThat(r.getIncarnation()).isEqualTo(held.incarnation());
    assertThat(cluster.history("tpve01"))
        .extracting(FenceEvent::getEvent)
        .containsSubsequence("joined", "failed", "fencing", "agent", "agent", "fenced", "purged");
    assertThat(events("tpve01", "agent"))
        .extracting(FenceEvent::getDevice, FenceEvent::getAction, FenceEvent::getOutcome)
        .containsExactly(
            org.assertj.core.groups.Tuple.tuple("tpve01", "off", "SUCCESS"),
            org.assertj.core.groups.Tuple.tuple("tpve01", "status", "POWER_OFF"));
    assertThat(events("tpve01", "purged"))
        .singleElement()
        .satisfies(e -> assertThat(e.getMessage()).startsWith("1 locks"));
    // The password never reaches the history.
    assertThat(cluster.history(null).toString()).doesNotContain("secret");
  }

  @Test
  void whenTheFencerDiesMidFenceAnotherHostBecomesFencerAndFinishesIt() throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    HostBmc bmc2 = cluster.bmc("tpve02");
    HostBmc bmc3 = cluster.bmc("tpve03");
    // tpve01's BMC takes 4 s to cut the power: long enough to kill the fencer meanwhile.
    bmc1.slowPowerOff(Duration.ofSeconds(4));
    Path conf =
        cluster.writeFile(
            "cluster.conf",
            seedConf(5, bmc1, bmc2)
                .ipmiDevice("tpve03", bmc3, bmc3.writePasswordScript(cluster.dir().resolve("pw03")))
                .node("tpve03", 3, method("power", "tpve03"))
                .xml()
                // seedConf declares tpve03 without a device: keep only the one with it
                .replace("    <clusternode name=\"tpve03\" votes=\"1\" nodeid=\"3\"/>\n", ""));
    SimulatedHost tpve01 = cluster.host("tpve01").poweredBy(bmc1);
    SimulatedHost tpve02 = cluster.host("tpve02").poweredBy(bmc2);
    SimulatedHost tpve03 = cluster.host("tpve03").poweredBy(bmc3);
    startHosts(conf, tpve02, tpve01, tpve03);

    SimulatedHost.HeldLock held = tpve01.holdLock(LS, VGLK, "EX");
    Waiting waiting = Waiting.request(session(tpve03, "survivor"), LS, VGLK, LockMode.EX);
    tpve01.crash();

    // tpve02 (the fencer) has asked tpve01's BMC for power off, and the BMC is still at it.
    await("the fencer's fence_ipmilan reached tpve01's BMC")
        .atMost(Duration.ofSeconds(30))
        .pollInterval(Duration.ofMillis(50))
        .until(bmc1::offRequested);
    assertThat(cluster.state("tpve01")).isEqualTo(FenceState.FENCING);
    assertThat(bmc1.firstReportedOff()).isEmpty();
    tpve02.crash(); // the fencer host dies, and its fence_ipmilan with it

    awaitFencer("tpve03");
    awaitFencedNeverGrantingEarly("tpve01", waiting, Duration.ofSeconds(40));
    Lock granted = waiting.get();
    assertThat(granted.fencingToken()).isGreaterThan(held.token());
    assertThat(waiting.grantedAtMillis().get()).isGreaterThan(bmc1.firstReportedOff().get());
    // The new fencer fences the dead fencer as well.
    awaitState("tpve02", FenceState.FENCED, Duration.ofSeconds(30));

    FenceNodeRecord r = cluster.record("tpve01");
    assertThat(r.getHow()).isEqualTo("agent");
    assertThat(events("tpve01", "fenced"))
        .extracting(FenceEvent::getActor)
        .containsExactly("tpve03");
    assertThat(events("tpve01", "agent")).extracting(FenceEvent::getActor).containsOnly("tpve03");
    // Purged exactly once, by the new fencer.
    assertThat(events("tpve01", "purged"))
        .singleElement()
        .satisfies(
            e -> {
              assertThat(e.getActor()).isEqualTo("tpve03");
              assertThat(e.getMessage()).startsWith("1 locks");
            });
    assertThat(events("tpve02", "fenced"))
        .extracting(FenceEvent::getActor)
        .containsExactly("tpve03");
    assertThat(bmc2.firstReportedOff()).isPresent();
    assertThat(bmc3.offRequested()).isFalse();
  }

  @Test
  void dlmctlFenceSwitchesALiveMemberOffThroughItsBmc() throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    HostBmc bmc2 = cluster.bmc("tpve02");
    Path conf = cluster.writeFile("cluster.conf", seedConf(5, bmc1, bmc2).xml());
    SimulatedHost tpve01 = cluster.host("tpve01").poweredBy(bmc1);
    SimulatedHost tpve02 = cluster.host("tpve02").poweredBy(bmc2);
    startHosts(conf, tpve01, tpve02);
    SimulatedHost.HeldLock held = tpve02.holdLock(LS, VGLK, "EX");
    Waiting waiting = Waiting.request(session(tpve01, "survivor"), LS, VGLK, LockMode.EX);

    // The old fence_node: the host is alive; its BMC's power-off is what kills it.
    FenceCluster.CliResult fence = cluster.dlmctl("fence", "tpve02", "--yes");
    assertThat(fence.exit()).as(fence.toString()).isZero();
    awaitFencedNeverGrantingEarly("tpve02", waiting, Duration.ofSeconds(30));
    assertThat(tpve02.agent().waitFor(10, TimeUnit.SECONDS)).isTrue();
    assertThat(held.dlmctl().waitFor(10, TimeUnit.SECONDS)).isTrue();
    assertThat(waiting.get().fencingToken()).isGreaterThan(held.token());
    assertThat(waiting.grantedAtMillis().get()).isGreaterThan(bmc2.firstReportedOff().get());
    assertThat(cluster.history("tpve02"))
        .extracting(FenceEvent::getEvent)
        .containsSubsequence("fence-requested", "fencing", "agent", "agent", "fenced", "purged");

    // Its lease then expires: that is no new failure, the node stays FENCED.
    await("tpve02 stays FENCED after its lease expires")
        .during(FenceCluster.ZK_SESSION.plusSeconds(1))
        .atMost(FenceCluster.ZK_SESSION.plusSeconds(10))
        .pollInterval(Duration.ofMillis(200))
        .until(() -> cluster.state("tpve02") == FenceState.FENCED && !cluster.leaseHeld("tpve02"));
    assertThat(events("tpve02", "failed")).isEmpty();
    assertThat(events("tpve02", "purged")).singleElement();
  }
}
