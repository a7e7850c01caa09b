package io.clusterlvm.dlm.client;

import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.LockCall;
import io.clusterlvm.dlm.proto.LockCallResult;
import io.clusterlvm.dlm.proto.LockCallResults;
import io.clusterlvm.dlm.proto.LockCalls;
import io.clusterlvm.dlm.proto.OpenSessionRequest;
import io.clusterlvm.dlm.proto.SessionEvent;
import io.clusterlvm.dlm.proto.SessionOpened;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * An in-process stand-in for a dlm-server's session and lock stream that answers as a test scripts
 * it, so that the client's side of a race (which answer comes first, a reset, a refusal) can be
 * chosen. Sessions open at once as session 5. The lock service itself is tested in dlm-server.
 */
final class ScriptedServer implements AutoCloseable {

  /** What the server does with one call on lock stream number {@code stream} (from 1). */
  @FunctionalInterface
  interface Script {
    void onCall(int stream, LockCall call, StreamObserver<LockCallResults> out);
  }

  /** Every call received, in order. */
  final List<LockCall> received = new CopyOnWriteArrayList<>();

  /** Lock streams opened so far. */
  final AtomicInteger streams = new AtomicInteger();

  /** The latest session stream, to end it from the test. */
  volatile StreamObserver<SessionEvent> session;

  final ManagedChannel channel;
  private final Server server;

  private ScriptedServer(Script script) throws IOException {
    String name = InProcessServerBuilder.generateName();
    server =
        InProcessServerBuilder.forName(name)
            .directExecutor()
            .addService(
                new DlmGrpc.DlmImplBase() {
                  @Override
                  public void openSession(OpenSessionRequest r, StreamObserver<SessionEvent> o) {
                    session = o;
                    o.onNext(
                        SessionEvent.newBuilder()
                            .setOpened(SessionOpened.newBuilder().setSessionId(5))
                            .build());
                  }

                  @Override
                  public StreamObserver<LockCalls> lockStream(StreamObserver<LockCallResults> o) {
                    int stream = streams.incrementAndGet();
                    return new StreamObserver<>() {
                      @Override
                      public void onNext(LockCalls calls) {
                        for (LockCall c : calls.getCallsList()) {
                          received.add(c);
                          script.onCall(stream, c, o);
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

  static ScriptedServer start(Script script) throws IOException {
    return new ScriptedServer(script);
  }

  /** Sends {@code result} alone on {@code out}. */
  static void answer(StreamObserver<LockCallResults> out, LockCallResult.Builder result) {
    out.onNext(LockCallResults.newBuilder().addResults(result).build());
  }

  @Override
  public void close() {
    channel.shutdownNow();
    server.shutdownNow();
  }
}
