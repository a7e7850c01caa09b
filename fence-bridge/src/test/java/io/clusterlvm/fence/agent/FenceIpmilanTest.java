package io.clusterlvm.fence.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.groups.Tuple.tuple;
import static org.awaitility.Awaitility.await;

import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import io.clusterlvm.fence.agent.FenceAttempt.Outcome;
import io.clusterlvm.fence.config.ClusterConfig;
import io.clusterlvm.fence.config.ClusterNode;
import io.clusterlvm.testing.SimulatedBmc;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.slf4j.LoggerFactory;

/**
 * Fences a simulated host with the real fence_ipmilan through an ipmi_sim BMC on 127.0.0.1: the
 * host is a {@code sleep} process that the BMC's power-off SIGKILLs.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class FenceIpmilanTest {
  /** Distinctive, so a leak is found by a plain substring search. */
  private static final String PASSWORD = "Pw-7f3a9c";

  private static final String WRONG_PASSWORD = "wrong-Pw-55e1";

  /** What the fast runs (power_wait=0) comfortably fit in; ~0.5 s each here. */
  private static final Duration TIMEOUT = Duration.ofSeconds(10);

  @TempDir Path dir;
  private Process host;
  private SimulatedBmc bmc;
  private Path passwdScript;
  private final ListAppender<ILoggingEvent> logs = new ListAppender<>();

  @BeforeEach
  void startHostAndBmc() throws Exception {
    logs.start();
    rootLogger().addAppender(logs);
    host = new ProcessBuilder("sleep", "1000").start();
    bmc = SimulatedBmc.start(host.toHandle(), "admin", PASSWORD);
    passwdScript = bmc.writePasswordScript(dir.resolve("ipmi-password"));
  }

  @AfterEach
  void stopAndCheckLogs() throws Exception {
    try {
      if (bmc != null) {
        bmc.close();
      }
    } finally {
      host.destroyForcibly();
      rootLogger().detachAppender(logs);
    }
    // Whatever a test did, no secret reached a log line.
    assertThat(logs.list)
        .extracting(ILoggingEvent::getFormattedMessage)
        .isNotEmpty()
        .allSatisfy(line -> assertThat(line).doesNotContain(PASSWORD, WRONG_PASSWORD));
  }

  @Test
  void fencesTheHostAndStatusReportsOffOnlyAfterwards() throws Exception {
    // The fencedevice points at a dead port; the node's <device ipport> overrides it, and
    // power_wait=0 must reach the agent (its default of 2 s would make "off" take over 2 s).
    ClusterNode node =
        node(
            """
            <fencedevice name="bmc" agent="fence_ipmilan" ipaddr="127.0.0.1" ipport="1"
                         login="admin" passwd_script="%s" lanplus="0"/>
            """
                .formatted(passwdScript),
            """
            <method name="ipmi"><device name="bmc" ipport="%d" power_wait="0"/></method>
            """
                .formatted(bmc.port()));
    FenceAgentRunner runner = FenceAgentRunner.withDefaultSearchPath(TIMEOUT);

    FenceAttempt before = status(runner, node);
    assertThat(before.outcome()).isEqualTo(Outcome.POWER_ON);
    assertThat(before.exitCode()).isZero();
    assertThat(host.isAlive()).isTrue();

    FenceResult result = runner.fence(node);

    assertThat(result.outcome()).isEqualTo(FenceResult.Outcome.FENCED);
    assertThat(result.method()).contains("ipmi");
    assertThat(result.attempts())
        .extracting(
            FenceAttempt::method, FenceAttempt::device, FenceAttempt::action, FenceAttempt::outcome)
        .containsExactly(
            tuple("ipmi", "bmc", FenceAction.OFF, Outcome.SUCCESS),
            tuple("ipmi", "bmc", FenceAction.STATUS, Outcome.POWER_OFF));
    assertThat(result.attempts().get(0).message()).contains("Success: Powered OFF");
    assertThat(result.attempts().get(1).exitCode()).isEqualTo(2);
    assertThat(result.attempts().get(0).duration()).isLessThan(Duration.ofSeconds(2));
    await().atMost(Duration.ofSeconds(5)).until(() -> !host.isAlive());

    FenceAttempt after = status(runner, node);
    assertThat(after.outcome()).isEqualTo(Outcome.POWER_OFF);
  }

  /**
   * action="reboot": the fence itself is off and status as always (the action never reaches the
   * agent); powerOn then switches the host on through the same BMC, and only for that method.
   */
  @Test
  void aRebootDeviceIsPoweredOnAgainAfterTheFence() throws Exception {
    ClusterNode node =
        node(
            fastBmc(passwdScript),
            """
            <method name="ipmi"><device name="bmc" action="reboot"/></method>
            """);
    FenceAgentRunner runner = FenceAgentRunner.withDefaultSearchPath(TIMEOUT);

    FenceResult result = runner.fence(node);
    assertThat(result.outcome()).isEqualTo(FenceResult.Outcome.FENCED);
    assertThat(result.attempts())
        .extracting(FenceAttempt::action)
        .containsExactly(FenceAction.OFF, FenceAction.STATUS);
    await().atMost(Duration.ofSeconds(5)).until(() -> !host.isAlive());
    assertThat(runner.powerOn(node, "another-method")).isEmpty();

    List<FenceAttempt> on = runner.powerOn(node, "ipmi");
    assertThat(on)
        .extracting(FenceAttempt::action, FenceAttempt::outcome)
        .containsExactly(tuple(FenceAction.ON, Outcome.SUCCESS));
    assertThat(on.get(0).message()).contains("Success: Powered ON");
    FenceAttempt status = status(runner, node);
    assertThat(status.outcome()).isEqualTo(Outcome.POWER_ON);

    // The classic layout says the same with a device that is only switched on again.
    ClusterNode classic =
        node(
            fastBmc(passwdScript),
            """
            <method name="ipmi"><device name="bmc" action="off"/><device name="bmc" action="on"/></method>
            """);
    assertThat(runner.fence(classic).attempts())
        .extracting(FenceAttempt::action, FenceAttempt::outcome)
        .containsExactly(
            tuple(FenceAction.OFF, Outcome.SUCCESS), tuple(FenceAction.STATUS, Outcome.POWER_OFF));
    assertThat(runner.powerOn(classic, "ipmi"))
        .extracting(FenceAttempt::action, FenceAttempt::outcome)
        .containsExactly(tuple(FenceAction.ON, Outcome.SUCCESS));
  }

  @Test
  void wrongPasswordFailsWithinTheTimeoutAndTheHostLives() throws Exception {
    // Left to itself fence_ipmilan takes 8-10 s to give up on a wrong password.
    Duration timeout = Duration.ofSeconds(2);
    ClusterNode node =
        node(
            """
            <fencedevice name="bmc" agent="fence_ipmilan" ipaddr="127.0.0.1" ipport="%d"
                         login="admin" passwd="%s" lanplus="0" power_wait="0"/>
            """
                .formatted(bmc.port(), WRONG_PASSWORD),
            "<method name=\"ipmi\"><device name=\"bmc\"/></method>");

    long start = System.nanoTime();
    FenceResult result = FenceAgentRunner.withDefaultSearchPath(timeout).fence(node);
    Duration elapsed = Duration.ofNanos(System.nanoTime() - start);

    assertThat(result.outcome()).isEqualTo(FenceResult.Outcome.FAILED);
    assertThat(result.method()).isEmpty();
    FenceAttempt off = result.attempts().get(0);
    assertThat(result.attempts()).hasSize(1); // no status after a failed off
    assertThat(off.outcome()).isEqualTo(Outcome.TIMED_OUT);
    assertThat(off.exitCode()).isEqualTo(-1);
    assertThat(off.message())
        .startsWith("timed out after 2000 ms; killed")
        .doesNotContain(WRONG_PASSWORD);
    assertThat(elapsed).isBetween(timeout, timeout.plusSeconds(2));
    assertThat(host.isAlive()).isTrue();
    // The agent's whole process tree went with it: nothing left running ipmitool.
    await().atMost(Duration.ofSeconds(5)).until(() -> agentProcesses().isEmpty());
  }

  @Test
  void aFailingDeviceFailsItsMethodAndTheNextMethodIsTried() throws Exception {
    ClusterNode node =
        node(
            """
            <fencedevice name="psu-a" agent="fence_ipmilan" ipaddr="127.0.0.1" ipport="%1$d"
                         login="admin" passwd_script="%2$s" lanplus="0" power_wait="0"/>
            <fencedevice name="psu-b" agent="fence_ipmilan" ipaddr="127.0.0.1" ipport="%1$d"
                         login="admin" passwd="%3$s" lanplus="0" ipmitool_timeout="1"/>
            """
                .formatted(bmc.port(), passwdScript, WRONG_PASSWORD),
            """
            <method name="dual-psu"><device name="psu-a"/><device name="psu-b"/></method>
            <method name="single"><device name="psu-a"/></method>
            """);

    FenceResult result = FenceAgentRunner.withDefaultSearchPath(TIMEOUT).fence(node);

    assertThat(result.outcome()).isEqualTo(FenceResult.Outcome.FENCED);
    assertThat(result.method()).contains("single");
    // psu-b's failure ends "dual-psu" before any status: the node is not yet known to be off.
    assertThat(result.attempts())
        .extracting(
            FenceAttempt::method, FenceAttempt::device, FenceAttempt::action, FenceAttempt::outcome)
        .containsExactly(
            tuple("dual-psu", "psu-a", FenceAction.OFF, Outcome.SUCCESS),
            tuple("dual-psu", "psu-b", FenceAction.OFF, Outcome.FAILED),
            tuple("single", "psu-a", FenceAction.OFF, Outcome.SUCCESS),
            tuple("single", "psu-a", FenceAction.STATUS, Outcome.POWER_OFF));
    FenceAttempt failed = result.attempts().get(1);
    assertThat(failed.exitCode()).isEqualTo(1);
    assertThat(failed.message()).contains("Failed: Unable to obtain correct plug status");
    assertThat(failed.duration()).isLessThan(TIMEOUT);
    await().atMost(Duration.ofSeconds(5)).until(() -> !host.isAlive());
  }

  @Test
  void passwordScriptOutputNeverReachesMessages() throws Exception {
    // A chatty password script (its stderr is the agent's stderr) and a misspelt option that
    // fencing.py echoes back verbatim, password and all.
    Path chatty = dir.resolve("chatty-password");
    Files.writeString(
        chatty,
        "#!/bin/sh\necho 'pw-script: token zz-LEAK-zz' >&2\nprintf '%s\\n' '" + PASSWORD + "'\n");
    Files.setPosixFilePermissions(chatty, PosixFilePermissions.fromString("rwx------"));
    ClusterNode node =
        node(
            fastBmc(chatty),
            """
            <method name="ipmi"><device name="bmc" pw="%s"/></method>
            """
                .formatted(PASSWORD));

    FenceResult result = FenceAgentRunner.withDefaultSearchPath(TIMEOUT).fence(node);

    assertThat(result.fenced()).isTrue();
    assertThat(result.attempts().get(0).message())
        .contains("Success: Powered OFF")
        .contains("withheld"); // the two lines were there, and were dropped
    assertThat(result.toString()).doesNotContain(PASSWORD, "zz-LEAK-zz");
    assertThat(logs.list)
        .extracting(ILoggingEvent::getFormattedMessage)
        .allSatisfy(line -> assertThat(line).doesNotContain("zz-LEAK-zz"));
  }

  /**
   * The BMC as a fencedevice that answers fast (power_wait=0), its password from {@code script}.
   */
  private String fastBmc(Path script) {
    return """
        <fencedevice name="bmc" agent="fence_ipmilan" ipaddr="127.0.0.1" ipport="%d"
                     login="admin" passwd_script="%s" lanplus="0" power_wait="0"/>
        """
        .formatted(bmc.port(), script);
  }

  /** A status run on the node's first device of its first method. */
  private static FenceAttempt status(FenceAgentRunner runner, ClusterNode node)
      throws InterruptedException {
    return runner.run(
        "tpve02",
        node.methods().get(0),
        node.methods().get(0).devices().get(0),
        FenceAction.STATUS);
  }

  private static ClusterNode node(String fenceDevices, String methods) throws Exception {
    String xml =
        """
        <?xml version="1.0"?>
        <cluster name="test" config_version="1">
          <fencedevices>
        %s
          </fencedevices>
          <clusternodes>
            <clusternode name="tpve02" nodeid="2"><fence>
        %s
            </fence></clusternode>
          </clusternodes>
        </cluster>
        """
            .formatted(fenceDevices, methods);
    return ClusterConfig.parse(xml).node("tpve02").orElseThrow();
  }

  /** fence_ipmilan or ipmitool processes this JVM started, directly or not. */
  private static List<String> agentProcesses() {
    try (Stream<ProcessHandle> all = ProcessHandle.current().descendants()) {
      return all.filter(ProcessHandle::isAlive)
          .map(p -> p.info().commandLine().orElse(""))
          .filter(cmd -> cmd.contains("fence_ipmilan") || cmd.contains("ipmitool"))
          .toList();
    }
  }

  private static Logger rootLogger() {
    return (Logger) LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME);
  }
}
