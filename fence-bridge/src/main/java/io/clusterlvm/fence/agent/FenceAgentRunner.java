package io.clusterlvm.fence.agent;

import io.clusterlvm.fence.config.ClusterNode;
import io.clusterlvm.fence.config.FenceDeviceRef;
import io.clusterlvm.fence.config.FenceMethod;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.function.BooleanSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs fence-agents programs the way fenced and pacemaker do: options as {@code key=value} lines on
 * stdin, exit code 0 for success ({@code status}: 0 on, 2 off).
 *
 * <p>A {@linkplain #fence fence} tries the node's methods in order. Within a method every device is
 * switched {@code off}, then every device is asked for {@code status}; only when all of them report
 * OFF has the method fenced the node. Any failure ends the method and the next one is tried. There
 * is no retry here: the caller (the fence state machine) owns retries and back-off, see {@link
 * Backoff}.
 *
 * <p>Every agent run is bounded by the runner's timeout; on time-out the agent and all its child
 * processes are killed. Passwords are passed to agents only; they and password-script output never
 * reach logs or {@link FenceAttempt#message()}.
 *
 * <p>Thread-safe and stateless: calls for different nodes may run concurrently.
 */
public final class FenceAgentRunner {
  private static final Logger LOG = LoggerFactory.getLogger(FenceAgentRunner.class);

  /** Options the runner decides; a value from cluster.conf must not override them. */
  /** Options the runner gives itself; {@code option} is the older spelling of {@code action}. */
  private static final Set<String> SET_BY_RUNNER = Set.of("action", "option", "nodename");

  private final Duration timeout;
  private final List<Path> searchPath;

  /**
   * @param timeout the limit on every single agent run
   * @param searchPath directories searched, in order, for an agent named without a path
   */
  public FenceAgentRunner(Duration timeout, List<Path> searchPath) {
    Objects.requireNonNull(timeout, "timeout");
    if (timeout.isNegative() || timeout.isZero()) {
      throw new IllegalArgumentException("timeout must be positive: " + timeout);
    }
    this.timeout = timeout;
    this.searchPath = List.copyOf(searchPath);
  }

  /** A runner that finds agents on {@link #defaultSearchPath()}. */
  public static FenceAgentRunner withDefaultSearchPath(Duration timeout) {
    return new FenceAgentRunner(timeout, defaultSearchPath());
  }

  /**
   * {@code $PATH}, then {@code /usr/sbin} and {@code /sbin}, where fence-agents installs, since a
   * daemon's PATH often lacks the sbin directories.
   */
  public static List<Path> defaultSearchPath() {
    Set<Path> dirs = new LinkedHashSet<>();
    String path = System.getenv("PATH");
    if (path != null) {
      for (String dir : path.split(File.pathSeparator)) {
        if (!dir.isEmpty()) {
          dirs.add(Path.of(dir));
        }
      }
    }
    dirs.add(Path.of("/usr/sbin"));
    dirs.add(Path.of("/sbin"));
    return List.copyOf(dirs);
  }

  public Duration timeout() {
    return timeout;
  }

  public List<Path> searchPath() {
    return searchPath;
  }

  /**
   * Fences {@code node}: tries its methods in order until one switches every device off and each
   * then reports OFF. Blocks for at most about (number of device runs) x timeout.
   *
   * @return {@link FenceResult.Outcome#FENCED} only when the node is known to be powered off
   * @throws InterruptedException if interrupted; the running agent and its children are killed
   */
  public FenceResult fence(ClusterNode node) throws InterruptedException {
    return fence(node, () -> true);
  }

  /**
   * Like {@link #fence(ClusterNode)}, but asks {@code stillWanted} before each method and stops
   * with {@link FenceResult.Outcome#SUPERSEDED} once it says no. A method that fails at a dead BMC
   * takes as long as the agent's time-outs; the host may have rebooted and rejoined meanwhile (or
   * been acknowledged), and the next method would then power off a running member. Not asked
   * between the devices of one method: those switch off together, as one power cut.
   */
  public FenceResult fence(ClusterNode node, BooleanSupplier stillWanted)
      throws InterruptedException {
    long start = System.nanoTime();
    if (!node.hasFenceMethod()) {
      LOG.warn(
          "[node={}] has no fence method; it stays FENCING until an operator acks", node.name());
      return new FenceResult(
          node.name(),
          FenceResult.Outcome.NO_FENCE_METHOD,
          Optional.empty(),
          List.of(),
          since(start));
    }
    List<FenceAttempt> attempts = new ArrayList<>();
    // One redactor per device for the whole fence: it may run a password script to learn it.
    Map<FenceDeviceRef, OutputRedactor> redactors = new HashMap<>();
    for (FenceMethod method : node.methods()) {
      if (!stillWanted.getAsBoolean()) {
        LOG.info(
            "[node={}] fence no longer wanted; method {} not tried", node.name(), method.name());
        return new FenceResult(
            node.name(), FenceResult.Outcome.SUPERSEDED, Optional.empty(), attempts, since(start));
      }
      if (fenceWith(node.name(), method, attempts, redactors)) {
        LOG.info(
            "[node={} method={}] fenced: every device off and reporting OFF",
            node.name(),
            method.name());
        return new FenceResult(
            node.name(),
            FenceResult.Outcome.FENCED,
            Optional.of(method.name()),
            attempts,
            since(start));
      }
    }
    LOG.warn(
        "[node={}] fence failed: all {} method(s) failed after {} agent run(s)",
        node.name(),
        node.methods().size(),
        attempts.size());
    return new FenceResult(
        node.name(), FenceResult.Outcome.FAILED, Optional.empty(), attempts, since(start));
  }

  /**
   * Runs one agent action on one device, e.g. a {@code status} probe or an {@code on} after an
   * operator repaired a node. Blocks for at most about the timeout.
   *
   * @throws InterruptedException if interrupted; the agent and its children are killed
   */
  public FenceAttempt run(
      String nodeName, FenceMethod method, FenceDeviceRef device, FenceAction action)
      throws InterruptedException {
    return run(
        nodeName,
        method.name(),
        device,
        action,
        OutputRedactor.forOptions(device.agentOptions(), timeout));
  }

  /**
   * Powers the host on again through the devices of method {@code methodName} (the first of that
   * name) that ask for it ({@code action="reboot"} or {@code "on"}), in their order, once a fence
   * by that method confirmed it off and that is on record: the host boots as a new incarnation,
   * which rejoins. An empty list when no device asks. A failure is only reported: the host is
   * fenced either way.
   */
  public List<FenceAttempt> powerOn(ClusterNode node, String methodName)
      throws InterruptedException {
    List<FenceAttempt> attempts = new ArrayList<>();
    Optional<FenceMethod> method = node.method(methodName);
    if (method.isPresent()) {
      for (FenceDeviceRef device : method.get().onDevices()) {
        attempts.add(run(node.name(), method.get(), device, FenceAction.ON));
      }
    }
    return attempts;
  }

  /** Off on every device, then status on every device; false as soon as one falls short. */
  private boolean fenceWith(
      String node,
      FenceMethod method,
      List<FenceAttempt> attempts,
      Map<FenceDeviceRef, OutputRedactor> redactors)
      throws InterruptedException {
    // Status only after every off: with two power supplies the host stays up until both are off.
    for (FenceAction action : List.of(FenceAction.OFF, FenceAction.STATUS)) {
      FenceAttempt.Outcome wanted =
          action == FenceAction.OFF ? FenceAttempt.Outcome.SUCCESS : FenceAttempt.Outcome.POWER_OFF;
      for (FenceDeviceRef device : method.offDevices()) {
        FenceAttempt attempt =
            run(node, method.name(), device, action, redactor(device, redactors));
        attempts.add(attempt);
        if (attempt.outcome() != wanted) {
          LOG.warn(
              "[node={} method={}] method failed at device {}: {} gave {}, needed {}",
              node,
              method.name(),
              device.name(),
              action.agentValue(),
              attempt.outcome(),
              wanted);
          return false;
        }
      }
    }
    return true;
  }

  private OutputRedactor redactor(FenceDeviceRef device, Map<FenceDeviceRef, OutputRedactor> cache)
      throws InterruptedException {
    OutputRedactor redactor = cache.get(device);
    if (redactor == null) {
      redactor = OutputRedactor.forOptions(device.agentOptions(), timeout);
      cache.put(device, redactor);
    }
    return redactor;
  }

  private FenceAttempt run(
      String node,
      String method,
      FenceDeviceRef device,
      FenceAction action,
      OutputRedactor redactor)
      throws InterruptedException {
    long start = System.nanoTime();
    Optional<Path> agent = locate(device.agent());
    if (agent.isEmpty()) {
      return logged(
          node,
          new FenceAttempt(
              method,
              device.name(),
              action,
              FenceAttempt.Outcome.NOT_STARTED,
              -1,
              since(start),
              "agent " + device.agent() + " not found in " + searchPath));
    }
    List<String> stdin = new ArrayList<>();
    device
        .agentOptions()
        .without(SET_BY_RUNNER)
        .asMap()
        .forEach((key, value) -> stdin.add(key + "=" + value));
    stdin.add("nodename=" + node);
    stdin.add("action=" + action.agentValue());
    LOG.debug(
        "[node={} method={} device={}] running {} {} with {}",
        node,
        method,
        device.name(),
        agent.get(),
        action.agentValue(),
        redactor.describe(device.agentOptions()));
    BoundedProcess.Exit exit;
    try {
      exit = BoundedProcess.run(List.of(agent.get().toString()), stdin, timeout);
    } catch (IOException e) {
      return logged(
          node,
          new FenceAttempt(
              method,
              device.name(),
              action,
              FenceAttempt.Outcome.NOT_STARTED,
              -1,
              since(start),
              "could not start " + agent.get() + ": " + e.getMessage()));
    }
    String output = redactor.summarize(exit.output());
    FenceAttempt.Outcome outcome;
    String message;
    if (exit.timedOut()) {
      outcome = FenceAttempt.Outcome.TIMED_OUT;
      message =
          "timed out after "
              + timeout.toMillis()
              + " ms; killed "
              + exit.killedProcesses()
              + " process(es)"
              + (output.isEmpty() ? "" : ": " + output);
    } else {
      outcome = FenceAttempt.outcomeOf(action, exit.exitCode());
      message = output;
    }
    return logged(
        node,
        new FenceAttempt(
            method, device.name(), action, outcome, exit.exitCode(), exit.elapsed(), message));
  }

  /** The agent's path: an absolute agent as is, else the first executable on the search path. */
  Optional<Path> locate(String agent) {
    if (agent.startsWith("/")) {
      Path path = Path.of(agent);
      return Files.isExecutable(path) ? Optional.of(path) : Optional.empty();
    }
    return searchPath.stream()
        .map(dir -> dir.resolve(agent))
        .filter(p -> Files.isRegularFile(p) && Files.isExecutable(p))
        .findFirst();
  }

  private static FenceAttempt logged(String node, FenceAttempt a) {
    boolean expected =
        a.outcome() == FenceAttempt.Outcome.SUCCESS
            || a.outcome() == FenceAttempt.Outcome.POWER_ON
            || a.outcome() == FenceAttempt.Outcome.POWER_OFF;
    String format = "[node={} method={} device={}] {} -> {} (exit {}, {} ms): {}";
    Object[] args = {
      node,
      a.method(),
      a.device(),
      a.action().agentValue(),
      a.outcome(),
      a.exitCode(),
      a.duration().toMillis(),
      a.message()
    };
    if (expected) {
      LOG.info(format, args);
    } else {
      LOG.warn(format, args);
    }
    return a;
  }

  private static Duration since(long startNanos) {
    return Duration.ofNanos(System.nanoTime() - startNanos);
  }
}
