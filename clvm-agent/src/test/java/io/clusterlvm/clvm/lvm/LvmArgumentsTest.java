package io.clusterlvm.clvm.lvm;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.testing.LoopVolumeGroup;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.HashSet;
import java.util.List;
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

  /** The long options lvm's help for {@code sub} names, without dashes (as lvm matches them). */
  private static Set<String> longHelpOptions(String sub) throws IOException, InterruptedException {
    Process p =
        new ProcessBuilder(List.of(LoopVolumeGroup.lvmBinary(), sub, "--longhelp"))
            .redirectErrorStream(true)
            .start();
    String help = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    p.waitFor(30, TimeUnit.SECONDS);
    Set<String> names = new HashSet<>();
    Matcher m = LONG_OPTION.matcher(help);
    while (m.find()) {
      names.add(m.group(1).replace("-", ""));
    }
    return names;
  }
}
