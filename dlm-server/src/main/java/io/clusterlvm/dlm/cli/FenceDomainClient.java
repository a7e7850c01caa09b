package io.clusterlvm.dlm.cli;

import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.fence.proto.FenceDomainGrpc;
import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;

/**
 * dlmctl's way to the fence domain records. Any dlm-server serves them (they live in ZooKeeper), so
 * it tries the given servers in order until one answers.
 */
final class FenceDomainClient implements AutoCloseable {
  private final String[] servers;
  private final Duration deadline;
  private final ChannelCredentials credentials;
  private ManagedChannel channel;

  FenceDomainClient(String servers, Duration deadline, ChannelCredentials credentials) {
    this.servers = servers.split(",");
    this.deadline = deadline;
    this.credentials = credentials;
  }

  /**
   * A change (fence, ack, activate, join/leave request): moves on to the next server only when one
   * could not be reached, since a server that timed out may have made the change.
   */
  <T> T call(Function<FenceDomainGrpc.FenceDomainBlockingStub, T> rpc) {
    return call(rpc, false);
  }

  /**
   * A read: moves on to the next server also when one did not answer in time, e.g. a server cut off
   * from ZooKeeper, which accepts the call and waits for its session, when an operator most needs
   * to see the fence states.
   */
  <T> T read(Function<FenceDomainGrpc.FenceDomainBlockingStub, T> rpc) {
    return call(rpc, true);
  }

  private <T> T call(Function<FenceDomainGrpc.FenceDomainBlockingStub, T> rpc, boolean read) {
    StatusRuntimeException last = null;
    for (String s : servers) {
      close();
      channel = Grpc.newChannelBuilder(s.trim(), credentials).build();
      try {
        return rpc.apply(
            FenceDomainGrpc.newBlockingStub(channel)
                .withDeadlineAfter(deadline.toMillis(), TimeUnit.MILLISECONDS));
      } catch (StatusRuntimeException e) {
        last = e;
        Status.Code code = e.getStatus().getCode();
        if (code != Status.Code.UNAVAILABLE && !(read && code == Status.Code.DEADLINE_EXCEEDED)) {
          throw DlmClientException.of(e);
        }
      }
    }
    throw DlmClientException.of(last);
  }

  @Override
  public void close() {
    if (channel != null) {
      channel.shutdownNow();
      channel = null;
    }
  }
}
