package io.clusterlvm.fence.config;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;

/**
 * A parsed and validated cluster.conf, in the format of the CMAN stack (Red Hat Cluster, Proxmox VE
 * 2/3), so an operator migrating from it keeps their file.
 *
 * <p>Only what the fence bridge needs is interpreted: {@code <cluster name config_version>}, {@code
 * <cman>} (attributes kept), {@code <fence_daemon>}, {@code <fencedevices>} and {@code
 * <clusternodes>} with their fence methods. Other sections of that stack ({@code <totem>}, {@code
 * <logging>}, {@code <rm>}, {@code <quorumd>}, ...) are accepted and ignored; unknown elements and
 * attributes are ignored with a warning. {@link #sourceXml()} keeps the file's text verbatim so an
 * activated config can be published exactly as the operator wrote it.
 *
 * @param cman the attributes of {@code <cman/>} (empty when absent)
 * @param devices fence devices by name, in file order
 * @param nodes cluster nodes in file order
 * @param warnings what was accepted but deserves a look (unknown elements, nodes without fencing)
 * @param sourceXml the text the config was parsed from; it may hold inline passwords, so it is left
 *     out of {@link #toString()}
 */
public record ClusterConfig(
    String name,
    long configVersion,
    Map<String, String> cman,
    FenceDaemonOptions fenceDaemon,
    Map<String, FenceDevice> devices,
    List<ClusterNode> nodes,
    List<ConfigProblem> warnings,
    String sourceXml) {

  public ClusterConfig {
    Objects.requireNonNull(name, "name");
    Objects.requireNonNull(fenceDaemon, "fenceDaemon");
    Objects.requireNonNull(sourceXml, "sourceXml");
    cman = Collections.unmodifiableMap(new LinkedHashMap<>(cman));
    devices = Collections.unmodifiableMap(new LinkedHashMap<>(devices));
    nodes = List.copyOf(nodes);
    warnings = List.copyOf(warnings);
  }

  /**
   * Parses and validates {@code xml}.
   *
   * @throws ClusterConfigException listing every error, each with its line and what to change
   */
  public static ClusterConfig parse(String xml) throws ClusterConfigException {
    return parse(xml, true);
  }

  /**
   * Parses a config that is already in force (published to ZooKeeper, or a host's local file of a
   * version that may have been), as {@link #parse(String)} does, except that the checks added since
   * configs were first published are warnings: an upgraded agent or server must not lose the config
   * the cluster runs on. {@link #parse(String)} applies them to every new config.
   */
  public static ClusterConfig parsePublished(String xml) throws ClusterConfigException {
    return parse(xml, false);
  }

  private static ClusterConfig parse(String xml, boolean strict) throws ClusterConfigException {
    ClusterConfParser.Result result = ClusterConfParser.parse(xml, strict);
    if (result.config() == null) {
      throw new ClusterConfigException(result.problems());
    }
    return result.config();
  }

  /** Reads {@code file} as UTF-8 and {@linkplain #parse(String) parses} it. */
  public static ClusterConfig parse(Path file) throws IOException, ClusterConfigException {
    return parse(Files.readString(file, StandardCharsets.UTF_8));
  }

  /**
   * Every problem in {@code xml}, errors and warnings, in file order; no errors means {@link
   * #parse(String)} succeeds. For a CLI that checks a file before it is activated.
   */
  public static List<ConfigProblem> validate(String xml) {
    return ClusterConfParser.parse(xml).problems();
  }

  /** Reads {@code file} as UTF-8 and {@linkplain #validate(String) validates} it. */
  public static List<ConfigProblem> validate(Path file) throws IOException {
    return validate(Files.readString(file, StandardCharsets.UTF_8));
  }

  public Optional<ClusterNode> node(String nodeName) {
    return nodes.stream().filter(n -> n.name().equals(nodeName)).findFirst();
  }

  /**
   * Whether a password is written in the file itself ({@code passwd=}, {@code snmp_priv_passwd=},
   * ...), on a {@code <fencedevice>} or on a node's {@code <device>} (a common layout: one BMC
   * password per node), rather than read by a {@code passwd_script}.
   */
  public boolean holdsInlinePassword() {
    return devices.values().stream().anyMatch(d -> !d.options().passwordValues().isEmpty())
        || nodes.stream()
            .flatMap(n -> n.methods().stream())
            .flatMap(m -> m.devices().stream())
            .anyMatch(ref -> !ref.nodeOptions().passwordValues().isEmpty());
  }

  @Override
  public String toString() {
    return "ClusterConfig[name="
        + name
        + ", configVersion="
        + configVersion
        + ", cman="
        + cman
        + ", fenceDaemon="
        + fenceDaemon
        + ", devices="
        + devices.values()
        + ", nodes="
        + nodes
        + ", warnings="
        + warnings.size()
        + "]";
  }
}
