package io.clusterlvm.testing;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooKeeper;

/** What tests do to ZooKeeper sessions that the servers would otherwise do in their own time. */
public final class ZooKeeperSessions {
  private ZooKeeperSessions() {}

  /**
   * Ends {@code session}'s ZooKeeper session on the server, as a quorum does when the host is cut
   * off for longer than the session timeout: another client attaches to the same session and closes
   * it. The client of {@code session} then hears its session expire (Curator LOST).
   */
  public static void expire(ZooKeeper session, String connectString) throws Exception {
    CountDownLatch attached = new CountDownLatch(1);
    ZooKeeper twin =
        new ZooKeeper(
            connectString,
            session.getSessionTimeout(),
            e -> {
              if (e.getState() == Watcher.Event.KeeperState.SyncConnected) {
                attached.countDown();
              }
            },
            session.getSessionId(),
            session.getSessionPasswd());
    try {
      if (!attached.await(10, TimeUnit.SECONDS)) {
        throw new IllegalStateException("could not attach to the session");
      }
    } finally {
      twin.close();
    }
  }
}
