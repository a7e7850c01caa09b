package io.clusterlvm.clvm.agent;

import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class StateDirLockTest {

  @Test
  void oneAgentPerStateDir(@TempDir Path dir) throws Exception {
    Path state = dir.resolve("state");
    try (StateDirLock first = StateDirLock.acquire(state)) {
      assertThatThrownBy(() -> StateDirLock.acquire(state))
          .isInstanceOf(IllegalStateException.class)
          .hasMessageContaining("in use by another clvm-agent")
          .hasMessageContaining("pid " + ProcessHandle.current().pid());
    }
    // Released: the next agent takes it.
    StateDirLock.acquire(state).close();
  }
}
