package io.clusterlvm.dlm.client;

import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;

/** A request the lock service refused or could not complete; the message says why. */
public final class DlmClientException extends RuntimeException {
  private static final Metadata.Key<String> OUTCOME =
      Metadata.Key.of("dlm-outcome", Metadata.ASCII_STRING_MARSHALLER);

  private final Status.Code code;
  private final String outcome;

  DlmClientException(Status.Code code, String outcome, String message, Throwable cause) {
    super(message, cause);
    this.code = code;
    this.outcome = outcome;
  }

  /** Wraps a gRPC failure (status, description, dlm-outcome trailer). */
  public static DlmClientException of(Throwable t) {
    if (t instanceof DlmClientException d) {
      return d;
    }
    Status s = Status.fromThrowable(t);
    Metadata trailers = Status.trailersFromThrowable(t);
    String outcome = trailers == null ? null : trailers.get(OUTCOME);
    String msg = s.getDescription() != null ? s.getDescription() : s.getCode().toString();
    return new DlmClientException(s.getCode(), outcome, msg, t);
  }

  static boolean isUnavailable(Throwable t) {
    return t instanceof StatusRuntimeException
        && ((StatusRuntimeException) t).getStatus().getCode() == Status.Code.UNAVAILABLE;
  }

  /** The gRPC status code (NOT_FOUND, PERMISSION_DENIED, ...). */
  public Status.Code code() {
    return code;
  }

  /** A NOQUEUE request could not be granted at once. */
  public boolean wouldBlock() {
    return "WOULD_BLOCK".equals(outcome);
  }

  /**
   * The lock service says the wait for a grant ran into the request's own timeout (not a client's
   * call deadline, which says nothing of the request).
   */
  public boolean waitTimedOut() {
    return "TIMED_OUT".equals(outcome);
  }

  /** The wait for a grant timed out, or the call's deadline passed without an answer. */
  public boolean timedOut() {
    return "TIMED_OUT".equals(outcome) || code == Status.Code.DEADLINE_EXCEEDED;
  }

  /** The server said how the request ended (would block, timed out, cancelled...). */
  boolean hasOutcome() {
    return outcome != null;
  }

  /** A conversion could never have been granted (conversion deadlock). */
  public boolean deadlock() {
    return "DEADLOCK".equals(outcome);
  }
}
