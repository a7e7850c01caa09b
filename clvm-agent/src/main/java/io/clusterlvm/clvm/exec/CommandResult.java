package io.clusterlvm.clvm.exec;

import io.clusterlvm.clvm.lvm.LvmResult;
import java.time.Duration;
import java.util.List;

/**
 * What one command produced: lvm's result unchanged, and how it was coordinated.
 *
 * @param locks the cluster locks it ran under, in acquisition order (empty for local-only commands)
 * @param lockWait time spent acquiring locks (monotonic clock)
 * @param notes what clvm changed about the command, for the operator (written before lvm's stderr)
 */
public record CommandResult(
    LvmResult lvm, List<LockUse> locks, Duration lockWait, List<String> notes) {
  public CommandResult {
    locks = List.copyOf(locks);
    notes = List.copyOf(notes);
  }
}
