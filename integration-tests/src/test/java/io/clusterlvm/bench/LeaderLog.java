package io.clusterlvm.bench;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.Logger;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.AppenderBase;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.slf4j.LoggerFactory;

/**
 * Logging for the benchmark: the servers' INFO chatter is turned off (it would slow them and bury
 * the table), but the leader's own "loaded the lock table ... in N ms" line is kept, because it
 * says how long a new leader took to load the whole lock table (it serves before that).
 */
final class LeaderLog extends AppenderBase<ILoggingEvent> {
  private static final Pattern LOADED =
      Pattern.compile(
          "lock table of epoch \\d+: \\d+ nodes, (\\d+) resources, (\\d+) locks.* in (\\d+) ms");

  /** A new leader's report of its table load. */
  record Loaded(long atNanos, int resources, int locks, long millis) {}

  private final List<Loaded> loads = new CopyOnWriteArrayList<>();

  static LeaderLog install(boolean verbose) {
    Logger root = (Logger) LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME);
    if (!verbose) {
      root.setLevel(Level.WARN);
    }
    LeaderLog log = new LeaderLog();
    log.setContext(root.getLoggerContext());
    log.setName("bench-leader-log");
    log.start();
    Logger core = (Logger) LoggerFactory.getLogger("io.clusterlvm.dlm.server.LeaderCore");
    core.setLevel(Level.INFO);
    core.addAppender(log);
    // Keep the root's appenders for this logger only when verbose; else we echo WARN+ ourselves.
    core.setAdditive(verbose);
    log.echo = !verbose;
    return log;
  }

  private boolean echo;

  @Override
  protected void append(ILoggingEvent e) {
    Matcher m = LOADED.matcher(e.getFormattedMessage());
    if (m.find()) {
      loads.add(
          new Loaded(
              System.nanoTime(),
              Integer.parseInt(m.group(1)),
              Integer.parseInt(m.group(2)),
              Long.parseLong(m.group(3))));
    }
    if (echo && e.getLevel().isGreaterOrEqual(Level.WARN)) {
      System.err.println(e.getLevel() + " " + e.getLoggerName() + " - " + e.getFormattedMessage());
    }
  }

  /** The last table load reported, or null. */
  Loaded lastLoad() {
    return loads.isEmpty() ? null : loads.get(loads.size() - 1);
  }
}
