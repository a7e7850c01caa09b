package io.clusterlvm.dlm.engine;

import static io.clusterlvm.dlm.engine.LockMode.CR;
import static io.clusterlvm.dlm.engine.LockMode.CW;
import static io.clusterlvm.dlm.engine.LockMode.EX;
import static io.clusterlvm.dlm.engine.LockMode.NL;
import static io.clusterlvm.dlm.engine.LockMode.PR;
import static io.clusterlvm.dlm.engine.LockMode.PW;
import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

@Timeout(10)
class LockModeTest {
  /**
   * The VMS / Linux DLM compatibility table (fs/dlm/lock.c __dlm_compat_matrix, without the UN and
   * PD pseudo-modes), written out here independently of {@link LockMode}.
   */
  private static final String[] TABLE = {
    //      NL CR CW PR PW EX
    /* NL */ "1 1 1 1 1 1",
    /* CR */ "1 1 1 1 1 0",
    /* CW */ "1 1 1 0 0 0",
    /* PR */ "1 1 0 1 0 0",
    /* PW */ "1 1 0 0 0 0",
    /* EX */ "1 0 0 0 0 0",
  };

  private static final List<String> ORDER = List.of("NL", "CR", "CW", "PR", "PW", "EX");

  /** Down-conversions (from, to) worked out by hand from the table: 20 of the 36 pairs. */
  private static final Map<LockMode, Set<LockMode>> DOWN_CONVERSIONS =
      Map.of(
          NL, EnumSet.of(NL),
          CR, EnumSet.of(NL, CR),
          CW, EnumSet.of(NL, CR, CW),
          PR, EnumSet.of(NL, CR, PR),
          PW, EnumSet.of(NL, CR, CW, PR, PW),
          EX, EnumSet.of(NL, CR, CW, PR, PW, EX));

  private static boolean tableSays(LockMode a, LockMode b) {
    String row = TABLE[ORDER.indexOf(a.name())].replace(" ", "");
    return row.charAt(ORDER.indexOf(b.name())) == '1';
  }

  static Stream<Arguments> allPairs() {
    List<Arguments> out = new ArrayList<>();
    for (LockMode a : LockMode.values()) {
      for (LockMode b : LockMode.values()) {
        out.add(Arguments.of(a, b));
      }
    }
    return out.stream();
  }

  @Test
  void thereAreExactlyTheSixModesWeakestFirst() {
    assertThat(LockMode.values()).extracting(Enum::name).containsExactlyElementsOf(ORDER);
  }

  @ParameterizedTest(name = "{0} with {1}")
  @MethodSource("allPairs")
  void compatibilityMatchesTheStandardTable(LockMode a, LockMode b) {
    assertThat(a.compatibleWith(b)).as("%s compatible with %s", a, b).isEqualTo(tableSays(a, b));
  }

  @ParameterizedTest(name = "{0} with {1}")
  @MethodSource("allPairs")
  void compatibilityIsSymmetric(LockMode a, LockMode b) {
    assertThat(a.compatibleWith(b)).isEqualTo(b.compatibleWith(a));
  }

  @Test
  void eightPairsOfModesConflict() {
    long incompatible =
        allPairs()
            .filter(p -> !((LockMode) p.get()[0]).compatibleWith((LockMode) p.get()[1]))
            .count();
    assertThat(incompatible).isEqualTo(16);
  }

  @ParameterizedTest(name = "{0} to {1}")
  @MethodSource("allPairs")
  void downConversionMeansEverythingCompatibleBeforeStaysCompatible(LockMode from, LockMode to) {
    boolean expected = true;
    for (LockMode m : LockMode.values()) {
      if (tableSays(from, m) && !tableSays(to, m)) {
        expected = false;
      }
    }
    assertThat(to.isDownConversionFrom(from)).as("%s to %s", from, to).isEqualTo(expected);
    assertThat(to.isDownConversionFrom(from))
        .as("%s to %s against the hand-made list", from, to)
        .isEqualTo(DOWN_CONVERSIONS.get(from).contains(to));
  }

  @Test
  void downConversionIsAPartialOrderNotTheEnumOrder() {
    assertThat(CW.isDownConversionFrom(PW)).isTrue();
    assertThat(CW.isDownConversionFrom(PR)).isFalse();
    assertThat(PR.isDownConversionFrom(CW)).isFalse();
    assertThat(NL.isDownConversionFrom(EX)).isTrue();
    assertThat(EX.isDownConversionFrom(NL)).isFalse();
    int count = 0;
    for (LockMode a : LockMode.values()) {
      for (LockMode b : LockMode.values()) {
        if (b.isDownConversionFrom(a)) {
          count++;
          // antisymmetric: only a mode is a down-conversion both ways with itself
          if (a != b) {
            assertThat(a.isDownConversionFrom(b)).as("%s and %s", a, b).isFalse();
          }
        }
      }
    }
    assertThat(count).isEqualTo(20);
  }

  @Test
  void valueBlockIsReadFromProtectedReadUpAndWrittenFromProtectedWriteUp() {
    assertThat(EnumSet.allOf(LockMode.class))
        .filteredOn(LockMode::readsValueBlock)
        .containsExactlyInAnyOrder(PR, PW, EX);
    assertThat(EnumSet.allOf(LockMode.class))
        .filteredOn(LockMode::writesValueBlock)
        .containsExactlyInAnyOrder(PW, EX);
    assertThat(NL.readsValueBlock() || CR.readsValueBlock() || CW.readsValueBlock()).isFalse();
  }
}
