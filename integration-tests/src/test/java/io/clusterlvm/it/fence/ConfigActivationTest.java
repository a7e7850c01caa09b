package io.clusterlvm.it.fence;

import static org.assertj.core.api.Assertions.assertThat;

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
 * {@code dlmctl config activate} publishes a cluster.conf with a higher config_version and the
 * running agents use it at once, without a restart; a file that is not newer is refused.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ConfigActivationTest extends FenceScenario {

  @Test
  void aNewerConfigIsUsedByTheRunningFencerAndAnOlderOneIsRefused() throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    HostBmc bmc2 = cluster.bmc("tpve02");
    HostBmc bmc3 = cluster.bmc("tpve03");
    Path v5 = cluster.writeFile("cluster-v5.conf", seedConf(5, bmc1, bmc2).xml());
    SimulatedHost tpve01 = cluster.host("tpve01").poweredBy(bmc1);
    SimulatedHost tpve03 = cluster.host("tpve03").poweredBy(bmc3);
    startHosts(v5, tpve01, tpve03);
    long fencerPid = tpve01.agent().pid();

    SimulatedHost.HeldLock held = tpve03.holdLock(LS, VGLK, "EX");
    Waiting waiting = Waiting.request(session(tpve01, "survivor"), LS, VGLK, LockMode.EX);
    tpve03.crash();
    awaitOperatorSees("tpve03", "FENCING", "no fence method configured");

    // Not newer: refused, whatever it says.
    Path v4 =
        cluster.writeFile(
            "cluster-v4.conf",
            seedConf(4, bmc1, bmc2)
                .ipmiDevice("tpve03", bmc3, bmc3.writePasswordScript(cluster.dir().resolve("pw03")))
                .xml());
    FenceCluster.CliResult refused = cluster.dlmctl("config", "activate", v4.toString());
    assertThat(refused.exit()).as(refused.toString()).isEqualTo(3);
    assertThat(refused.err()).contains("config_version 4 is not higher than the active 5");
    FenceCluster.CliResult same = cluster.dlmctl("config", "activate", v5.toString());
    assertThat(same.exit()).as(same.toString()).isEqualTo(3);
    assertThat(waiting.lock()).isNotDone();
    assertThat(cluster.state("tpve03")).isEqualTo(FenceState.FENCING);

    // config_version 6 gives tpve03 a fence device.
    String v6xml =
        new ClusterConfXml("tpve", 6)
            .fenceDaemon(0, 0)
            .ipmiDevice("tpve01", bmc1, cluster.dir().resolve("pw01"))
            .ipmiDevice("tpve02", bmc2, cluster.dir().resolve("pw02"))
            .ipmiDevice("tpve03", bmc3, bmc3.writePasswordScript(cluster.dir().resolve("pw03")))
            .node("tpve01", 1, ClusterConfXml.method("power", "tpve01"))
            .node("tpve02", 2, ClusterConfXml.method("power", "tpve02"))
            .node("tpve03", 3, ClusterConfXml.method("ipmi", "tpve03"))
            .xml();
    // A password written in the file, on a node's device as on a fencedevice, is refused: the
    // config is published to ZooKeeper, which every host reads.
    String onNodesDevice =
        v6xml
            .replace("config_version=\"6\"", "config_version=\"7\"")
            .replace("<device name=\"tpve03\"", "<device name=\"tpve03\" passwd=\"hunter2\"");
    assertThat(onNodesDevice).contains("hunter2");
    FenceCluster.CliResult inline =
        cluster.dlmctl(
            "config",
            "activate",
            cluster.writeFile("cluster-inline.conf", onNodesDevice).toString());
    assertThat(inline.exit()).as(inline.toString()).isEqualTo(3);
    assertThat(inline.err()).contains("password inline");
    assertThat(cluster.dlmctl("config", "show").out()).doesNotContain("hunter2");

    Path v6 = cluster.writeFile("cluster-v6.conf", v6xml);
    FenceCluster.CliResult valid = cluster.dlmctl("config", "validate", v6.toString());
    assertThat(valid.exit()).as(valid.toString()).isZero();
    FenceCluster.CliResult activated = cluster.dlmctl("config", "activate", v6.toString());
    assertThat(activated.exit()).as(activated.toString()).isZero();
    assertThat(activated.out()).contains("activated config_version 6");

    awaitFencedNeverGrantingEarly("tpve03", waiting, Duration.ofSeconds(30));
    assertThat(waiting.get().fencingToken()).isGreaterThan(held.token());
    assertThat(waiting.grantedAtMillis().get()).isGreaterThan(bmc3.firstReportedOff().get());
    FenceNodeRecord r = cluster.record("tpve03");
    assertThat(r.getHow()).isEqualTo("agent");
    assertThat(r.getMethod()).isEqualTo("ipmi");
    assertThat(events("tpve03", "agent")).extracting(FenceEvent::getActor).containsOnly("tpve01");
    // The same fencer process did it: no restart.
    assertThat(tpve01.agent().pid()).isEqualTo(fencerPid);
    assertThat(tpve01.agent().isAlive()).isTrue();
    FenceCluster.CliResult show = cluster.dlmctl("config", "show");
    assertThat(show.out()).isEqualTo(v6xml);
  }
}
