package io.clusterlvm.dlm.client;

import io.grpc.Channel;
import io.grpc.ChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.netty.NettyChannelBuilder;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The dlm-servers a client may talk to, and which one it talks to now. A follower answers
 * UNAVAILABLE naming the leader ("... the leader is HOST:PORT"); the client then goes there. With
 * no leader named, it tries the next server in the list, unless the leader itself answered ("this
 * dlm-server is the leader": it can't serve the call yet, and retrying it there is all there is).
 */
final class ServerList implements AutoCloseable {
  private static final Pattern LEADER = Pattern.compile("the leader is (\\S+)");

  /** Said by an UNAVAILABLE of the leader itself (dlm-server's LeaderCore.LEADER_ANSWERED). */
  private static final String LEADER_ANSWERED = "this dlm-server is the leader";

  private final Map<String, Channel> channels = new LinkedHashMap<>();
  private final List<ManagedChannel> owned = new ArrayList<>();
  private final boolean fixed;
  private final ChannelCredentials credentials;
  private volatile String current;

  /** One fixed channel (tests, in-process servers): never switched. */
  ServerList(Channel channel) {
    channels.put("channel", channel);
    current = "channel";
    fixed = true;
    credentials = null;
  }

  /** "host:port[,host:port...]", each reached with {@code credentials} (TLS or plain text). */
  ServerList(String targets, ChannelCredentials credentials) {
    this.credentials = credentials;
    for (String t : targets.split(",")) {
      String target = t.trim();
      if (!target.isEmpty()) {
        channels.put(target, open(target));
      }
    }
    if (channels.isEmpty()) {
      throw new IllegalArgumentException("no dlm-server address given");
    }
    current = channels.keySet().iterator().next();
    fixed = false;
  }

  private ManagedChannel open(String target) {
    ManagedChannel c =
        NettyChannelBuilder.forTarget(target, credentials)
            // Lock waits may last long; keepalives find a dead server within seconds.
            .keepAliveTime(10, TimeUnit.SECONDS)
            .keepAliveTimeout(5, TimeUnit.SECONDS)
            .keepAliveWithoutCalls(true)
            .build();
    owned.add(c);
    return c;
  }

  synchronized Channel current() {
    return channels.get(current);
  }

  synchronized String currentName() {
    return current;
  }

  /** The server we used answered UNAVAILABLE: go to the leader it names, or to the next one. */
  synchronized void failed(Channel used, Status status) {
    if (fixed || channels.get(current) != used) {
      return; // someone else already moved on
    }
    String desc = status.getDescription();
    if (desc != null && desc.contains(LEADER_ANSWERED)) {
      // The leader itself can't serve this yet (a lockspace it can't read): another server would
      // only send the client back, and the last answer it saw would not say why.
      return;
    }
    if (desc != null) {
      Matcher m = LEADER.matcher(desc);
      if (m.find()) {
        String leader = m.group(1);
        if (!channels.containsKey(leader)) {
          channels.put(leader, open(leader));
        }
        if (!leader.equals(current)) {
          switchTo(leader);
          return;
        }
      }
    }
    List<String> names = new ArrayList<>(channels.keySet());
    switchTo(names.get((names.indexOf(current) + 1) % names.size()));
  }

  /**
   * A channel that failed before waits out gRPC's reconnect back-off (up to two minutes) before it
   * tries its server again, even if that server came back long ago: switching to it resets that.
   */
  private void switchTo(String name) {
    current = name;
    if (channels.get(name) instanceof ManagedChannel c) {
      c.resetConnectBackoff();
    }
  }

  @Override
  public void close() {
    List<ManagedChannel> channels;
    synchronized (this) { // not while waiting below: failed() runs on the channels' threads
      channels = List.copyOf(owned);
    }
    for (ManagedChannel c : channels) {
      c.shutdownNow();
    }
    for (ManagedChannel c : channels) {
      try {
        c.awaitTermination(2, TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      }
    }
  }
}
