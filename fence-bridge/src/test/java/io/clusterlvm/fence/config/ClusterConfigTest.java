package io.clusterlvm.fence.config;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.catchThrowableOfType;
import static org.assertj.core.groups.Tuple.tuple;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class ClusterConfigTest {

  private static Path tpveFile() throws Exception {
    return Path.of(ClusterConfigTest.class.getResource("tpve-cluster.conf").toURI());
  }

  @Test
  void proxmoxClusterConfLoadsUnchanged() throws Exception {
    ClusterConfig config = ClusterConfig.parse(tpveFile());

    assertThat(config.name()).isEqualTo("tpve");
    assertThat(config.configVersion()).isEqualTo(5);
    assertThat(config.cman()).containsEntry("keyfile", "/var/lib/pve-cluster/corosync.authkey");
    assertThat(config.fenceDaemon()).isEqualTo(FenceDaemonOptions.DEFAULTS);
    assertThat(config.fenceDaemon().postJoinDelay()).isEqualTo(Duration.ofSeconds(6));
    assertThat(config.devices()).containsOnlyKeys("tpve01", "tpve02");
    assertThat(config.devices().get("tpve01").agent()).isEqualTo("fence_ilo");
    assertThat(config.nodes())
        .extracting(ClusterNode::name, ClusterNode::nodeId, ClusterNode::votes)
        .containsExactly(tuple("tpve01", 1, 1), tuple("tpve02", 2, 1), tuple("tpve03", 3, 1));

    ClusterNode tpve02 = config.node("tpve02").orElseThrow();
    assertThat(tpve02.methods()).extracting(FenceMethod::name).containsExactly("power");
    FenceDeviceRef ref = tpve02.methods().get(0).devices().get(0);
    assertThat(ref.agentOptions().asMap())
        .containsExactly(
            Map.entry("ipaddr", "IP_ILO_TPVE02"),
            Map.entry("passwd_script", "/usr/local/pvesync/ilo_pass/tpve02"),
            Map.entry("login", "LOGIN"));

    // tpve03 has no fence device: valid, but an operator must ack its fence.
    ClusterNode tpve03 = config.node("tpve03").orElseThrow();
    assertThat(tpve03.hasFenceMethod()).isFalse();
    assertThat(config.warnings())
        .singleElement()
        .satisfies(
            w -> {
              assertThat(w.line()).isEqualTo(11);
              assertThat(w.message()).contains("tpve03").contains("no fence method");
            });
    assertThat(config.sourceXml()).isEqualTo(Files.readString(tpveFile()));
    assertThat(ClusterConfig.parse(config.sourceXml())).isEqualTo(config);
  }

  @Test
  void methodsInOrderDevicesAllAndNodeAttributesOverDeviceAttributes() throws Exception {
    ClusterConfig config =
        ClusterConfig.parse(
            """
            <?xml version="1.0"?>
            <cluster name="c" config_version="12">
              <fence_daemon post_fail_delay="20" post_join_delay="45"/>
              <totem token="10000"><interface ringnumber="0"/></totem>
              <logging debug="on"><logging_daemon name="fenced" debug="on"/></logging>
              <fencedevices>
                <fencedevice name="pdu-a" agent="fence_apc" ipaddr="10.0.0.1" login="apc" passwd_script="/etc/pw" power_wait="5"/>
                <fencedevice name="pdu-b" agent="fence_apc" ipaddr="10.0.0.2" login="apc" passwd_script="/etc/pw"/>
                <fencedevice name="ipmi-n1" agent="/opt/fence/fence_ipmilan" ipaddr="10.0.1.1" login="root" passwd_script="/etc/pw1"/>
              </fencedevices>
              <clusternodes>
                <clusternode name="n1" nodeid="1" votes="2">
                  <fence>
                    <method name="ipmi"><device name="ipmi-n1" lanplus="1"/></method>
                    <method name="dual-pdu">
                      <device name="pdu-a" port="3" power_wait="0"/>
                      <device name="pdu-b" port="3"/>
                    </method>
                  </fence>
                </clusternode>
              </clusternodes>
              <rm><failoverdomains/><resources><ip address="10.0.0.9"/></resources></rm>
            </cluster>
            """);

    assertThat(config.configVersion()).isEqualTo(12);
    assertThat(config.fenceDaemon())
        .isEqualTo(new FenceDaemonOptions(Duration.ofSeconds(20), Duration.ofSeconds(45)));
    assertThat(config.warnings()).isEmpty(); // totem, logging, rm: expected sections, no noise

    ClusterNode n1 = config.node("n1").orElseThrow();
    assertThat(n1.votes()).isEqualTo(2);
    assertThat(n1.methods()).extracting(FenceMethod::name).containsExactly("ipmi", "dual-pdu");
    assertThat(n1.methods().get(0).devices().get(0).agent()).isEqualTo("/opt/fence/fence_ipmilan");

    List<FenceDeviceRef> pdus = n1.methods().get(1).devices();
    assertThat(pdus).extracting(FenceDeviceRef::name).containsExactly("pdu-a", "pdu-b");
    // power_wait of the node's <device> wins over the fencedevice's; port comes from the node.
    assertThat(pdus.get(0).agentOptions().asMap())
        .containsExactly(
            Map.entry("ipaddr", "10.0.0.1"),
            Map.entry("login", "apc"),
            Map.entry("passwd_script", "/etc/pw"),
            Map.entry("power_wait", "0"),
            Map.entry("port", "3"));
    assertThat(pdus.get(1).agentOptions().asMap())
        .containsEntry("ipaddr", "10.0.0.2")
        .containsEntry("port", "3")
        .doesNotContainKeys("name", "agent", "power_wait");
  }

  @Test
  void unknownElementsAndAttributesAreIgnoredWithWarnings() throws Exception {
    ClusterConfig config =
        ClusterConfig.parse(
            """
            <cluster name="c" config_version="1" colour="blue">
              <fencedevices>
                <fencedevice name="d" agent="fence_ipmilan" ipaddr="h"/>
              </fencedevices>
              <clusternodes>
                <clusternode name="n1" nodeid="1" rack="7">
                  <fence><method name="m" flavour="x"><device name="d" nodename="x"/></method></fence>
                </clusternode>
              </clusternodes>
              <quorum_magic/>
            </cluster>
            """);

    assertThat(config.warnings())
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 1: unknown attribute colour on <cluster>; ignored",
            "line 6: unknown attribute rack on <clusternode>; ignored",
            "line 7: unknown attribute flavour on <method>; ignored",
            "line 7: nodename=\"x\" of <device name=\"d\"> is ignored: the bridge sets nodename"
                + " itself",
            "line 10: unknown element <quorum_magic> in <cluster>; ignored");
    assertThat(config.warnings()).noneMatch(ConfigProblem::isError);
    assertThat(config.node("n1").orElseThrow().methods()).hasSize(1);
  }

  /**
   * A misspelt node, method or device would be dropped with a warning, and the host would wait for
   * an operator's ack instead of being fenced: an error. So is a file that lists no node.
   */
  @Test
  void aMisspeltNodeMethodOrDeviceAndAFileWithoutNodesAreErrors() throws Exception {
    List<ConfigProblem> misspelt =
        ClusterConfig.validate(
            """
            <cluster name="c" config_version="1">
              <fencedevices>
                <fencedevice name="d" agent="fence_ipmilan" ipaddr="h"/>
                <fencedevic name="e" agent="fence_ipmilan" ipaddr="h"/>
              </fencedevices>
              <clusternodes>
                <clusternode name="n1" nodeid="1">
                  <fence><metod name="m"><device name="d"/></metod></fence>
                </clusternode>
                <clusternod name="n2" nodeid="2"/>
              </clusternodes>
            </cluster>
            """);
    assertThat(misspelt)
        .filteredOn(ConfigProblem::isError)
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 4: unknown element <fencedevic> in <fencedevices>; only <fencedevice> belongs"
                + " there (is it misspelt?)",
            "line 8: unknown element <metod> in <fence>; only <method> belongs there (is it"
                + " misspelt?)",
            "line 10: unknown element <clusternod> in <clusternodes>; only <clusternode> belongs"
                + " there (is it misspelt?)");

    // A config already in force is read again by an upgraded agent or server: these are warnings
    // there, so that the cluster does not lose the config it runs on.
    String inForce =
        """
        <cluster name="c" config_version="1">
          <clusternodes>
            <clusternode name="n1" nodeid="1"/>
            <clusternod name="n2" nodeid="2"/>
          </clusternodes>
        </cluster>
        """;
    assertThatThrownBy(() -> ClusterConfig.parse(inForce))
        .isInstanceOf(ClusterConfigException.class);
    ClusterConfig published = ClusterConfig.parsePublished(inForce);
    assertThat(published.node("n1")).isPresent();
    assertThat(published.warnings())
        .extracting(ConfigProblem::toString)
        .contains(
            "line 4: unknown element <clusternod> in <clusternodes>; only <clusternode> belongs"
                + " there (is it misspelt?)");

    assertThat(ClusterConfig.validate("<cluster name=\"c\" config_version=\"1\"/>"))
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 1: <cluster> lists no node; add <clusternodes> with a <clusternode"
                + " name=\"...\" nodeid=\"...\"> for every host");
  }

  @Test
  void everyErrorIsReportedWithItsLineAndAFix() {
    String xml =
        """
        <?xml version="1.0"?>
        <cluster name="c">
          <fence_daemon post_fail_delay="soon" post_join_delay="9223372036854775807"/>
          <fencedevices>
            <fencedevice name="d1" agent="fence_ipmilan" ipaddr="h1"/>
            <fencedevice name="d2" ipaddr="h2"/>
            <fencedevice name="d1" agent="fence_ipmilan" ipaddr="h3"/>
          </fencedevices>
          <clusternodes>
            <clusternode name="n1" nodeid="1"><fence><method name="m"><device name="tpve9"/></method></fence></clusternode>
            <clusternode name="n1" nodeid="2"/>
            <clusternode name="n3" nodeid="1"/>
            <clusternode name="n4" nodeid="four" votes="-1"/>
            <clusternode name="n5" nodeid="5"><fence><method name="empty"/></fence></clusternode>
            <clusternode name="n6" nodeid="6"><fence><method name="m"><device name="d2"/></method></fence></clusternode>
          </clusternodes>
        </cluster>
        """;

    ClusterConfigException e =
        catchThrowableOfType(() -> ClusterConfig.parse(xml), ClusterConfigException.class);

    assertThat(e.errors())
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 2: <cluster> has no config_version; add config_version=\"1\" and raise it on"
                + " every change",
            "line 3: post_fail_delay=\"soon\" is not a whole number of seconds; use e.g."
                + " post_fail_delay=\"0\"",
            "line 3: post_join_delay=\"9223372036854775807\" is more than a day; use a number"
                + " of seconds up to 86400",
            "line 6: <fencedevice name=\"d2\"> has no agent; add agent=\"fence_...\" (the"
                + " fence-agents program for this device, e.g. fence_ipmilan)",
            "line 7: <fencedevice name=\"d1\"> is defined twice (first on line 5); rename or"
                + " remove one",
            "line 10: <device name=\"tpve9\"> names no <fencedevice>; add <fencedevice"
                + " name=\"tpve9\" .../> or fix the name",
            "line 11: <clusternode name=\"n1\"> is listed twice (first on line 10); remove one",
            "line 12: nodeid=\"1\" of <clusternode name=\"n3\"> is already used by n1 (line 10);"
                + " give every node its own nodeid",
            "line 13: nodeid=\"four\" of <clusternode name=\"n4\"> is not a whole number >= 1",
            "line 13: votes=\"-1\" of <clusternode name=\"n4\"> is not a whole number >= 0",
            "line 14: <method name=\"empty\"> of <clusternode name=\"n5\"> has no <device>; add"
                + " one or remove the method");
    // The message lists them all, so a CLI or log shows the whole picture at once.
    assertThat(e.getMessage())
        .startsWith("cluster.conf has 11 error(s):")
        .contains("line 10: <device name=\"tpve9\">")
        .contains("line 14:");
    assertThat(ClusterConfig.validate(xml)).containsAll(e.problems());
  }

  @Test
  void configVersionMustBeANumber() {
    assertThatThrownBy(
            () ->
                ClusterConfig.parse(
                    "<?xml version=\"1.0\"?>\n<cluster name=\"c\" config_version=\"5a\"/>\n"))
        .isInstanceOf(ClusterConfigException.class)
        .hasMessageContaining(
            "line 2: config_version=\"5a\" is not a whole number >= 0; use e.g."
                + " config_version=\"1\"");
  }

  @Test
  void malformedXmlReportsTheParsersLine() {
    String xml =
        """
        <?xml version="1.0"?>
        <cluster name="c" config_version="1">
          <clusternodes>
            <clusternode name="n1" nodeid="1">
          </clusternodes>
        </cluster>
        """;

    List<ConfigProblem> problems = ClusterConfig.validate(xml);

    assertThat(problems)
        .singleElement()
        .satisfies(
            p -> {
              assertThat(p.isError()).isTrue();
              assertThat(p.line()).isEqualTo(5);
              assertThat(p.message()).startsWith("malformed XML: ").contains("clusternode");
            });
  }

  @Test
  void rootMustBeCluster() {
    assertThat(ClusterConfig.validate("<clusterconf/>"))
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 1: the root element is <clusterconf>; a cluster.conf starts with <cluster"
                + " name=\"...\" config_version=\"1\">");
  }

  /**
   * A device's action says what a fence does with it: "off" (the default) switches it off; "reboot"
   * also switches it on again once the host is fenced; "on" only does the latter, as in the classic
   * two-power-supply method (off, off, on, on). Case does not matter.
   */
  @Test
  void aDeviceActionSaysWhatAFenceDoesWithIt() throws Exception {
    String template =
        """
        <cluster name="c" config_version="1">
          <fencedevices>
            <fencedevice name="d" agent="fence_ipmilan" ipaddr="h" %s/>
            <fencedevice name="e" agent="fence_ipmilan" ipaddr="i"/>
          </fencedevices>
          <clusternodes>
            <clusternode name="n1" nodeid="1">
              <fence><method name="m"><device name="d"/><device name="e" %s/></method></fence>
            </clusternode>
          </clusternodes>
        </cluster>
        """;
    assertThat(devices(ClusterConfig.parse(template.formatted("action=\"Reboot\"", ""))))
        .extracting(FenceDeviceRef::role)
        .containsExactly(FenceDeviceRef.Role.OFF_THEN_ON, FenceDeviceRef.Role.OFF);
    assertThat(devices(ClusterConfig.parse(template.formatted("", "action=\"off\""))))
        .extracting(FenceDeviceRef::role)
        .containsExactly(FenceDeviceRef.Role.OFF, FenceDeviceRef.Role.OFF);

    FenceMethod classic =
        ClusterConfig.parse(
                twoSwitches(
                    """
                    <device name="apc1" port="1" action="off"/>
                    <device name="apc2" port="1" action="off"/>
                    <device name="apc1" port="1" action="on"/>
                    <device name="apc2" port="1" action="on"/>
                    """))
            .node("n1")
            .orElseThrow()
            .methods()
            .get(0);
    assertThat(classic.offDevices())
        .extracting(FenceDeviceRef::name)
        .containsExactly("apc1", "apc2");
    assertThat(classic.devices())
        .extracting(FenceDeviceRef::powersOnAfterFence)
        .containsExactly(false, false, true, true);
  }

  /**
   * An action the bridge does not know, and a method whose devices are all only switched on again,
   * are errors in a new config. A config already in force keeps working (as every agent reads it,
   * refusing it would stop all fencing): a warning, and the devices are switched off.
   */
  @Test
  void anUnknownActionOrAMethodThatSwitchesNothingOffIsAnErrorOnlyInANewConfig() throws Exception {
    String template =
        """
        <cluster name="c" config_version="1">
          <fencedevices><fencedevice name="d" agent="fence_ipmilan" ipaddr="h"/></fencedevices>
          <clusternodes>
            <clusternode name="n1" nodeid="1">
              <fence><method name="m"><device name="d" action="%s"/></method></fence>
            </clusternode>
          </clusternodes>
        </cluster>
        """;
    assertThat(ClusterConfig.validate(template.formatted("status")))
        .filteredOn(ConfigProblem::isError)
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 5: action=\"status\" of <device name=\"d\"> is not one the bridge knows; use"
                + " \"off\" (the default: the host stays off), \"reboot\" (switched off, and on"
                + " again once the host is fenced) or \"on\" (only switched on again then); any"
                + " other is switched off");
    assertThat(ClusterConfig.validate(template.formatted("ON")))
        .filteredOn(ConfigProblem::isError)
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 5: <device name=\"d\"> of <method name=\"m\"> of <clusternode name=\"n1\"> says"
                + " action=\"on\", but the method switches that outlet off nowhere; add the same"
                + " device with the same options and no action (or action=\"off\") before it");

    for (String action : List.of("status", "ON")) {
      ClusterConfig inForce = ClusterConfig.parsePublished(template.formatted(action));
      assertThat(inForce.warnings()).noneMatch(ConfigProblem::isError).isNotEmpty();
      assertThat(devices(inForce))
          .as(action)
          .singleElement()
          .satisfies(d -> assertThat(d.switchesOff()).isTrue());
    }
  }

  /**
   * A device only switched on again must be switched off by the same method, outlet for outlet:
   * else the host runs on through it and is counted fenced (found in review).
   */
  @Test
  void aDeviceSwitchedOnAgainMustBeSwitchedOffByTheMethod() throws Exception {
    String xml =
        twoSwitches(
            """
            <device name="apc1" port="1" option="off"/>
            <device name="apc1" port="1" option="on"/>
            <device name="apc2" port="1" action="on"/>
            <device name="apc2" port="2" action="off"/>
            """);
    assertThat(ClusterConfig.validate(xml))
        .filteredOn(ConfigProblem::isError)
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 11: <device name=\"apc2\"> of <method name=\"power\"> of <clusternode"
                + " name=\"n1\"> says action=\"on\", but the method switches that outlet off"
                + " nowhere; add the same device with the same options and no action (or"
                + " action=\"off\") before it");
    // In force: that device is switched off too; apc1's older spelling "option" is understood.
    assertThat(devices(ClusterConfig.parsePublished(xml)))
        .extracting(FenceDeviceRef::role)
        .containsExactly(
            FenceDeviceRef.Role.OFF,
            FenceDeviceRef.Role.ON_AFTER,
            FenceDeviceRef.Role.OFF,
            FenceDeviceRef.Role.OFF);
  }

  @Test
  void twoMethodsOfANodeWithOneNameAreAnError() {
    assertThat(
            ClusterConfig.validate(
                """
                <cluster name="c" config_version="1">
                  <fencedevices><fencedevice name="d" agent="fence_ipmilan" ipaddr="h"/></fencedevices>
                  <clusternodes>
                    <clusternode name="n1" nodeid="1">
                      <fence>
                        <method name="m"><device name="d" port="1"/></method>
                        <method name="m"><device name="d" port="2"/></method>
                      </fence>
                    </clusternode>
                  </clusternodes>
                </cluster>
                """))
        .filteredOn(ConfigProblem::isError)
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 7: <clusternode name=\"n1\"> has two methods named \"m\"; give each its own"
                + " name");
  }

  /**
   * A config with two power switches, apc1 and apc2, and node n1 whose one method ("power") has
   * {@code devices}. The {@code <device>} lines start on line 9.
   */
  private static String twoSwitches(String devices) {
    return """
        <cluster name="c" config_version="1">
          <fencedevices>
            <fencedevice name="apc1" agent="fence_apc" ipaddr="a"/>
            <fencedevice name="apc2" agent="fence_apc" ipaddr="b"/>
          </fencedevices>
          <clusternodes>
            <clusternode name="n1" nodeid="1">
              <fence><method name="power">
        %s      </method></fence>
            </clusternode>
          </clusternodes>
        </cluster>
        """
        .formatted(devices);
  }

  private static List<FenceDeviceRef> devices(ClusterConfig config) {
    return config.node("n1").orElseThrow().methods().get(0).devices();
  }

  @Test
  void lineBreakInAnAgentOptionIsAnError() {
    // A line break would let one attribute inject another option line into the agent's stdin.
    List<ConfigProblem> problems =
        ClusterConfig.validate(
            """
            <cluster name="c" config_version="1">
              <fencedevices><fencedevice name="d" agent="fence_ipmilan" ipaddr="h&#10;action=on"/></fencedevices>
              <clusternodes><clusternode name="n1" nodeid="1"/></clusternodes>
            </cluster>
            """);

    assertThat(problems)
        .filteredOn(ConfigProblem::isError)
        .extracting(ConfigProblem::toString)
        .containsExactly(
            "line 2: attribute ipaddr of <fencedevice name=\"d\"> contains a line break; agents"
                + " read one option per line, put it on one line");
  }

  /** The check that keeps a password out of ZooKeeper sees one on a node's device as well. */
  @Test
  void anInlinePasswordIsFoundOnADeviceAndOnANodesDevice() throws Exception {
    String template =
        """
        <cluster name="c" config_version="3">
          <fencedevices>
            <fencedevice name="d" agent="fence_ipmilan" ipaddr="h" login="root" %s/>
          </fencedevices>
          <clusternodes>
            <clusternode name="n1" nodeid="1">
              <fence><method name="m"><device name="d" %s/></method></fence>
            </clusternode>
          </clusternodes>
        </cluster>
        """;
    String script = "passwd_script=\"/etc/pw\"";
    assertThat(ClusterConfig.parse(template.formatted(script, "")).holdsInlinePassword()).isFalse();
    assertThat(
            ClusterConfig.parse(template.formatted("passwd=\"hunter2\"", "")).holdsInlinePassword())
        .isTrue();
    assertThat(
            ClusterConfig.parse(template.formatted(script, "passwd=\"n0de-secret\""))
                .holdsInlinePassword())
        .isTrue();
    assertThat(
            ClusterConfig.parse(template.formatted(script, "passwd_script=\"/etc/pw-n1\""))
                .holdsInlinePassword())
        .isFalse();
  }

  @Test
  void passwordsNeverAppearInToStringOrProblems(@TempDir Path dir) throws Exception {
    String xml =
        """
        <cluster name="c" config_version="3">
          <fencedevices>
            <fencedevice name="d" agent="fence_ipmilan" ipaddr="h" login="root" passwd="hunter2" hexadecimal_kg="4b47"/>
            <fencedevice name="s" agent="fence_apc_snmp" ipaddr="h" community="c0mmunity" snmp_priv_passwd="privpw1"/>
            <fencedevice name="a" agent="fence_aws" access-key="AKIAEXAMPLE" secret-key="aws-s3cret" region="r"/>
            <fencedevice name="v" agent="fence_ibm_vpc" apikey="ibm-apikey" token_file="/var/cache/tok"/>
            <fencedevice name="p" agent="fence_ibm_powervs" token="pvs-token"/>
          </fencedevices>
          <clusternodes>
            <clusternode name="n1" nodeid="1">
              <fence><method name="m"><device name="d" password="n0de-secret"/><device name="s" port="1"/></method><method name="cloud"><device name="a" plug="i-1"/><device name="v" plug="i-1"/><device name="p" plug="i-1"/></method></fence>
            </clusternode>
          </clusternodes>
        </cluster>
        """;
    List<String> secrets =
        List.of(
            "hunter2",
            "n0de-secret",
            "c0mmunity",
            "privpw1",
            "4b47",
            "AKIAEXAMPLE",
            "aws-s3cret",
            "ibm-apikey",
            "pvs-token");

    ClusterConfig config = ClusterConfig.parse(xml);
    FenceMethod method = config.node("n1").orElseThrow().methods().get(0);
    List<String> rendered =
        List.of(
            config.toString(),
            config.devices().toString(),
            method.toString(),
            method.devices().get(0).agentOptions().toString(),
            config.node("n1").orElseThrow().methods().get(1).toString(),
            config.warnings().toString(),
            ClusterConfig.validate(xml).toString());
    for (String text : rendered) {
      for (String secret : secrets) {
        assertThat(text).doesNotContain(secret);
      }
    }
    assertThat(method.devices().get(0).agentOptions().toString())
        .contains("passwd=" + AgentOptions.MASK, "password=" + AgentOptions.MASK);
    // A file's path is no secret, nor is fence_scsi's reservation key.
    assertThat(config.node("n1").orElseThrow().methods().get(1).toString())
        .contains("token_file=/var/cache/tok");
    assertThat(AgentOptions.isSecret("key")).isFalse();
    // Credentials with no script form can't be kept out of the file: they don't stop its
    // publication (passwords do), and they are warned about.
    String kgOnly =
        """
        <cluster name="c" config_version="3">
          <fencedevices>
            <fencedevice name="d" agent="fence_ipmilan" ipaddr="h" passwd_script="/etc/pw" hexadecimal_kg="4b47"/>
          </fencedevices>
          <clusternodes>
            <clusternode name="n1" nodeid="1"><fence><method name="m"><device name="d"/></method></fence></clusternode>
          </clusternodes>
        </cluster>
        """;
    ClusterConfig withKg = ClusterConfig.parse(kgOnly);
    assertThat(withKg.holdsInlinePassword()).isFalse();
    assertThat(withKg.warnings())
        .extracting(ConfigProblem::message)
        .anyMatch(m -> m.contains("the credential hexadecimal_kg inline"))
        .noneMatch(m -> m.contains("4b47"));
    // Agents do get them.
    assertThat(method.devices().get(0).agentOptions().asMap())
        .containsEntry("passwd", "hunter2")
        .containsEntry("password", "n0de-secret");
    // Inline passwords are worth a warning: the file is published verbatim.
    assertThat(config.warnings())
        .extracting(ConfigProblem::message)
        .anyMatch(m -> m.contains("passwd inline"));

    // An erroneous file's exception does not leak them either.
    Path broken = dir.resolve("cluster.conf");
    Files.writeString(broken, xml.replace("config_version=\"3\"", ""));
    ClusterConfigException e =
        catchThrowableOfType(() -> ClusterConfig.parse(broken), ClusterConfigException.class);
    for (String secret : secrets) {
      assertThat(e.getMessage()).doesNotContain(secret);
      assertThat(e.problems().toString()).doesNotContain(secret);
    }
  }
}
