package io.clusterlvm.fence.agent;

import java.time.Duration;
import java.util.List;
import java.util.Objects;
import java.util.Optional;

/**
 * The result of one fence of a node: every method tried, in order, until one succeeded or all
 * failed.
 *
 * @param method the method that fenced the node, empty unless {@link Outcome#FENCED}
 * @param attempts every agent run, in the order made
 * @param elapsed the whole fence, measured on a monotonic clock
 */
public record FenceResult(
    String node,
    Outcome outcome,
    Optional<String> method,
    List<FenceAttempt> attempts,
    Duration elapsed) {

  public enum Outcome {
    /** A method switched every device off and each then reported OFF: the node is fenced. */
    FENCED,
    /** Every method failed; the node is not known to be off. Retry later, or await an ack. */
    FAILED,
    /** The node has no fence method; only an operator's acknowledgement can fence it. */
    NO_FENCE_METHOD,
    /**
     * The fence was no longer wanted before the next method ran (the host rejoined, or an operator
     * acknowledged it), so that method was not tried. Earlier methods' runs are in the attempts.
     */
    SUPERSEDED
  }

  public FenceResult {
    Objects.requireNonNull(node, "node");
    Objects.requireNonNull(outcome, "outcome");
    Objects.requireNonNull(method, "method");
    Objects.requireNonNull(elapsed, "elapsed");
    attempts = List.copyOf(attempts);
    if (method.isPresent() != (outcome == Outcome.FENCED)) {
      throw new IllegalArgumentException("a method is named exactly when the node was fenced");
    }
  }

  public boolean fenced() {
    return outcome == Outcome.FENCED;
  }
}
