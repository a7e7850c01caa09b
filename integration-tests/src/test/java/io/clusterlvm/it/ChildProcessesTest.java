package io.clusterlvm.it;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.testing.ChildProcesses;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** A JVM that exits before its test's cleanup runs takes the processes it started with it. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class ChildProcessesTest {

  /** Starts a child, prints its pid, and exits as ZooKeeper's exit procedure does. */
  public static final class ExitingJvm {
    public static void main(String[] args) throws Exception {
      Process child = ChildProcesses.killOnExit(new ProcessBuilder("sleep", "60").start());
      System.out.println(child.pid());
      System.out.flush();
      System.exit(14);
    }
  }

  @Test
  void childrenDieWithTheJvmThatStartedThem() throws Exception {
    String cp = System.getProperty("surefire.test.class.path");
    Process jvm =
        new ProcessBuilder(
                Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-cp",
                cp != null && !cp.isBlank() ? cp : System.getProperty("java.class.path"),
                ExitingJvm.class.getName())
            .redirectError(ProcessBuilder.Redirect.DISCARD)
            .start();
    long child;
    try (BufferedReader out =
        new BufferedReader(new InputStreamReader(jvm.getInputStream(), StandardCharsets.UTF_8))) {
      child = Long.parseLong(out.readLine().strip());
    }
    try {
      assertThat(jvm.waitFor(30, TimeUnit.SECONDS)).isTrue();
      assertThat(jvm.exitValue()).isEqualTo(14);
      await("the child is gone")
          .atMost(Duration.ofSeconds(10))
          .until(() -> !ChildProcesses.running(child));
    } finally {
      ProcessHandle.of(child).ifPresent(ProcessHandle::destroyForcibly);
    }
  }
}
