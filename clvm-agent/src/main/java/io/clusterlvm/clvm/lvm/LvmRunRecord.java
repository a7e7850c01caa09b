package io.clusterlvm.clvm.lvm;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The lvm processes an agent has running, one file each in a directory of its state dir: named by
 * pid, holding the boot id, the process's start time in clock ticks since boot ({@code
 * /proc/PID/stat} field 22), and its command. An agent process that was killed leaves its lvm
 * running (a child outlives its parent), under the locks of an incarnation that the next agent
 * process attests or that gets purged; the next process finds them here. Boot id and start ticks
 * tell a recorded lvm from another process given its pid since; unlike a wall-clock start time,
 * they do not move when the clock is stepped.
 */
final class LvmRunRecord {

  /** An lvm recorded by an earlier agent process that still runs. */
  record EarlierRun(ProcessHandle process, String id, String command) {}

  private static final Logger LOG = LoggerFactory.getLogger(LvmRunRecord.class);

  private final Path dir;
  private final String bootId;

  /**
   * What this process wrote for each of its lvm, by pid: a file is removed only if it still says
   * so.
   */
  private final Map<Long, String> mine = new ConcurrentHashMap<>();

  /** {@code bootId}: this boot's id, as the agent read it (a record of another boot is stale). */
  LvmRunRecord(Path dir, String bootId) throws IOException {
    this.dir = Files.createDirectories(dir);
    this.bootId = bootId;
  }

  /**
   * What tells the process {@code pid} is now from a later one that gets the same pid: this boot
   * and its start time in clock ticks. Empty if it has ended.
   */
  private Optional<String> idOf(long pid) {
    return ProcStat.of(pid).map(st -> bootId + " " + st.startTicks());
  }

  void started(ProcessHandle p, List<String> command) {
    Optional<String> found = idOf(p.pid());
    if (found.isEmpty()) {
      return; // ended already: nothing to tell a later process
    }
    String id = found.get();
    Path file = dir.resolve(Long.toString(p.pid()));
    Path tmp = dir.resolve("." + p.pid() + ".tmp");
    try {
      // Written whole, then renamed: an agent killed mid-write leaves no half record.
      Files.writeString(tmp, id + "\n" + String.join(" ", command) + "\n", StandardCharsets.UTF_8);
      try {
        Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE);
      } catch (AtomicMoveNotSupportedException e) {
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
      }
      mine.put(p.pid(), id);
    } catch (IOException e) {
      LOG.warn("could not record lvm pid {} in {}: {}", p.pid(), dir, e.toString());
    }
  }

  void ended(ProcessHandle p) {
    String id = mine.remove(p.pid());
    if (id != null) {
      removeIfStill(p.pid(), id);
    }
  }

  /** An earlier run has ended: its record goes. */
  void ended(EarlierRun run) {
    removeIfStill(run.process().pid(), run.id());
  }

  /**
   * The recorded lvm processes of earlier agent processes that still run. Records of those that
   * ended, of another boot, or whose pid another process has now, are removed.
   */
  List<EarlierRun> earlierRuns() throws IOException {
    List<EarlierRun> running = new ArrayList<>();
    try (DirectoryStream<Path> files = Files.newDirectoryStream(dir)) {
      for (Path f : files) {
        Optional<EarlierRun> run = stillRunning(f);
        if (run.isPresent() && !mine.containsKey(run.get().process().pid())) {
          running.add(run.get());
        } else if (run.isEmpty()) {
          Files.deleteIfExists(f);
        }
      }
    }
    return running;
  }

  private Optional<EarlierRun> stillRunning(Path f) throws IOException {
    long pid;
    String[] lines;
    try {
      pid = Long.parseLong(f.getFileName().toString());
      lines = Files.readString(f, StandardCharsets.UTF_8).split("\n", 2);
    } catch (NumberFormatException | NoSuchFileException e) {
      return Optional.empty(); // a temp file left by a killed agent, or gone meanwhile
    }
    String id = lines[0].strip();
    if (!id.equals(idOf(pid).orElse(null))) {
      return Optional.empty();
    }
    String command = lines.length > 1 ? lines[1].strip() : "";
    return ProcessHandle.of(pid).map(p -> new EarlierRun(p, id, command));
  }

  private void removeIfStill(long pid, String id) {
    Path file = dir.resolve(Long.toString(pid));
    try {
      String[] lines = Files.readString(file, StandardCharsets.UTF_8).split("\n", 2);
      if (lines[0].strip().equals(id)) {
        Files.deleteIfExists(file);
      }
    } catch (NoSuchFileException e) {
      // removed already
    } catch (IOException e) {
      LOG.warn("could not remove the record of lvm pid {}: {}", pid, e.toString());
    }
  }
}
