package io.clusterlvm.testing;

import java.util.concurrent.CompletableFuture;

/** Runs a step of a test beside the test's own thread, checked exceptions and all. */
public final class Async {
  private Async() {}

  /** A step that may throw anything. */
  @FunctionalInterface
  public interface Step {
    void run() throws Exception;
  }

  /** Runs {@code step} on another thread; the future fails with what it threw. */
  public static CompletableFuture<Void> run(Step step) {
    return CompletableFuture.runAsync(
        () -> {
          try {
            step.run();
          } catch (RuntimeException e) {
            throw e;
          } catch (Exception e) {
            throw new IllegalStateException(e);
          }
        });
  }
}
