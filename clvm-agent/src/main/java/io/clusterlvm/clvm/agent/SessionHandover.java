package io.clusterlvm.clvm.agent;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Base64;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.curator.utils.ZookeeperFactory;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooKeeper;
import org.apache.zookeeper.client.ConnectStringParser;
import org.apache.zookeeper.client.StaticHostProvider;
import org.apache.zookeeper.client.ZKClientConfig;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The ZooKeeper session, and with it the membership lease, that a stopping agent hands to the next
 * agent process on the same boot, when LVs of the host are still in use: the lease and every lock
 * stay, so the host is neither fenced nor left without the locks of its running VMs. ZooKeeper lets
 * a new client resume a session by its id and password until the session times out; the next
 * process does, and goes on as the same incarnation. If none comes in time, the session expires and
 * the host is fenced, as after any failure.
 *
 * <p>Kept in {@code <state-dir>/zk-session-handover}, readable by the agent's user alone (the
 * password lets its holder act as this host's lease), and removed once the next agent has started.
 */
record SessionHandover(String bootId, long sessionId, byte[] password) {
  private static final Logger LOG = LoggerFactory.getLogger(SessionHandover.class);
  static final String FILE = "zk-session-handover";

  /** Written whole, then renamed, so that the next process never reads half of it. */
  void write(Path stateDir) throws IOException {
    Path tmp = stateDir.resolve(FILE + ".tmp");
    Files.deleteIfExists(tmp);
    Files.createFile(
        tmp, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
    Files.writeString(
        tmp,
        bootId
            + "\n"
            + Long.toHexString(sessionId)
            + "\n"
            + Base64.getEncoder().encodeToString(password)
            + "\n",
        StandardCharsets.US_ASCII);
    Files.move(tmp, stateDir.resolve(FILE), StandardCopyOption.ATOMIC_MOVE);
  }

  /**
   * The handover an earlier process of this boot left, if any. It stays until {@link #delete}: a
   * process that dies before it took the session over leaves it to the next. One from another boot
   * is of a session that cannot have outlived the reboot, and one whose session has expired
   * meanwhile only costs a new session.
   */
  static Optional<SessionHandover> read(Path stateDir, String bootId) throws IOException {
    Path file = stateDir.resolve(FILE);
    List<String> lines;
    try {
      lines = Files.readAllLines(file, StandardCharsets.US_ASCII);
    } catch (NoSuchFileException none) {
      return Optional.empty();
    }
    try {
      if (lines.size() < 3 || !lines.get(0).equals(bootId)) {
        LOG.info("ignoring {}: not of this boot", file);
        return Optional.empty();
      }
      return Optional.of(
          new SessionHandover(
              bootId,
              Long.parseUnsignedLong(lines.get(1), 16),
              Base64.getDecoder().decode(lines.get(2))));
    } catch (IllegalArgumentException malformed) {
      LOG.warn("ignoring {}: {}", file, malformed.toString());
      return Optional.empty();
    }
  }

  /** Once the agent has started: the session was taken over, or was not to be. */
  static void delete(Path stateDir) throws IOException {
    Files.deleteIfExists(stateDir.resolve(FILE));
  }

  /**
   * Curator's ZooKeeper handles: the first resumes the handed-over session; any later one (the
   * session had expired, or expires later) is a new session, as usual.
   */
  static ZookeeperFactory resumingFirst(Optional<SessionHandover> handover) {
    AtomicReference<SessionHandover> first = new AtomicReference<>(handover.orElse(null));
    // Both of Curator's entry points: it calls the one with a ZKClientConfig when the builder has
    // one (TLS), and that one's default would make a new session, dropping the handed-over one.
    return new ZookeeperFactory() {
      @Override
      public ZooKeeper newZooKeeper(
          String connectString, int sessionTimeout, Watcher watcher, boolean canBeReadOnly)
          throws IOException {
        return newZooKeeper(connectString, sessionTimeout, watcher, canBeReadOnly, null);
      }

      @Override
      public ZooKeeper newZooKeeper(
          String connectString,
          int sessionTimeout,
          Watcher watcher,
          boolean canBeReadOnly,
          ZKClientConfig config)
          throws IOException {
        ZKClientConfig c = config != null ? config : new ZKClientConfig();
        SessionHandover h = first.getAndSet(null);
        if (h == null) {
          return new ZooKeeper(connectString, sessionTimeout, watcher, canBeReadOnly, c);
        }
        return new ZooKeeper(
            connectString,
            sessionTimeout,
            watcher,
            h.sessionId(),
            h.password(),
            canBeReadOnly,
            new StaticHostProvider(new ConnectStringParser(connectString).getServerAddresses()),
            c);
      }
    };
  }
}
