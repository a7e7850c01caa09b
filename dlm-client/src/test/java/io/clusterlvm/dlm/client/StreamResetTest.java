package io.clusterlvm.dlm.client;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockCallResults;
import io.clusterlvm.dlm.proto.LockCalls;
import io.clusterlvm.dlm.proto.LockReply;
import io.clusterlvm.dlm.proto.Mode;
import io.clusterlvm.dlm.proto.OpenSessionRequest;
import io.clusterlvm.dlm.proto.SessionEvent;
import io.clusterlvm.dlm.proto.SessionOpened;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.stub.StreamObserver;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * gRPC reports a stream reset by the other end (a server's shutdownNow, a proxy) as CANCELLED, the
 * code of a call the client cancelled itself. Before 2026-12-07 the lock stream took it for the
 * latter and failed its open calls for good (found in review): a release was not retried, an
 * acquire was abandoned. The server here is a bare endpoint that resets the first lock stream and
 * answers on the next; the lock service itself is tested in dlm-server.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class StreamResetTest {

  private final AtomicInteger streams = new AtomicInteger();
  private Server server;
  private ManagedChannel channel;

  @BeforeEach
  void start() throws Exception {
    String name = InProcessServerBuilder.generateName();
    server =
        InProcessServerBuilder.forName(name)
            .directExecutor()
            .addService(
                new DlmGrpc.DlmImplBase() {
                  @Override
                  public void openSession(OpenSessionRequest r, StreamObserver<SessionEvent> o) {
                    o.onNext(
                        SessionEvent.newBuilder()
                            .setOpened(SessionOpened.newBuilder().setSessionId(5))
                            .build());
                  }

                  @Override
                  public StreamObserver<LockCalls> lockStream(StreamObserver<LockCallResults> o) {
                    boolean reset = streams.incrementAndGet() == 1;
                    return new StreamObserver<>() {
                      @Override
                      public void onNext(LockCalls calls) {
                        for (LockCall c : calls.getCallsList()) {
                          if (reset) {
                            o.onError(Status.CANCELLED.withDescription("reset").asException());
                            return;
                          }
                          o.onNext(
                              LockCallResults.newBuilder()
                                  .addResults(
                                      LockCallResult.newBuilder()
                                          .setCallId(c.getCallId())
                                          .setLock(
                                              LockReply.newBuilder()
                                                  .setLockId(7)
                                                  .setLockspace("ls")
                                                  .setResource("r")
                                                  .setMode(Mode.EX)))
                                  .build());
                        }
                      }

                      @Override
                      public void onError(Throwable t) {}

                      @Override
                      public void onCompleted() {}
                    };
                  }
                })
            .build()
            .start();
    channel = InProcessChannelBuilder.forName(name).directExecutor().build();
  }

  @AfterEach
  void stop() {
    channel.shutdownNow();
    server.shutdownNow();
  }

  @Test
  void anAcquireOnAStreamTheServerResetIsRetriedOnTheNext() {
    DlmClient client = DlmClient.forChannel(channel);
    try {
      Lock lock = client.openSession("n1", 1, "test").lock("ls", "r", LockMode.EX);
      assertThat(lock.id()).isEqualTo(7);
      assertThat(streams.get()).isEqualTo(2);
    } finally {
      client.close();
    }
  }
}
