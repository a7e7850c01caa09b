package io.clusterlvm.dlm.server;

import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Answers given on one thread while a batch is open go out when it closes, one message per lock
 * stream instead of one per answer. The engine thread opens one around each pass that answers what
 * a write made durable; elsewhere (no batch open) answers go out at once. Nothing that can block
 * may run inside a batch: its answers would wait for it.
 */
final class AnswerBatch implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(AnswerBatch.class);
  private static final ThreadLocal<AnswerBatch> CURRENT = new ThreadLocal<>();

  private final List<Runnable> sends = new ArrayList<>();

  private AnswerBatch() {}

  static AnswerBatch open() {
    if (CURRENT.get() != null) {
      throw new IllegalStateException("an answer batch is already open on this thread");
    }
    AnswerBatch b = new AnswerBatch();
    CURRENT.set(b);
    return b;
  }

  /** Runs {@code send} when the current batch closes; false (not run) if none is open. */
  static boolean sendAtClose(Runnable send) {
    AnswerBatch b = CURRENT.get();
    if (b == null) {
      return false;
    }
    b.sends.add(send);
    return true;
  }

  @Override
  public void close() {
    CURRENT.remove();
    for (Runnable s : sends) {
      try {
        s.run();
      } catch (RuntimeException e) {
        // One stream's failure must not keep the others' answers back.
        LOG.warn("sending lock stream answers failed", e);
      }
    }
  }
}
