package io.clusterlvm.dlm.client;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.Mode;
import io.grpc.Status;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * gRPC reports a stream reset by the other end (a server's shutdownNow, a proxy) as CANCELLED, the
 * code of a call the client cancelled itself. Before 2026-12-07 the lock stream took it for the
 * latter and failed its open calls for good (found in review): a release was not retried, an
 * acquire was abandoned. The stand-in server resets the first lock stream and answers on the next.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class StreamResetTest {

  @Test
  void anAcquireOnAStreamTheServerResetIsRetriedOnTheNext() throws Exception {
    try (ScriptedServer server =
            ScriptedServer.start(
                (stream, call, out) -> {
                  if (stream == 1) {
                    out.onError(Status.CANCELLED.withDescription("reset").asException());
                    return;
                  }
                  ScriptedServer.answer(
                      out,
                      LockCallResult.newBuilder()
                          .setCallId(call.getCallId())
                          .setLock(
                              LockReply.newBuilder()
                                  .setLockId(7)
                                  .setLockspace("ls")
                                  .setResource("r")
                                  .setMode(Mode.EX)));
                });
        DlmClient client = DlmClient.forChannel(server.channel)) {
      Lock lock = client.openSession("n1", 1, "test").lock("ls", "r", LockMode.EX);
      assertThat(lock.id()).isEqualTo(7);
      assertThat(server.streams.get()).isEqualTo(2);
    }
  }
}
