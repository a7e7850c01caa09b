package io.clusterlvm.dlm.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
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
    DlmClient client = DlmClient.connect("127.0.0.1:" + port);
    // A read retries UNAVAILABLE for the whole retry window (30 s), a back-off apart.
    CompletableFuture<Object> call = CompletableFuture.supplyAsync(() -> client.locks(null));
    Thread.sleep(300); // a few attempts failed; the next waits in the client's scheduler

    client.close();

    await("the call ends with the client").atMost(Duration.ofSeconds(10)).until(call::isDone);
    assertThat(call).isCompletedExceptionally();
  }
}
