package io.clusterlvm.clvm.exec;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The guarded store: fencing tokens only go up, per lock, across restarts. */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class MetadataChangeLogTest {

  private static final String VG = "lvm_vg/VGLK";
  private static final String GLOBAL = "lvm_global/GLLK";
  private static final List<String> ARGV = List.of("lvcreate", "-n", "x", "-L", "4M", "vg");

  @TempDir Path dir;

  @Test
  void acceptsEqualAndHigherTokensAndRefusesALowerOne() throws Exception {
    try (MetadataChangeLog log = MetadataChangeLog.open(dir.resolve("changes.log"))) {
      long first = log.begin("host-a", 3, ARGV, Map.of(VG, 100L));
      Map<String, String> outcome = new LinkedHashMap<>();
      outcome.put("exit", "0");
      outcome.put("seqno", "vg:7");
      log.end(first, outcome);
      log.begin("host-a", 3, ARGV, Map.of(VG, 100L)); // the same grant may record again
      log.begin("host-a", 3, ARGV, Map.of(VG, 250L));

      assertThatThrownBy(() -> log.begin("host-a", 3, ARGV, Map.of(VG, 120L)))
          .isInstanceOfSatisfying(
              StaleFencingTokenException.class,
              e -> {
                assertThat(e.token()).isEqualTo(120);
                assertThat(e.highest()).isEqualTo(250);
                assertThat(e.resource()).isEqualTo(VG);
                assertThat(e.getMessage()).contains("fencing token 120 of " + VG + " is stale");
              });
      assertThat(log.highest(VG)).hasValue(250);
    }
    List<String> lines = Files.readAllLines(dir.resolve("changes.log"));
    assertThat(lines).hasSize(5);
    assertThat(lines.get(0))
        .matches(
            ".*\\tbegin\\tentry=1\\tnode=host-a\\tincarnation=3\\ttokens="
                + VG
                + ":100\\t"
                + "argv=lvcreate -n x -L 4M vg");
    assertThat(lines.get(1)).endsWith("\tend\tentry=1\texit=0\tseqno=vg:7");
    assertThat(lines.get(4)).contains("\trejected\tentry=4\t").contains("reason=fencing token 120");
  }

  @Test
  void tokensOfDifferentLocksAreIndependentAndAllOfACommandMustPass() throws Exception {
    try (MetadataChangeLog log = MetadataChangeLog.open(dir.resolve("changes.log"))) {
      log.begin("host-a", 1, ARGV, Map.of(VG, 500L));
      log.begin("host-a", 1, ARGV, Map.of(GLOBAL, 7L)); // lower number, other lock: fine
      assertThatThrownBy(() -> log.begin("host-a", 1, ARGV, Map.of(GLOBAL, 8L, VG, 499L)))
          .isInstanceOf(StaleFencingTokenException.class);
      // The refused command recorded nothing: the global lock's highest is still 7.
      assertThat(log.highest(GLOBAL)).hasValue(7);
    }
  }

  @Test
  void theHighestTokensSurviveARestart() throws Exception {
    Path file = dir.resolve("state/changes.log");
    try (MetadataChangeLog log = MetadataChangeLog.open(file)) {
      log.end(log.begin("host-a", 1, ARGV, Map.of(VG, 900L)), Map.of("exit", "0"));
    }
    try (MetadataChangeLog reopened = MetadataChangeLog.open(file)) {
      assertThat(reopened.highest(VG)).hasValue(900);
      assertThatThrownBy(() -> reopened.begin("host-a", 2, ARGV, Map.of(VG, 899L)))
          .isInstanceOf(StaleFencingTokenException.class);
      // Entry numbers go on from where they were.
      assertThat(reopened.begin("host-a", 2, ARGV, Map.of(VG, 901L))).isEqualTo(3);
    }
  }

  @Test
  void argumentsCannotForgeFields() throws Exception {
    Path file = dir.resolve("changes.log");
    try (MetadataChangeLog log = MetadataChangeLog.open(file)) {
      log.begin(
          "host-a",
          1,
          List.of("lvcreate", "-n", "x\ttokens=" + VG + ":99999\nfoo"),
          Map.of(VG, 5L));
    }
    try (MetadataChangeLog reopened = MetadataChangeLog.open(file)) {
      assertThat(reopened.highest(VG)).hasValue(5);
    }
    assertThat(Files.readAllLines(file)).hasSize(1);
  }

  /**
   * A command being stopped is interrupted while it records its change: the log takes the record
   * and stays usable for the commands after it.
   */
  @Test
  void anInterruptedWriterLeavesTheLogUsable() throws Exception {
    Path file = dir.resolve("changes.log");
    try (MetadataChangeLog log = MetadataChangeLog.open(file)) {
      Thread.currentThread().interrupt();
      long entry;
      try {
        entry = log.begin("host-a", 1, ARGV, Map.of(VG, 7L));
        log.end(entry, Map.of("outcome", "unknown: stopped"));
      } finally {
        assertThat(Thread.interrupted()).as("the interrupt is left to its owner").isTrue();
      }
      long next = log.begin("host-a", 1, ARGV, Map.of(VG, 8L));
      log.end(next, Map.of("exit", "0"));
    }
    assertThat(Files.readString(file)).contains("outcome=unknown: stopped").contains("exit=0");
  }
}
