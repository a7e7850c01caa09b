package io.clusterlvm.fence.config;

import java.util.Objects;

/**
 * One finding about a cluster.conf: where it is and what to change. Messages never contain secret
 * values.
 *
 * @param line 1-based line in the file, or 0 when the problem has no single place
 */
public record ConfigProblem(Severity severity, int line, String message) {

  public enum Severity {
    /** The file cannot be activated. */
    ERROR,
    /** Accepted; something is ignored or needs an operator's attention. */
    WARNING
  }

  public ConfigProblem {
    Objects.requireNonNull(severity, "severity");
    Objects.requireNonNull(message, "message");
  }

  static ConfigProblem error(int line, String message) {
    return new ConfigProblem(Severity.ERROR, line, message);
  }

  static ConfigProblem warning(int line, String message) {
    return new ConfigProblem(Severity.WARNING, line, message);
  }

  public boolean isError() {
    return severity == Severity.ERROR;
  }

  /** {@code "line 7: <message>"}, the form a CLI prints after the file name. */
  @Override
  public String toString() {
    return line > 0 ? "line " + line + ": " + message : message;
  }
}
