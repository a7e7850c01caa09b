package io.clusterlvm.clvm.exec;

/** A write carried a fencing token lower than one the guarded store has already seen. */
public final class StaleFencingTokenException extends Exception {

  private final String resource;
  private final long token;
  private final long highest;

  StaleFencingTokenException(String resource, long token, long highest) {
    super(
        "fencing token "
            + token
            + " of "
            + resource
            + " is stale: the metadata-change log has already seen token "
            + highest
            + " (a newer holder of that lock has written since)");
    this.resource = resource;
    this.token = token;
    this.highest = highest;
  }

  public String resource() {
    return resource;
  }

  public long token() {
    return token;
  }

  public long highest() {
    return highest;
  }
}
