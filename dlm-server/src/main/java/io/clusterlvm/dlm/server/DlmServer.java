package io.clusterlvm.dlm.server;

import io.clusterlvm.dlm.client.TlsFiles;
import io.clusterlvm.fence.domain.FenceStore;
import io.clusterlvm.fence.domain.ZooKeeperTls;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.ServerCredentials;
import io.grpc.TlsServerCredentials;
import io.grpc.netty.NettyServerBuilder;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.time.Clock;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.leader.LeaderLatchListener;
import org.apache.curator.framework.state.ConnectionState;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.zookeeper.client.ZKClientConfig;
import org.apache.zookeeper.common.ZKConfig;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One dlm-server instance: a gRPC endpoint, a ZooKeeper client, and a seat in the leader election.
 * Only the elected leader runs a {@link LeaderCore}; the others answer UNAVAILABLE and name the
 * leader, so clients given the server list can go there.
 *
 * <p>Leadership is given up on SUSPENDED (Curator's LeaderLatch does this with the standard error
 * policy), before the session can expire and another server be elected. Even a leader that has not
 * noticed yet cannot write: each write checks the epoch it took over with, and taking over (bumping
 * the epoch) checks that the election node it won with still exists.
 */
public final class DlmServer implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(DlmServer.class);

  /** How old the leader id named to clients may be before it is looked up again. */
  private static final java.time.Duration LEADER_LOOKUP_INTERVAL = java.time.Duration.ofMillis(200);

  /** How long a status request waits for a leader lookup before it answers with what is known. */
  private static final java.time.Duration FRESH_LEADER_WAIT = java.time.Duration.ofSeconds(1);

  private enum State {
    LATENT,
    STARTED,
    CLOSED
  }

  private final DlmServerConfig config;
  private final AtomicReference<State> state = new AtomicReference<>(State.LATENT);
  private final ExecutorService leadership;
  private final ScheduledExecutorService timers;
  private final ExecutorService leaderLookup;
  private final ExecutorService fenceCalls;

  /** The leader lookup running on {@link #leaderLookup}, if one is. */
  private final AtomicReference<CompletableFuture<Void>> lookup = new AtomicReference<>();

  private EmbeddedZooKeeper embedded;
  private CuratorFramework curator;
  private Server grpc;
  private LeaderLatch latch;
  private String serverId;
  private String connectString;
  private ZkPaths paths;
  private volatile LeaderCore core;
  private DlmGrpcService service;
  private volatile String leaderId = "";
  private volatile long leaderIdAt; // System.nanoTime() of the last lookup; 0: never

  private DlmServer(DlmServerConfig config) {
    this.config = config;
    this.leadership = Executors.newSingleThreadExecutor(named("dlm-leadership"));
    this.leaderLookup = Executors.newSingleThreadExecutor(named("dlm-leader-lookup"));
    this.fenceCalls = Executors.newCachedThreadPool(named("dlm-fence-call"));
    ScheduledThreadPoolExecutor t = new ScheduledThreadPoolExecutor(1, named("dlm-timer"));
    t.setRemoveOnCancelPolicy(true);
    this.timers = t;
  }

  /** A new leader reads the table in large multi requests; let their answers in. */
  private ZKClientConfig zkClientConfig() {
    ZKClientConfig c = new ZKClientConfig();
    c.setProperty(ZKConfig.JUTE_MAXBUFFER, Integer.toString(LockStore.MAX_ANSWER_BYTES));
    return ZooKeeperTls.configure(c, config.zkTls(), config.dataDir());
  }

  private static java.util.concurrent.ThreadFactory named(String prefix) {
    AtomicInteger n = new AtomicInteger();
    return r -> {
      Thread th = new Thread(r, prefix + "-" + n.getAndIncrement());
      th.setDaemon(true);
      th.setUncaughtExceptionHandler(
          (x, e) -> LOG.error("uncaught exception in thread {}", x.getName(), e));
      return th;
    };
  }

  /** Starts the server and enters the leader election; returns without waiting to be elected. */
  public static DlmServer start(DlmServerConfig config) throws Exception {
    DlmServer s = new DlmServer(config);
    try {
      s.doStart();
      return s;
    } catch (Exception | Error e) {
      // Errors too (a missing class in ZooKeeper's server): leave no thread behind that keeps
      // the JVM alive.
      s.close();
      throw e;
    }
  }

  private void doStart() throws Exception {
    if (!state.compareAndSet(State.LATENT, State.STARTED)) {
      throw new IllegalStateException("already started");
    }
    connectString = config.zookeeper();
    if (connectString == null || connectString.isBlank()) {
      embedded =
          new EmbeddedZooKeeper(config.dataDir().resolve("zookeeper"), config.embeddedZkPort());
      connectString = embedded.connectString();
      LOG.info(
          "no --zookeeper given: started an embedded single-node ZooKeeper at {} with data in {}"
              + " (for a one-machine trial; point every server at an ensemble in production)",
          connectString,
          config.dataDir().resolve("zookeeper"));
    }
    curator =
        CuratorFrameworkFactory.builder()
            .connectString(connectString)
            .sessionTimeoutMs((int) config.zkSessionTimeout().toMillis())
            .connectionTimeoutMs(5_000)
            .retryPolicy(new ExponentialBackoffRetry(200, 10, 5_000))
            .zkClientConfig(zkClientConfig())
            .build();
    curator.getConnectionStateListenable().addListener(this::connectionChanged);
    curator.start();
    if (!curator.blockUntilConnected(30, TimeUnit.SECONDS)) {
      throw new IllegalStateException("could not connect to ZooKeeper at " + connectString);
    }
    paths = new ZkPaths(config.zkRoot());

    service =
        new DlmGrpcService(
            () -> core,
            new DlmGrpcService.ServerInfo() {
              @Override
              public String serverId() {
                return serverId;
              }

              @Override
              public String zookeeper() {
                return connectString;
              }

              @Override
              public String leaderId() {
                return currentLeader();
              }

              @Override
              public CompletableFuture<String> freshLeaderId() {
                return freshLeader();
              }
            });
    grpc =
        NettyServerBuilder.forAddress(config.listen(), credentials(config.tls()))
            // The lock service's handlers never block (they queue work to the engine thread), so
            // they run on the transport thread: a hand-off to an executor and back costs more
            // than the handler. The fence-domain calls read ZooKeeper and run on fenceCalls.
            .directExecutor()
            .addService(service)
            .addService(
                new FenceDomainGrpcService(
                    new io.clusterlvm.fence.domain.FenceStore(curator, config.zkRoot()),
                    fenceCalls))
            .permitKeepAliveTime(5, TimeUnit.SECONDS)
            .permitKeepAliveWithoutCalls(true)
            // A client whose host drops off the network does not close its connection, it falls
            // silent; without pings of our own its session would break only when TCP gives up,
            // about 15 minutes later, and the locks of a node without a lease would stay that
            // long. Pinged every 10 s, a silent client is noticed within 15 s.
            .keepAliveTime(10, TimeUnit.SECONDS)
            .keepAliveTimeout(5, TimeUnit.SECONDS)
            .build()
            .start();
    serverId =
        config.advertise() != null
            ? config.advertise()
            : advertised(config.listen(), grpc.getPort());
    LOG.info(
        "dlm-server {} listening on {}, ZooKeeper {}, root {}",
        serverId,
        grpc.getListenSockets(),
        connectString,
        config.zkRoot());

    startLatch();
  }

  /**
   * Plain text, or TLS with this server's certificate; with a CA, clients must present a
   * certificate it signed (mutual TLS), so that no host without one can take or purge locks.
   */
  private static ServerCredentials credentials(TlsFiles tls) throws IOException {
    if (tls == null) {
      return InsecureServerCredentials.create();
    }
    TlsServerCredentials.Builder b =
        TlsServerCredentials.newBuilder()
            .keyManager(tls.certChain().toFile(), tls.privateKey().toFile());
    if (tls.trustedCa() != null) {
      b.trustManager(tls.trustedCa().toFile()).clientAuth(TlsServerCredentials.ClientAuth.REQUIRE);
    }
    return b.build();
  }

  private static String advertised(InetSocketAddress listen, int port) throws Exception {
    InetAddress a = listen.getAddress();
    String host =
        a == null || a.isAnyLocalAddress()
            ? InetAddress.getLocalHost().getHostName()
            : a.getHostAddress();
    return host + ":" + port;
  }

  private void startLatch() throws Exception {
    latch = new LeaderLatch(curator, paths.leader(), serverId);
    LeaderLatch mine = latch;
    latch.addListener(
        new LeaderLatchListener() {
          @Override
          public void isLeader() {
            leadership.execute(() -> becomeLeader(mine));
          }

          @Override
          public void notLeader() {
            leadership.execute(() -> stepDown("lost the leader election (ZooKeeper connection)"));
          }
        });
    latch.start();
  }

  private void becomeLeader(LeaderLatch from) {
    if (state.get() != State.STARTED || from != latch || core != null || !from.hasLeadership()) {
      return;
    }
    LOG.info("elected leader; taking over the lock table");
    // The core's failure is its own: one that comes from a core already replaced (it failed as it
    // was being stepped down) must not stop its successor.
    AtomicReference<LeaderCore> self = new AtomicReference<>();
    LeaderCore c =
        new LeaderCore(
            // The node this server won the election with: while it exists (same session, never
            // deleted) nobody else can have won, so taking over the epoch is checked against it.
            new LockStore(curator, paths, from.getLastPathIsLeader()),
            serverId,
            Clock.systemUTC(),
            config.sessionGrace(),
            config.abruptEndGrace(),
            liveness(),
            timers,
            e -> leadership.execute(() -> coreFailed(self.get(), e)));
    self.set(c);
    try {
      c.start();
      core = c;
      leaderId = serverId;
    } catch (Exception e) {
      LOG.error("could not take over as leader; re-entering the election", e);
      c.close();
      reenterElection();
    }
  }

  /** A node's liveness: the heartbeats its agent writes on its membership lease. */
  private NodeLiveness liveness() {
    FenceStore fences = new FenceStore(curator, config.zkRoot());
    return owner -> {
      try {
        // The lease first: a cut-off session asks every grace period while the lease lives, and
        // the node record only tells "no lease" from "never tracked".
        Optional<FenceStore.Lease> lease = fences.lease(owner.node(), owner.incarnation());
        if (lease.isPresent()) {
          return new NodeLiveness.Lease(lease.get().heartbeat(), lease.get().boundSessionId());
        }
        return fences.nodeRecord(owner.node()).isEmpty()
            ? NodeLiveness.Lease.NOT_TRACKED
            : NodeLiveness.Lease.NONE;
      } catch (Exception e) {
        throw new IllegalStateException("ZooKeeper read failed: " + e, e);
      }
    };
  }

  private void coreFailed(LeaderCore failed, Throwable e) {
    if (failed != core) {
      LOG.info("a leader core already stepped down stopped: {}", e.toString());
      return;
    }
    LOG.error("leader core stopped: {}; re-entering the election", e.toString());
    stepDown("leader core stopped");
    reenterElection();
  }

  private void stepDown(String why) {
    LeaderCore c = core;
    if (c != null) {
      LOG.warn("stepping down as leader: {}", why);
      core = null;
      c.close();
    }
  }

  private void reenterElection() {
    if (state.get() != State.STARTED) {
      return;
    }
    try {
      latch.close(LeaderLatch.CloseMode.SILENT);
    } catch (Exception e) {
      LOG.debug("closing the old latch: {}", e.toString());
    }
    try {
      startLatch();
    } catch (Exception e) {
      LOG.error("could not re-enter the leader election", e);
    }
  }

  private void connectionChanged(CuratorFramework c, ConnectionState s) {
    switch (s) {
      case SUSPENDED ->
          LOG.warn("ZooKeeper connection SUSPENDED: no lock changes until it is back");
      case LOST -> LOG.warn("ZooKeeper session LOST: leadership (if any) is gone");
      case RECONNECTED -> LOG.info("ZooKeeper connection RECONNECTED");
      default -> LOG.debug("ZooKeeper connection {}", s);
    }
  }

  /**
   * The leader's id, to name in redirects and status, or "" if unknown. Never blocks on ZooKeeper:
   * it answers from what the last lookup found and starts a new lookup in the background when that
   * is stale, because a follower cut off from ZooKeeper must still refuse at once (a Curator read
   * would wait for the connection, holding every refused caller until its deadline). It never names
   * this server unless it serves as leader: one that was elected but has not taken over yet, or
   * that is stepping down, would send clients back to itself.
   */
  private String currentLeader() {
    if (core != null) {
      return serverId;
    }
    boolean connected = curator.getZookeeperClient().isConnected();
    if (connected && leaderIdStale()) {
      lookUp(); // for the next caller; this one gets what the last lookup found
    }
    String id = leaderId;
    return !connected || id.equals(serverId) ? "" : id;
  }

  /**
   * The leader's id as of a lookup no older than {@link #LEADER_LOOKUP_INTERVAL}, for a status
   * request; what {@link #currentLeader} knows when there is nothing to look up. A caller waits at
   * most {@link #FRESH_LEADER_WAIT} for the lookup: a ZooKeeper that answers slowly must not make a
   * live follower look dead.
   */
  private CompletableFuture<String> freshLeader() {
    if (core != null || !curator.getZookeeperClient().isConnected() || !leaderIdStale()) {
      return CompletableFuture.completedFuture(currentLeader());
    }
    return lookUp()
        .thenApply(looked -> currentLeader())
        .completeOnTimeout(currentLeader(), FRESH_LEADER_WAIT.toMillis(), TimeUnit.MILLISECONDS);
  }

  private boolean leaderIdStale() {
    long at = leaderIdAt;
    return at == 0 || System.nanoTime() - at > LEADER_LOOKUP_INTERVAL.toNanos();
  }

  /**
   * Starts a leader lookup on the lookup thread (callers are transport threads), unless one is
   * running: then it returns that one. Completes when the lookup has ended, either way.
   */
  private CompletableFuture<Void> lookUp() {
    CompletableFuture<Void> mine = new CompletableFuture<>();
    CompletableFuture<Void> running = lookup.compareAndExchange(null, mine);
    if (running != null) {
      return running;
    }
    try {
      leaderLookup.execute(
          () -> {
            try {
              lookUpLeader();
            } finally {
              lookup.set(null);
              mine.complete(null);
            }
          });
    } catch (RejectedExecutionException e) { // closing
      lookup.set(null);
      mine.complete(null);
    }
    return mine;
  }

  private void lookUpLeader() {
    try {
      org.apache.curator.framework.recipes.leader.Participant p = latch.getLeader();
      leaderId = p.isLeader() ? p.getId() : "";
    } catch (Exception e) {
      LOG.debug("looking up the leader: {}", e.toString());
      leaderId = "";
    } finally {
      leaderIdAt = System.nanoTime();
    }
  }

  public int port() {
    return grpc.getPort();
  }

  public String serverId() {
    return serverId;
  }

  public boolean isLeader() {
    return core != null;
  }

  /** The connect string of the ZooKeeper in use (the embedded one's if none was given). */
  public String zookeeper() {
    return connectString;
  }

  /** Blocks until the process should exit (the gRPC server stopped). */
  public void awaitTermination() throws InterruptedException {
    grpc.awaitTermination();
  }

  /** Stops serving, gives up leadership, and closes everything it started, in reverse order. */
  @Override
  public void close() {
    if (state.getAndSet(State.CLOSED) == State.CLOSED) {
      return;
    }
    LOG.info("dlm-server {} shutting down", serverId);
    if (grpc != null) {
      grpc.shutdown();
    }
    leadership.shutdown();
    try {
      leadership.awaitTermination(10, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
    LeaderCore c = core;
    core = null;
    if (c != null) {
      c.close();
    }
    if (service != null) {
      service.close(); // after the core answered what it could
    }
    if (latch != null) {
      try {
        latch.close();
      } catch (Exception e) {
        LOG.debug("closing the latch: {}", e.toString());
      }
    }
    if (grpc != null) {
      try {
        if (!grpc.awaitTermination(5, TimeUnit.SECONDS)) {
          grpc.shutdownNow();
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        grpc.shutdownNow();
      }
    }
    timers.shutdownNow();
    leaderLookup.shutdownNow();
    fenceCalls.shutdownNow();
    if (curator != null) {
      curator.close();
    }
    if (embedded != null) {
      embedded.close();
    }
    LOG.info("dlm-server {} stopped", serverId);
  }
}
