package io.clusterlvm.clvm.cli;

import com.google.protobuf.util.JsonFormat;
import io.clusterlvm.clvm.proto.Activation;
import io.clusterlvm.clvm.proto.CommandInFlight;
import io.clusterlvm.clvm.proto.HeldLock;
import io.clusterlvm.clvm.proto.HostStatusResponse;
import io.clusterlvm.clvm.proto.RefusalDetail;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.clusterlvm.clvm.rpc.ClvmClient;
import io.clusterlvm.clvm.rpc.Refusals;
import io.clusterlvm.dlm.client.Durations;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Collectors;

/**
 * {@code clvm}: runs an lvm command through this host's clvm-agent, which takes the cluster locks
 * the command needs. lvm's stdout, stderr and exit code come back unchanged; when the cluster
 * refuses the command, clvm says why on stderr and exits with a code of its own (see {@link
 * #USAGE}).
 *
 * <p>Installed under an lvm command's name ({@code ln -s clvm lvcreate}) it acts as that command:
 * the bin/clvm script passes the name it was invoked as with {@code --invoked-as}, and then every
 * argument goes to lvm untouched.
 */
public final class ClvmMain {

  static final String DEFAULT_SOCKET = "/run/clvm-agent/clvm.sock";
  static final Duration DEFAULT_TIMEOUT = Duration.ofMinutes(10);

  /** Exit codes of clvm's own (lvm's are 0..5). */
  static final int EXIT_USAGE = 64;

  static final int EXIT_UNSUPPORTED = 65;
  static final int EXIT_AGENT_DOWN = 69;
  static final int EXIT_INTERNAL = 70;
  static final int EXIT_NO_ANSWER = 71;
  static final int EXIT_LOCK_HELD = 73;
  static final int EXIT_LOCK_TIMEOUT = 75;
  static final int EXIT_LOCK_SERVICE = 76;
  static final int EXIT_NOT_MEMBER = 77;
  static final int EXIT_STALE_TOKEN = 78;
  static final int EXIT_OUTCOME_UNKNOWN = 79;

  static final String USAGE =
      """
      Usage: clvm [--socket PATH] [--timeout DURATION] <lvm subcommand> [arguments...]
             clvm --status [-o json]
             clvm --help
      Runs an lvm command on this host under the cluster's locks, through the local clvm-agent:
        clvm lvcreate -n vm-101-disk-1 -L 32G vg_shared
        clvm lvchange -aey vg_shared/vm-101-disk-1
        clvm lvs vg_shared
      lvm's output and exit code come back unchanged. Installed under an lvm command's name
      (ln -s /usr/bin/clvm /usr/local/sbin/lvcreate), it acts as that command.

      Options (before the subcommand; everything after it goes to lvm):
        --socket PATH       the agent's socket (default: $CLVM_SOCKET, else %s)
        --timeout DURATION  how long to wait for the agent's answer (default: %s)
        --status            show this host's membership, cluster locks and activations
        -o, --output FORMAT  with --status: text (default) or json
        --help              this text

      Exit codes: lvm's own (0 success, 1-5 lvm errors), and:
        64  usage error
        65  clvm refuses the command: it can't tell which cluster locks make it safe
        69  clvm-agent is not reachable (not running, or the socket is wrong)
        70  the agent failed (lvm could not be run, or was killed at the agent's time limit)
        71  no answer from the agent within --timeout (a command still waiting for its locks
            is withdrawn; one whose lvm had started runs to its end: see clvm --status)
        73  a lock is held by another host (e.g. the LV is active there)
        75  timed out waiting for a cluster lock
        76  the lock service (dlm-server) is unreachable
        77  this host is not a member of the fence domain, or its ZooKeeper link is suspended
        78  stale fencing token: this host's locks were superseded
        79  the host lost its membership lease while lvm ran: the outcome is UNKNOWN
      """;

  private final PrintStream err;
  private final OutputStream rawOut;
  private final OutputStream rawErr;
  private final Map<String, String> env;

  ClvmMain(OutputStream rawOut, OutputStream rawErr, Map<String, String> env) {
    this.rawOut = rawOut;
    this.rawErr = rawErr;
    this.err = new PrintStream(rawErr, true, StandardCharsets.UTF_8);
    this.env = env;
  }

  public static void main(String[] args) {
    quietLogging();
    int code =
        new ClvmMain(
                new FileOutputStream(FileDescriptor.out),
                new FileOutputStream(FileDescriptor.err),
                System.getenv())
            .run(List.of(args));
    System.exit(code);
  }

  /**
   * Before any logger exists: stderr belongs to lvm, so the wrapper logs nothing (and skips
   * logback's start-up, a good part of a short run) unless CLVM_LOG_LEVEL asks for it.
   */
  private static void quietLogging() {
    String level = System.getenv("CLVM_LOG_LEVEL");
    if (level != null && !level.isEmpty()) {
      System.setProperty("logback.configurationFile", "clvm-cli-logback.xml");
      return;
    }
    System.setProperty("slf4j.provider", "org.slf4j.helpers.NOP_FallbackServiceProvider");
    System.setProperty("slf4j.internal.verbosity", "ERROR");
    java.util.logging.Logger.getLogger("").setLevel(java.util.logging.Level.OFF);
  }

  int run(List<String> args) {
    String invokedAs = "clvm";
    List<String> rest = new ArrayList<>(args);
    if (rest.size() >= 2 && rest.get(0).equals("--invoked-as")) {
      invokedAs = Path.of(rest.get(1)).getFileName().toString();
      rest = rest.subList(2, rest.size());
    }
    Path socket = Path.of(env.getOrDefault("CLVM_SOCKET", DEFAULT_SOCKET));
    Duration timeout = null; // as given; the default depends on what is asked
    boolean status = false;
    boolean json = false;
    List<String> argv = new ArrayList<>();
    if (!invokedAs.equals("clvm") && !invokedAs.equals("lvm")) {
      // Installed as an lvm command: every argument is lvm's, clvm takes none.
      argv.add(invokedAs);
      argv.addAll(rest);
    } else {
      int i = 0;
      for (; i < rest.size(); i++) {
        String a = rest.get(i);
        if (!a.startsWith("-")) {
          break;
        }
        try {
          switch (a) {
            case "--help", "-h" -> {
              err.flush();
              write(
                  rawOut, String.format(USAGE, DEFAULT_SOCKET, Durations.format(DEFAULT_TIMEOUT)));
              return 0;
            }
            case "--status" -> status = true;
            case "--socket" -> socket = Path.of(rest.get(++i));
            case "--timeout" -> timeout = Durations.parse(rest.get(++i));
            case "-o", "--output" -> json = outputFormat(rest.get(++i));
            default -> {
              if (a.startsWith("--socket=")) {
                socket = Path.of(a.substring("--socket=".length()));
              } else if (a.startsWith("--timeout=")) {
                timeout = Durations.parse(a.substring("--timeout=".length()));
              } else if (a.startsWith("--output=")) {
                json = outputFormat(a.substring("--output=".length()));
              } else {
                return usage("unknown option " + a + " (lvm options go after the subcommand)");
              }
            }
          }
        } catch (IndexOutOfBoundsException e) {
          return usage(a + " needs a value");
        } catch (IllegalArgumentException e) {
          return usage(e.getMessage());
        }
      }
      argv.addAll(rest.subList(i, rest.size()));
      if (!status && argv.isEmpty()) {
        return usage("no lvm subcommand given");
      }
      if (status && !argv.isEmpty()) {
        return usage("--status takes no lvm subcommand (" + argv.get(0) + " was not run)");
      }
      if (json && !status) {
        return usage("-o json goes with --status; lvm's own reports have --reportformat json");
      }
    }
    if (!Files.exists(socket)) {
      err.println(
          "clvm: cannot reach clvm-agent: no socket at "
              + socket
              + " (is clvm-agent running on this host? --socket or $CLVM_SOCKET name another)");
      return EXIT_AGENT_DOWN;
    }
    // --status is asked when something is wrong: at most 30 s unless the operator says otherwise.
    Duration wait = timeout != null ? timeout : status ? STATUS_DEFAULT_TIMEOUT : DEFAULT_TIMEOUT;
    try (ClvmClient.UnixSocketChannel ch = ClvmClient.connect(socket)) {
      ClvmClient client = new ClvmClient(ch.channel());
      if (status) {
        HostStatusResponse s = client.hostStatus(wait);
        write(
            rawOut,
            json
                ? JsonFormat.printer().includingDefaultValueFields().print(s) + "\n"
                : describe(s));
        return 0;
      }
      RunCommandResponse r = client.run(argv, "clvm pid " + ProcessHandle.current().pid(), wait);
      rawOut.write(r.getStdout().toByteArray());
      rawOut.flush();
      rawErr.write(r.getStderr().toByteArray());
      rawErr.flush();
      return r.getExitCode();
    } catch (StatusRuntimeException e) {
      return failed(e, socket, wait);
    } catch (IOException e) {
      err.println("clvm: writing lvm's output: " + e.getMessage());
      return EXIT_INTERNAL;
    }
  }

  private int failed(StatusRuntimeException e, Path socket, Duration timeout) {
    RefusalDetail d = Refusals.detailOf(e);
    Status s = e.getStatus();
    if (d == null) {
      if (s.getCode() == Status.Code.UNAVAILABLE) {
        err.println(
            "clvm: cannot reach clvm-agent at "
                + socket
                + " ("
                + (s.getCause() != null ? s.getCause().getMessage() : s.getDescription())
                + "); is clvm-agent running on this host?");
        return EXIT_AGENT_DOWN;
      }
      if (s.getCode() == Status.Code.DEADLINE_EXCEEDED) {
        err.println(
            "clvm: no answer from clvm-agent within "
                + Durations.format(timeout)
                + "; if the command still waited for its locks it was withdrawn, if its lvm had"
                + " started it runs to its end there (check 'clvm --status')");
        return EXIT_NO_ANSWER;
      }
      err.println("clvm: clvm-agent failed: " + s.getCode() + ": " + s.getDescription());
      return EXIT_INTERNAL;
    }
    err.println("clvm: " + d.getMessage());
    return switch (d.getReason()) {
      case NOT_MEMBER, SUSPENDED -> EXIT_NOT_MEMBER;
      case LOCK_TIMEOUT -> EXIT_LOCK_TIMEOUT;
      case LOCK_HELD_ELSEWHERE -> EXIT_LOCK_HELD;
      case LEASE_LOST_IN_FLIGHT -> EXIT_OUTCOME_UNKNOWN;
      case UNSUPPORTED_COMMAND -> EXIT_UNSUPPORTED;
      case STALE_FENCING_TOKEN -> EXIT_STALE_TOKEN;
      case LOCK_SERVICE_UNAVAILABLE -> EXIT_LOCK_SERVICE;
      case LVM_FAILED, CANCELLED, REFUSAL_UNSPECIFIED, UNRECOGNIZED -> EXIT_INTERNAL;
    };
  }

  private static final Duration STATUS_DEFAULT_TIMEOUT = Duration.ofSeconds(30);

  /** true for json, false for text. */
  private static boolean outputFormat(String format) {
    return switch (format) {
      case "json" -> true;
      case "text" -> false;
      default ->
          throw new IllegalArgumentException("unknown output format " + format + " (text or json)");
    };
  }

  private int usage(String problem) {
    err.println("clvm: " + problem);
    err.println("Try 'clvm --help'.");
    return EXIT_USAGE;
  }

  static String describe(HostStatusResponse s) {
    StringBuilder b = new StringBuilder();
    b.append("node:             ").append(s.getNode()).append('\n');
    b.append("incarnation:      ").append(s.getIncarnation()).append('\n');
    b.append("member:           ").append(s.getMember() ? "yes" : "no").append('\n');
    b.append("storage allowed:  ")
        .append(s.getStorageAllowed() ? "yes" : "NO (" + s.getMembershipNote() + ")")
        .append('\n');
    b.append("activations:      ").append(s.getActivationsCount()).append('\n');
    for (Activation a : s.getActivationsList()) {
      b.append(
          String.format(
              "  %s/%s %s (lock %d, token %d)%n",
              a.getVolumeGroup(),
              a.getLogicalVolume(),
              a.getMode(),
              a.getLockId(),
              a.getFencingToken()));
    }
    if (!s.getHeldLocksError().isEmpty()) {
      b.append("held locks:       ? (").append(s.getHeldLocksError()).append(")\n");
    } else {
      b.append("held locks:       ").append(s.getHeldLocksCount()).append('\n');
      for (HeldLock l : s.getHeldLocksList()) {
        b.append(
            String.format(
                "  %s/%s %s%s (lock %d)%n",
                l.getLockspace(),
                l.getResource(),
                l.getMode(),
                l.getPersistent() ? " persistent" : "",
                l.getLockId()));
      }
    }
    b.append("in flight:        ").append(s.getCommandsInFlightCount()).append('\n');
    for (CommandInFlight c : s.getCommandsInFlightList()) {
      b.append(
          String.format(
              "  #%d %s [%s, %d ms]%n",
              c.getId(),
              String.join(" ", c.getArgvList()),
              c.getStage(),
              c.getRunningNanos() / 1_000_000));
    }
    b.append("seen VG seqnos:   ")
        .append(
            s.getSeenSeqnoMap().isEmpty()
                ? "-"
                : new TreeMap<>(s.getSeenSeqnoMap())
                    .entrySet().stream()
                        .map(e -> e.getKey() + "=" + e.getValue())
                        .collect(Collectors.joining(", ")))
        .append('\n');
    b.append("view refreshes:   ").append(s.getViewRefreshes()).append('\n');
    b.append("metadata log:     ").append(s.getMetadataLog()).append('\n');
    return b.toString();
  }

  private static void write(OutputStream out, String text) {
    try {
      out.write(text.getBytes(StandardCharsets.UTF_8));
      out.flush();
    } catch (IOException e) {
      // stdout closed (clvm --help | head): nothing left to tell
    }
  }
}
