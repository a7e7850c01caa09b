package io.clusterlvm.clvm.agent;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * One agent per state dir, held for the agent's life. Two would append to one metadata-change log,
 * and each would take the lvm the other runs for one left by a killed agent, and kill it. The OS
 * drops the lock when the process dies, so a killed agent never blocks the next one.
 */
final class StateDirLock implements AutoCloseable {

  private final FileChannel channel;
  private final FileLock lock;

  private StateDirLock(FileChannel channel, FileLock lock) {
    this.channel = channel;
    this.lock = lock;
  }

  static StateDirLock acquire(Path stateDir) throws IOException {
    Files.createDirectories(stateDir);
    Path file = stateDir.resolve("agent.lock");
    FileChannel channel =
        FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
    FileLock lock;
    try {
      lock = channel.tryLock();
    } catch (OverlappingFileLockException sameProcess) {
      lock = null;
    } catch (IOException | RuntimeException e) {
      channel.close();
      throw e;
    }
    if (lock == null) {
      channel.close();
      String holder = Files.readString(file, StandardCharsets.UTF_8).strip();
      throw new IllegalStateException(
          "state dir "
              + stateDir
              + " is in use by another clvm-agent"
              + (holder.isEmpty() ? "" : " (" + holder + ")")
              + "; run one agent per host, each with its own --state-dir");
    }
    channel.truncate(0);
    channel.write(
        ByteBuffer.wrap(
            ("pid " + ProcessHandle.current().pid() + "\n").getBytes(StandardCharsets.UTF_8)));
    return new StateDirLock(channel, lock);
  }

  @Override
  public void close() throws IOException {
    try {
      lock.release();
    } finally {
      channel.close();
    }
  }
}
