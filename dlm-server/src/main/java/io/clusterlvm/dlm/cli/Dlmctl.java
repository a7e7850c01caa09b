package io.clusterlvm.dlm.cli;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.MessageOrBuilder;
import com.google.protobuf.util.JsonFormat;
import io.clusterlvm.dlm.client.DlmClient;
import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.dlm.client.DlmSession;
import io.clusterlvm.dlm.client.Durations;
import io.clusterlvm.dlm.client.Lock;
import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.dlm.client.LockOptions;
import io.clusterlvm.dlm.client.TlsFiles;
import io.clusterlvm.dlm.proto.LeaveResponse;
import io.clusterlvm.dlm.proto.ListLocksResponse;
import io.clusterlvm.dlm.proto.ListLockspacesResponse;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.LockspaceInfo;
import io.clusterlvm.dlm.proto.Mode;
import io.clusterlvm.dlm.proto.NodeInfo;
import io.clusterlvm.dlm.proto.NodeState;
import io.clusterlvm.dlm.proto.PurgeResponse;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.clusterlvm.dlm.proto.ServerReport;
import io.clusterlvm.dlm.proto.ServerReports;
import io.clusterlvm.dlm.proto.ServerStatusResponse;
import io.grpc.ChannelCredentials;
import java.io.IOException;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** {@code dlmctl}: the operator's command line for the lock service. */
@Command(
    name = "dlmctl",
    mixinStandardHelpOptions = true,
    version = "dlmctl 0.1.0",
    description = "Look at and use the cluster's distributed lock manager.",
    subcommands = {
      Dlmctl.Status.class,
      Dlmctl.Lockspaces.class,
      Dlmctl.Locks.class,
      FenceCommands.Nodes.class,
      Dlmctl.LockCommand.class,
      Dlmctl.Join.class,
      Dlmctl.Leave.class,
      Dlmctl.Purge.class,
      FenceCommands.Fence.class,
      FenceCommands.Ack.class,
      FenceCommands.History.class,
      FenceCommands.Config.class,
      CommandLine.HelpCommand.class
    },
    exitCodeListHeading = "%nExit status:%n",
    exitCodeList = {
      "0:success (for 'lock': the command's own status)",
      "1:the lock was not granted (held elsewhere, or --timeout passed)",
      "2:bad usage; or fence, ack or purge without --yes (it only showed what it would do)",
      "3:the lock service refused the request or could not be reached, or did not answer in"
          + " time (a change may then have been applied: check before running it again)"
    })
public final class Dlmctl implements Runnable {
  static final int NOT_GRANTED = 1;
  static final int FAILED = 3;

  @Spec CommandLine.Model.CommandSpec spec;

  @Override
  public void run() {
    spec.commandLine().usage(spec.commandLine().getOut());
  }

  /** Options every command that talks to the server takes. */
  static final class Connection {
    @Option(
        names = {"-s", "--servers"},
        paramLabel = "HOST:PORT[,HOST:PORT...]",
        defaultValue = "${env:DLM_SERVERS:-127.0.0.1:7950}",
        description = "dlm-servers to talk to (default: $DLM_SERVERS or ${DEFAULT-VALUE}).")
    String servers;

    @Option(
        names = "--call-timeout",
        defaultValue = "10s",
        converter = Durations.class,
        description = "Deadline of each call to the server (default: ${DEFAULT-VALUE}).")
    Duration callTimeout;

    @Option(
        names = "--tls-ca",
        paramLabel = "FILE",
        defaultValue = "${env:DLM_TLS_CA}",
        description =
            "Talk TLS, trusting servers whose certificate this CA signed (PEM; default:"
                + " $DLM_TLS_CA). Without any --tls option, plain text.")
    Path tlsCa;

    @Option(
        names = "--tls-cert",
        paramLabel = "FILE",
        defaultValue = "${env:DLM_TLS_CERT}",
        description =
            "Talk TLS, presenting this client certificate (PEM), for servers that require one"
                + " (default: $DLM_TLS_CERT).")
    Path tlsCert;

    @Option(
        names = "--tls-key",
        paramLabel = "FILE",
        defaultValue = "${env:DLM_TLS_KEY}",
        description = "The private key of --tls-cert (PKCS#8 PEM; default: $DLM_TLS_KEY).")
    Path tlsKey;

    /** The TLS files given, or null for plain text. */
    TlsFiles tls() {
      try {
        return TlsFiles.given(tlsCa, tlsCert, tlsKey);
      } catch (IllegalArgumentException e) {
        throw new CliError(e.getMessage());
      }
    }

    ChannelCredentials credentials() {
      return TlsFiles.channelCredentials(tls());
    }

    /**
     * A client with this command line's deadlines. {@code dlm} is a view on {@code owner} (the
     * with-methods' copies share its connections); closing the pair closes the owner.
     */
    record Client(DlmClient owner, DlmClient dlm) implements AutoCloseable {
      @Override
      public void close() {
        owner.close();
      }
    }

    Client connect() {
      DlmClient owner = DlmClient.connect(servers, tls());
      return new Client(owner, owner.withCallDeadline(callTimeout).withRetryWindow(callTimeout));
    }

    /** Asks every server given for its status, all at once; in the order given. */
    List<ServerReport> statusOfEach() {
      List<String> targets =
          Arrays.stream(servers.split(","))
              .map(String::trim)
              .filter(t -> !t.isEmpty())
              .distinct()
              .toList();
      if (targets.isEmpty()) {
        throw new CliError("no dlm-server address given (--servers)");
      }
      // A thread each: a server that does not answer costs the call timeout once, not once per
      // server.
      ExecutorService askers =
          Executors.newCachedThreadPool(
              r -> {
                Thread t = new Thread(r, "dlmctl-status");
                t.setDaemon(true);
                return t;
              });
      try {
        List<CompletableFuture<ServerReport>> asked =
            targets.stream()
                .map(target -> CompletableFuture.supplyAsync(() -> statusOf(target), askers))
                .toList();
        return asked.stream().map(CompletableFuture::join).toList();
      } finally {
        askers.shutdownNow();
      }
    }

    /** The failure and its root cause ("io exception: Connection refused: /10.0.0.2:7950"). */
    static String why(Throwable e) {
      String why = e.getMessage() == null ? e.toString() : e.getMessage();
      Throwable root = e;
      while (root.getCause() != null && root.getCause() != root) {
        root = root.getCause();
      }
      if (root != e && root.getMessage() != null) {
        // gRPC's own exceptions say "CODE: description"; the description may be said already.
        String rootWhy = root.getMessage().replaceFirst("^[A-Z_]+: ", "");
        if (!why.contains(rootWhy)) {
          why += ": " + rootWhy;
        }
      }
      return why;
    }

    private ServerReport statusOf(String target) {
      ServerReport.Builder r = ServerReport.newBuilder().setAddress(target);
      try (DlmClient c = DlmClient.connect(target, tls())) {
        r.setStatus(c.withCallDeadline(callTimeout).status());
      } catch (RuntimeException e) {
        r.setError(why(e));
      }
      return r.build();
    }
  }

  /**
   * A node that neither the lock service nor the fence domain (records, cluster.conf) knows is a
   * typo, not a node without locks: say so.
   */
  static void requireKnownNode(DlmClient c, Connection conn, String node) {
    java.util.Set<String> known = new java.util.HashSet<>();
    c.nodes().forEach(n -> known.add(n.getNode()));
    if (known.contains(node)) {
      return;
    }
    try (FenceDomainClient f = FenceCommands.fenceClient(conn)) {
      FenceCommands.fenceNodes(f).forEach(n -> known.add(n.getRecord().getNode()));
    } catch (DlmClientException e) {
      // No fence domain to ask (or it does not answer): the lock service's nodes are the answer.
    }
    if (!known.contains(node)) {
      throw FenceCommands.unknownNode(
          "no node named " + node + " in the lock service or the fence domain", known);
    }
  }

  enum Format {
    table,
    json
  }

  /** Output choice for listings. */
  static final class Output {
    @Option(
        names = {"-o", "--output"},
        defaultValue = "table",
        description = "Output format: ${COMPLETION-CANDIDATES} (default: ${DEFAULT-VALUE}).")
    Format format;

    boolean json() {
      return format == Format.json;
    }
  }

  static void printJson(PrintWriter out, MessageOrBuilder m) {
    try {
      out.println(JsonFormat.printer().includingDefaultValueFields().print(m));
      out.flush();
    } catch (InvalidProtocolBufferException e) {
      throw new IllegalStateException(e);
    }
  }

  static String mode(Mode m) {
    return m == Mode.MODE_UNSPECIFIED ? "-" : m.name();
  }

  /**
   * This host's node name when no --node is given: its host name, as clvm-agent takes it. An error
   * if it cannot be resolved: a fallback ("localhost") would act as another node than this host's
   * agent is (found in review: "localhost joined with incarnation 1").
   */
  static String thisNode() {
    try {
      return InetAddress.getLocalHost().getHostName();
    } catch (IOException e) {
      throw new CliError(
          "cannot tell this host's node name (" + e.getMessage() + "); give --node NAME");
    }
  }

  /** This host's name for logs and history ("who did it"), "localhost" if it can't be told. */
  static String hostname() {
    try {
      return InetAddress.getLocalHost().getHostName();
    } catch (IOException e) {
      return "localhost";
    }
  }

  static String bootId() {
    try {
      return Files.readString(Path.of("/proc/sys/kernel/random/boot_id"), StandardCharsets.US_ASCII)
          .trim();
    } catch (IOException e) {
      return "";
    }
  }

  // ---------------------------------------------------------------- listings

  @Command(
      name = "status",
      mixinStandardHelpOptions = true,
      description = {
        "Show every server given with --servers: leader or follower, epoch, counts, or why it"
            + " did not answer.",
        "Exits 3 when no server that answered is the leader."
      })
  static final class Status implements Callable<Integer> {
    @Mixin Connection conn;
    @Mixin Output output;
    @Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
      List<ServerReport> reports = conn.statusOfEach();
      PrintWriter out = spec.commandLine().getOut();
      if (output.json()) {
        printJson(out, ServerReports.newBuilder().addAllServers(reports));
      } else {
        Table t =
            new Table(
                "SERVER", "ID", "ROLE", "LEADER-ID", "EPOCH", "RESOURCES", "LOCKS", "ZOOKEEPER");
        for (ServerReport r : reports) {
          if (!r.hasStatus()) {
            t.row(r.getAddress(), "-", "unreachable", "-", "-", "-", "-", "-");
            continue;
          }
          ServerStatusResponse s = r.getStatus();
          t.row(
              r.getAddress(),
              s.getServerId(),
              s.getLeader()
                  ? (s.getTableLoading() ? "leader (loading table)" : "leader")
                  : "follower",
              s.getLeaderId().isEmpty() ? "-" : s.getLeaderId(),
              s.getLeader() ? s.getEpoch() : "-",
              s.getLeader() ? s.getResources() : "-",
              s.getLeader() ? s.getLocks() : "-",
              s.getZookeeper());
        }
        t.print(out);
        for (ServerReport r : reports) {
          if (!r.hasStatus()) {
            out.println(r.getAddress() + " did not answer: " + r.getError());
          }
          for (String u : r.getStatus().getUnreadableLockspacesList()) {
            out.println(r.getAddress() + " (the leader) cannot read lockspace " + u);
          }
        }
      }
      if (reports.stream().noneMatch(r -> r.hasStatus() && r.getStatus().getLeader())) {
        List<String> named =
            reports.stream()
                .filter(ServerReport::hasStatus)
                .map(r -> r.getStatus().getLeaderId())
                .filter(id -> !id.isEmpty())
                .distinct()
                .toList();
        String why;
        if (reports.stream().noneMatch(ServerReport::hasStatus)) {
          why =
              "no dlm-server at "
                  + conn.servers
                  + " answered; is dlm-server running? (see --servers or $DLM_SERVERS)";
        } else if (!named.isEmpty()) {
          why =
              "none of the servers given is the leader; they name "
                  + String.join(", ", named)
                  + " (add it to --servers to see it)";
        } else {
          why =
              "none of the servers that answered is the leader, and none knows of one (an"
                  + " election may be under way; see their logs)";
        }
        spec.commandLine().getErr().println("dlmctl: " + why);
        return FAILED;
      }
      return 0;
    }
  }

  @Command(
      name = "lockspaces",
      mixinStandardHelpOptions = true,
      description = "List lockspaces with their resource and lock counts.")
  static final class Lockspaces implements Callable<Integer> {
    @Mixin Connection conn;
    @Mixin Output output;
    @Spec CommandLine.Model.CommandSpec spec;

    @Override
    public Integer call() {
      try (Connection.Client client = conn.connect()) {
        DlmClient c = client.dlm();
        List<LockspaceInfo> all = c.lockspaces();
        PrintWriter out = spec.commandLine().getOut();
        if (output.json()) {
          printJson(out, ListLockspacesResponse.newBuilder().addAllLockspaces(all));
          return 0;
        }
        Table t = new Table("LOCKSPACE", "RESOURCES", "GRANTED", "CONVERTING", "WAITING");
        for (LockspaceInfo l : all) {
          t.row(l.getName(), l.getResources(), l.getGranted(), l.getConverting(), l.getWaiting());
        }
        t.print(out);
        return 0;
      }
    }
  }

  @Command(
      name = "locks",
      mixinStandardHelpOptions = true,
      description = {
        "Who holds what: every resource with its granted, converting and waiting locks,",
        "in queue order, with node, incarnation, mode, fencing token and age.",
        "The server sends a large table a page at a time; each resource is shown as it was",
        "when its page was read."
      })
  static final class Locks implements Callable<Integer> {
    @Mixin Connection conn;
    @Mixin Output output;
    @Spec CommandLine.Model.CommandSpec spec;

    @Parameters(arity = "0..1", paramLabel = "LOCKSPACE", description = "Only this lockspace.")
    String lockspace;

    @Option(
        names = "--node",
        paramLabel = "NODE",
        description =
            "Only the locks this node holds or asks for (what it waits behind: list the lockspace).")
    String node;

    @Override
    public Integer call() {
      try (Connection.Client client = conn.connect()) {
        DlmClient c = client.dlm();
        List<ResourceInfo> all = c.locks(lockspace, node, 0);
        if (all.isEmpty() && node != null) {
          requireKnownNode(c, conn, node);
        }
        PrintWriter out = spec.commandLine().getOut();
        if (output.json()) {
          printJson(out, ListLocksResponse.newBuilder().addAllResources(all));
          return 0;
        }
        long now = System.currentTimeMillis();
        Table t =
            new Table(
                "LOCKSPACE",
                "RESOURCE",
                "STATE",
                "NODE",
                "INC",
                "MODE",
                "REQUESTED",
                "TOKEN",
                "AGE",
                "LOCK-ID",
                "FLAGS");
        for (ResourceInfo r : all) {
          for (LockInfo l : r.getGrantedList()) {
            row(t, r, "granted", l, now);
          }
          for (LockInfo l : r.getConvertingList()) {
            row(t, r, "converting", l, now);
          }
          for (LockInfo l : r.getWaitingList()) {
            row(t, r, "waiting", l, now);
          }
        }
        if (t.isEmpty()) {
          out.println(
              "no locks"
                  + (node == null ? "" : " of " + node)
                  + (lockspace == null ? "" : " in " + lockspace));
          out.flush();
        } else {
          t.print(out);
        }
        return 0;
      }
    }

    private static void row(Table t, ResourceInfo r, String state, LockInfo l, long now) {
      String flags = l.getPersistent() ? "persistent" : "";
      if (!r.getValueBlockValid()) {
        flags = flags.isEmpty() ? "lvb-invalid" : flags + ",lvb-invalid";
      }
      t.row(
          r.getLockspace(),
          r.getResource(),
          state,
          l.getOwner().getNode(),
          l.getOwner().getIncarnation(),
          mode(l.getGrantedMode()),
          mode(l.getRequestedMode()),
          l.getFencingToken() == 0 ? "-" : l.getFencingToken(),
          Table.age(l.getSinceEpochMillis(), now),
          l.getLockId(),
          flags.isEmpty() ? "-" : flags);
    }
  }

  // ---------------------------------------------------------------- membership

  @Command(
      name = "join",
      mixinStandardHelpOptions = true,
      description = "Join a node to the cluster (what clvm-agent does when it starts).")
  static final class Join implements Callable<Integer> {
    @Mixin Connection conn;
    @Spec CommandLine.Model.CommandSpec spec;

    @Parameters(
        arity = "0..1",
        paramLabel = "NODE",
        description = "Node name (default: this host's name).")
    String node;

    @Override
    public Integer call() {
      String n = node == null ? thisNode() : node;
      if (FenceCommands.requestOfAgent(conn, n, false)) {
        spec.commandLine()
            .getOut()
            .printf("asked the agent of %s to join again; see 'dlmctl nodes'%n", n);
        return 0;
      }
      try (Connection.Client client = conn.connect()) {
        DlmClient c = client.dlm();
        long inc = c.join(n, bootId());
        spec.commandLine().getOut().printf("%s joined with incarnation %d%n", n, inc);
        return 0;
      }
    }
  }

  @Command(
      name = "leave",
      mixinStandardHelpOptions = true,
      description = "Leave the cluster cleanly: the node's locks are released; it is not fenced.")
  static final class Leave implements Callable<Integer> {
    @Mixin Connection conn;
    @Spec CommandLine.Model.CommandSpec spec;

    @Parameters(
        arity = "0..1",
        paramLabel = "NODE",
        description = "Node name (default: this host's name).")
    String node;

    @Override
    public Integer call() {
      String n = node == null ? thisNode() : node;
      if (FenceCommands.requestOfAgent(conn, n, true)) {
        spec.commandLine()
            .getOut()
            .printf(
                "asked the agent of %s to leave cleanly: it deactivates the host's LVs, then its"
                    + " locks are released and it is not fenced; it refuses while an LV is in use"
                    + " (see 'dlmctl nodes' and 'dlmctl fence-history')%n",
                n);
        return 0;
      }
      try (Connection.Client client = conn.connect()) {
        DlmClient c = client.dlm();
        NodeInfo info = currentMember(c, n);
        LeaveResponse left = c.leave(n, info.getIncarnation());
        spec.commandLine()
            .getOut()
            .printf(
                left.getAlreadyLeft()
                    ? "%s had already left (incarnation %d)%n"
                    : "%s left (incarnation %d); %d locks released%n",
                n,
                info.getIncarnation(),
                left.getReleasedLocks());
        return 0;
      }
    }
  }

  @Command(
      name = "purge",
      mixinStandardHelpOptions = true,
      description = {
        "Drop every lock of a node incarnation, as after a confirmed fence.",
        "DANGEROUS if the node is still running: only do this when it is known to be off."
      })
  static final class Purge implements Callable<Integer> {
    @Mixin Connection conn;
    @Spec CommandLine.Model.CommandSpec spec;

    @Parameters(index = "0", paramLabel = "NODE")
    String node;

    @Parameters(index = "1", paramLabel = "INCARNATION")
    long incarnation;

    @Option(names = "--reason", required = true, description = "Why; written to the server log.")
    String reason;

    @Option(
        names = "--yes",
        description = "Confirm that NODE is off (required; there is no interactive prompt).")
    boolean yes;

    @Option(
        names = "--force",
        description =
            "Purge although NODE still holds its membership lease of INCARNATION (its agent"
                + " heartbeats): only when you know it is off and its lease has not expired yet.")
    boolean force;

    @Override
    public Integer call() {
      if (incarnation < 1) {
        // 0 would count every incarnation's locks in the dry run, and purge none with --yes
        // (found in review).
        throw new CommandLine.ParameterException(
            spec.commandLine(), "INCARNATION must be 1 or more, as 'dlmctl nodes' shows it");
      }
      if (yes && !force) {
        refuseIfLeaseHeld();
      }
      try (Connection.Client client = conn.connect()) {
        DlmClient c = client.dlm();
        if (!yes) {
          NodeInfo info = c.node(node);
          if (info == null) {
            throw new CliError("no node named " + node);
          }
          int locks =
              c.locks(null, node, incarnation).stream()
                  .mapToInt(r -> r.getGrantedCount() + r.getConvertingCount() + r.getWaitingCount())
                  .sum();
          spec.commandLine()
              .getErr()
              .printf(
                  "dlmctl: %s is %s in incarnation %d; incarnation %d has %d locks. Purging drops"
                      + " them: if the node still runs, another host may write what it writes."
                      + " Check that it is powered off, then run: dlmctl purge %s %d --reason"
                      + " '...' --yes%n",
                  node,
                  info.getState().name().replace("NODE_", ""),
                  info.getIncarnation(),
                  incarnation,
                  locks,
                  node,
                  incarnation);
          spec.commandLine().getErr().flush();
          return 2;
        }
        PurgeResponse purged = c.purge(node, incarnation, reason);
        spec.commandLine()
            .getOut()
            .printf(
                purged.getAlreadyGone()
                    ? "%2$s incarnation %3$d had already left or been purged; nothing to purge%n"
                    : "purged %d locks of %s incarnation %d%n",
                purged.getPurgedLocks(),
                node,
                incarnation);
        return 0;
      }
    }

    /**
     * A purge of an incarnation whose lease lives drops the locks of a running host (its agent
     * heartbeats). The lease is the fence domain's; a cluster without one (nodes joined with dlmctl
     * join) has nothing to check.
     */
    private void refuseIfLeaseHeld() {
      java.util.Optional<io.clusterlvm.fence.proto.FenceNodeInfo> info;
      try (FenceDomainClient f = FenceCommands.fenceClient(conn)) {
        info = FenceCommands.fenceNode(f, node);
      } catch (RuntimeException e) {
        throw new CliError(
            "cannot check whether "
                + node
                + " still holds its membership lease ("
                + (e.getMessage() != null ? e.getMessage() : e.toString())
                + "); if you know it is off, add --force");
      }
      if (info.isPresent() && !info.get().getRecordError().isEmpty()) {
        throw new CliError(
            node
                + "'s fence record does not parse ("
                + info.get().getRecordError()
                + "), so whether it still holds its lease of incarnation "
                + incarnation
                + " is unknown; if you know it is off, add --force");
      }
      if (info.isPresent()
          && info.get().getLeaseHeld()
          && info.get().getRecord().getIncarnation() == incarnation) {
        throw new CliError(
            node
                + " still holds its membership lease of incarnation "
                + incarnation
                + ": its agent is heartbeating, so the host runs, and purging would hand its locks"
                + " to other hosts while it may still write. Fence it (dlmctl fence "
                + node
                + "), or wait for the lease to expire (the agent's ZooKeeper session timeout, 10 s"
                + " by default); if you know it is off, add --force");
      }
    }
  }

  static NodeInfo currentMember(DlmClient c, String node) {
    NodeInfo info = c.node(node);
    if (info == null || info.getState() != NodeState.NODE_MEMBER) {
      throw new CliError(
          "node "
              + node
              + " is not a member of the cluster; start clvm-agent on it or run 'dlmctl join "
              + node
              + "'");
    }
    return info;
  }

  // ---------------------------------------------------------------- lock

  @Command(
      name = "lock",
      mixinStandardHelpOptions = true,
      description = {
        "Hold a cluster lock while COMMAND runs, like flock(1), and exit with its status.",
        "The lock is released when COMMAND exits. On SIGTERM or SIGINT dlmctl stops COMMAND"
            + " (and the processes it started) and keeps the lock until they have ended;"
            + " killed with SIGKILL it cannot, and COMMAND runs on without the lock."
      })
  static final class LockCommand implements Callable<Integer> {
    @Mixin Connection conn;
    @Spec CommandLine.Model.CommandSpec spec;

    @Parameters(index = "0", paramLabel = "LOCKSPACE")
    String lockspace;

    @Parameters(index = "1", paramLabel = "RESOURCE")
    String resource;

    @Parameters(
        index = "2..*",
        arity = "1..*",
        paramLabel = "COMMAND",
        description = "The command to run and its arguments (put -- before it).")
    List<String> command;

    @Option(
        names = {"-m", "--mode"},
        defaultValue = "EX",
        description = "Lock mode: NL, CR, CW, PR, PW, EX, or sh/ex (default: ${DEFAULT-VALUE}).")
    String mode;

    @Option(
        names = {"-t", "--timeout"},
        converter = Durations.class,
        description =
            "Give up waiting after this long (e.g. 10s); default: wait as long as it takes.")
    Duration timeout;

    @Option(
        names = {"-n", "--try"},
        description = "Fail at once if the lock is held elsewhere.")
    boolean noqueue;

    @Option(names = "--node", description = "Node to lock as (default: this host's name).")
    String node;

    @Option(
        names = {"-E", "--conflict-exit-code"},
        defaultValue = "1",
        description = "Exit status when the lock is not granted (default: ${DEFAULT-VALUE}).")
    int conflictExit;

    @Override
    public Integer call() throws Exception {
      LockMode m;
      try {
        m = LockMode.parse(mode);
      } catch (IllegalArgumentException e) {
        throw new CommandLine.ParameterException(spec.commandLine(), e.getMessage());
      }
      String n = node == null ? thisNode() : node;
      try (Connection.Client client = conn.connect()) {
        DlmClient c = client.dlm();
        NodeInfo info = currentMember(c, n);
        try (DlmSession s = c.openSession(n, info.getIncarnation(), "dlmctl lock")) {
          LockOptions o = LockOptions.DEFAULT.withTimeout(timeout);
          if (noqueue) {
            o = o.withNoqueue();
          }
          Lock held;
          try {
            held = s.lock(lockspace, resource, m, o);
          } catch (DlmClientException e) {
            // The lock service's own answer (held elsewhere, or --timeout passed), not a server
            // that did not answer in time: that is exit 3, not "held".
            if (e.wouldBlock() || e.waitTimedOut()) {
              spec.commandLine().getErr().println("dlmctl: " + e.getMessage());
              spec.commandLine().getErr().flush();
              return conflictExit;
            }
            throw e;
          }
          return runHolding(s, held);
        }
      }
    }

    private int runHolding(DlmSession s, Lock held) throws Exception {
      ProcessBuilder pb = new ProcessBuilder(command).inheritIO();
      // What the command may pass on to a store that checks fencing tokens.
      pb.environment().put("DLM_FENCING_TOKEN", Long.toString(held.fencingToken()));
      pb.environment().put("DLM_LOCK_ID", Long.toString(held.id()));
      Process p;
      try {
        p = pb.start();
      } catch (IOException e) {
        s.unlock(held);
        spec.commandLine()
            .getErr()
            .println("dlmctl: cannot run " + command.get(0) + ": " + e.getMessage());
        return 127;
      }
      // dlmctl got SIGTERM/SIGINT: stop the command, and wait for it. The JVM ends, and with it
      // the session and the lock, only when this hook returns: a command still running then
      // would go on without the lock it was started under.
      Thread stopper = new Thread(() -> stop(p), "dlmctl-stop");
      Runtime.getRuntime().addShutdownHook(stopper);
      s.onLost(
          () -> {
            spec.commandLine()
                .getErr()
                .println(
                    "dlmctl: lost the cluster lock (session lost); stopping " + command.get(0));
            // The command and what it started, killed if they do not stop: a child left running
            // would go on without the lock (found in review: only the command was signalled).
            // Not on the session's own thread, which must not wait out the grace period.
            Thread lost = new Thread(() -> stop(p), "dlmctl-lock-lost");
            lost.setDaemon(true);
            lost.start();
          });
      int status = p.waitFor();
      try {
        Runtime.getRuntime().removeShutdownHook(stopper);
      } catch (IllegalStateException shuttingDown) {
        // The command ended because the hook stopped it; what it started may still be ending,
        // under the lock: release it only once the hook has seen them all end.
        stopper.join();
      }
      if (s.isLost()) {
        return FAILED;
      }
      s.unlock(held);
      return status;
    }

    /** How long a command gets to end after SIGTERM before it is killed. */
    private static final Duration STOP_GRACE = Duration.ofSeconds(10);

    /** Stops {@code p} and what it started, and returns once they have ended (or cannot be). */
    private void stop(Process p) {
      List<ProcessHandle> all = new java.util.ArrayList<>(p.descendants().toList());
      all.add(p.toHandle());
      all.forEach(ProcessHandle::destroy);
      if (!awaitEnd(all, STOP_GRACE)) {
        spec.commandLine()
            .getErr()
            .println(
                "dlmctl: "
                    + command.get(0)
                    + " did not stop within "
                    + STOP_GRACE.toSeconds()
                    + " s of SIGTERM; killing it");
        all.forEach(ProcessHandle::destroyForcibly);
        awaitEnd(all, Duration.ofSeconds(5));
      }
    }

    private static boolean awaitEnd(List<ProcessHandle> processes, Duration within) {
      long until = System.nanoTime() + within.toNanos();
      for (ProcessHandle h : processes) {
        try {
          h.onExit().get(Math.max(0, until - System.nanoTime()), TimeUnit.NANOSECONDS);
        } catch (java.util.concurrent.TimeoutException e) {
          return false;
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          return false;
        } catch (java.util.concurrent.ExecutionException e) {
          // onExit does not fail
        }
      }
      return true;
    }
  }

  private static Connection connectionOf(CommandLine cmd) {
    for (Object mixin : cmd.getMixins().values()) {
      if (mixin instanceof Connection c) {
        return c;
      }
    }
    return null;
  }

  public static void main(String[] args) {
    if (System.getProperty("logback.configurationFile") == null) {
      System.setProperty("logback.configurationFile", "dlmctl-logback.xml");
    }
    System.exit(commandLine().execute(args));
  }

  /** What went wrong with a file, as an operator would say it. */
  private static String describe(IOException e) {
    if (e instanceof java.nio.file.NoSuchFileException n) {
      return n.getFile() + ": no such file";
    }
    if (e instanceof java.nio.file.AccessDeniedException d) {
      return d.getFile() + ": permission denied";
    }
    if (e instanceof java.nio.file.FileSystemException f && f.getFile() != null) {
      return f.getFile() + ": " + (f.getReason() != null ? f.getReason() : f.getClass().getName());
    }
    return e.getMessage() != null ? e.getMessage() : e.toString();
  }

  /**
   * A connection that failed for TLS reasons, or one in plain text that the server closed (what a
   * TLS server does to it), gets a word on the TLS options.
   */
  private static String tlsHint(Connection conn, Throwable e) {
    boolean tlsGiven = conn != null && conn.tls() != null;
    String why = Connection.why(e).toLowerCase(java.util.Locale.ROOT);
    if (why.contains("ssl") || why.contains("certificate") || why.contains("handshake")) {
      return tlsGiven
          ? "; the TLS handshake failed: check that --tls-ca signed the server's certificate,"
              + " which must name the host connected to, and that --tls-cert is signed by the CA"
              + " the servers require"
          : "";
    }
    if (!tlsGiven && why.contains("network closed")) {
      return "; if the servers use TLS, give --tls-ca (and --tls-cert, --tls-key if they require"
          + " client certificates), or $DLM_TLS_CA, $DLM_TLS_CERT, $DLM_TLS_KEY";
    }
    return "";
  }

  /** Commands that change the cluster's state, whose unanswered request may still take effect. */
  private static final java.util.Set<String> CHANGES =
      java.util.Set.of("ack", "fence", "purge", "activate", "join", "leave");

  /** The command line with dlmctl's error handling: a clear message and exit 3, no stack trace. */
  public static CommandLine commandLine() {
    CommandLine cl = new CommandLine(new Dlmctl());
    cl.setExecutionExceptionHandler(
        (ex, cmd, parsed) -> {
          if (ex instanceof CliError u) {
            cmd.getErr().println("dlmctl: " + u.getMessage());
            return FAILED;
          }
          if (ex instanceof DlmClientException d) {
            if (CHANGES.contains(cmd.getCommandName())
                && (d.code() == io.grpc.Status.Code.DEADLINE_EXCEEDED
                    || d.code() == io.grpc.Status.Code.UNKNOWN)) {
              // Sent, but unanswered: a server that timed out may have made the change.
              cmd.getErr()
                  .println(
                      "dlmctl: no answer in time ("
                          + d.getMessage()
                          + "); the "
                          + cmd.getCommandName()
                          + " may have been applied all the same: check with 'dlmctl nodes' before"
                          + " you run it again");
            } else if (d.code() == io.grpc.Status.Code.UNAVAILABLE
                || d.code() == io.grpc.Status.Code.DEADLINE_EXCEEDED) {
              Connection conn = connectionOf(cmd);
              cmd.getErr()
                  .println(
                      "dlmctl: cannot reach a dlm-server leader at "
                          + (conn == null ? "the given servers" : conn.servers)
                          + " ("
                          + Connection.why(d)
                          + "); is dlm-server running? (see --servers or $DLM_SERVERS)"
                          + tlsHint(conn, d));
            } else {
              cmd.getErr().println("dlmctl: " + d.getMessage());
            }
            return FAILED;
          }
          if (ex instanceof IOException e) {
            // e.g. config validate of a file that is not there: say which, without a trace
            cmd.getErr().println("dlmctl: " + describe(e));
            return FAILED;
          }
          if (ex instanceof IllegalArgumentException e) {
            // a value picocli let through that the command cannot use (e.g. -s ",")
            cmd.getErr().println("dlmctl: " + e.getMessage());
            cmd.getErr().println("Try 'dlmctl " + cmd.getCommandName() + " --help'.");
            return cmd.getCommandSpec().exitCodeOnInvalidInput();
          }
          throw ex;
        });
    cl.setErr(new PrintWriter(System.err, true));
    cl.setOut(new PrintWriter(System.out, true));
    return cl;
  }
}
