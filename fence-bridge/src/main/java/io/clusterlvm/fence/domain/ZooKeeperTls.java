package io.clusterlvm.fence.domain;

import io.clusterlvm.dlm.client.TlsFiles;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFileAttributes;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.Signature;
import java.security.cert.Certificate;
import java.util.Collections;
import java.util.Optional;
import org.apache.zookeeper.ClientCnxnSocketNetty;
import org.apache.zookeeper.client.ZKClientConfig;
import org.apache.zookeeper.common.ClientX509Util;
import org.apache.zookeeper.util.PemReader;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

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
 * this user only, once per start. ZooKeeper reads that file again at every connection attempt, so
 * it is replaced whole (a rename), never rewritten in place; a renewed certificate and key take
 * effect at the daemon's next start (the CA file is read where it is, at every connection).
 */
public final class ZooKeeperTls {
  private static final Logger LOG = LoggerFactory.getLogger(ZooKeeperTls.class);

  /** The combined key store's name in the daemon's private directory. */
  static final String KEY_STORE = "zookeeper-client.pem";

  private ZooKeeperTls() {}

  /**
   * Adds the TLS settings for {@code tls} to {@code config} (nothing if {@code tls} is null: plain
   * text) and returns it. The server's certificate must name the host or IP address given in the
   * connect string (DNS or IP subject alternative name): ZooKeeper's client checks it.
   *
   * @param privateDir a directory only this daemon's user can write (a server's data directory, an
   *     agent's state directory); created if missing. A key store left there by an earlier start
   *     with TLS is deleted when {@code tls} has no certificate.
   * @throws IllegalArgumentException if the files can't be read or don't go together, or the key
   *     store can't be written safely
   */
  public static ZKClientConfig configure(ZKClientConfig config, TlsFiles tls, Path privateDir) {
    if (tls != null && tls.certChain() != null && privateDir == null) {
      throw new IllegalArgumentException(
          "ZooKeeper TLS with a client certificate needs a private directory for its key store");
    }
    if (privateDir != null) {
      forgetKeyStores(privateDir, tls == null || tls.certChain() == null);
    }
    if (tls == null) {
      return config;
    }
    config.setProperty(ZKClientConfig.SECURE_CLIENT, "true");
    // TLS needs the netty socket; the default NIO one speaks plain text only.
    config.setProperty(
        ZKClientConfig.ZOOKEEPER_CLIENT_CNXN_SOCKET, ClientCnxnSocketNetty.class.getName());
    // With SASL on (its default, though we have no SASL login), the client names the server by
    // the reverse-DNS name of its address, and TLS then checks that name: a certificate naming
    // the IP address given in the connect string was refused wherever reverse DNS answers.
    config.setProperty(ZKClientConfig.ENABLE_CLIENT_SASL_KEY, "false");
    try (ClientX509Util x509 = new ClientX509Util()) {
      if (tls.trustedCa() != null) {
        KeyStore trusted =
            check(
                () -> PemReader.loadTrustStore(tls.trustedCa().toFile()), tls.trustedCa(), "a CA");
        if (check(trusted::size, tls.trustedCa(), "a CA") == 0) {
          throw new IllegalArgumentException(
              tls.trustedCa() + " is not a CA for ZooKeeper: it holds no certificate");
        }
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
    requirePrivate(privateDir);
    Path keyStore = privateDir.resolve(KEY_STORE);
    Path next = null;
    try {
      // ISO-8859-1 reads any bytes and writes them back as they were (text around the PEM blocks
      // included, which need not be ASCII).
      String pem =
          Files.readString(tls.certChain(), StandardCharsets.ISO_8859_1).strip()
              + "\n"
              + Files.readString(tls.privateKey(), StandardCharsets.ISO_8859_1).strip()
              + "\n";
      // A new file of owner-only permissions (created so, never following a link), filled, then
      // renamed over the old one: a reconnect of a running client never reads half a file.
      next =
          Files.createTempFile(
              privateDir,
              KEY_STORE,
              ".new",
              PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
      requireOwnedLike(privateDir, next);
      Files.writeString(next, pem, StandardCharsets.ISO_8859_1);
      Path written = next;
      KeyStore loaded =
          check(
              () -> PemReader.loadKeyStore(written.toFile(), written.toFile(), Optional.empty()),
              tls.certChain(),
              "a certificate with its key (PKCS#8, unencrypted) " + tls.privateKey());
      requireMatchingKey(loaded, tls);
      Files.move(
          next, keyStore, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
      return keyStore;
    } catch (IOException e) {
      throw new IllegalArgumentException(
          "cannot write ZooKeeper's TLS key store " + keyStore + " from " + tls + ": " + e, e);
    } finally {
      if (next != null) {
        try {
          Files.deleteIfExists(next);
        } catch (IOException ignored) {
          // it was renamed, or the directory went: nothing to clean
        }
      }
    }
  }

  /** Refuses a directory others could write: they could swap the key store for one of theirs. */
  private static void requirePrivate(Path dir) {
    try {
      Files.createDirectories(dir);
      PosixFileAttributes a = Files.readAttributes(dir, PosixFileAttributes.class);
      boolean othersWrite =
          !Collections.disjoint(
              a.permissions(),
              java.util.Set.of(PosixFilePermission.GROUP_WRITE, PosixFilePermission.OTHERS_WRITE));
      if (othersWrite) {
        throw new IllegalArgumentException(
            dir
                + " must be writable by its owner only, to hold ZooKeeper's TLS key store; it is "
                + PosixFilePermissions.toString(a.permissions()));
      }
    } catch (IOException e) {
      throw new IllegalArgumentException(
          "cannot use " + dir + " for ZooKeeper's TLS key store: " + e, e);
    }
  }

  /**
   * Refuses a directory of another user than the one this daemon runs as, whose own file {@code
   * mine} just created there shows (a user name, as Java reports it, may be missing or overridden).
   */
  private static void requireOwnedLike(Path dir, Path mine) throws IOException {
    String owner = Files.getOwner(dir).getName();
    String me = Files.getOwner(mine).getName();
    if (!owner.equals(me)) {
      throw new IllegalArgumentException(
          dir + " belongs to " + owner + ", not to " + me + ", who would keep a TLS key there");
    }
  }

  /** A key that does not sign what the certificate verifies would only show as a failed connect. */
  private static void requireMatchingKey(KeyStore ks, TlsFiles tls) {
    try {
      String alias = ks.aliases().nextElement();
      PrivateKey key = (PrivateKey) ks.getKey(alias, new char[0]);
      Certificate cert = ks.getCertificate(alias);
      String algorithm = key.getAlgorithm().equals("EC") ? "SHA256withECDSA" : "SHA256withRSA";
      byte[] probe = "clusterlvm".getBytes(StandardCharsets.US_ASCII);
      Signature s = Signature.getInstance(algorithm);
      s.initSign(key);
      s.update(probe);
      byte[] signed = s.sign();
      Signature v = Signature.getInstance(algorithm);
      v.initVerify(cert);
      v.update(probe);
      if (!v.verify(signed)) {
        throw new IllegalArgumentException(
            "TLS key " + tls.privateKey() + " is not the key of certificate " + tls.certChain());
      }
    } catch (GeneralSecurityException | RuntimeException e) {
      if (e instanceof IllegalArgumentException iae) {
        throw iae;
      }
      throw new IllegalArgumentException(
          "cannot check TLS key " + tls.privateKey() + " against " + tls.certChain() + ": " + e, e);
    }
  }

  /**
   * Deletes key stores half-written by a start that died ({@code .new}), and the key store itself
   * if {@code all} (TLS is off now): no copy of a key is left where it is not used. Failing that
   * (no such directory, no access to it) is not this start's problem.
   */
  private static void forgetKeyStores(Path privateDir, boolean all) {
    try (DirectoryStream<Path> stale = Files.newDirectoryStream(privateDir, KEY_STORE + "*.new")) {
      for (Path p : stale) {
        Files.deleteIfExists(p);
      }
      if (all) {
        Files.deleteIfExists(privateDir.resolve(KEY_STORE));
      }
    } catch (NoSuchFileException nothingThere) {
      // never used
    } catch (IOException e) {
      LOG.warn("could not delete old ZooKeeper TLS key stores in {}: {}", privateDir, e.toString());
    }
  }

  private interface Load<T> {
    T load() throws IOException, GeneralSecurityException;
  }

  private static <T> T check(Load<T> load, Path file, String what) {
    try {
      return load.load();
    } catch (IOException | GeneralSecurityException | RuntimeException e) {
      throw new IllegalArgumentException(file + " is not " + what + " for ZooKeeper: " + e, e);
    }
  }
}
