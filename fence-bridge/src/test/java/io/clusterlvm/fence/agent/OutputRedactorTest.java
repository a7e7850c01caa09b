package io.clusterlvm.fence.agent;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.fence.config.AgentOptions;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

@Timeout(value = 10, unit = TimeUnit.SECONDS)
class OutputRedactorTest {

  @Test
  void fencingPyNoiseIsFoldedIntoOneShortLine() throws Exception {
    OutputRedactor redactor = OutputRedactor.forOptions(AgentOptions.EMPTY, Duration.ofSeconds(5));

    String message =
        redactor.summarize(
            List.of(
                "ERROR:root:Failed: Unable to obtain correct plug status or plug is not available",
                "",
                "2026-11-25 10:38:32,366 ERROR: Failed: Unable to obtain correct plug status or plug is not available",
                ""));

    assertThat(message)
        .isEqualTo("ERROR: Failed: Unable to obtain correct plug status or plug is not available");
  }

  @Test
  void linesWithPasswordsOrPasswordScriptOutputAreWithheld(@TempDir Path dir) throws Exception {
    Path script = dir.resolve("pw");
    Files.writeString(script, "#!/bin/sh\necho 'script says hello' >&2\necho s3cr3t-from-script\n");
    Files.setPosixFilePermissions(script, PosixFilePermissions.fromString("rwx------"));
    Map<String, String> options = new LinkedHashMap<>();
    options.put("ipaddr", "10.0.0.1");
    options.put("passwd", "inline-pw");
    options.put("passwd_script", script.toString());
    options.put("pw", "s3cr3t-from-script"); // misspelt: only the script's output exposes it
    OutputRedactor redactor =
        OutputRedactor.forOptions(AgentOptions.of(options), Duration.ofSeconds(5));

    String message =
        redactor.summarize(
            List.of(
                "WARNING:root:Parse error: Ignoring unknown option 'pw=s3cr3t-from-script'",
                "script says hello",
                "Running command: ipmitool -P inline-pw chassis power status",
                "Password: hunter2",
                "Success: Powered OFF"));

    assertThat(message).isEqualTo("Success: Powered OFF (4 line(s) withheld)");
    assertThat(redactor.describe(AgentOptions.of(options)))
        .isEqualTo("{ipaddr=10.0.0.1, passwd=******, passwd_script=" + script + ", pw=******}");
  }

  @Test
  void messagesStayShort() throws Exception {
    OutputRedactor redactor = OutputRedactor.forOptions(AgentOptions.EMPTY, Duration.ofSeconds(5));

    String message = redactor.summarize(List.of("a", "b", "c", "d", "x".repeat(500)));

    assertThat(message).startsWith("c | d | xxx").endsWith("...").hasSize(240);
  }
}
