package io.clusterlvm.fence.config;

import java.util.List;
import java.util.stream.Collectors;

/** A cluster.conf that cannot be activated. The message lists every error with its line. */
public final class ClusterConfigException extends Exception {
  private final List<ConfigProblem> problems;

  ClusterConfigException(List<ConfigProblem> problems) {
    super(describe(problems));
    this.problems = List.copyOf(problems);
  }

  /** Every problem found: the errors and, for context, the warnings. */
  public List<ConfigProblem> problems() {
    return problems;
  }

  /** Only the errors. */
  public List<ConfigProblem> errors() {
    return problems.stream().filter(ConfigProblem::isError).toList();
  }

  private static String describe(List<ConfigProblem> problems) {
    List<ConfigProblem> errors = problems.stream().filter(ConfigProblem::isError).toList();
    return errors.stream()
        .map(p -> "  " + p)
        .collect(
            Collectors.joining("\n", "cluster.conf has " + errors.size() + " error(s):\n", ""));
  }
}
