package io.clusterlvm.it.ha;

import java.nio.file.Path;
import java.time.Duration;
import java.util.Locale;
import org.junit.jupiter.api.TestInfo;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** Where the HA tests put their server logs, and how they report measured figures. */
final class HaLogs {
  private static final Logger LOG = LoggerFactory.getLogger("ha-metric");

  private HaLogs() {}

  /** target/ha-logs/CLASS/METHOD: one directory per test, kept after the run. */
  static Path dir(TestInfo info) {
    return Path.of(
        "target",
        "ha-logs",
        info.getTestClass().map(Class::getSimpleName).orElse("unknown"),
        info.getTestMethod().map(m -> m.getName()).orElse("unknown"));
  }

  /** One "HA-METRIC name=value" line in the test output (target/surefire-reports/*-output.txt). */
  static void metric(String name, Duration d) {
    String line = String.format(Locale.ROOT, "HA-METRIC %s=%d ms", name, d.toMillis());
    LOG.info(line);
    System.out.println(line);
  }

  static void metric(String name, long n) {
    String line = String.format(Locale.ROOT, "HA-METRIC %s=%d", name, n);
    LOG.info(line);
    System.out.println(line);
  }
}
