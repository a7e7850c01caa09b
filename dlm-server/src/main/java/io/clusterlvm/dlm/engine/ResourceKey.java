package io.clusterlvm.dlm.engine;

public record ResourceKey(String lockspace, String resource) {
  @Override
  public String toString() {
    return "[ls=" + lockspace + " res=" + resource + "]";
  }
}
