package io.clusterlvm.dlm.engine;

public enum NodeState {
  MEMBER,
  LEFT
}
