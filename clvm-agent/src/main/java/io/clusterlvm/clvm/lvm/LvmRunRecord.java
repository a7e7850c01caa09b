package io.clusterlvm.clvm.lvm;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The lvm processes an agent has running, one file each in a directory of its state dir: named by
 * pid, holding the process's start time and command. An agent process that was killed leaves its
 * lvm running (a child outlives its parent), under the locks of an incarnation that the next agent
 * process attests or that gets purged; the next process finds them here. The start time tells a
 * recorded lvm from another process that got its pid since.
 */
final class LvmRunRecord {

  /** An lvm recorded by an earlier agent process that still runs. */
  record EarlierRun(ProcessHandle process, String command) {}

  private static final Logger LOG = LoggerFactory.getLogger(LvmRunRecord.class);

  private final Path dir;

  LvmRunRecord(Path dir) throws IOException {
    this.dir = Files.createDirectories(dir);
  }

  void started(ProcessHandle p, List<String> command) {
    Optional<Instant> since = p.info().startInstant();
    if (since.isEmpty()) {
      return; // gone already, or this system can't say: nothing to tell a later process
    }
    try {
      Files.writeString(
          dir.resolve(Long.toString(p.pid())),
          since.get().toEpochMilli() + "\n" + String.join(" ", command) + "\n",
          StandardCharsets.UTF_8);
    } catch (IOException e) {
      LOG.warn("could not record lvm pid {} in {}: {}", p.pid(), dir, e.toString());
    }
  }

  void ended(ProcessHandle p) {
    try {
      Files.deleteIfExists(dir.resolve(Long.toString(p.pid())));
    } catch (IOException e) {
      LOG.warn("could not remove the record of lvm pid {}: {}", p.pid(), e.toString());
    }
  }

  /**
   * The recorded lvm processes that still run (this process records none before it runs lvm).
   * Records of those that ended are removed.
   */
  List<EarlierRun> earlierRuns() throws IOException {
    List<EarlierRun> running = new ArrayList<>();
    try (DirectoryStream<Path> files = Files.newDirectoryStream(dir)) {
      for (Path f : files) {
        Optional<EarlierRun> run = stillRunning(f);
        if (run.isPresent()) {
          running.add(run.get());
        } else {
          Files.deleteIfExists(f);
        }
      }
    }
    return running;
  }

  private static Optional<EarlierRun> stillRunning(Path f) throws IOException {
    long pid;
    String[] lines;
    try {
      pid = Long.parseLong(f.getFileName().toString());
      lines = Files.readString(f, StandardCharsets.UTF_8).split("\n", 2);
    } catch (NumberFormatException | NoSuchFileException e) {
      return Optional.empty();
    }
    long since;
    try {
      since = Long.parseLong(lines[0].strip());
    } catch (NumberFormatException e) {
      return Optional.empty();
    }
    String command = lines.length > 1 ? lines[1].strip() : "";
    return ProcessHandle.of(pid)
        .filter(
            p ->
                p.info().startInstant().map(Instant::toEpochMilli).orElse(-1L) == since
                    && p.isAlive())
        .map(p -> new EarlierRun(p, command));
  }
}
