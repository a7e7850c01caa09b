package io.clusterlvm.it.fence;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Writes cluster.conf files in the classic CMAN format, shaped like the seed file of issue 4 (cman
 * element, fencedevices, clusternodes with fence/method/device): the tests fence through the same
 * kind of file an operator migrates.
 */
final class ClusterConfXml {
  private final String cluster;
  private final long version;
  private String fenceDaemon = "";
  private final List<String> devices = new ArrayList<>();
  private final List<String> nodes = new ArrayList<>();

  /** A method: its name and the devices that must all be switched off. */
  record Method(String name, List<String> devices) {}

  ClusterConfXml(String cluster, long version) {
    this.cluster = cluster;
    this.version = version;
  }

  static Method method(String name, String... devices) {
    return new Method(name, List.of(devices));
  }

  ClusterConfXml fenceDaemon(int postFailDelay, int postJoinDelay) {
    fenceDaemon =
        String.format(
            "  <fence_daemon post_fail_delay=\"%d\" post_join_delay=\"%d\"/>%n",
            postFailDelay, postJoinDelay);
    return this;
  }

  /**
   * A fence_ipmilan device for a simulated BMC on 127.0.0.1: the seed file's fence_ilo line with
   * the agent swapped, the same ipaddr/login/passwd_script attributes, plus power_wait=0 (the BMC
   * answers at once) and a short ipmitool_timeout (a wrong password fails in seconds, not 10).
   */
  ClusterConfXml ipmiDevice(String name, int port, String login, Path passwdScript) {
    Map<String, String> a = new LinkedHashMap<>();
    a.put("agent", "fence_ipmilan");
    a.put("ipaddr", HostBmc.ADDRESS);
    a.put("ipport", Integer.toString(port));
    a.put("name", name);
    a.put("passwd_script", passwdScript.toString());
    a.put("login", login);
    a.put("power_wait", "0");
    a.put("ipmitool_timeout", "1");
    StringBuilder b = new StringBuilder("    <fencedevice");
    a.forEach((k, v) -> b.append(' ').append(k).append("=\"").append(v).append('"'));
    devices.add(b.append("/>").toString());
    return this;
  }

  ClusterConfXml ipmiDevice(String name, HostBmc bmc, Path passwdScript) {
    return ipmiDevice(name, bmc.port(), bmc.username(), passwdScript);
  }

  ClusterConfXml node(String name, int nodeId, Method... methods) {
    StringBuilder b =
        new StringBuilder(
            String.format("    <clusternode name=\"%s\" votes=\"1\" nodeid=\"%d\"", name, nodeId));
    if (methods.length == 0) {
      nodes.add(b.append("/>").toString());
      return this;
    }
    b.append("><fence>");
    for (Method m : methods) {
      b.append("<method name=\"").append(m.name()).append("\">");
      for (String d : m.devices()) {
        b.append("<device name=\"").append(d).append("\"/>");
      }
      b.append("</method>");
    }
    nodes.add(b.append("</fence></clusternode>").toString());
    return this;
  }

  String xml() {
    StringBuilder b = new StringBuilder("<?xml version=\"1.0\"?>\n");
    b.append(String.format("<cluster name=\"%s\" config_version=\"%d\">%n", cluster, version));
    b.append("  <cman keyfile=\"/var/lib/pve-cluster/corosync.authkey\"/>\n");
    b.append(fenceDaemon);
    b.append("  <fencedevices>\n");
    devices.forEach(d -> b.append(d).append('\n'));
    b.append("  </fencedevices>\n  <clusternodes>\n");
    nodes.forEach(n -> b.append(n).append('\n'));
    b.append("  </clusternodes>\n</cluster>\n");
    return b.toString();
  }
}
