package io.clusterlvm.it.fence;

import static io.clusterlvm.it.fence.ClusterConfXml.method;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.groups.Tuple.tuple;

import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Methods and devices as fenced runs them: every device of a method must switch off (a host with
 * two power supplies is off only when both are), so one failing device fails the method, and the
 * next method is tried.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class FenceMethodTest extends FenceScenario {

  @Test
  void aMethodWithOneFailingDeviceFailsAndTheNextMethodFences() throws Exception {
    HostBmc bmc1 = cluster.bmc("tpve01");
    // tpve02: two power supplies on two BMCs, the second configured with a wrong password; and a
    // management board as the second method.
    HostBmc psu1 = cluster.bmc("tpve02-psu1");
    HostBmc psu2 = cluster.bmc("tpve02-psu2");
    HostBmc mgmt = cluster.bmc("tpve02-mgmt");
    Path conf =
        cluster.writeFile(
            "cluster.conf",
            new ClusterConfXml("tpve", 7)
                .fenceDaemon(0, 0)
                .ipmiDevice("tpve01", bmc1, bmc1.writePasswordScript(cluster.dir().resolve("pw01")))
                .ipmiDevice(
                    "psu1", psu1, psu1.writePasswordScript(cluster.dir().resolve("pw-psu1")))
                .ipmiDevice(
                    "psu2",
                    psu2,
                    psu2.writePasswordScript(cluster.dir().resolve("pw-psu2"), "wrong"))
                .ipmiDevice(
                    "mgmt", mgmt, mgmt.writePasswordScript(cluster.dir().resolve("pw-mgmt")))
                .node("tpve01", 1, method("power", "tpve01"))
                .node("tpve02", 2, method("dual-psu", "psu1", "psu2"), method("ipmi", "mgmt"))
                .xml());
    SimulatedHost tpve01 = cluster.host("tpve01").poweredBy(bmc1);
    SimulatedHost tpve02 = cluster.host("tpve02").poweredBy(psu1, psu2, mgmt);
    startHosts(conf, tpve01, tpve02);

    SimulatedHost.HeldLock held = tpve02.holdLock(LS, VGLK, "EX");
    Waiting waiting = Waiting.request(session(tpve01, "survivor"), LS, VGLK, LockMode.EX);
    tpve02.crash();
    awaitFencedNeverGrantingEarly("tpve02", waiting, Duration.ofSeconds(60));
    assertThat(waiting.get().fencingToken()).isGreaterThan(held.token());
    assertThat(waiting.grantedAtMillis().get()).isGreaterThan(mgmt.firstReportedOff().get());

    // dual-psu: psu1 off worked, psu2 refused the password, so no status was asked and the
    // method failed; ipmi then switched the host off and confirmed it.
    assertThat(events("tpve02", "agent"))
        .extracting(
            FenceEvent::getMethod,
            FenceEvent::getDevice,
            FenceEvent::getAction,
            FenceEvent::getOutcome)
        .containsExactly(
            tuple("dual-psu", "psu1", "off", "SUCCESS"),
            tuple("dual-psu", "psu2", "off", "FAILED"),
            tuple("ipmi", "mgmt", "off", "SUCCESS"),
            tuple("ipmi", "mgmt", "status", "POWER_OFF"));
    FenceNodeRecord r = cluster.record("tpve02");
    assertThat(r.getMethod()).isEqualTo("ipmi");
    assertThat(r.getHow()).isEqualTo("agent");
    assertThat(psu2.offRequested()).isFalse();
  }
}
