package io.clusterlvm.bench;

import java.lang.management.ManagementFactory;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.management.ObjectName;

/**
 * The live-object class histogram of this JVM ({@code jcmd GC.class_histogram}, which collects
 * first), taken in-process. The difference of two says which classes the locks cost.
 */
final class HeapHistogram {
  private static final Pattern ROW =
      Pattern.compile("^\\s*\\d+:\\s+(\\d+)\\s+(\\d+)\\s+(\\S+)(?:\\s+\\(.*\\))?\\s*$");

  record Entry(long instances, long bytes) {}

  private final Map<String, Entry> byClass;

  private HeapHistogram(Map<String, Entry> byClass) {
    this.byClass = byClass;
  }

  static HeapHistogram take() throws Exception {
    String text =
        (String)
            ManagementFactory.getPlatformMBeanServer()
                .invoke(
                    new ObjectName("com.sun.management:type=DiagnosticCommand"),
                    "gcClassHistogram",
                    new Object[] {new String[0]},
                    new String[] {String[].class.getName()});
    Map<String, Entry> m = new HashMap<>();
    for (String line : text.split("\n")) {
      Matcher r = ROW.matcher(line);
      if (r.matches()) {
        m.merge(
            r.group(3),
            new Entry(Long.parseLong(r.group(1)), Long.parseLong(r.group(2))),
            (a, b) -> new Entry(a.instances + b.instances, a.bytes + b.bytes));
      }
    }
    return new HeapHistogram(m);
  }

  /** The {@code top} classes that grew most from {@code before}, as "bytes/lock class (n/lock)". */
  List<String> growthSince(HeapHistogram before, int locks, int top) {
    List<Map.Entry<String, Long>> grown = new ArrayList<>();
    for (Map.Entry<String, Entry> e : byClass.entrySet()) {
      Entry old = before.byClass.getOrDefault(e.getKey(), new Entry(0, 0));
      grown.add(Map.entry(e.getKey(), e.getValue().bytes - old.bytes));
    }
    grown.sort(Map.Entry.<String, Long>comparingByValue().reversed());
    List<String> out = new ArrayList<>();
    for (Map.Entry<String, Long> g : grown.subList(0, Math.min(top, grown.size()))) {
      Entry now = byClass.get(g.getKey());
      Entry old = before.byClass.getOrDefault(g.getKey(), new Entry(0, 0));
      out.add(
          String.format(
              java.util.Locale.ROOT,
              "%6.1f bytes/lock  %5.2f objects/lock  %s",
              g.getValue() / (double) locks,
              (now.instances - old.instances) / (double) locks,
              g.getKey()));
    }
    return out;
  }
}
