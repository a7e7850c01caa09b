package io.clusterlvm.fence.agent;

import io.clusterlvm.fence.config.AgentOptions;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Turns an agent's output into a short message that holds no secret.
 *
 * <p>Secrets can reach the output in several ways: fencing.py echoes an unknown option line
 * verbatim ({@code Ignoring unknown option 'pasword=...'}); a password script's stderr is inherited
 * by the agent; a verbose agent logs the commands it runs. So every line that contains a password
 * value, a line of the password script's output, or mentions a password at all is dropped.
 */
final class OutputRedactor {
  private static final Logger LOG = LoggerFactory.getLogger(OutputRedactor.class);

  private static final int MAX_LINES = 3;
  private static final int MAX_CHARS = 240;
  private static final Pattern MENTIONS_SECRET =
      Pattern.compile("passw|community", Pattern.CASE_INSENSITIVE);
  // fencing.py logs each error twice: "ERROR:root:..." and "2026-01-01 10:00:00,123 ERROR: ...".
  private static final Pattern TIMESTAMP =
      Pattern.compile("^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d,\\d+ ");
  private static final Pattern ROOT_LOGGER = Pattern.compile("^(\\w+):root:");

  private final Set<String> secrets;

  private OutputRedactor(Set<String> secrets) {
    this.secrets = Set.copyOf(secrets);
  }

  /**
   * A redactor for an agent run with {@code options}. Password scripts are run here once, only to
   * learn what to scrub: the agent runs them again itself, as fenced left it to. Their output is
   * never logged.
   */
  static OutputRedactor forOptions(AgentOptions options, Duration timeout)
      throws InterruptedException {
    Set<String> secrets = new HashSet<>(options.secretValues());
    for (String script : options.secretScripts()) {
      try {
        // The agent runs it through a shell (os.popen), so do the same.
        BoundedProcess.Exit exit =
            BoundedProcess.run(List.of("/bin/sh", "-c", script), List.of(), timeout);
        exit.output().stream().map(String::strip).filter(s -> !s.isEmpty()).forEach(secrets::add);
        if (exit.exitCode() != 0) {
          LOG.debug("password script {} exited {}", script, exit.exitCode());
        }
      } catch (IOException e) {
        LOG.debug("password script {} could not run: {}", script, e.getMessage());
      }
    }
    return new OutputRedactor(secrets);
  }

  /** {@code options} as text with every secret masked, including ones learned from scripts. */
  String describe(AgentOptions options) {
    return options.describe(secrets);
  }

  /** Up to {@value #MAX_LINES} last distinct lines of {@code output}, secrets removed. */
  String summarize(List<String> output) {
    List<String> kept = new ArrayList<>();
    int withheld = 0;
    for (String raw : output) {
      String line = raw.strip();
      if (line.isEmpty()) {
        continue;
      }
      if (containsSecret(line)) {
        withheld++;
        continue;
      }
      line = ROOT_LOGGER.matcher(TIMESTAMP.matcher(line).replaceFirst("")).replaceFirst("$1: ");
      if (!kept.contains(line)) {
        kept.add(line);
      }
    }
    List<String> last = kept.subList(Math.max(0, kept.size() - MAX_LINES), kept.size());
    String message = String.join(" | ", last);
    if (withheld > 0) {
      message += (message.isEmpty() ? "" : " ") + "(" + withheld + " line(s) withheld)";
    }
    return message.length() <= MAX_CHARS ? message : message.substring(0, MAX_CHARS - 3) + "...";
  }

  private boolean containsSecret(String line) {
    if (MENTIONS_SECRET.matcher(line).find()) {
      return true;
    }
    for (String secret : secrets) {
      if (line.contains(secret)) {
        return true;
      }
    }
    return false;
  }
}
