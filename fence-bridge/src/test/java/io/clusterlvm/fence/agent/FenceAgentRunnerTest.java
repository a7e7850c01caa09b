package io.clusterlvm.fence.agent;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.fence.agent.FenceAttempt.Outcome;
import io.clusterlvm.fence.config.ClusterConfig;
import io.clusterlvm.fence.config.ClusterNode;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.assertj.core.groups.Tuple;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The runner's decisions that need no BMC: where agents are found, what is run in which order. */
@Timeout(value = 10, unit = TimeUnit.SECONDS)
class FenceAgentRunnerTest {
  private static final Duration TIMEOUT = Duration.ofSeconds(5);

  @Test
  void aNodeWithoutFenceMethodRunsNothingAndNeedsAnAck() throws Exception {
    ClusterConfig config =
        ClusterConfig.parse(
            Path.of(
                FenceAgentRunnerTest.class
                    .getResource("/io/clusterlvm/fence/config/tpve-cluster.conf")
                    .toURI()));

    FenceResult result =
        FenceAgentRunner.withDefaultSearchPath(TIMEOUT).fence(config.node("tpve03").orElseThrow());

    assertThat(result.outcome()).isEqualTo(FenceResult.Outcome.NO_FENCE_METHOD);
    assertThat(result.attempts()).isEmpty();
    assertThat(result.fenced()).isFalse();
  }

  @Test
  void anAgentMissingFromTheSearchPathFailsItsMethodAndTheNextIsTried() throws Exception {
    ClusterNode node =
        ClusterConfig.parse(
                """
                <cluster name="c" config_version="1">
                  <fencedevices>
                    <fencedevice name="pdu" agent="fence_no_such_agent" ipaddr="h"/>
                    <fencedevice name="ipmi" agent="fence_ipmilan" ipaddr="h"/>
                  </fencedevices>
                  <clusternodes><clusternode name="n1" nodeid="1"><fence>
                    <method name="first"><device name="pdu"/><device name="ipmi"/></method>
                    <method name="second"><device name="ipmi"/></method>
                  </fence></clusternode></clusternodes>
                </cluster>
                """)
            .node("n1")
            .orElseThrow();
    FenceAgentRunner runner = new FenceAgentRunner(TIMEOUT, List.of(Path.of("/nonexistent")));

    FenceResult result = runner.fence(node);

    assertThat(result.outcome()).isEqualTo(FenceResult.Outcome.FAILED);
    // "first" stops at its first failed device; "second" is still tried.
    assertThat(result.attempts())
        .extracting(
            FenceAttempt::method,
            FenceAttempt::device,
            FenceAttempt::action,
            FenceAttempt::outcome,
            FenceAttempt::exitCode)
        .containsExactly(
            Tuple.tuple("first", "pdu", FenceAction.OFF, Outcome.NOT_STARTED, -1),
            Tuple.tuple("second", "ipmi", FenceAction.OFF, Outcome.NOT_STARTED, -1));
    assertThat(result.attempts().get(0).message())
        .isEqualTo("agent fence_no_such_agent not found in [/nonexistent]");
  }

  @Test
  void agentsAreFoundOnTheSearchPathOrByAbsolutePath() {
    assertThat(FenceAgentRunner.defaultSearchPath())
        .contains(Path.of("/usr/sbin"), Path.of("/sbin"));
    assertThat(FenceAgentRunner.withDefaultSearchPath(TIMEOUT).locate("fence_ipmilan"))
        .hasValueSatisfying(p -> assertThat(p.getFileName()).hasToString("fence_ipmilan"));
    FenceAgentRunner elsewhere = new FenceAgentRunner(TIMEOUT, List.of(Path.of("/nonexistent")));
    assertThat(elsewhere.locate("fence_ipmilan")).isEmpty();
    assertThat(elsewhere.locate("/usr/sbin/fence_ipmilan"))
        .contains(Path.of("/usr/sbin/fence_ipmilan"));
  }

  @Test
  void exitCodesFollowTheFenceAgentsConvention() {
    assertThat(FenceAttempt.outcomeOf(FenceAction.OFF, 0)).isEqualTo(Outcome.SUCCESS);
    assertThat(FenceAttempt.outcomeOf(FenceAction.OFF, 1)).isEqualTo(Outcome.FAILED);
    assertThat(FenceAttempt.outcomeOf(FenceAction.OFF, 2)).isEqualTo(Outcome.FAILED);
    assertThat(FenceAttempt.outcomeOf(FenceAction.STATUS, 0)).isEqualTo(Outcome.POWER_ON);
    assertThat(FenceAttempt.outcomeOf(FenceAction.STATUS, 2)).isEqualTo(Outcome.POWER_OFF);
    assertThat(FenceAttempt.outcomeOf(FenceAction.STATUS, 1)).isEqualTo(Outcome.FAILED);
  }
}
