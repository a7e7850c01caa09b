package io.clusterlvm.it.ha;

import io.clusterlvm.dlm.proto.ServerStatusResponse;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.stream.Collectors;
import org.awaitility.Awaitility;

/**
 * N dlm-server processes of one cluster (one ZooKeeper ensemble and root). Closing stops every
 * process it started, each by its own handle.
 */
final class DlmServerCluster implements AutoCloseable {
  /** ZooKeeper session timeout of the servers: how long a kill -9'd leader keeps its seat. */
  static final Duration ZK_SESSION_TIMEOUT = Duration.ofSeconds(3);

  /** Generous, so that client sessions survive a fail-over; the tests check they resume. */
  static final Duration SESSION_GRACE = Duration.ofSeconds(30);

  private final List<DlmServerProcess> servers = new ArrayList<>();

  private DlmServerCluster() {}

  /** The daemon options every test server gets, for {@code zookeeper} and {@code root}. */
  static List<String> options(String zookeeper, String root, Path dataDir) {
    return options(zookeeper, root, dataDir, ZK_SESSION_TIMEOUT);
  }

  private static List<String> options(
      String zookeeper, String root, Path dataDir, Duration zkSessionTimeout) {
    return List.of(
        "--zookeeper=" + zookeeper,
        "--zk-root=" + root,
        "--zk-session-timeout=" + zkSessionTimeout.toMillis() + "ms",
        "--session-grace=" + SESSION_GRACE.toSeconds() + "s",
        "--data-dir=" + dataDir);
  }

  /** Starts {@code n} servers in parallel and waits until they all answer and one leads. */
  static DlmServerCluster start(int n, String zookeeper, String root, Path logDir)
      throws Exception {
    return start(n, zookeeper, root, logDir, ZK_SESSION_TIMEOUT);
  }

  /** Like {@link #start(int, String, String, Path)}, with another ZooKeeper session timeout. */
  static DlmServerCluster start(
      int n, String zookeeper, String root, Path logDir, Duration zkSessionTimeout)
      throws Exception {
    DlmServerCluster c = new DlmServerCluster();
    try {
      for (int i = 0; i < n; i++) {
        c.add(
            DlmServerProcess.launch(
                "dlm" + i,
                options(zookeeper, root, logDir.resolve("data-dlm" + i), zkSessionTimeout),
                logDir));
      }
      for (DlmServerProcess p : c.servers) {
        p.awaitServing(Duration.ofSeconds(60));
      }
      c.awaitLeader(Duration.ofSeconds(30));
      return c;
    } catch (Exception | Error e) {
      c.close();
      throw e;
    }
  }

  /**
   * A cluster led by {@code first}, a server launched apart (its own ZooKeeper address, its own
   * network): waits until it serves and leads, then starts dlmB and dlmC on {@code zookeeper},
   * which follow it. The caller closes the cluster (which stops {@code first} too).
   */
  static DlmServerCluster ledBy(DlmServerProcess first, String zookeeper, String root, Path logDir)
      throws Exception {
    DlmServerCluster c = new DlmServerCluster();
    try {
      c.add(first).awaitServing(Duration.ofSeconds(60));
      Awaitility.await("the first server leads")
          .atMost(Duration.ofSeconds(30))
          .until(first::isLeader);
      for (String name : List.of("dlmB", "dlmC")) {
        c.add(DlmServerProcess.launch(name, options(zookeeper, root, logDir.resolve(name)), logDir))
            .awaitServing(Duration.ofSeconds(60));
      }
      if (!c.leader().equals(Optional.of(first))) {
        throw new IllegalStateException("another server leads: " + c.leader());
      }
      return c;
    } catch (Exception | Error e) {
      c.close();
      throw e;
    }
  }

  static DlmServerCluster empty() {
    return new DlmServerCluster();
  }

  DlmServerProcess add(DlmServerProcess p) {
    servers.add(p);
    return p;
  }

  List<DlmServerProcess> servers() {
    return servers;
  }

  DlmServerProcess get(int i) {
    return servers.get(i);
  }

  /** "127.0.0.1:p0,127.0.0.1:p1,...", for {@code DlmClient.connect}. */
  String targets() {
    return servers.stream().map(DlmServerProcess::address).collect(Collectors.joining(","));
  }

  /** The live server that says it is the leader, if exactly one does. */
  Optional<DlmServerProcess> leader() {
    List<DlmServerProcess> leaders = new ArrayList<>();
    for (DlmServerProcess p : servers) {
      if (p.isAlive() && p.isLeader()) {
        leaders.add(p);
      }
    }
    return leaders.size() == 1 ? Optional.of(leaders.get(0)) : Optional.empty();
  }

  DlmServerProcess awaitLeader(Duration max) {
    return Awaitility.await("a dlm-server leader")
        .atMost(max)
        .pollInterval(Duration.ofMillis(50))
        .until(this::leader, Optional::isPresent)
        .get();
  }

  /** The leader's epoch (0 if it does not answer). */
  static long epoch(DlmServerProcess leader) {
    return leader.status(Duration.ofSeconds(2)).map(ServerStatusResponse::getEpoch).orElse(0L);
  }

  @Override
  public void close() throws IOException {
    // SIGTERM all at once, then wait for each: stopping them one by one costs a leader election
    // per server.
    List<Exception> failures = new ArrayList<>();
    List<Thread> stoppers = new ArrayList<>();
    for (DlmServerProcess p : servers) {
      Thread t =
          new Thread(
              () -> {
                try {
                  p.close();
                } catch (RuntimeException e) {
                  synchronized (failures) {
                    failures.add(e);
                  }
                }
              },
              "stop-" + p.name());
      t.start();
      stoppers.add(t);
    }
    for (Thread t : stoppers) {
      try {
        t.join();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IOException("interrupted while stopping the dlm-servers", e);
      }
    }
    if (!failures.isEmpty()) {
      IOException e = new IOException("could not stop every dlm-server");
      failures.forEach(e::addSuppressed);
      throw e;
    }
  }
}
