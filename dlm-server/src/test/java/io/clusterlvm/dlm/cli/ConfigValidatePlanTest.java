package io.clusterlvm.dlm.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code dlmctl config validate --plan}: what a fence of each node will do, as the bridge reads the
 * file, so that an operator sees whether a host comes back on after its fence before it fails.
 */
class ConfigValidatePlanTest {
  @TempDir Path dir;

  @Test
  void thePlanSaysWhichDevicesSwitchOffAndWhichSwitchOnAgain() throws Exception {
    Path conf = dir.resolve("cluster.conf");
    Files.writeString(
        conf,
        """
        <cluster name="c" config_version="1">
          <fencedevices>
            <fencedevice name="apc1" agent="fence_apc" ipaddr="a" passwd_script="/etc/pw"/>
            <fencedevice name="apc2" agent="fence_apc" ipaddr="b"/>
            <fencedevice name="bmc" agent="fence_ipmilan" ipaddr="c"/>
          </fencedevices>
          <clusternodes>
            <clusternode name="n1" nodeid="1">
              <fence>
                <method name="ipmi"><device name="bmc" action="reboot" passwd="s3cret"/></method>
                <method name="power">
                  <device name="apc1" port="1" action="off"/>
                  <device name="apc2" port="1" action="off"/>
                  <device name="apc1" port="1" action="on"/>
                  <device name="apc2" port="1" action="on"/>
                </method>
              </fence>
            </clusternode>
            <clusternode name="n2" nodeid="2">
              <fence><method name="ipmi"><device name="bmc" ipport="6231" passwd="s3cret"
                ipaddr="admin:s3cret@c"/></method></fence>
            </clusternode>
            <clusternode name="n3" nodeid="3"/>
          </clusternodes>
        </cluster>
        """);

    StringWriter out = new StringWriter();
    int exit =
        Dlmctl.commandLine()
            .setOut(new PrintWriter(out))
            .execute("config", "validate", "--plan", conf.toString());

    assertThat(exit).isZero();
    assertThat(out.toString())
        .contains(
            "n1 method ipmi: off, then status OFF: bmc {passwd=******}; once fenced, on: bmc"
                + " {passwd=******}\n",
            "n1 method power: off, then status OFF: apc1 {port=1} apc2 {port=1}; once fenced,"
                + " on: apc1 {port=1} apc2 {port=1}\n",
            "n2 method ipmi: off, then status OFF: bmc {ipport=6231, passwd=******,"
                + " ipaddr=******}; the host stays off\n",
            "n3: no fence method; a failure waits for 'dlmctl ack'\n")
        .doesNotContain("s3cret");
  }
}
