package io.clusterlvm.dlm.engine;

/**
 * A request the lock engine refuses. The code maps one to one onto a gRPC status; the message is
 * meant for an operator and never holds more than names and ids.
 */
public final class DlmException extends RuntimeException {
  public enum Code {
    INVALID_ARGUMENT,
    NOT_FOUND,
    PERMISSION_DENIED,
    FAILED_PRECONDITION,
    RESOURCE_EXHAUSTED
  }

  private final Code code;

  public DlmException(Code code, String message) {
    super(message, null, false, false);
    this.code = code;
  }

  public Code code() {
    return code;
  }

  static DlmException invalid(String message) {
    return new DlmException(Code.INVALID_ARGUMENT, message);
  }

  static DlmException notFound(String message) {
    return new DlmException(Code.NOT_FOUND, message);
  }

  static DlmException denied(String message) {
    return new DlmException(Code.PERMISSION_DENIED, message);
  }

  static DlmException precondition(String message) {
    return new DlmException(Code.FAILED_PRECONDITION, message);
  }
}
