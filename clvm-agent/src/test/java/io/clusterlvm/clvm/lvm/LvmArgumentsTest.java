package io.clusterlvm.clvm.lvm;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.testing.LoopVolumeGroup;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The per-command long-option tables against the installed lvm: an option listed for a command that
 * lvm's own help does not list for it would be passed to lvm, which takes it for an abbreviation of
 * another option, while the agent plans its locks by the wrong reading.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class LvmArgumentsTest {
  private static final Pattern LONG_OPTION = Pattern.compile("--([a-zA-Z][a-zA-Z0-9_-]*)");

  @Test
  void everyLongOptionOfACommandIsOneLvmListsForThatCommand() throws Exception {
    assertThat(LvmArguments.subcommands()).hasSizeGreaterThan(20);
    for (String sub : LvmArguments.subcommands()) {
      Set<String> lvms = longHelpOptions(sub);
      assertThat(lvms).as("lvm %s --longhelp", sub).isNotEmpty();
      assertThat(LvmArguments.longOptionsOf(sub)).as("lvm %s", sub).isNotEmpty().isSubsetOf(lvms);
    }
  }

  /**
   * A letter read as another option than lvm reads it would turn a value into a VG to lock, or a VG
   * into a value: each letter of a command means what lvm's help pairs it with ({@code -n|--nofsck}
   * for lvextend, {@code -n|--name} for lvcreate).
   */
  @Test
  void everyShortOptionOfACommandMeansWhatLvmSaysForThatCommand() throws Exception {
    for (String sub : LvmArguments.subcommands()) {
      Map<Character, String> lvms = new HashMap<>();
      Matcher m = SHORT_OPTION.matcher(longHelp(sub));
      while (m.find()) {
        lvms.put(m.group(1).charAt(0), m.group(2).replace("-", ""));
      }
      assertThat(lvms).as("lvm %s --longhelp", sub).isNotEmpty();
      // A letter lvm lacks for the command is harmless: lvm rejects the command line.
      Map<Character, String> ours = new HashMap<>(LvmArguments.shortOptionsOf(sub));
      ours.keySet().retainAll(lvms.keySet());
      assertThat(ours).as("lvm %s", sub).isNotEmpty();
      assertThat(lvms).as("lvm %s", sub).containsAllEntriesOf(ours);
    }
  }

  private static final Pattern SHORT_OPTION =
      Pattern.compile("(?<![\\w-])-([a-zA-Z])\\|--([a-zA-Z][a-zA-Z0-9_-]*)");

  private static String longHelp(String sub) throws IOException, InterruptedException {
    Process p =
        new ProcessBuilder(List.of(LoopVolumeGroup.lvmBinary(), sub, "--longhelp"))
            .redirectErrorStream(true)
            .start();
    String help = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    p.waitFor(30, TimeUnit.SECONDS);
    return help;
  }

  /** The long options lvm's help for {@code sub} names, without dashes (as lvm matches them). */
  private static Set<String> longHelpOptions(String sub) throws IOException, InterruptedException {
    String help = longHelp(sub);
    Set<String> names = new HashSet<>();
    Matcher m = LONG_OPTION.matcher(help);
    while (m.find()) {
      names.add(m.group(1).replace("-", ""));
    }
    return names;
  }
}
