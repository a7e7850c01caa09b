package io.clusterlvm.fence.domain;

import io.clusterlvm.fence.config.ClusterConfig;
import io.clusterlvm.fence.config.ClusterConfigException;
import io.clusterlvm.fence.proto.ConfigRecord;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.Supplier;
import org.apache.curator.framework.recipes.cache.CuratorCache;
import org.apache.curator.framework.recipes.cache.CuratorCacheListener;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The cluster.conf in force: the one published in ZooKeeper, followed as operators activate new
 * versions (no restart needed). A host started with a local file publishes it first if it is newer
 * than the published one, so a migrating operator just points the agents at their file.
 */
public final class ActiveConfig implements Supplier<ClusterConfig>, AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(ActiveConfig.class);

  private final FenceStore store;
  private final CuratorCache cache;
  private volatile ClusterConfig current;

  public ActiveConfig(FenceStore store) {
    this.store = store;
    this.cache = CuratorCache.build(store.curator(), store.config());
  }

  /** Publishes {@code localFile} if newer, then follows the published config. */
  public void start(Path localFile, String host) throws Exception {
    if (localFile != null) {
      String xml = Files.readString(localFile);
      ClusterConfig local = ClusterConfig.parsePublished(xml);
      long published = store.activeConfig().map(ConfigRecord::getConfigVersion).orElse(0L);
      if (local.configVersion() > published) {
        try {
          store.activate(xml, "clvm-agent on " + host + " from " + localFile);
          LOG.info(
              "published {} (config_version {}; was {})",
              localFile,
              local.configVersion(),
              published);
        } catch (ClusterConfigException refused) {
          // It parsed as a config in force, not as a new one (a misspelt node, say): it ran before
          // an upgrade, but is not published as a new version.
          LOG.error(
              "not publishing {}: {}\n  Fix it and raise its config_version; until then the"
                  + " published cluster.conf stays in force.",
              localFile,
              refused.getMessage());
        } catch (StaleConfigException refused) {
          if (local.holdsInlinePassword()) {
            // Not a race another agent won: this file can never be published as it is.
            LOG.error(
                "not publishing {}: {}. Until a cluster.conf is in force no failed host is fenced"
                    + " by an agent: each waits for 'dlmctl ack'.",
                localFile,
                refused.getMessage());
          } else {
            LOG.info("not publishing {}: {}", localFile, refused.getMessage());
          }
        }
      }
    }
    cache
        .listenable()
        .addListener(CuratorCacheListener.builder().forAll((t, o, n) -> reload()).build());
    cache.start();
    reload();
  }

  private void reload() {
    try {
      store
          .activeConfig()
          .ifPresent(
              r -> {
                if (current != null && current.configVersion() == r.getConfigVersion()) {
                  return;
                }
                try {
                  current = ClusterConfig.parsePublished(r.getXml());
                  LOG.info(
                      "cluster.conf config_version {} is in force (activated by {})",
                      r.getConfigVersion(),
                      r.getActivatedBy());
                } catch (ClusterConfigException e) {
                  LOG.error(
                      "the published cluster.conf does not parse; keeping the previous one: {}",
                      e.getMessage());
                }
              });
    } catch (Exception e) {
      LOG.warn("could not read the published cluster.conf: {}", e.toString());
    }
  }

  /** The config in force, or null if none was ever published. */
  @Override
  public ClusterConfig get() {
    return current;
  }

  @Override
  public void close() {
    cache.close();
  }
}
