package io.clusterlvm.fence.agent;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(value = 5, unit = TimeUnit.SECONDS)
class BackoffTest {

  @Test
  void delaysGrowByTheMultiplierUpToTheMax() {
    assertThat(IntStream.rangeClosed(1, 7).mapToObj(Backoff.DEFAULT::delayAfter))
        .extracting(Duration::toSeconds)
        .containsExactly(5L, 10L, 20L, 40L, 60L, 60L, 60L);
    assertThat(Backoff.DEFAULT.delayAfter(Integer.MAX_VALUE)).isEqualTo(Duration.ofSeconds(60));
    assertThat(new Backoff(Duration.ofMillis(100), Duration.ofSeconds(1), 1.5).delayAfter(2))
        .isEqualTo(Duration.ofMillis(150));
  }

  @Test
  void nonsenseIsRejected() {
    assertThatThrownBy(() -> new Backoff(Duration.ofSeconds(2), Duration.ofSeconds(1), 2))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new Backoff(Duration.ofSeconds(1), Duration.ofSeconds(2), 0.5))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> new Backoff(Duration.ofSeconds(1), Duration.ofSeconds(2), Double.NaN))
        .isInstanceOf(IllegalArgumentException.class);
    assertThatThrownBy(() -> Backoff.DEFAULT.delayAfter(0))
        .isInstanceOf(IllegalArgumentException.class);
  }
}
