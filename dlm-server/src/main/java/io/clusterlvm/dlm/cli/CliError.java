package io.clusterlvm.dlm.cli;

/** A request dlmctl will not send as asked; the message tells the operator what to do instead. */
final class CliError extends RuntimeException {
  CliError(String message) {
    super(message, null, false, false);
  }
}
