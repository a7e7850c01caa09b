package io.clusterlvm.it.fence;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.gson.JsonObject;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A failed node that no agent can fence (no device, a wrong password, a dead BMC) keeps its locks
 * frozen, in FENCING with the reason shown to the operator, until the operator acknowledges it with
 * {@code dlmctl ack NODE --yes} (the old fence_ack_manual).
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ManualAckTest extends FenceScenario {

  @Test
  void theSeedConfigsNodeWithoutFenceDeviceStaysFrozenUntilDlmctlAck() throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    HostBmc bmc2 = cluster.bmc("tpve02");
    Path conf = cluster.writeFile("cluster.conf", seedConf(5, bmc1, bmc2).xml());
    SimulatedHost tpve01 = cluster.host("tpve01").poweredBy(bmc1);
    SimulatedHost tpve03 = cluster.host("tpve03"); // no BMC: the seed file gives it no device
    startHosts(conf, tpve01, tpve03);

    SimulatedHost.HeldLock held = tpve03.holdLock(LS, VGLK, "EX");
    DlmSession survivor = session(tpve01, "survivor");
    Waiting waiting = Waiting.request(survivor, LS, VGLK, LockMode.EX);
    tpve03.crash();

    JsonObject shown =
        awaitOperatorSees("tpve03", "FENCING", "no fence method configured for this node");
    assertThat(shown.get("lastResult").getAsString()).contains("dlmctl ack tpve03");
    FenceCluster.CliResult table = cluster.dlmctl("nodes");
    assertThat(table.out()).contains("wait state fencing (no fence device: needs dlmctl ack)");
    // Only what tpve03 held is frozen: the survivor's other work goes on.
    Lock other = survivor.lock(LS, "lv-101", LockMode.EX, LockOptions.DEFAULT.withNoqueue());
    survivor.unlock(other);
    assertWouldBlock(survivor, LS, VGLK);
    assertStaysFrozen(
        waiting, "tpve03", FenceState.FENCING, FenceCluster.ABRUPT_END_GRACE.plusSeconds(1));

    long incarnation = cluster.record("tpve03").getIncarnation();
    FenceCluster.CliResult unconfirmed = cluster.dlmctl("ack", "tpve03");
    assertThat(unconfirmed.exit()).as(unconfirmed.toString()).isEqualTo(2);
    assertThat(unconfirmed.err())
        .contains("tpve03 is FENCING in incarnation " + incarnation)
        .contains("dlmctl ack tpve03 --incarnation " + incarnation + " --yes");
    FenceCluster.CliResult noIncarnation = cluster.dlmctl("ack", "tpve03", "--yes");
    assertThat(noIncarnation.exit()).as(noIncarnation.toString()).isEqualTo(2);
    // An ack of another life of the node (checked off in another incarnation) is refused.
    FenceCluster.CliResult stale =
        cluster.dlmctl("ack", "tpve03", "--incarnation", Long.toString(incarnation + 1), "--yes");
    assertThat(stale.exit()).as(stale.toString()).isEqualTo(3);
    assertThat(stale.err()).contains("is in incarnation " + incarnation + " now");
    assertThat(waiting.lock()).isNotDone();
    assertThat(cluster.state("tpve03")).isEqualTo(FenceState.FENCING);

    FenceCluster.CliResult zero = cluster.dlmctl("ack", "tpve03", "--incarnation", "0", "--yes");
    assertThat(zero.exit()).as(zero.toString()).isEqualTo(2);
    FenceCluster.CliResult ack =
        cluster.dlmctl("ack", "tpve03", "--incarnation", Long.toString(incarnation), "--yes");
    assertThat(ack.exit()).as(ack.toString()).isZero();
    Lock granted = waiting.get();
    assertThat(granted.fencingToken()).isGreaterThan(held.token());

    FenceNodeRecord r = cluster.record("tpve03");
    assertThat(r.getState()).isEqualTo(FenceState.FENCED);
    assertThat(r.getHow()).startsWith("manual ack by ");
    assertThat(events("tpve03", "agent")).isEmpty();
    assertThat(events("tpve03", "ack")).singleElement();
    assertThat(events("tpve03", "purged"))
        .singleElement()
        .satisfies(e -> assertThat(e.getMessage()).startsWith("1 locks"));
  }

  @Test
  void aWrongPasswordOrADeadBmcKeepsTheNodeFencingWithTheErrorShownUntilAck() throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    HostBmc bmc2 = cluster.bmc("tpve02");
    Path wrongPassword =
        bmc2.writePasswordScript(cluster.dir().resolve("pw02-wrong"), "not-the-password");
    int deadPort = HostBmc.deadPort();
    Path conf =
        cluster.writeFile(
            "cluster.conf",
            new ClusterConfXml("tpve", 5)
                .fenceDaemon(0, 0)
                .ipmiDevice("tpve01", bmc1, bmc1.writePasswordScript(cluster.dir().resolve("pw01")))
                .ipmiDevice("tpve02", bmc2, wrongPassword)
                .ipmiDevice("tpve03", deadPort, "admin", wrongPassword)
                .node("tpve01", 1, ClusterConfXml.method("power", "tpve01"))
                .node("tpve02", 2, ClusterConfXml.method("power", "tpve02"))
                .node("tpve03", 3, ClusterConfXml.method("power", "tpve03"))
                .xml());
    SimulatedHost tpve01 = cluster.host("tpve01").poweredBy(bmc1);
    SimulatedHost tpve02 = cluster.host("tpve02").poweredBy(bmc2);
    SimulatedHost tpve03 = cluster.host("tpve03");
    startHosts(conf, tpve01, tpve02, tpve03);

    SimulatedHost.HeldLock held2 = tpve02.holdLock(LS, "lv-102", "EX");
    SimulatedHost.HeldLock held3 = tpve03.holdLock(LS, "lv-103", "EX");
    DlmSession survivor = session(tpve01, "survivor");
    Waiting waiting2 = Waiting.request(survivor, LS, "lv-102", LockMode.EX);
    Waiting waiting3 = Waiting.request(survivor, LS, "lv-103", LockMode.EX);
    tpve02.crash();
    tpve03.crash();

    // fence_ipmilan ran and failed; the operator reads why in dlmctl nodes.
    JsonObject shown2 = awaitOperatorSees("tpve02", "FENCING", "device tpve02 OFF: FAILED");
    JsonObject shown3 = awaitOperatorSees("tpve03", "FENCING", "device tpve03 OFF: FAILED");
    assertThat(shown2.get("attempts").getAsInt()).isPositive();
    assertThat(shown2.toString() + shown3).doesNotContain("not-the-password");
    assertThat(bmc2.offRequested()).as("the BMC refused the wrong password").isFalse();
    assertThat(waiting2.lock()).isNotDone();
    assertThat(waiting3.lock()).isNotDone();
    assertWouldBlock(survivor, LS, "lv-102");
    assertWouldBlock(survivor, LS, "lv-103");
    for (String node : new String[] {"tpve02", "tpve03"}) {
      assertThat(events(node, "agent"))
          .isNotEmpty()
          .allSatisfy(e -> assertThat(e.getOutcome()).isNotIn("SUCCESS", "POWER_OFF"));
    }

    // Nor does it reach any log: the agents', dlmctl's.
    try (var files = java.nio.file.Files.walk(cluster.dir())) {
      for (Path f : files.filter(f -> f.toString().matches(".*\\.(log|out|err)$")).toList()) {
        assertThat(java.nio.file.Files.readString(f))
            .as(f.toString())
            .doesNotContain("not-the-password");
      }
    }

    assertThat(ack(cluster, "tpve02").exit()).isZero();
    assertThat(waiting2.get().fencingToken()).isGreaterThan(held2.token());
    assertThat(waiting3.lock()).as("tpve03 is still frozen").isNotDone();
    assertThat(ack(cluster, "tpve03").exit()).isZero();
    assertThat(waiting3.get().fencingToken()).isGreaterThan(held3.token());
    for (String node : new String[] {"tpve02", "tpve03"}) {
      assertThat(cluster.record(node).getHow()).startsWith("manual ack by ");
      assertThat(events(node, "purged"))
          .extracting(FenceEvent::getMessage)
          .singleElement()
          .asString()
          .startsWith("1 locks");
    }
  }

  /** The operator's ack of {@code node} in the incarnation its record shows. */
  private static FenceCluster.CliResult ack(FenceCluster cluster, String node) throws Exception {
    return cluster.dlmctl(
        "ack",
        node,
        "--incarnation",
        Long.toString(cluster.record(node).getIncarnation()),
        "--yes");
  }
}
