package io.clusterlvm.fence.agent;

import java.time.Duration;
import java.util.Objects;

/**
 * One run of a fence agent.
 *
 * @param method the fence method the device belongs to
 * @param device the fencedevice name
 * @param exitCode the agent's exit code, or -1 when it has none (timed out, could not start)
 * @param duration how long the run took, measured on a monotonic clock
 * @param message a short summary of the agent's output, free of passwords and password-script
 *     output; safe to log, to put in events and to show in a CLI
 */
public record FenceAttempt(
    String method,
    String device,
    FenceAction action,
    Outcome outcome,
    int exitCode,
    Duration duration,
    String message) {

  /** How a run ended. */
  public enum Outcome {
    /** {@code off}, {@code on} or {@code reboot} exited 0. */
    SUCCESS,
    /** {@code status} exited 0: the machine is powered on. */
    POWER_ON,
    /** {@code status} exited 2: the machine is powered off. */
    POWER_OFF,
    /** The agent exited with a failure code. */
    FAILED,
    /** The agent did not finish in time; it and its children were killed. */
    TIMED_OUT,
    /** The agent could not be started (not found, not executable). */
    NOT_STARTED
  }

  public FenceAttempt {
    Objects.requireNonNull(method, "method");
    Objects.requireNonNull(device, "device");
    Objects.requireNonNull(action, "action");
    Objects.requireNonNull(outcome, "outcome");
    Objects.requireNonNull(duration, "duration");
    Objects.requireNonNull(message, "message");
  }

  /** The outcome fence-agents' exit-code convention gives {@code exitCode} for {@code action}. */
  static Outcome outcomeOf(FenceAction action, int exitCode) {
    if (action == FenceAction.STATUS) {
      return switch (exitCode) {
        case 0 -> Outcome.POWER_ON;
        case 2 -> Outcome.POWER_OFF;
        default -> Outcome.FAILED;
      };
    }
    return exitCode == 0 ? Outcome.SUCCESS : Outcome.FAILED;
  }
}
