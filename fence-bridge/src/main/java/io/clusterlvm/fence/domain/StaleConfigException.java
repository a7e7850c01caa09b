package io.clusterlvm.fence.domain;

/** A cluster.conf whose config_version is not higher than the active one. */
public final class StaleConfigException extends Exception {
  public StaleConfigException(String message) {
    super(message);
  }
}
