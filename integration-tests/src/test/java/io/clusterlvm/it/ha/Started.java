package io.clusterlvm.it.ha;

import java.util.ArrayList;
import java.util.List;

/**
 * What a test started (ZooKeeper, server processes, clients, namespaces), closed last first when
 * the test ends, passed or failed. Every one is closed even if one fails to close: a server left
 * running, or a namespace left behind, would disturb the next test.
 */
final class Started implements AutoCloseable {
  private final List<AutoCloseable> started = new ArrayList<>();

  /** Returns {@code c}, to be closed after everything added later. */
  <T extends AutoCloseable> T add(T c) {
    started.add(c);
    return c;
  }

  @Override
  public void close() throws Exception {
    Exception failed = null;
    for (int i = started.size() - 1; i >= 0; i--) {
      try {
        started.get(i).close();
      } catch (Exception e) {
        if (failed == null) {
          failed = e;
        } else {
          failed.addSuppressed(e);
        }
      }
    }
    started.clear();
    if (failed != null) {
      throw failed;
    }
  }
}
