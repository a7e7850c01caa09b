package io.clusterlvm.it.ha;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.client.LockMode;
import io.clusterlvm.it.ha.LockHistory.Grant;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The checker finds what it is meant to find: a checker that passes everything proves nothing. */
@Timeout(value = 10, unit = TimeUnit.SECONDS)
class HistoryCheckerTest {
  private static final long E1 = 1L << 32;
  private static final long E2 = 2L << 32;

  private static Grant g(
      String client, LockMode m, long token, long inv, long ack, long rel, int value) {
    return new Grant(client, "r", m, token, token, inv, ack, rel, value, value, true);
  }

  @Test
  void aCleanHandOffAcrossLeadersPasses() {
    List<Grant> h =
        List.of(
            g("a", LockMode.EX, E1 + 1, 0, 10, 20, 0),
            // b was waiting since 5, got it at 30, after a released at 20
            g("b", LockMode.PR, E2 + 3, 5, 30, 40, 1),
            g("c", LockMode.PR, E2 + 4, 6, 31, 45, 1),
            g("d", LockMode.EX, E2 + 7, 35, 50, 60, 1));
    assertThat(HistoryChecker.check(h, Map.of("r", 2))).isEmpty();
  }

  @Test
  void overlappingExclusiveHoldersAreFound() {
    List<Grant> h =
        List.of(
            g("a", LockMode.EX, E1 + 1, 0, 10, 20, 0), g("b", LockMode.EX, E1 + 2, 5, 19, 25, 1));
    assertThat(HistoryChecker.overlaps(h)).singleElement().asString().contains("overlap on r");
  }

  @Test
  void sharedHoldersMayOverlap() {
    List<Grant> h =
        List.of(
            g("a", LockMode.PR, E1 + 1, 0, 10, 20, 0), g("b", LockMode.PR, E1 + 2, 5, 11, 25, 0));
    assertThat(HistoryChecker.check(h, Map.of("r", 0))).isEmpty();
  }

  @Test
  void aTokenThatGoesBackwardsIsFound() {
    // b asked at 30, after a's grant arrived at 10, yet got a lower token (a stale leader?)
    List<Grant> h =
        List.of(
            g("a", LockMode.EX, E2 + 1, 0, 10, 20, 0), g("b", LockMode.EX, E1 + 9, 30, 40, 50, 1));
    assertThat(HistoryChecker.tokenOrder(h)).singleElement().asString().contains("backwards");
  }

  @Test
  void aLostReleaseOrLostUpdateShowsInTheValueBlock() {
    // b found 0 although a (EX, lower token) came first: a's release (and write) was lost
    List<Grant> h =
        List.of(
            g("a", LockMode.EX, E1 + 1, 0, 10, 20, 0), g("b", LockMode.EX, E1 + 2, 25, 30, 40, 0));
    assertThat(HistoryChecker.check(h, Map.of("r", 1)))
        .anySatisfy(v -> assertThat(v).contains("1 EX grants came before it"))
        .anySatisfy(v -> assertThat(v).contains("ends with 1 in the value block after 2"));
  }
}
