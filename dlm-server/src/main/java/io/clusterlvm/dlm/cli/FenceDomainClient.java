package io.clusterlvm.dlm.cli;

import io.clusterlvm.dlm.client.DlmClientException;
import io.clusterlvm.fence.proto.FenceDomainGrpc;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
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
  private ManagedChannel channel;

  FenceDomainClient(String servers, Duration deadline) {
    this.servers = servers.split(",");
    this.deadline = deadline;
  }

  <T> T call(Function<FenceDomainGrpc.FenceDomainBlockingStub, T> rpc) {
    StatusRuntimeException last = null;
    for (String s : servers) {
      close();
      channel = ManagedChannelBuilder.forTarget(s.trim()).usePlaintext().build();
      try {
        return rpc.apply(
            FenceDomainGrpc.newBlockingStub(channel)
                .withDeadlineAfter(deadline.toMillis(), TimeUnit.MILLISECONDS));
      } catch (StatusRuntimeException e) {
        last = e;
        if (e.getStatus().getCode() != Status.Code.UNAVAILABLE) {
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
