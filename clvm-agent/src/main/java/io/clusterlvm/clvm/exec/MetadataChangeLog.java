package io.clusterlvm.clvm.exec;

import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.TreeMap;
import java.util.stream.Collectors;

/**
 * The agent's append-only log of metadata changes, and the guarded store of the fencing-token rule:
 * every metadata-changing command records the fencing tokens of its exclusive locks here before lvm
 * runs, and a token lower than the highest this log has seen for the same lock is refused. A holder
 * whose lock was taken away (purged after its host was declared failed, then granted to someone
 * else) therefore can't record, and so can't run, a change after the newer holder has.
 *
 * <p>One line per event, tab-separated {@code key=value} fields, {@code argv} last with tabs,
 * newlines and backslashes escaped:
 *
 * <pre>
 * 2024-05-01T10:00:00.123Z  begin     entry=17  node=tpve01  incarnation=3  tokens=lvm_vg/VGLK:120  argv=lvcreate -n x -L 4M vg
 * 2024-05-01T10:00:00.301Z  end       entry=17  exit=0  seqno=vg:41
 * 2024-05-01T10:00:09.000Z  rejected  entry=18  ...  reason=fencing token 99 of lvm_vg/VGLK is stale ...
 * </pre>
 *
 * <p>On open, the highest token per lock is recovered from the file, so the rule survives agent
 * restarts. Thread-safe; {@code begin} lines are forced to disk before lvm may run.
 */
public final class MetadataChangeLog implements AutoCloseable {

  private final Path path;
  // A stream, not a FileChannel: an interrupt (a command being stopped) closes a channel for good,
  // and every later metadata change would then fail.
  private final FileOutputStream out;
  private final Map<String, Long> highest = new TreeMap<>();
  private long lastEntry;

  private MetadataChangeLog(Path path, FileOutputStream out) {
    this.path = path;
    this.out = out;
  }

  /** Opens (creating if needed) the log at {@code path} and recovers the highest tokens. */
  public static MetadataChangeLog open(Path path) throws IOException {
    Path parent = path.toAbsolutePath().getParent();
    if (parent != null) {
      Files.createDirectories(parent);
    }
    MetadataChangeLog log = new MetadataChangeLog(path, new FileOutputStream(path.toFile(), true));
    try {
      log.recover(Files.readAllLines(path, StandardCharsets.UTF_8));
    } catch (IOException | RuntimeException e) {
      log.close();
      throw e;
    }
    return log;
  }

  private void recover(List<String> lines) {
    for (String line : lines) {
      Map<String, String> f = fields(line);
      String entry = f.get("entry");
      if (entry != null) {
        lastEntry = Math.max(lastEntry, Long.parseLong(entry));
      }
      if ("begin".equals(f.get("@event"))) {
        for (Map.Entry<String, Long> t : tokens(f.getOrDefault("tokens", "")).entrySet()) {
          highest.merge(t.getKey(), t.getValue(), Math::max);
        }
      }
    }
  }

  public Path path() {
    return path;
  }

  /** The highest token recorded for {@code lock} ("lockspace/resource"). */
  public synchronized OptionalLong highest(String lock) {
    Long h = highest.get(lock);
    return h == null ? OptionalLong.empty() : OptionalLong.of(h);
  }

  /**
   * Records that a metadata change starts under {@code tokens} (lock name to fencing token). Equal
   * tokens pass (one grant may record several changes); a lower one is refused and the refusal is
   * logged.
   *
   * @return the entry number, for {@link #end}
   * @throws StaleFencingTokenException if any token is lower than the highest seen for its lock
   */
  public synchronized long begin(
      String node, long incarnation, List<String> argv, Map<String, Long> tokens)
      throws StaleFencingTokenException, IOException {
    long entry = ++lastEntry;
    String head =
        "entry="
            + entry
            + "\tnode="
            + node
            + "\tincarnation="
            + incarnation
            + "\ttokens="
            + tokens.entrySet().stream()
                .map(e -> e.getKey() + ":" + e.getValue())
                .collect(Collectors.joining(","));
    for (Map.Entry<String, Long> t : tokens.entrySet()) {
      Long h = highest.get(t.getKey());
      if (h != null && t.getValue() < h) {
        StaleFencingTokenException stale =
            new StaleFencingTokenException(t.getKey(), t.getValue(), h);
        append("rejected", head + "\treason=" + escape(stale.getMessage()), false);
        throw stale;
      }
    }
    append("begin", head + "\targv=" + escape(String.join(" ", argv)), true);
    tokens.forEach((lock, token) -> highest.merge(lock, token, Math::max));
    return entry;
  }

  /**
   * Records how entry {@code entry} ended.
   *
   * @param outcome fields in order, e.g. exit=0, seqno=vg:41; or outcome=unknown after a lease loss
   */
  public synchronized void end(long entry, Map<String, String> outcome) throws IOException {
    StringBuilder fields = new StringBuilder("entry=").append(entry);
    outcome.forEach((k, v) -> fields.append('\t').append(k).append('=').append(escape(v)));
    append("end", fields.toString(), false);
  }

  private void append(String event, String fields, boolean force) throws IOException {
    String line = Instant.now() + "\t" + event + "\t" + fields + "\n";
    out.write(line.getBytes(StandardCharsets.UTF_8));
    if (force) {
      out.getFD().sync();
    }
  }

  @Override
  public synchronized void close() throws IOException {
    out.close();
  }

  private static Map<String, String> fields(String line) {
    Map<String, String> f = new LinkedHashMap<>();
    String[] parts = line.split("\t");
    if (parts.length > 1) {
      f.put("@event", parts[1]);
    }
    for (int i = 2; i < parts.length; i++) {
      int eq = parts[i].indexOf('=');
      if (eq > 0) {
        f.put(parts[i].substring(0, eq), parts[i].substring(eq + 1));
      }
    }
    return f;
  }

  private static Map<String, Long> tokens(String field) {
    Map<String, Long> t = new LinkedHashMap<>();
    if (field.isEmpty()) {
      return t;
    }
    for (String pair : field.split(",")) {
      int colon = pair.lastIndexOf(':');
      t.put(pair.substring(0, colon), Long.parseLong(pair.substring(colon + 1)));
    }
    return t;
  }

  private static String escape(String s) {
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n");
  }
}
