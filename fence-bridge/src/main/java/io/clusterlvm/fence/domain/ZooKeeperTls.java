package io.clusterlvm.fence.domain;

import io.clusterlvm.dlm.client.TlsFiles;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import org.apache.zookeeper.ClientCnxnSocketNetty;
import org.apache.zookeeper.client.ZKClientConfig;
import org.apache.zookeeper.common.ClientX509Util;

/**
 * TLS for a daemon's ZooKeeper client, from the same kind of PEM files as the lock service's
 * ({@link TlsFiles}): the CA that signed the ensemble's certificates, and this daemon's certificate
 * and key, which an ensemble with {@code ssl.clientAuth=need} checks. The agents write their leases
 * and the fence records in ZooKeeper directly, so an ensemble that anyone can reach in plain text
 * lets anyone fake a lease or acknowledge a fence; with TLS on both sides only holders of a cluster
 * certificate get in.
 *
 * <p>ZooKeeper reads a PEM key store from one file that holds both the certificate chain and the
 * key, where gRPC takes two; so the two are written together into {@code privateDir}, readable by
 * this user only, once per start.
 */
public final class ZooKeeperTls {
  /** The combined key store's name in the daemon's private directory. */
  static final String KEY_STORE = "zookeeper-client.pem";

  private ZooKeeperTls() {}

  /**
   * Adds the TLS settings for {@code tls} to {@code config} (nothing if {@code tls} is null: plain
   * text) and returns it. The server's certificate must name the host of the connect string (DNS or
   * IP subject alternative name): ZooKeeper's client checks it.
   *
   * @param privateDir a directory only this daemon's user can read (a server's data directory, an
   *     agent's state directory); created if missing
   * @throws IllegalArgumentException if the files can't be read or the key store can't be written
   */
  public static ZKClientConfig configure(ZKClientConfig config, TlsFiles tls, Path privateDir) {
    if (tls == null) {
      return config;
    }
    config.setProperty(ZKClientConfig.SECURE_CLIENT, "true");
    // TLS needs the netty socket; the default NIO one speaks plain text only.
    config.setProperty(
        ZKClientConfig.ZOOKEEPER_CLIENT_CNXN_SOCKET, ClientCnxnSocketNetty.class.getName());
    try (ClientX509Util x509 = new ClientX509Util()) {
      if (tls.trustedCa() != null) {
        config.setProperty(x509.getSslTruststoreLocationProperty(), tls.trustedCa().toString());
        config.setProperty(x509.getSslTruststoreTypeProperty(), "PEM");
      }
      if (tls.certChain() != null) {
        Path keyStore = writeKeyStore(tls, privateDir);
        config.setProperty(x509.getSslKeystoreLocationProperty(), keyStore.toString());
        config.setProperty(x509.getSslKeystoreTypeProperty(), "PEM");
      }
    }
    return config;
  }

  private static Path writeKeyStore(TlsFiles tls, Path privateDir) {
    Path keyStore = privateDir.resolve(KEY_STORE);
    try {
      Files.createDirectories(privateDir);
      String pem =
          Files.readString(tls.certChain(), StandardCharsets.US_ASCII).strip()
              + "\n"
              + Files.readString(tls.privateKey(), StandardCharsets.US_ASCII).strip()
              + "\n";
      // Created afresh with owner-only permissions before the key goes in, so that it is never
      // readable by others, not even for a moment.
      Files.deleteIfExists(keyStore);
      Files.createFile(
          keyStore,
          PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
      Files.writeString(keyStore, pem, StandardCharsets.US_ASCII, StandardOpenOption.WRITE);
      return keyStore;
    } catch (IOException e) {
      throw new IllegalArgumentException(
          "cannot write ZooKeeper's TLS key store " + keyStore + " from " + tls + ": " + e, e);
    }
  }
}
