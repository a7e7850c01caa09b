package io.clusterlvm.fence.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A fence agent's process and what it starts never outlive its run: not on a time-out, and not when
 * it exits leaving a child behind (until 2026-12-08 such a child, re-parented to init, was left
 * running). The children are real processes; the test finds them by the pids they wrote.
 */
class BoundedProcessTest {
  @TempDir Path dir;

  private Path script(String body) throws Exception {
    Path p = dir.resolve("agent");
    Files.writeString(p, "#!/bin/bash\n" + body.replace("DIR", dir.toString()));
    Files.setPosixFilePermissions(p, PosixFilePermissions.fromString("rwxr-xr-x"));
    return p;
  }

  private long pid(String file) throws Exception {
    Path p = dir.resolve(file);
    await().atMost(Duration.ofSeconds(10)).until(() -> Files.exists(p) && Files.size(p) > 0);
    return Long.parseLong(Files.readString(p).trim());
  }

  private static boolean running(long pid) {
    try {
      String stat = Files.readString(Path.of("/proc", Long.toString(pid), "stat"));
      char state = stat.charAt(stat.lastIndexOf(')') + 2);
      return state != 'Z' && state != 'X';
    } catch (Exception gone) {
      return false;
    }
  }

  @Test
  void aChildLeftBehindByAProgramThatExitsIsKilled() throws Exception {
    Path agent =
        script(
            """
            read -r line
            echo "got $line"
            sleep 300 </dev/null >/dev/null 2>&1 &
            echo $! > DIR/child.pid
            exit 0
            """);
    BoundedProcess.Exit exit =
        BoundedProcess.run(
            List.of(agent.toString()), List.of("action=off"), Duration.ofSeconds(30));
    long child = pid("child.pid");
    try {
      assertThat(exit.exitCode()).isZero();
      assertThat(exit.timedOut()).isFalse();
      assertThat(exit.output()).containsExactly("got action=off");
      assertThat(exit.killedProcesses()).isEqualTo(1);
      await().atMost(Duration.ofSeconds(5)).until(() -> !running(child));
    } finally {
      ProcessHandle.of(child).ifPresent(ProcessHandle::destroyForcibly);
    }
  }

  @Test
  void aProgramThatHangsIsKilledWithItsChildrenAtTheTimeout() throws Exception {
    Path agent =
        script(
            """
            sleep 300 &
            echo $! > DIR/child.pid
            echo $$ > DIR/agent.pid
            wait
            """);
    BoundedProcess.Exit exit =
        BoundedProcess.run(List.of(agent.toString()), List.of(), Duration.ofSeconds(5));
    long child = pid("child.pid");
    long self = pid("agent.pid");
    try {
      assertThat(exit.timedOut()).isTrue();
      assertThat(exit.killedProcesses()).isPositive(); // bash may exit once its child is killed
      await().atMost(Duration.ofSeconds(5)).until(() -> !running(child) && !running(self));
    } finally {
      ProcessHandle.of(child).ifPresent(ProcessHandle::destroyForcibly);
      ProcessHandle.of(self).ifPresent(ProcessHandle::destroyForcibly);
    }
  }

  /**
   * A fencer that closes interrupts its agents' runs: the program and what it left, even a process
   * already re-parented to init, are killed before the run gives up.
   */
  @Test
  void anInterruptedRunKillsTheProgramAndWhatItLeftBehind() throws Exception {
    Path agent =
        script(
            """
            ( sleep 300 </dev/null >/dev/null 2>&1 & echo $! > DIR/orphan.pid )
            echo $$ > DIR/agent.pid
            sleep 300
            """);
    java.util.concurrent.atomic.AtomicReference<Throwable> ended =
        new java.util.concurrent.atomic.AtomicReference<>();
    Thread run =
        new Thread(
            () -> {
              try {
                BoundedProcess.run(List.of(agent.toString()), List.of(), Duration.ofSeconds(120));
              } catch (Throwable t) {
                ended.set(t);
              }
            });
    run.start();
    long orphan = pid("orphan.pid");
    long self = pid("agent.pid");
    try {
      run.interrupt();
      run.join(Duration.ofSeconds(20).toMillis());
      assertThat(run.isAlive()).isFalse();
      assertThat(ended.get()).isInstanceOf(InterruptedException.class);
      await().atMost(Duration.ofSeconds(5)).until(() -> !running(orphan) && !running(self));
    } finally {
      ProcessHandle.of(orphan).ifPresent(ProcessHandle::destroyForcibly);
      ProcessHandle.of(self).ifPresent(ProcessHandle::destroyForcibly);
    }
  }
}
