package io.clusterlvm.fence.config;

import java.util.List;
import java.util.Objects;
import java.util.Optional;

/**
 * A {@code <clusternode>}.
 *
 * @param methods fence methods in the order they are tried; empty when the node has no fence
 *     device, in which case only an operator's acknowledgement can mark it fenced
 */
public record ClusterNode(String name, int nodeId, int votes, List<FenceMethod> methods) {
  public ClusterNode {
    Objects.requireNonNull(name, "name");
    methods = List.copyOf(methods);
  }

  /**
   * The first method named {@code name}: a fence's record names its method, and a config in force
   * may have two of one name (a warning there).
   */
  public Optional<FenceMethod> method(String name) {
    return methods.stream().filter(m -> m.name().equals(name)).findFirst();
  }

  /** True when a fence agent can fence this node without an operator. */
  public boolean hasFenceMethod() {
    return !methods.isEmpty();
  }
}
