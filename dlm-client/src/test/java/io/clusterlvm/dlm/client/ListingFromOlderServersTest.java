package io.clusterlvm.dlm.client;

import static org.assertj.core.api.Assertions.assertThat;

import io.clusterlvm.dlm.proto.DlmGrpc;
import io.clusterlvm.dlm.proto.ListLocksRequest;
import io.clusterlvm.dlm.proto.ListLocksResponse;
import io.clusterlvm.dlm.proto.LockInfo;
import io.clusterlvm.dlm.proto.Owner;
import io.clusterlvm.dlm.proto.ResourceInfo;
import io.grpc.ManagedChannel;
import io.grpc.Server;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.stub.StreamObserver;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A listing during an upgrade: the servers are upgraded one at a time, so a client that pages may
 * be answered by a server older than paging (which ignores the page token and starts over) and one
 * older than the node filter (which lists every node's locks). The client must neither list a
 * resource twice nor take another node's lock for one of the node it asked about. The server here
 * answers as such an older server would; the paging server itself is tested against a real
 * dlm-server in dlm-server's LockServiceTest.
 */
@Timeout(value = 30, unit = TimeUnit.SECONDS)
class ListingFromOlderServersTest {
  private static final ResourceInfo R1 = resource("r1", "node1", "node2");
  private static final ResourceInfo R2 = resource("r2", "node2");
  private static final ResourceInfo R3 = resource("r3", "node1");

  private final List<ListLocksRequest> asked = new CopyOnWriteArrayList<>();
  private Server server;
  private ManagedChannel channel;
  private DlmClient client;

  @BeforeEach
  void start() throws Exception {
    String name = InProcessServerBuilder.generateName();
    server =
        InProcessServerBuilder.forName(name)
            .directExecutor()
            .addService(
                new DlmGrpc.DlmImplBase() {
                  @Override
                  public void listLocks(
                      ListLocksRequest req, StreamObserver<ListLocksResponse> out) {
                    asked.add(req);
                    // The first page from a server that pages; then an older one, which
                    // ignores the token and the node, and lists everything.
                    ListLocksResponse answer =
                        asked.size() == 1
                            ? ListLocksResponse.newBuilder()
                                .addResources(R1)
                                .setNextPageToken("ls r1")
                                .build()
                            : ListLocksResponse.newBuilder()
                                .addResources(R1)
                                .addResources(R2)
                                .addResources(R3)
                                .build();
                    out.onNext(answer);
                    out.onCompleted();
                  }
                })
            .build()
            .start();
    channel = InProcessChannelBuilder.forName(name).directExecutor().build();
    client = DlmClient.forChannel(channel);
  }

  @AfterEach
  void stop() {
    client.close();
    channel.shutdownNow();
    server.shutdownNow();
  }

  @Test
  void aServerThatStartsOverListsNoResourceTwice() {
    assertThat(client.locks(null)).containsExactly(R1, R2, R3);
    assertThat(asked).extracting(ListLocksRequest::getPageToken).containsExactly("", "ls r1");
    assertThat(asked).allMatch(r -> r.getPageSize() > 0);
  }

  @Test
  void aServerThatIgnoresTheNodeFilterGivesNoOtherNodesLock() {
    List<ResourceInfo> mine = client.locks(null, "node1", 0);
    assertThat(mine).extracting(ResourceInfo::getResource).containsExactly("r1", "r3");
    assertThat(mine)
        .flatExtracting(ResourceInfo::getGrantedList)
        .extracting(l -> l.getOwner().getNode())
        .containsOnly("node1");
    assertThat(asked).extracting(ListLocksRequest::getNode).containsOnly("node1");
  }

  private static ResourceInfo resource(String name, String... holders) {
    ResourceInfo.Builder b = ResourceInfo.newBuilder().setLockspace("ls").setResource(name);
    for (String node : holders) {
      b.addGranted(
          LockInfo.newBuilder()
              .setOwner(Owner.newBuilder().setNode(node).setIncarnation(1))
              .setLockId(node.hashCode()));
    }
    return b.build();
  }
}
