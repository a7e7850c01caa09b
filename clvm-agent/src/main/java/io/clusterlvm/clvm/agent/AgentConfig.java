package io.clusterlvm.clvm.agent;

import io.clusterlvm.dlm.client.TlsFiles;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * How one clvm-agent runs.
 *
 * @param node this host's node name, as in cluster.conf
 * @param clusterConf a local cluster.conf to publish if newer than the active one (may be null)
 * @param zookeeper the ensemble; this agent's own session there is the host's membership lease
 * @param dlmServers the dlm-servers, "host:port[,host:port...]"
 * @param socket the unix socket the clvm wrapper talks to
 * @param tcpListen optional "host:port" for the same service over TCP (null: none)
 * @param lvmBinary the lvm executable
 * @param lvmSystemDir LVM_SYSTEM_DIR for lvm runs (null: lvm's default)
 * @param lvmExtraArgs extra lvm arguments (e.g. --driverloaded n)
 * @param lockTimeout how long a command waits for its cluster locks
 * @param lvmTimeout how long one lvm run may take before it is killed (its outcome is then unknown)
 * @param bootId this boot's id (from /proc/sys/kernel/random/boot_id)
 * @param stateDir where the agent keeps its state across restarts (the metadata-change log)
 * @param dlmRetryWindow how long the agent's calls keep retrying while no dlm-server leader answers
 * @param leaveDrain how long a leave or a stop waits for the commands in flight before it stops
 *     their lvm
 * @param dlmTls TLS to the dlm-servers; null for plain text
 * @param zkTls TLS to ZooKeeper; null for plain text ({@code
 *     io.clusterlvm.fence.domain.ZooKeeperTls}; its key store is written in {@code stateDir})
 */
public record AgentConfig(
    String node,
    Path clusterConf,
    String zookeeper,
    String dlmServers,
    String zkRoot,
    Path socket,
    String tcpListen,
    Path lvmBinary,
    Path lvmSystemDir,
    List<String> lvmExtraArgs,
    Duration zkSessionTimeout,
    Duration fenceAgentTimeout,
    Duration lockTimeout,
    Duration lvmTimeout,
    String bootId,
    Path stateDir,
    Duration dlmRetryWindow,
    Duration leaveDrain,
    TlsFiles dlmTls,
    TlsFiles zkTls) {

  /** This config with another leave drain. */
  public AgentConfig withLeaveDrain(Duration drain) {
    return new AgentConfig(
        node,
        clusterConf,
        zookeeper,
        dlmServers,
        zkRoot,
        socket,
        tcpListen,
        lvmBinary,
        lvmSystemDir,
        lvmExtraArgs,
        zkSessionTimeout,
        fenceAgentTimeout,
        lockTimeout,
        lvmTimeout,
        bootId,
        stateDir,
        dlmRetryWindow,
        drain,
        dlmTls,
        zkTls);
  }
}
