package io.clusterlvm.fence.config;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Turns a cluster.conf element tree into a {@link ClusterConfig}, collecting every problem rather
 * than stopping at the first, so an operator fixes a file in one round.
 */
final class ClusterConfParser {

  /** The config, or null when there is an error; problems in line order. */
  record Result(ClusterConfig config, List<ConfigProblem> problems) {}

  /**
   * Sections other daemons of the CMAN stack read (corosync, rgmanager, qdiskd, dlm_controld...). A
   * migrated file still has them; they are expected, so they get no warning.
   */
  private static final Set<String> OTHER_SECTIONS =
      Set.of(
          "totem",
          "logging",
          "rm",
          "quorumd",
          "dlm",
          "gfs_controld",
          "group",
          "fence_xvmd",
          "uidgid",
          "fence_virtd");

  private static final Set<String> CLUSTER_ATTRIBUTES = Set.of("name", "config_version");
  private static final Set<String> FENCE_DAEMON_ATTRIBUTES =
      Set.of("post_fail_delay", "post_join_delay");
  private static final Set<String> NODE_ATTRIBUTES = Set.of("name", "nodeid", "votes", "weight");
  private static final Set<String> METHOD_ATTRIBUTES = Set.of("name");

  private final List<ConfigProblem> problems = new ArrayList<>();
  private final Map<String, FenceDevice> devices = new LinkedHashMap<>();
  private final Map<String, Integer> deviceLines = new HashMap<>();
  private final Set<String> rejectedDevices = new HashSet<>();

  /**
   * Whether the checks added after configs were first published are errors (a new config: validate,
   * activate) or warnings (a config already in force, read again by an upgraded agent or server).
   */
  private final boolean strict;

  private ClusterConfParser(boolean strict) {
    this.strict = strict;
  }

  static Result parse(String xml) {
    return parse(xml, true);
  }

  static Result parse(String xml, boolean strict) {
    XmlElement root;
    try {
      root = XmlElement.read(xml);
    } catch (XmlElement.MalformedXmlException e) {
      return new Result(
          null,
          List.of(
              ConfigProblem.error(
                  e.line, "malformed XML: " + e.getMessage() + " Fix the XML syntax there.")));
    }
    ClusterConfParser parser = new ClusterConfParser(strict);
    ClusterConfig config = parser.interpret(root, xml);
    return new Result(config, parser.problemsInLineOrder());
  }

  private List<ConfigProblem> problemsInLineOrder() {
    List<ConfigProblem> sorted = new ArrayList<>(problems);
    sorted.sort(Comparator.comparingInt(ConfigProblem::line)); // stable: same line keeps order
    return List.copyOf(sorted);
  }

  private ClusterConfig interpret(XmlElement root, String xml) {
    if (!root.name().equals("cluster")) {
      error(
          root,
          "the root element is <%s>; a cluster.conf starts with <cluster name=\"...\" config_version=\"1\">",
          root.name());
      return null;
    }
    warnUnknownAttributes(root, CLUSTER_ATTRIBUTES);
    String name = root.attributes().get("name");
    if (isBlank(name)) {
      error(root, "<cluster> has no name; add name=\"...\" (the cluster's name)");
    }
    long configVersion = configVersion(root);

    Map<String, String> cman = new LinkedHashMap<>();
    FenceDaemonOptions fenceDaemon = FenceDaemonOptions.DEFAULTS;
    // Devices first, whatever the file order, so node references resolve in one pass.
    for (XmlElement section : root.children()) {
      if (section.name().equals("fencedevices")) {
        for (XmlElement child : section.children()) {
          if (child.name().equals("fencedevice")) {
            fenceDevice(child);
          } else {
            misspeltListElement(child, section, "fencedevice");
          }
        }
      }
    }
    List<ClusterNode> nodes = new ArrayList<>();
    Map<String, XmlElement> nodesByName = new HashMap<>();
    Map<Integer, XmlElement> nodesById = new HashMap<>();
    boolean anyNode = false;
    for (XmlElement section : root.children()) {
      switch (section.name()) {
        case "fencedevices" -> {} // read above
        // cman's own attributes and children (multicast, altname) are corosync's business.
        case "cman" -> cman.putAll(section.attributes());
        case "fence_daemon" -> fenceDaemon = fenceDaemon(section);
        case "clusternodes" -> {
          for (XmlElement child : section.children()) {
            if (child.name().equals("clusternode")) {
              anyNode = true;
              ClusterNode node = clusterNode(child, nodesByName, nodesById);
              if (node != null) {
                nodes.add(node);
              }
            } else {
              misspeltListElement(child, section, "clusternode");
            }
          }
        }
        default -> {
          if (!OTHER_SECTIONS.contains(section.name())) {
            warnUnknownElement(section, root);
          }
        }
      }
    }
    if (!anyNode) {
      // Every host that failed would wait for an operator: the fencer fences only nodes listed.
      strictError(
          root,
          "<cluster> lists no node; add <clusternodes> with a <clusternode name=\"...\""
              + " nodeid=\"...\"> for every host");
    }
    if (problems.stream().anyMatch(ConfigProblem::isError)) {
      return null;
    }
    return new ClusterConfig(
        name, configVersion, cman, fenceDaemon, devices, nodes, problemsInLineOrder(), xml);
  }

  private long configVersion(XmlElement cluster) {
    String raw = cluster.attributes().get("config_version");
    if (raw == null) {
      error(
          cluster,
          "<cluster> has no config_version; add config_version=\"1\" and raise it on every change");
      return -1;
    }
    try {
      long version = Long.parseLong(raw.trim());
      if (version >= 0) {
        return version;
      }
    } catch (NumberFormatException e) {
      // reported below
    }
    error(
        cluster,
        "config_version=\"%s\" is not a whole number >= 0; use e.g. config_version=\"1\"",
        raw);
    return -1;
  }

  private FenceDaemonOptions fenceDaemon(XmlElement e) {
    warnUnknownAttributes(e, FENCE_DAEMON_ATTRIBUTES);
    Duration postFail = seconds(e, "post_fail_delay", FenceDaemonOptions.DEFAULTS.postFailDelay());
    Duration postJoin = seconds(e, "post_join_delay", FenceDaemonOptions.DEFAULTS.postJoinDelay());
    return new FenceDaemonOptions(postFail, postJoin);
  }

  private static final long MAX_DELAY_SECONDS = 86_400;

  private Duration seconds(XmlElement e, String attribute, Duration defaultValue) {
    String raw = e.attributes().get(attribute);
    if (raw == null) {
      return defaultValue;
    }
    try {
      long seconds = Long.parseLong(raw.trim());
      if (seconds > MAX_DELAY_SECONDS) {
        // A failed host's locks stay frozen for the delay: a day is already far past any use,
        // and much more would not fit the fencer's clock arithmetic. A config in force that has
        // one (published before this check) waits a day.
        strictError(
            e,
            "%s=\"%s\" is more than a day; use a number of seconds up to %d",
            attribute,
            raw,
            MAX_DELAY_SECONDS);
        return Duration.ofSeconds(MAX_DELAY_SECONDS);
      }
      if (seconds >= 0) {
        return Duration.ofSeconds(seconds);
      }
      // fenced read -1 as "wait for ever"; a fencer that never fences keeps locks frozen for ever.
      error(
          e,
          "%s=\"%s\" is negative; waiting for ever is not supported, use a number of seconds >= 0",
          attribute,
          raw);
    } catch (NumberFormatException ex) {
      error(
          e,
          "%s=\"%s\" is not a whole number of seconds; use e.g. %s=\"%d\"",
          attribute,
          raw,
          attribute,
          defaultValue.toSeconds());
    }
    return defaultValue;
  }

  private void fenceDevice(XmlElement e) {
    String name = e.attributes().get("name");
    String agent = e.attributes().get("agent");
    boolean ok = true;
    if (isBlank(name)) {
      error(
          e,
          "<fencedevice> has no name; add name=\"...\" (what <device name=\"...\"/> elements refer to)");
      ok = false;
    } else if (deviceLines.containsKey(name)) {
      error(
          e,
          "<fencedevice name=\"%s\"> is defined twice (first on line %d); rename or remove one",
          name,
          deviceLines.get(name));
      ok = false;
    }
    String label = isBlank(name) ? "<fencedevice>" : "<fencedevice name=\"" + name + "\">";
    if (isBlank(agent)) {
      error(
          e,
          "%s has no agent; add agent=\"fence_...\" (the fence-agents program for this device, e.g. fence_ipmilan)",
          label);
      ok = false;
    } else if (!isValidAgent(agent)) {
      error(
          e,
          "%s has agent=\"%s\"; use a program name like fence_ipmilan or an absolute path",
          label,
          agent);
      ok = false;
    }
    ok &= checkAgentAttributes(e, label);
    if (!ok && !isBlank(name)) {
      rejectedDevices.add(name);
    }
    if (ok) {
      deviceLines.put(name, e.line());
      devices.put(
          name, new FenceDevice(name, agent, options(e.attributes(), Set.of("name", "agent"))));
    }
  }

  private ClusterNode clusterNode(
      XmlElement e, Map<String, XmlElement> byName, Map<Integer, XmlElement> byId) {
    warnUnknownAttributes(e, NODE_ATTRIBUTES);
    String name = e.attributes().get("name");
    boolean ok = true;
    if (isBlank(name)) {
      error(e, "<clusternode> has no name; add name=\"...\" (the node's host name)");
      ok = false;
    } else if (byName.containsKey(name)) {
      error(
          e,
          "<clusternode name=\"%s\"> is listed twice (first on line %d); remove one",
          name,
          byName.get(name).line());
      ok = false;
    } else {
      byName.put(name, e);
    }
    String label = isBlank(name) ? "<clusternode>" : "<clusternode name=\"" + name + "\">";
    Integer nodeId = wholeNumber(e, label, "nodeid", null, 1);
    if (nodeId != null) {
      XmlElement other = byId.putIfAbsent(nodeId, e);
      if (other != null) {
        error(
            e,
            "nodeid=\"%d\" of %s is already used by %s (line %d); give every node its own nodeid",
            nodeId,
            label,
            other.attributes().get("name"),
            other.line());
        ok = false;
      }
    } else {
      ok = false;
    }
    Integer votes = wholeNumber(e, label, "votes", 1, 0);
    ok &= votes != null;

    List<FenceMethod> methods = new ArrayList<>();
    for (XmlElement child : e.children()) {
      switch (child.name()) {
        case "fence" -> {
          for (XmlElement method : child.children()) {
            if (method.name().equals("method")) {
              FenceMethod m = fenceMethod(method, label);
              if (m == null) {
                ok = false;
              } else {
                if (methods.stream().anyMatch(other -> other.name().equals(m.name()))) {
                  // The record, the history and the power-on after a fence name the method.
                  strictError(
                      method,
                      "%s has two methods named \"%s\"; give each its own name",
                      label,
                      m.name());
                }
                methods.add(m);
              }
            } else {
              misspeltListElement(method, child, "method");
            }
          }
        }
        case "altname" -> {} // a second ring address: corosync's business
        case "unfence" ->
            warning(
                child,
                "<unfence> of %s is ignored: this bridge fences by power, it never unfences",
                label);
        default -> warnUnknownElement(child, e);
      }
    }
    if (!ok) {
      return null;
    }
    if (methods.isEmpty()) {
      warning(
          e,
          "%s has no fence method; if it fails, its locks stay frozen until an operator"
              + " acknowledges the fence (dlmctl ack)",
          label);
    }
    return new ClusterNode(name, nodeId, votes, methods);
  }

  private FenceMethod fenceMethod(XmlElement e, String nodeLabel) {
    warnUnknownAttributes(e, METHOD_ATTRIBUTES);
    String name = e.attributes().get("name");
    boolean ok = true;
    if (isBlank(name)) {
      error(
          e,
          "<method> of %s has no name; add name=\"...\" (e.g. name=\"power\"), events name the method",
          nodeLabel);
      ok = false;
    }
    String label =
        (isBlank(name) ? "<method>" : "<method name=\"" + name + "\">") + " of " + nodeLabel;
    List<FenceDeviceRef> refs = new ArrayList<>();
    List<XmlElement> refElements = new ArrayList<>();
    for (XmlElement child : e.children()) {
      if (!child.name().equals("device")) {
        warnUnknownElement(child, e);
        continue;
      }
      String deviceName = child.attributes().get("name");
      if (isBlank(deviceName)) {
        error(child, "<device> in %s has no name; add name=\"...\" naming a <fencedevice>", label);
        ok = false;
        continue;
      }
      String deviceLabel = "<device name=\"" + deviceName + "\">";
      ok &= checkAgentAttributes(child, deviceLabel);
      FenceDevice device = devices.get(deviceName);
      if (device == null) {
        // A fencedevice that exists but was rejected (no agent, ...) is reported once, there.
        if (!rejectedDevices.contains(deviceName)) {
          error(
              child,
              "%s names no <fencedevice>; add <fencedevice name=\"%s\" .../> or fix the name",
              deviceLabel,
              deviceName);
        }
        ok = false;
        continue;
      }
      refs.add(new FenceDeviceRef(device, options(child.attributes(), Set.of("name"))));
      refElements.add(child);
    }
    if (ok && refs.isEmpty()) {
      // An empty method would "succeed" without switching anything off.
      error(e, "%s has no <device>; add one or remove the method", label);
      ok = false;
    }
    if (ok) {
      // A device only switched on again must be one the method switches off, outlet for outlet:
      // else a power supply the host runs on would never be switched off, and the host counted
      // fenced while it runs. A config already in force, read before "on" meant this, switches
      // such a device off, as it did then.
      AgentOptions off = AgentOptions.of(Map.of("action", "off"));
      for (int i = 0; i < refs.size(); i++) {
        FenceDeviceRef r = refs.get(i);
        if (r.role() == FenceDeviceRef.Role.ON_AFTER
            && refs.stream().noneMatch(o -> o.switchesOff() && o.sameOutletAs(r))) {
          strictError(
              refElements.get(i),
              "<device name=\"%s\"> of %s says action=\"on\", but the method switches that"
                  + " outlet off nowhere; add the same device with the same options and no action"
                  + " (or action=\"off\") before it",
              r.name(),
              label);
          if (strict) {
            ok = false;
          } else {
            refs.set(i, new FenceDeviceRef(r.device(), r.nodeOptions().overriddenBy(off)));
          }
        }
      }
    }
    return ok ? new FenceMethod(name, refs) : null;
  }

  /** Checks shared by fencedevice and device elements, whose attributes go to an agent. */
  private boolean checkAgentAttributes(XmlElement e, String label) {
    boolean ok = true;
    for (Map.Entry<String, String> a : e.attributes().entrySet()) {
      String key = a.getKey();
      String value = a.getValue();
      if (value.indexOf('\n') >= 0 || value.indexOf('\r') >= 0) {
        // Options travel one per line on the agent's stdin; a line break would inject another.
        error(
            e,
            "attribute %s of %s contains a line break; agents read one option per line, put it on one line",
            key,
            label);
        ok = false;
      }
      if (AgentOptions.isPassword(key) && !value.isEmpty()) {
        warning(
            e,
            "%s has %s inline; prefer passwd_script, so the password is not copied wherever"
                + " cluster.conf is published",
            label,
            key);
      } else if (AgentOptions.isSecret(key) && !value.isEmpty()) {
        warning(
            e,
            "%s has the credential %s inline; it is published with cluster.conf (to ZooKeeper"
                + " on config activate), readable by whoever can read ZooKeeper",
            label,
            key);
      }
      if (FenceDeviceRef.ACTION_KEYS.contains(key) && !FenceDeviceRef.isKnownAction(value)) {
        // fenced passed it to the agent; the bridge runs off and status itself, then on where
        // asked. A config already in force keeps working: the device is switched off.
        strictError(
            e,
            "%s=\"%s\" of %s is not one the bridge knows; use \"off\" (the default: the host"
                + " stays off), \"reboot\" (switched off, and on again once the host is fenced) or"
                + " \"on\" (only switched on again then); any other is switched off",
            key,
            value,
            label);
      }
      if (key.equals("nodename")) {
        warning(e, "%s=\"%s\" of %s is ignored: the bridge sets %s itself", key, value, label, key);
      }
    }
    return ok;
  }

  private Integer wholeNumber(
      XmlElement e, String label, String attribute, Integer defaultValue, int min) {
    String raw = e.attributes().get(attribute);
    if (raw == null) {
      if (defaultValue == null) {
        error(
            e,
            "%s has no %s; add %s=\"...\" (a whole number >= %d)",
            label,
            attribute,
            attribute,
            min);
      }
      return defaultValue;
    }
    try {
      int value = Integer.parseInt(raw.trim());
      if (value >= min) {
        return value;
      }
    } catch (NumberFormatException ex) {
      // reported below
    }
    error(e, "%s=\"%s\" of %s is not a whole number >= %d", attribute, raw, label, min);
    return null;
  }

  private static AgentOptions options(Map<String, String> attributes, Set<String> drop) {
    Map<String, String> kept = new LinkedHashMap<>(attributes);
    kept.keySet().removeAll(drop);
    return AgentOptions.of(kept);
  }

  private static boolean isValidAgent(String agent) {
    if (agent.chars().anyMatch(Character::isWhitespace)) {
      return false;
    }
    return agent.startsWith("/") ? !agent.contains("/../") : !agent.contains("/");
  }

  private void warnUnknownAttributes(XmlElement e, Set<String> known) {
    for (String attribute : e.attributes().keySet()) {
      if (!known.contains(attribute)) {
        warning(e, "unknown attribute %s on <%s>; ignored", attribute, e.name());
      }
    }
  }

  /**
   * An element other than {@code expected} in a list of them (<clusternodes>, <fencedevices>,
   * <fence>) is an error, not a warning: a misspelt node or method would be dropped, and the host
   * would fail over to an operator's ack instead of its fence agent.
   */
  private void misspeltListElement(XmlElement e, XmlElement parent, String expected) {
    strictError(
        e,
        "unknown element <%s> in <%s>; only <%s> belongs there (is it misspelt?)",
        e.name(),
        parent.name(),
        expected);
  }

  private void warnUnknownElement(XmlElement e, XmlElement parent) {
    warning(e, "unknown element <%s> in <%s>; ignored", e.name(), parent.name());
  }

  /** An error in a new config; a warning in one already in force (see {@link #strict}). */
  private void strictError(XmlElement e, String format, Object... args) {
    if (strict) {
      error(e, format, args);
    } else {
      warning(e, format, args);
    }
  }

  private void error(XmlElement e, String format, Object... args) {
    problems.add(ConfigProblem.error(e.line(), String.format(format, args)));
  }

  private void warning(XmlElement e, String format, Object... args) {
    problems.add(ConfigProblem.warning(e.line(), String.format(format, args)));
  }

  private static boolean isBlank(String s) {
    return s == null || s.isBlank();
  }
}
