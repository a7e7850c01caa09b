package io.clusterlvm.dlm.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.fence.agent.Backoff;
import io.clusterlvm.fence.agent.FenceAgentRunner;
import io.clusterlvm.fence.config.ClusterConfig;
import io.clusterlvm.fence.domain.FenceBridge;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.NodeMembership;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.testing.IpmiSim;
import io.clusterlvm.testing.SimulatedBmc;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.test.TestingServer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A host that reboots and rejoins while the fencer still works through its fence methods is not
 * powered off by the next method: the fencer asks its record before each method. The first method
 * here points at a dead BMC, so fence_ipmilan spends about 5 s in time-outs, the window in which
 * the host comes back; the second is a working BMC that powers the host (a {@code sleep} process).
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class FenceOfARejoinedHostTest {
  @TempDir Path dir;

  @Test
  void aHostThatRejoinsDuringAFailedMethodIsNotPoweredOffByTheNext() throws Exception {
    Process host = new ProcessBuilder("sleep", "600").start();
    try (TestingServer zk = new TestingServer();
        DlmServer server =
            ServerTestSupport.leading(DlmServerConfig.forTest(zk.getConnectString()));
        DlmClient dlm = DlmClient.connect("127.0.0.1:" + server.port());
        SimulatedBmc bmc = SimulatedBmc.start(host.toHandle());
        CuratorFramework fencerSide = ServerTestSupport.connected(zk);
        CuratorFramework firstBoot = ServerTestSupport.agentSession(zk);
        CuratorFramework secondBoot = ServerTestSupport.agentSession(zk)) {
      ClusterConfig conf = conf(bmc);
      FenceStore store = new FenceStore(fencerSide, "/clusterlvm"); // outlives the host's sessions
      NodeMembership first =
          new NodeMembership(new FenceStore(firstBoot, "/clusterlvm"), dlm, "n1", "boot-1", "");
      first.start();
      long firstIncarnation = first.incarnation();

      try (FenceBridge fencer =
          new FenceBridge(
              store,
              dlm,
              "n2",
              () -> conf,
              FenceAgentRunner.withDefaultSearchPath(Duration.ofSeconds(20)),
              Backoff.DEFAULT)) {
        fencer.start();
        // The host dies: its lease goes with its session, and the fencer starts on the dead BMC.
        first.close();
        firstBoot.close();
        await("the fencer runs its agents")
            .atMost(Duration.ofSeconds(20))
            .until(
                () ->
                    record(store).getState() == FenceState.FENCING
                        && record(store).getLastResult().startsWith("running fence agents"));

        // It comes back with a new boot id, which counts as fenced, and rejoins.
        FenceStore rebooted = new FenceStore(secondBoot, "/clusterlvm");
        try (NodeMembership second = new NodeMembership(rebooted, dlm, "n1", "boot-2", "")) {
          second.start();
          assertThat(second.incarnation()).isGreaterThan(firstIncarnation);
          assertThat(agentRuns(store))
              .as("the rejoin came before the fence's agent runs ended (the first takes about 5 s)")
              .isEmpty();

          await("the fencer stops before the second method")
              .atMost(Duration.ofSeconds(30))
              .until(() -> !events(store, "superseded").isEmpty());
          assertThat(events(store, "superseded"))
              .singleElement()
              .satisfies(
                  e -> {
                    assertThat(e.getIncarnation()).isEqualTo(firstIncarnation);
                    assertThat(e.getMessage())
                        .contains(
                            "the record is now MEMBER in incarnation " + second.incarnation());
                  });
          assertThat(agentRuns(store))
              .extracting(FenceEvent::getMethod, FenceEvent::getAction)
              .containsExactly(org.assertj.core.groups.Tuple.tuple("dead-bmc", "off"));
          assertThat(Files.readString(bmc.workDir().resolve("power")).strip()).isEqualTo("on");
          assertThat(host.isAlive()).as("the rejoined host still runs").isTrue();
          FenceNodeRecord now = record(store);
          assertThat(now.getState()).isEqualTo(FenceState.MEMBER);
          assertThat(now.getIncarnation()).isEqualTo(second.incarnation());
        }
      }
    } finally {
      host.destroyForcibly();
    }
  }

  /** n1's first method is a BMC nobody answers at; its second powers the host. */
  private ClusterConfig conf(SimulatedBmc bmc) throws Exception {
    Path password = bmc.writePasswordScript(dir.resolve("ipmi-password"));
    return ClusterConfig.parse(
        String.format(
            """
            <cluster name="test" config_version="1">
              <fence_daemon post_fail_delay="0" post_join_delay="0"/>
              <clusternodes>
                <clusternode name="n1" nodeid="1"><fence>
                  <method name="dead-bmc"><device name="dead"/></method>
                  <method name="ipmi"><device name="live"/></method>
                </fence></clusternode>
                <clusternode name="n2" nodeid="2"/>
              </clusternodes>
              <fencedevices>
                <fencedevice name="dead" agent="fence_ipmilan" ipaddr="%1$s" ipport="%2$d"
                    login="admin" passwd_script="%5$s" power_wait="0" ipmitool_timeout="1"/>
                <fencedevice name="live" agent="fence_ipmilan" ipaddr="%1$s" ipport="%3$d"
                    login="%4$s" passwd_script="%5$s" power_wait="0"/>
              </fencedevices>
            </cluster>
            """,
            IpmiSim.ADDRESS, IpmiSim.freeUdpPort(), bmc.port(), bmc.username(), password));
  }

  private static FenceNodeRecord record(FenceStore store) throws Exception {
    return store.nodeRecord("n1").orElseThrow().value();
  }

  private static java.util.List<FenceEvent> events(FenceStore store, String event)
      throws Exception {
    return store.history("n1", 1000).stream().filter(e -> e.getEvent().equals(event)).toList();
  }

  private static java.util.List<FenceEvent> agentRuns(FenceStore store) throws Exception {
    return events(store, "agent");
  }
}
