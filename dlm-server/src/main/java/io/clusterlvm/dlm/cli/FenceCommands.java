package io.clusterlvm.dlm.cli;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.util.JsonFormat;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.proto.ListNodesResponse;
import io.clusterlvm.dlm.proto.NodeInfo;
import io.clusterlvm.dlm.proto.NodeState;
import io.clusterlvm.fence.config.AgentOptions;
import io.clusterlvm.fence.config.ClusterConfig;
import io.clusterlvm.fence.config.ClusterConfigException;
import io.clusterlvm.fence.config.ClusterNode;
import io.clusterlvm.fence.config.ConfigProblem;
import io.clusterlvm.fence.config.FenceDeviceRef;
import io.clusterlvm.fence.config.FenceMethod;
import io.clusterlvm.fence.proto.AcknowledgeRequest;
import io.clusterlvm.fence.proto.AcknowledgeResponse;
import io.clusterlvm.fence.proto.ActivateConfigRequest;
import io.clusterlvm.fence.proto.ActivateConfigResponse;
import io.clusterlvm.fence.proto.ConfigRecord;
import io.clusterlvm.fence.proto.FenceEvent;
import io.clusterlvm.fence.proto.FenceNodeInfo;
import io.clusterlvm.fence.proto.FenceNodeRecord;
import io.clusterlvm.fence.proto.FenceRequest;
import io.clusterlvm.fence.proto.FenceState;
import io.clusterlvm.fence.proto.GetConfigRequest;
import io.clusterlvm.fence.proto.HistoryRequest;
import io.clusterlvm.fence.proto.HistoryResponse;
import io.clusterlvm.fence.proto.ListFenceNodesRequest;
import io.clusterlvm.fence.proto.ListFenceNodesResponse;
import io.clusterlvm.fence.proto.MembershipRequest;
import io.grpc.Status;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.ZoneId;
import java.time.format.DateTimeFormatter;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** dlmctl's fence-domain commands: nodes, fence, ack, fence-history, config. */
final class FenceCommands {
  private FenceCommands() {}

  static String operator() {
    String user = System.getenv("SUDO_USER");
    if (user == null || user.isEmpty()) {
      user = System.getProperty("user.name", "unknown");
    }
    return user + "@" + Dlmctl.hostname();
  }

  static FenceDomainClient fenceClient(Dlmctl.Connection conn) {
    return new FenceDomainClient(conn.servers, conn.callTimeout, conn.credentials());
  }

  /** The words fenced's operators know: "member", "wait state fencing", ... */
  static String stateWords(FenceNodeInfo n) {
    if (!n.getRecordError().isEmpty()) {
      return "record unreadable";
    }
    FenceNodeRecord r = n.getRecord();
    return switch (r.getState()) {
      case MEMBER -> r.getFenceRequested() ? "member, fence requested" : "member";
      case FAILED -> "failed, wait post_fail_delay";
      case FENCING ->
          n.getHasFenceMethod()
              ? "wait state fencing"
              : "wait state fencing (no fence device: needs dlmctl ack)";
      case FENCED -> r.getLocksPurged() ? "fenced" : "fenced, releasing locks";
      case LEFT -> "left";
      default -> n.getInConfig() ? "never joined" : "unknown";
    };
  }

  @Command(
      name = "nodes",
      mixinStandardHelpOptions = true,
      description = {
        "Every node: fence state, incarnation, since when, locks, the fence method being tried",
        "and the last agent result; the nodes of cluster.conf that never joined too."
      })
  static final class Nodes implements Callable<Integer> {
    @Mixin Dlmctl.Connection conn;
    @Mixin Dlmctl.Output output;
    @Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() throws InvalidProtocolBufferException {
      ListFenceNodesResponse fence;
      try (FenceDomainClient f = fenceClient(conn)) {
        fence = f.read(s -> s.listNodes(ListFenceNodesRequest.getDefaultInstance()));
      }
      // The fence states come from ZooKeeper through any server; the lock counts need the lock
      // service's leader. During a leader election, or with the leader cut off, an operator still
      // needs the fence states (which host is FENCING, why), so they are shown without the counts.
      List<NodeInfo> dlmNodes = List.of();
      String dlmUnanswered = null;
      try (Dlmctl.Connection.Client client = conn.connect()) {
        DlmClient c = client.dlm();
        dlmNodes = c.nodes();
      } catch (DlmClientException e) {
        if (e.code() != Status.Code.UNAVAILABLE && e.code() != Status.Code.DEADLINE_EXCEEDED) {
          throw e;
        }
        dlmUnanswered = e.getMessage();
      }
      PrintWriter out = spec.commandLine().getOut();
      if (output.json()) {
        JsonFormat.Printer p = JsonFormat.printer().includingDefaultValueFields();
        out.println(
            "{\"fence\": "
                + p.print(fence)
                + ",\n \"dlm\": "
                + (dlmUnanswered == null
                    ? p.print(ListNodesResponse.newBuilder().addAllNodes(dlmNodes))
                    : "null,\n \"dlmError\": "
                        + p.print(com.google.protobuf.StringValue.of(dlmUnanswered)))
                + "}");
        out.flush();
        return unanswered(dlmUnanswered);
      }
      Map<String, NodeInfo> byName = new HashMap<>();
      dlmNodes.forEach(n -> byName.put(n.getNode(), n));
      long now = System.currentTimeMillis();
      Table t =
          new Table("NODE", "STATE", "INC", "SINCE", "LOCKS", "LEASE", "METHOD", "LAST RESULT");
      java.util.Set<String> shown = new java.util.HashSet<>();
      for (FenceNodeInfo n : fence.getNodesList()) {
        FenceNodeRecord r = n.getRecord();
        shown.add(r.getNode());
        NodeInfo d = byName.get(r.getNode());
        t.row(
            r.getNode(),
            stateWords(n),
            r.getIncarnation() == 0 ? "-" : r.getIncarnation(),
            r.getSinceEpochMillis() == 0 ? "-" : Table.age(r.getSinceEpochMillis(), now) + " ago",
            dlmUnanswered != null ? "?" : d == null ? 0 : d.getLocks(),
            n.getLeaseHeld() ? "held" : "none",
            r.getMethod().isEmpty() ? "-" : r.getMethod(),
            !n.getRecordError().isEmpty()
                ? n.getRecordError()
                : r.getLastResult().isEmpty() ? "-" : r.getLastResult());
      }
      // Nodes joined straight to the lock service, without an agent (no fence domain record).
      for (NodeInfo d : dlmNodes) {
        if (!shown.contains(d.getNode())) {
          t.row(
              d.getNode(),
              d.getState() == NodeState.NODE_MEMBER ? "member (no agent)" : "left",
              d.getIncarnation(),
              Table.age(d.getSinceEpochMillis(), now) + " ago",
              d.getLocks(),
              "none",
              "-",
              "-");
        }
      }
      t.print(out);
      out.println(
          "config_version "
              + (fence.getConfigVersion() == 0 ? "(none activated)" : fence.getConfigVersion())
              + ", fencer: "
              + (fence.getFencer().isEmpty() ? "(none elected)" : fence.getFencer()));
      out.flush();
      return unanswered(dlmUnanswered);
    }

    /** 0, or 3 with a word on stderr when the lock service did not give its part. */
    private int unanswered(String why) {
      if (why == null) {
        return 0;
      }
      spec.commandLine()
          .getErr()
          .println(
              "dlmctl: the lock service did not answer ("
                  + why
                  + "): lock counts unknown, and nodes joined without an agent not shown; the"
                  + " fence states are current");
      return Dlmctl.FAILED;
    }
  }

  @Command(
      name = "fence",
      mixinStandardHelpOptions = true,
      description = {
        "Fence a member on purpose (the old fence_node), e.g. to test its fence agents.",
        "The elected fencer runs the node's fence methods: the host is powered off, and the VMs",
        "on it die. Without --yes, shows the node's state and the command to confirm; watch the",
        "fence with 'dlmctl nodes'."
      })
  static final class Fence implements Callable<Integer> {
    @Mixin Dlmctl.Connection conn;
    @Spec CommandLine.Model.CommandSpec spec;

    @Parameters(paramLabel = "NODE")
    String node;

    @Option(
        names = "--yes",
        description = "Confirm the fence (required; there is no interactive prompt).")
    boolean yes;

    @Override
    public Integer call() {
      try (FenceDomainClient f = fenceClient(conn)) {
        if (!yes) {
          // A typo in NODE powers off the wrong hypervisor: show whom, and ask for --yes, as
          // ack and purge do (found in review).
          FenceNodeInfo info =
              fenceNode(f, node).orElseThrow(() -> new CliError("no node named " + node));
          FenceNodeRecord r = info.getRecord();
          spec.commandLine()
              .getErr()
              .println(
                  "dlmctl: "
                      + node
                      + " is "
                      + stateWords(info)
                      + " in incarnation "
                      + r.getIncarnation()
                      + (info.getLeaseHeld() ? ", its agent heartbeating" : "")
                      + ". Fencing it powers it off, and the VMs on it die. To go on, run: dlmctl"
                      + " fence "
                      + node
                      + " --yes");
          spec.commandLine().getErr().flush();
          return 2;
        }
        f.call(
            s -> s.fence(FenceRequest.newBuilder().setNode(node).setOperator(operator()).build()));
      }
      spec.commandLine().getOut().printf("fence of %s requested; see 'dlmctl nodes'%n", node);
      return 0;
    }
  }

  @Command(
      name = "ack",
      mixinStandardHelpOptions = true,
      description = {
        "Acknowledge that a FAILED/FENCING node is powered off (the old fence_ack_manual).",
        "Its locks are released at once. DANGEROUS: if the node still runs, shared storage",
        "may be corrupted. Only do this after checking the node is off."
      })
  static final class Ack implements Callable<Integer> {
    @Mixin Dlmctl.Connection conn;
    @Spec CommandLine.Model.CommandSpec spec;

    @Parameters(paramLabel = "NODE")
    String node;

    @Option(
        names = "--incarnation",
        paramLabel = "N",
        description =
            "The incarnation you checked is off, as 'dlmctl ack NODE' shows it (required): a node"
                + " that started again since is not acknowledged.")
    Long incarnation;

    @Option(
        names = "--yes",
        description = "Confirm that NODE is off (required; there is no interactive prompt).")
    boolean yes;

    @Option(
        names = "--force",
        description =
            "Acknowledge although NODE still holds its membership lease (its agent heartbeats):"
                + " only when you know it is off and its lease has not expired yet.")
    boolean force;

    @Override
    public Integer call() {
      if (incarnation != null && incarnation <= 0) {
        throw new CommandLine.ParameterException(
            spec.commandLine(), "--incarnation must be a node's incarnation (1 or more)");
      }
      try (FenceDomainClient f = fenceClient(conn)) {
        if (!yes || incarnation == null) {
          FenceNodeInfo info =
              fenceNode(f, node).orElseThrow(() -> new CliError("no node named " + node));
          FenceNodeRecord r = info.getRecord();
          if (r.getState() != FenceState.FAILED && r.getState() != FenceState.FENCING) {
            // Suggesting the ack command would only lead to a refusal (found in review).
            throw new CliError(
                node
                    + " is "
                    + stateWords(info)
                    + " in incarnation "
                    + r.getIncarnation()
                    + "; only a FAILED or FENCING node can be acknowledged");
          }
          spec.commandLine()
              .getErr()
              .println(
                  "dlmctl: "
                      + node
                      + " is "
                      + r.getState()
                      + " in incarnation "
                      + r.getIncarnation()
                      + (r.getLastResult().isEmpty() ? "" : " (" + r.getLastResult() + ")")
                      + ". Acknowledging it releases its locks to other hosts. Check that it is"
                      + " powered off, then run: dlmctl ack "
                      + node
                      + " --incarnation "
                      + r.getIncarnation()
                      + " --yes"
                      + (info.getLeaseHeld()
                          ? ". Its agent still heartbeats its membership lease, so it looks up, and"
                              + " the ack is refused until the lease expires (the agent's"
                              + " ZooKeeper session timeout, 10 s by default) unless you add"
                              + " --force"
                          : ""));
          spec.commandLine().getErr().flush();
          return 2;
        }
        AcknowledgeResponse r =
            f.call(
                s ->
                    s.acknowledge(
                        AcknowledgeRequest.newBuilder()
                            .setNode(node)
                            .setIncarnation(incarnation)
                            .setOperator(operator())
                            .setForce(force)
                            .build()));
        spec.commandLine()
            .getOut()
            .printf(
                "%s (incarnation %d) acknowledged as fenced by %s; its locks are being released%n",
                node, r.getRecord().getIncarnation(), operator());
      }
      return 0;
    }
  }

  @Command(
      name = "fence-history",
      mixinStandardHelpOptions = true,
      description =
          "Every fence action and its outcome, oldest first (the newest 10,000 are kept).")
  static final class History implements Callable<Integer> {
    @Mixin Dlmctl.Connection conn;
    @Mixin Dlmctl.Output output;
    @Spec CommandLine.Model.CommandSpec spec;

    @Parameters(arity = "0..1", paramLabel = "NODE", description = "Only this node.")
    String node;

    @Option(
        names = "--limit",
        defaultValue = "100",
        description = "At most this many (default: ${DEFAULT-VALUE}).")
    int limit;

    @Override
    public Integer call() {
      if (limit < 1) {
        throw new CommandLine.ParameterException(spec.commandLine(), "--limit must be 1 or more");
      }
      HistoryResponse h;
      try (FenceDomainClient f = fenceClient(conn)) {
        h =
            f.read(
                s ->
                    s.history(
                        HistoryRequest.newBuilder()
                            .setNode(node == null ? "" : node)
                            .setLimit(limit)
                            .build()));
        if (h.getEventsCount() == 0 && node != null) {
          List<String> known = fenceNodes(f).stream().map(n -> n.getRecord().getNode()).toList();
          if (!known.contains(node)) {
            throw unknownNode("the fence domain knows no node named " + node, known);
          }
        }
      }
      PrintWriter out = spec.commandLine().getOut();
      if (output.json()) {
        Dlmctl.printJson(out, h);
        return 0;
      }
      DateTimeFormatter fmt =
          DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss").withZone(ZoneId.systemDefault());
      Table t =
          new Table(
              "TIME", "NODE", "INC", "EVENT", "METHOD", "DEVICE", "ACTION", "OUTCOME", "TOOK", "BY",
              "MESSAGE");
      for (FenceEvent e : h.getEventsList()) {
        t.row(
            fmt.format(Instant.ofEpochMilli(e.getTimeEpochMillis())),
            e.getNode(),
            e.getIncarnation(),
            e.getEvent(),
            dash(e.getMethod()),
            dash(e.getDevice()),
            dash(e.getAction()),
            dash(e.getOutcome()),
            e.getDurationMillis() == 0 ? "-" : e.getDurationMillis() + "ms",
            dash(e.getActor()),
            dash(e.getMessage()));
      }
      if (t.isEmpty()) {
        out.println("no fence events");
        out.flush();
      } else {
        t.print(out);
        if (h.getEventsCount() >= limit) {
          // Not silently cut: there may be older ones (found in review).
          spec.commandLine()
              .getErr()
              .printf("dlmctl: the newest %d events; --limit N shows more%n", limit);
          spec.commandLine().getErr().flush();
        }
      }
      return 0;
    }

    private static String dash(String s) {
      return s == null || s.isEmpty() ? "-" : s;
    }
  }

  @Command(
      name = "config",
      mixinStandardHelpOptions = true,
      description = "Check, publish and show the cluster.conf in force.",
      subcommands = {Validate.class, Activate.class, Show.class})
  static final class Config implements Runnable {
    @Spec CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
      spec.commandLine().usage(spec.commandLine().getOut());
    }
  }

  /**
   * Reads a cluster.conf as UTF-8, as the agents do; a file in another encoding (an old Latin-1
   * one) is named with what to do, where Java says only "Input length = 1" (found in review).
   */
  static String readConf(Path file) throws java.io.IOException {
    refuseDirectory(file);
    try {
      return Files.readString(file);
    } catch (java.nio.charset.CharacterCodingException e) {
      throw new CliError(
          file
              + ": not UTF-8 text; cluster.conf files are read as UTF-8: convert it (e.g. iconv -f"
              + " latin1 -t utf-8) and try again");
    }
  }

  /**
   * A directory given for a cluster.conf is named in the error: reading it fails with a bare "Is a
   * directory" (a missing file is named by the error handler, from the exception).
   */
  private static void refuseDirectory(Path file) {
    if (Files.isDirectory(file)) {
      throw new CliError(file + ": is a directory, not a cluster.conf");
    }
  }

  @Command(
      name = "validate",
      mixinStandardHelpOptions = true,
      description =
          "Check a cluster.conf: every error and warning with its line and what to change.")
  static final class Validate implements Callable<Integer> {
    @Spec CommandLine.Model.CommandSpec spec;

    @Option(
        names = "--plan",
        description =
            "Also print, for a valid file, what a fence of each node does: the devices each"
                + " method switches off (then checks for OFF), and those it switches on again.")
    boolean plan;

    @Parameters(paramLabel = "FILE")
    Path file;

    @Override
    public Integer call() throws IOException {
      String xml = readConf(file);
      List<ConfigProblem> problems = ClusterConfig.validate(xml);
      PrintWriter out = spec.commandLine().getOut();
      boolean errors = false;
      for (ConfigProblem p : problems) {
        errors |= p.severity() == ConfigProblem.Severity.ERROR;
        out.println(
            file + ": " + p.severity().name().toLowerCase(java.util.Locale.ROOT) + ": " + p);
      }
      if (!errors) {
        out.println(file + ": valid" + (problems.isEmpty() ? "" : " (with warnings)"));
        if (plan) {
          try {
            printPlan(ClusterConfig.parse(xml), out);
          } catch (ClusterConfigException e) {
            throw new IllegalStateException("validated, then not parsed: " + e.getMessage(), e);
          }
        }
      }
      out.flush();
      return errors ? 1 : 0;
    }

    /**
     * One line per method: "n1 method power: off, then status OFF: apc1 {port=1}; once fenced, on:
     * apc1 {port=1}".
     */
    private static void printPlan(ClusterConfig config, PrintWriter out) {
      for (ClusterNode node : config.nodes()) {
        if (node.methods().isEmpty()) {
          out.println(node.name() + ": no fence method; a failure waits for 'dlmctl ack'");
        }
        for (FenceMethod m : node.methods()) {
          StringBuilder line =
              new StringBuilder(node.name() + " method " + m.name() + ": off, then status OFF:");
          m.offDevices().forEach(d -> line.append(' ').append(describe(d)));
          List<FenceDeviceRef> on = m.onDevices();
          if (on.isEmpty()) {
            line.append("; the host stays off");
          } else {
            line.append("; once fenced, on:");
            on.forEach(d -> line.append(' ').append(describe(d)));
          }
          out.println(line);
        }
      }
    }

    /**
     * The device and the options that pick this node on it, secrets masked: by their key, and any
     * value holding a secret of the device (a password written into an address, say).
     */
    private static String describe(FenceDeviceRef d) {
      AgentOptions own = d.nodeOptions().without(FenceDeviceRef.ACTION_KEYS);
      return own.isEmpty()
          ? d.name()
          : d.name() + " " + own.describe(d.agentOptions().secretValues());
    }
  }

  @Command(
      name = "activate",
      mixinStandardHelpOptions = true,
      description = {
        "Publish a cluster.conf to every host, only if it is valid and its config_version is",
        "higher than the active one (like the old stack's Activate). Agents pick it up at once."
      })
  static final class Activate implements Callable<Integer> {
    @Mixin Dlmctl.Connection conn;
    @Spec CommandLine.Model.CommandSpec spec;

    @Parameters(paramLabel = "FILE")
    Path file;

    @Override
    public Integer call() throws IOException {
      String xml = readConf(file);
      ActivateConfigResponse r;
      try (FenceDomainClient f = fenceClient(conn)) {
        r =
            f.call(
                s ->
                    s.activateConfig(
                        ActivateConfigRequest.newBuilder()
                            .setXml(xml)
                            .setOperator(operator())
                            .build()));
      }
      PrintWriter out = spec.commandLine().getOut();
      r.getWarningsList().forEach(w -> out.println(file + ": warning: " + w));
      out.println("activated config_version " + r.getConfigVersion());
      out.flush();
      return 0;
    }
  }

  @Command(
      name = "show",
      mixinStandardHelpOptions = true,
      description = "Print the cluster.conf in force.")
  static final class Show implements Callable<Integer> {
    @Mixin Dlmctl.Connection conn;
    @Mixin Dlmctl.Output output;
    @Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
      ConfigRecord r;
      try (FenceDomainClient f = fenceClient(conn)) {
        r = f.read(s -> s.getConfig(GetConfigRequest.getDefaultInstance()));
      }
      PrintWriter out = spec.commandLine().getOut();
      if (output.json()) {
        Dlmctl.printJson(out, r);
      } else {
        out.print(r.getXml());
        out.flush();
      }
      return 0;
    }
  }

  /** Every node of the fence domain: those with a record, and those of cluster.conf. */
  static List<FenceNodeInfo> fenceNodes(FenceDomainClient f) {
    return f.read(s -> s.listNodes(ListFenceNodesRequest.getDefaultInstance())).getNodesList();
  }

  /** {@code node}'s entry in {@link #fenceNodes}, if any. */
  static java.util.Optional<FenceNodeInfo> fenceNode(FenceDomainClient f, String node) {
    return fenceNodes(f).stream().filter(n -> n.getRecord().getNode().equals(node)).findFirst();
  }

  /** The error for a node name nobody knows: {@code what}, and the names that are known. */
  static CliError unknownNode(String what, java.util.Collection<String> known) {
    return new CliError(
        what
            + (known.isEmpty()
                ? ""
                : " (nodes: " + String.join(", ", new java.util.TreeSet<>(known)) + ")"));
  }

  /** dlmctl join/leave of a node that runs an agent: the agent does it, on request. */
  static boolean requestOfAgent(Dlmctl.Connection conn, String node, boolean leave) {
    try (FenceDomainClient f = fenceClient(conn)) {
      java.util.Optional<FenceNodeInfo> info = fenceNode(f, node);
      if (info.isPresent() && !info.get().getRecordError().isEmpty()) {
        // Whether an agent runs it is unknown: a leave straight at the lock service would release
        // the locks of a running agent (its VMs' LVs included).
        throw new CliError(
            "cannot tell whether an agent runs "
                + node
                + ": "
                + info.get().getRecordError()
                + "; fix or remove that record first");
      }
      boolean agentManaged =
          info.isPresent()
              && (info.get().getRecord().getIncarnation() != 0 || info.get().getLeaseHeld());
      if (!agentManaged) {
        return false;
      }
      MembershipRequest req =
          MembershipRequest.newBuilder().setNode(node).setOperator(operator()).build();
      f.call(s -> leave ? s.requestLeave(req) : s.requestJoin(req));
      return true;
    }
  }
}
