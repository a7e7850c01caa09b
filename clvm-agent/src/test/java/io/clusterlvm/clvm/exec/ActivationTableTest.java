package io.clusterlvm.clvm.exec;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Commands on one host take their turns on an LV in the order they asked for it. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class ActivationTableTest {
  private static final LockName LV = new LockName("clvm_vg", "lv_pool");
  private final ActivationTable table = new ActivationTable();

  @Test
  void waitersTakeTheirTurnsInTheOrderTheyAsked() throws Exception {
    assertThat(table.claim(LV, Duration.ZERO)).isTrue();
    List<Integer> turns = new CopyOnWriteArrayList<>();
    List<Thread> waiters = new ArrayList<>();
    for (int i = 0; i < 6; i++) {
      int n = i;
      Thread t =
          new Thread(
              () -> {
                try {
                  if (table.claim(LV, Duration.ofSeconds(30))) {
                    turns.add(n);
                    table.unclaim(LV);
                  }
                } catch (InterruptedException e) {
                  Thread.currentThread().interrupt();
                }
              });
      t.start();
      waiters.add(t);
      await().atMost(Duration.ofSeconds(10)).until(() -> table.waiting(LV) == n + 1);
    }
    table.unclaim(LV);
    for (Thread t : waiters) {
      t.join(20_000);
    }
    assertThat(turns).containsExactly(0, 1, 2, 3, 4, 5);
  }

  /** One that gives up leaves the line, and the next one in it goes on. */
  @Test
  void aWaiterThatGivesUpLeavesTheLine() throws Exception {
    assertThat(table.claim(LV, Duration.ZERO)).isTrue();
    assertThat(table.claim(LV, Duration.ofMillis(100))).isFalse();
    assertThat(table.waiting(LV)).isZero();
    table.unclaim(LV);
    assertThat(table.claim(LV, Duration.ZERO)).isTrue();
  }
}
