package io.clusterlvm.dlm.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.grpc.Status;
import java.util.concurrent.CompletableFuture;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** How a blocking call answers a caller that is interrupted while it waits. */
class DlmClientAwaitTest {
  @AfterEach
  void clearInterrupt() {
    Thread.interrupted();
  }

  @Test
  void anInterruptedWaitCancelsTheCall() {
    CompletableFuture<String> call = new CompletableFuture<>();
    Thread.currentThread().interrupt();

    assertThatThrownBy(() -> DlmClient.await(call))
        .isInstanceOfSatisfying(
            DlmClientException.class, e -> assertThat(e.code()).isEqualTo(Status.Code.CANCELLED));
    assertThat(call).isCancelled();
    assertThat(Thread.currentThread().isInterrupted()).isTrue();
  }

  /**
   * The call completes (a lock is granted) just as the interrupt comes, too late to cancel: the
   * caller gets the lock, or nobody would know to release it; the interrupt stays set.
   */
  @Test
  void aCallThatCompletesAsTheInterruptComesIsAnswered() {
    CompletableFuture<String> call =
        new CompletableFuture<>() {
          @Override
          public boolean cancel(boolean mayInterrupt) {
            complete("granted"); // the answer arrives first
            return super.cancel(mayInterrupt);
          }
        };
    Thread.currentThread().interrupt();

    assertThat(DlmClient.await(call)).isEqualTo("granted");
    assertThat(Thread.currentThread().isInterrupted()).isTrue();
  }
}
