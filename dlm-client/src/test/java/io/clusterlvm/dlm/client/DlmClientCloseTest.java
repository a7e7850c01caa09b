package io.clusterlvm.dlm.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ClientInterceptors;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.MethodDescriptor;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Closing a client ends every call it was still retrying: none is left waiting for ever. */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class DlmClientCloseTest {
  @Test
  void aCallWaitingOutItsBackOffFailsWhenTheClientCloses() throws Exception {
    int port;
    try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      port = s.getLocalPort(); // closed again: nothing listens there
    }
    ManagedChannel channel =
        ManagedChannelBuilder.forAddress("127.0.0.1", port).usePlaintext().build();
    AtomicInteger attempts = new AtomicInteger();
    ClientInterceptor counting =
        new ClientInterceptor() {
          @Override
          public <Q, A> ClientCall<Q, A> interceptCall(
              MethodDescriptor<Q, A> m, CallOptions options, Channel next) {
            attempts.incrementAndGet();
            return next.newCall(m, options);
          }
        };
    DlmClient client = DlmClient.forChannel(ClientInterceptors.intercept(channel, counting));
    try {
      // A read retries UNAVAILABLE for the whole retry window (30 s), a back-off apart.
      CompletableFuture<Object> call = CompletableFuture.supplyAsync(() -> client.locks(null));
      // Retried twice: the attempts fail at once (nothing listens), so the next one waits out
      // its back-off in the client's scheduler.
      await("retries").atMost(Duration.ofSeconds(10)).until(() -> attempts.get() >= 3);

      client.close();

      await("the call ends with the client").atMost(Duration.ofSeconds(10)).until(call::isDone);
      assertThat(call).isCompletedExceptionally();
    } finally {
      client.close();
      channel.shutdownNow();
    }
  }
}
