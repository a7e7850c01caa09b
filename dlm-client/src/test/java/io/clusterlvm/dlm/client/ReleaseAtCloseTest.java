package io.clusterlvm.dlm.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import io.clusterlvm.dlm.proto.CallFailure;
import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockCallResults;
import io.clusterlvm.dlm.proto.LockCalls;
import io.clusterlvm.dlm.proto.OpenSessionRequest;
import io.clusterlvm.dlm.proto.ReleaseResponse;
import io.clusterlvm.dlm.proto.SessionEvent;
import io.clusterlvm.dlm.proto.SessionOpened;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.stub.StreamObserver;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A client closed while a release waits out its back-off (the lock service has no leader for a
 * moment) lets it get through first. Before 2026-12-07 the retry found the client closed and was
 * dropped (found in review): a persistent lock, such as an LV's activation lock, then stayed held
 * until its node left. The server here is a bare endpoint that refuses the first releases as a
 * follower without a leader does; the lock service itself is tested in dlm-server.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class ReleaseAtCloseTest {

  private static final int REFUSED = 4; // back-off 25 + 50 + 100 + 200 ms

  private final AtomicInteger releases = new AtomicInteger();
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
                    return new StreamObserver<>() {
                      @Override
                      public void onNext(LockCalls calls) {
                        for (LockCall c : calls.getCallsList()) {
                          if (!c.hasRelease()) {
                            continue;
                          }
                          LockCallResult.Builder r =
                              LockCallResult.newBuilder().setCallId(c.getCallId());
                          if (releases.incrementAndGet() <= REFUSED) {
                            r.setFailure(
                                CallFailure.newBuilder()
                                    .setCode(Status.Code.UNAVAILABLE.value())
                                    .setDescription("no leader"));
                          } else {
                            r.setReleased(ReleaseResponse.getDefaultInstance());
                          }
                          o.onNext(LockCallResults.newBuilder().addResults(r).build());
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
  void aReleaseInItsRetryBackOffGetsThroughBeforeTheClientCloses() throws Exception {
    DlmClient client = DlmClient.forChannel(channel);
    DlmSession session = client.openSession("n1", 1, "test");
    Lock held = new Lock(77, "ls", "r", LockMode.EX, 1, new byte[0], true);
    CompletableFuture<Void> released = session.unlockAsync(held, null);
    await().atMost(10, TimeUnit.SECONDS).until(() -> releases.get() >= 2);

    client.close();

    assertThat(released).succeedsWithin(1, TimeUnit.SECONDS);
    assertThat(releases.get()).isEqualTo(REFUSED + 1);
  }
}
