package io.clusterlvm.bench;

import io.grpc.CallOptions;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.Server;
import io.grpc.ServerServiceDefinition;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.ServerCalls;
import io.grpc.stub.StreamObserver;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

/**
 * Not a lock service: the floor under any gRPC one in this setup. "Acquire" is one message round
 * trip on an open bidirectional stream to an echo server in this JVM, answered on the server's
 * transport thread: no lock table, no engine thread, no ZooKeeper. "Release" is another round trip,
 * or, with one round trip per pair, nothing: as DlmClient's asynchronous release, which travels in
 * the next acquire's message. Laid out like {@link DlmLockSystem} (a stream per worker over {@code
 * connections} channels, callers woken from the transport thread), so its throughput bounds what a
 * lock service with as many round trips per acquire+release can reach on this machine, with its
 * clients in this JVM.
 */
final class GrpcFloorSystem implements LockSystem {
  private static final MethodDescriptor.Marshaller<byte[]> BYTES =
      new MethodDescriptor.Marshaller<>() {
        @Override
        public InputStream stream(byte[] value) {
          return new ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(InputStream in) {
          try {
            return in.readAllBytes();
          } catch (IOException e) {
            throw new UncheckedIOException(e);
          }
        }
      };

  private static final MethodDescriptor<byte[], byte[]> ECHO =
      MethodDescriptor.<byte[], byte[]>newBuilder()
          .setType(MethodDescriptor.MethodType.BIDI_STREAMING)
          .setFullMethodName("bench.Floor/Echo")
          .setRequestMarshaller(BYTES)
          .setResponseMarshaller(BYTES)
          .build();

  /** About the size of a LockCall carrying an AcquireRequest. */
  private static final byte[] MESSAGE = new byte[96];

  private final Server server;
  private final List<ManagedChannel> channels = new ArrayList<>();
  private final boolean releaseRoundTrip;

  /** {@code roundTripsPerPair}: 2 (acquire and release each one), or 1 (acquire only). */
  GrpcFloorSystem(int connections, int roundTripsPerPair) throws IOException {
    if (roundTripsPerPair != 1 && roundTripsPerPair != 2) {
      throw new IllegalArgumentException("round trips per pair: 1 or 2, not " + roundTripsPerPair);
    }
    releaseRoundTrip = roundTripsPerPair == 2;
    server =
        NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", 0))
            .directExecutor()
            .addService(
                ServerServiceDefinition.builder("bench.Floor")
                    .addMethod(
                        ECHO,
                        ServerCalls.asyncBidiStreamingCall(
                            answers ->
                                new StreamObserver<byte[]>() {
                                  @Override
                                  public void onNext(byte[] m) {
                                    answers.onNext(m);
                                  }

                                  @Override
                                  public void onError(Throwable t) {}

                                  @Override
                                  public void onCompleted() {
                                    answers.onCompleted();
                                  }
                                }))
                    .build())
            .build()
            .start();
    for (int i = 0; i < connections; i++) {
      channels.add(
          NettyChannelBuilder.forAddress("127.0.0.1", server.getPort())
              .usePlaintext()
              .directExecutor() // as DlmClient's lock stream: answers handled on the transport
              .build());
    }
  }

  @Override
  public String name() {
    return releaseRoundTrip ? "grpc-floor" : "grpc-floor-1rt";
  }

  @Override
  public String clientLayout() {
    return "one bidirectional stream per client to an echo server in this JVM, "
        + (releaseRoundTrip ? 2 : 1)
        + " round trip(s) per pair, over "
        + channels.size()
        + " gRPC channel(s), round-robin";
  }

  @Override
  public Worker worker(int index, String resource) {
    Stream s = new Stream(channels.get(index % channels.size()));
    return new Worker() {
      @Override
      public void acquire() throws Exception {
        s.roundTrip();
      }

      @Override
      public void release() throws Exception {
        if (releaseRoundTrip) {
          s.roundTrip();
        }
      }
    };
  }

  /** One stream with one message in flight at a time; the caller is woken by the transport. */
  private static final class Stream implements StreamObserver<byte[]> {
    private final StreamObserver<byte[]> out;
    private volatile CompletableFuture<Void> answer;

    Stream(ManagedChannel channel) {
      out = ClientCalls.asyncBidiStreamingCall(channel.newCall(ECHO, CallOptions.DEFAULT), this);
    }

    void roundTrip() throws Exception {
      CompletableFuture<Void> a = new CompletableFuture<>();
      answer = a;
      out.onNext(MESSAGE);
      a.get(30, TimeUnit.SECONDS);
    }

    @Override
    public void onNext(byte[] m) {
      answer.complete(null);
    }

    @Override
    public void onError(Throwable t) {
      CompletableFuture<Void> a = answer;
      if (a != null) { // null: the stream ends (the benchmark closing) before its first round trip
        a.completeExceptionally(t);
      }
    }

    @Override
    public void onCompleted() {}
  }

  @Override
  public boolean isQueued(String resource, Thread waiter) {
    throw new UnsupportedOperationException("the gRPC floor has no queue");
  }

  @Override
  public void close() {
    channels.forEach(ManagedChannel::shutdownNow);
    server.shutdownNow();
  }
}
