package io.clusterlvm.clvm.rpc;

import io.clusterlvm.clvm.proto.ClvmGrpc;
import io.clusterlvm.clvm.proto.HostStatusRequest;
import io.clusterlvm.clvm.proto.HostStatusResponse;
import io.clusterlvm.clvm.proto.ListVolumesRequest;
import io.clusterlvm.clvm.proto.ListVolumesResponse;
import io.clusterlvm.clvm.proto.RunCommandRequest;
import io.clusterlvm.clvm.proto.RunCommandResponse;
import io.grpc.Channel;
import io.grpc.ManagedChannel;
import io.grpc.netty.NettyChannelBuilder;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollEventLoopGroup;
import io.netty.channel.unix.DomainSocketAddress;
import io.netty.util.concurrent.DefaultThreadFactory;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Java client of the clvm API. Takes any {@link Channel} (tests use in-process ones); {@link
 * #connect(Path)} opens the agent's unix socket. Every call has a deadline; failures come as {@link
 * io.grpc.StatusRuntimeException}, with {@link Refusals#detailOf} telling a refusal's kind.
 */
public final class ClvmClient {

  private final ClvmGrpc.ClvmBlockingStub stub;

  public ClvmClient(Channel channel) {
    this.stub = ClvmGrpc.newBlockingStub(channel).withMaxInboundMessageSize(256 << 20);
  }

  /** Runs {@code argv} on the agent; returns lvm's output and exit code. */
  public RunCommandResponse run(List<String> argv, String client, Duration deadline) {
    return stub.withDeadlineAfter(deadline.toNanos(), TimeUnit.NANOSECONDS)
        .runCommand(RunCommandRequest.newBuilder().addAllArgv(argv).setClient(client).build());
  }

  public ListVolumesResponse listVolumes(Duration deadline) {
    return stub.withDeadlineAfter(deadline.toNanos(), TimeUnit.NANOSECONDS)
        .listVolumes(ListVolumesRequest.getDefaultInstance());
  }

  public HostStatusResponse hostStatus(Duration deadline) {
    return stub.withDeadlineAfter(deadline.toNanos(), TimeUnit.NANOSECONDS)
        .hostStatus(HostStatusRequest.getDefaultInstance());
  }

  /** A channel to an agent's unix socket, with the event loop it needs; close both together. */
  public static final class UnixSocketChannel implements AutoCloseable {
    private final ManagedChannel channel;
    private final EventLoopGroup group;

    private UnixSocketChannel(ManagedChannel channel, EventLoopGroup group) {
      this.channel = channel;
      this.group = group;
    }

    public ManagedChannel channel() {
      return channel;
    }

    @Override
    public void close() {
      channel.shutdownNow();
      try {
        channel.awaitTermination(2, TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
    }
  }

  /** Opens a channel to the agent listening on {@code socket} (connects lazily). */
  public static UnixSocketChannel connect(Path socket) {
    EventLoopGroup group =
        new EpollEventLoopGroup(1, new DefaultThreadFactory("clvm-client", true));
    ManagedChannel channel =
        NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toString()))
            .channelType(EpollDomainSocketChannel.class)
            .eventLoopGroup(group)
            .usePlaintext()
            .maxInboundMessageSize(256 << 20)
            .build();
    return new UnixSocketChannel(channel, group);
  }
}
